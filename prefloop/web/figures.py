"""Plotly figures of the dashboard, the leaderboard and the report, built from plain records.

Every rate is drawn with its count (in the hover text) and a band for its confidence interval
(Wilson's, `rates.py`), so a 100% from two votes does not read like a 100% from two hundred.
An empty input gives a figure that says so instead of an empty frame.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from datetime import datetime, timedelta, timezone

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from prefloop.web.queries import DayCount, DayRates, DriftPoint, PromotionRow
from prefloop.web.rates import rate
from prefloop.web.ratings import Rating, WinMatrix
from prefloop.web.sources import RegistryRow, TriggerProgress

HEIGHT = 380
DAY_BAR_MS = 0.7 * 86_400_000  # bars on a date axis are as wide as this many milliseconds
PALETTE = qualitative.Plotly
DECISION_COLOURS = {"PROMOTE": "#2ca02c", "REJECT": "#d62728", "ADVANCE": "#1f77b4", "ROLLBACK": "#ff7f0e",
                    "COMPLETE": "#9467bd"}


def _layout(fig: go.Figure, title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01}, template="plotly_white", height=height,
                      margin={"l": 60, "r": 20, "t": 60, "b": 50}, legend={"orientation": "h", "y": -0.2})
    return fig


def empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=220)


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _day_axis(fig: go.Figure, days: Sequence[str], **extra: Any) -> None:
    """A date axis of whole days: half a day of margin each side and one tick per day while they fit, so a
    single day does not zoom in to milliseconds."""
    parsed = sorted({datetime.strptime(d, "%Y-%m-%d") for d in days})
    if not parsed:
        return
    pad = timedelta(hours=12)
    span = (parsed[-1] - parsed[0]).days
    fig.update_xaxes(type="date", range=[parsed[0] - pad, parsed[-1] + pad], tickformat="%b %d",
                     dtick=86_400_000 * max(1, span // 10 + 1), **extra)


def rate_figure(rows: Sequence[DayRates], kind: str, confidence: float = 0.95) -> go.Figure:
    """Daily win rate (CHOICE wins over wins + losses) or thumbs-up rate per version, with Wilson bands."""
    title = {"win": "Win rate per version (CHOICE votes between versions)",
             "thumbs": "Thumbs-up rate per version"}[kind]

    def counts(r: DayRates) -> tuple[int, int]:
        return (r.wins, r.wins + r.losses) if kind == "win" else (r.thumbs_up, r.thumbs_up + r.thumbs_down)

    by_version: dict[str, list[DayRates]] = defaultdict(list)
    for r in rows:
        if counts(r)[1] > 0:
            by_version[r.version].append(r)
    if not by_version:
        return empty(title, "no votes yet" if kind == "win" else "no thumbs yet")
    colours = _colours(list(by_version))
    fig = go.Figure()
    for version in sorted(by_version):
        days = [r.day for r in by_version[version]]
        rates = [rate(*counts(r), confidence) for r in by_version[version]]
        colour = colours[version]
        fig.add_trace(go.Scatter(
            x=days + days[::-1], y=[x.upper for x in rates] + [x.lower for x in rates][::-1], fill="toself",
            fillcolor=colour, opacity=0.18, line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=version,
            name=f"{version} {confidence:.0%} interval"))
        fig.add_trace(go.Scatter(
            x=days, y=[x.value for x in rates], mode="lines+markers", name=version, legendgroup=version,
            line={"color": colour}, customdata=[[x.successes, x.trials, x.lower, x.upper] for x in rates],
            # Error bars as well as the band: a band needs two days to show, a bar shows on the first.
            error_y={"type": "data", "symmetric": False, "color": colour, "thickness": 1,
                     "array": [x.upper - x.value for x in rates], "arrayminus": [x.value - x.lower for x in rates]},
            hovertemplate=(f"{version} %{{x}}<br>rate %{{y:.1%}} [%{{customdata[2]:.1%}}, %{{customdata[3]:.1%}}]"
                           "<br>%{customdata[0]} of n=%{customdata[1]}<extra></extra>")))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", title="rate")
    _day_axis(fig, [r.day for r in rows], title_text="day (UTC)")
    return _layout(fig, title + f" — band: {confidence:.0%} Wilson interval")


def pairs_figure(pairs: Sequence[DayCount], drops: Sequence[DayCount]) -> go.Figure:
    title = "Preference pairs per day by source, and what the quality rules dropped"
    if not pairs and not drops:
        return empty(title, "no pairs yet")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("pairs published, by source", "pairs dropped, by reason"))
    for row, items, palette in ((1, pairs, qualitative.Set2), (2, drops, qualitative.Pastel1)):
        keys = sorted({c.key for c in items})
        for i, key in enumerate(keys):
            mine = [c for c in items if c.key == key]
            fig.add_trace(go.Bar(x=[c.day for c in mine], y=[c.count for c in mine], name=key, width=DAY_BAR_MS,
                                 marker_color=palette[i % len(palette)], legendgroup=f"row{row}",
                                 hovertemplate=f"{key} %{{x}}: %{{y}}<extra></extra>"), row=row, col=1)
    for row, items, message in ((1, pairs, "no pairs published"), (2, drops, "nothing dropped")):
        if not items:
            fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="x domain", yref="y domain",
                               row=row, col=1)
    fig.update_layout(barmode="stack")
    _day_axis(fig, [c.day for c in [*pairs, *drops]])
    fig.update_yaxes(title="pairs", row=1, col=1)
    fig.update_yaxes(title="dropped", row=2, col=1)
    return _layout(fig, title, height=520)


def drift_figure(points: Sequence[DriftPoint], threshold: float | None) -> go.Figure:
    title = "Input drift: PSI per feature against the reference"
    if not points:
        return empty(title, "no drift windows yet")
    fig = go.Figure()
    colours = _colours([p.feature for p in points])
    for feature in sorted({p.feature for p in points}):
        mine = [p for p in points if p.feature == feature]
        fig.add_trace(go.Scatter(x=[_ms_to_dt(p.window_start) for p in mine], y=[p.psi for p in mine],
                                 mode="lines+markers", name=feature, line={"color": colours[feature]},
                                 customdata=[p.samples for p in mine],
                                 hovertemplate=f"{feature} %{{x}}<br>PSI %{{y:.3f}} (n=%{{customdata}})<extra></extra>"))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="#d62728",
                      annotation_text=f"trigger threshold {threshold:g}", annotation_position="top left")
    fig.update_yaxes(title="PSI", rangemode="tozero")
    fig.update_xaxes(title="window start (UTC)")
    return _layout(fig, title)


def trigger_figure(progress: TriggerProgress | None) -> go.Figure:
    """How close each of the trigger's conditions is to firing (100% = fires)."""
    title = "Progress to the next training trigger"
    if progress is None:
        return empty(title, "trigger state unavailable (Redis not reachable?)")
    rows: list[tuple[str, float, str]] = []
    if progress.new_pairs_threshold:
        rows.append(("new pairs", progress.pairs_since_last / progress.new_pairs_threshold,
                     f"{progress.pairs_since_last} of {progress.new_pairs_threshold} pairs"))
    if progress.drift_threshold:
        drift = progress.drift if progress.drift is not None else 0.0
        rows.append(("input drift", drift / progress.drift_threshold,
                     f"PSI {drift:.3f} of {progress.drift_threshold:g}" + (" (no window yet)" if progress.drift is None else "")))
    if progress.staleness_threshold_s:
        rows.append(("staleness", progress.staleness_s / progress.staleness_threshold_s,
                     f"{progress.staleness_s / 86400:.1f} of {progress.staleness_threshold_s / 86400:.1f} days"))
    if progress.min_pairs:
        rows.append(("pairs for drift/staleness", progress.pairs_since_last / progress.min_pairs,
                     f"{progress.pairs_since_last} of {progress.min_pairs} pairs (needed by drift and staleness)"))
    fig = go.Figure(go.Bar(
        y=[r[0] for r in rows], x=[min(r[1], 1.0) for r in rows], orientation="h", text=[r[2] for r in rows],
        # Short bars carry their label outside, so a condition at 0% still says where it stands.
        textposition=["inside" if r[1] >= 0.5 else "outside" for r in rows], cliponaxis=False, marker_color=["#2ca02c" if r[1] >= 1 else "#1f77b4" for r in rows],
        hovertemplate="%{y}: %{text}<extra></extra>"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title="share of the threshold")
    fig.update_yaxes(autorange="reversed")
    note = []
    if progress.training_running:
        note.append("a training run holds the trigger lock")
    if progress.cooldown_left_s > 0:
        note.append(f"cooldown {progress.cooldown_left_s / 60:.0f} min left")
    return _layout(fig, title + (f" ({'; '.join(note)})" if note else ""), height=300)


def rollout_figure(rows: Sequence[PromotionRow]) -> go.Figure:
    """Each candidate's traffic over time, with every decision as a marker whose hover gives its reason."""
    title = "Rollout timeline: canary traffic and decisions (models.promotions)"
    if not rows:
        return empty(title, "no promotion decisions yet")
    fig = go.Figure()
    colours = _colours([r.candidate for r in rows])
    for candidate in sorted({r.candidate for r in rows}):
        mine = [r for r in rows if r.candidate == candidate]
        fig.add_trace(go.Scatter(x=[_ms_to_dt(r.occurred_at) for r in mine], y=[r.traffic_fraction for r in mine],
                                 mode="lines", line={"shape": "hv", "color": colours[candidate]}, name=f"{candidate} traffic",
                                 hoverinfo="skip"))
    for decision in sorted({r.decision for r in rows}):
        mine = [r for r in rows if r.decision == decision]
        fig.add_trace(go.Scatter(
            x=[_ms_to_dt(r.occurred_at) for r in mine], y=[r.traffic_fraction for r in mine], mode="markers+text",
            name=decision, text=[f"{decision} {r.candidate}" for r in mine], textposition="top center",
            marker={"size": 11, "color": DECISION_COLOURS.get(decision, "#7f7f7f"), "symbol": "diamond"},
            customdata=[[r.candidate, r.baseline, r.reason] for r in mine],
            hovertemplate=("%{x}<br>" + decision + " %{customdata[0]} vs %{customdata[1]}<br>traffic %{y:.0%}"
                           "<br>%{customdata[2]}<extra></extra>")))
    fig.update_yaxes(range=[-0.05, 1.12], tickformat=".0%", title="canary traffic")
    fig.update_xaxes(title="time (UTC)")
    return _layout(fig, title)


def _evaluation_text(evaluation: dict) -> tuple[str, str, str]:
    """(decision, win rate with its lower bound and n, reason) from a registry version's evaluation record
    (evaluator/gate: decision, reason, baseline, n, win_rate, win_rate_lower, p_value, report)."""
    if not evaluation:
        return "", "", ""
    decision = str(evaluation.get("decision", ""))
    win = evaluation.get("win_rate")
    lower = evaluation.get("win_rate_lower")
    n = evaluation.get("n")
    parts = []
    if isinstance(win, (int, float)) and math.isfinite(win):
        parts.append(f"{win:.1%}")
    if isinstance(lower, (int, float)) and math.isfinite(lower):
        parts.append(f"(≥ {lower:.1%})")
    if isinstance(n, (int, float)) and math.isfinite(n):
        parts.append(f"n={n:.0f}")  # the evaluator stores counts in a map of doubles
    return decision, " ".join(parts), str(evaluation.get("reason", ""))


def registry_figure(rows: Sequence[RegistryRow]) -> go.Figure:
    title = "Model registry and each version's evaluation"
    if not rows:
        return empty(title, "the registry is empty")
    ordered = sorted(rows, key=lambda r: (r.created_at, r.version), reverse=True)
    evals = [_evaluation_text(r.evaluation) for r in ordered]
    accuracy = [r.metrics.get("heldout_reward_accuracy") for r in ordered]
    columns = {
        "version": [r.version for r in ordered],
        "status": [r.status for r in ordered],
        "parent": [r.parent_version or "—" for r in ordered],
        "created (UTC)": [_ms_to_dt(r.created_at).strftime("%Y-%m-%d %H:%M") if r.created_at else "" for r in ordered],
        "held-out reward accuracy": [f"{a:.1%}" if isinstance(a, float) and math.isfinite(a) else "" for a in accuracy],
        "gate": [e[0] for e in evals],
        "gate win rate": [e[1] for e in evals],
        "gate reason / status reason": [e[2] or r.reason for e, r in zip(evals, ordered)],
    }
    fig = go.Figure(go.Table(
        columnwidth=[60, 70, 60, 100, 90, 70, 110, 260],
        header={"values": list(columns), "fill_color": "#e8eef7", "align": "left", "font": {"size": 12}},
        cells={"values": list(columns.values()), "align": "left", "height": 26}))
    return _layout(fig, title, height=min(190 + 44 * len(ordered), 700))


def ratings_figure(ratings: Sequence[Rating], confidence: float = 0.95) -> go.Figure:
    title = f"Bradley–Terry ratings with {confidence:.0%} intervals (bootstrap, at least the normal approximation)"
    if not ratings:
        return empty(title, "no CHOICE battles between two versions yet")
    fig = go.Figure(go.Scatter(
        x=[r.version for r in ratings], y=[r.rating for r in ratings], mode="markers",
        marker={"size": 12, "color": "#1f77b4"},
        error_y={"type": "data", "symmetric": False, "array": [r.upper - r.rating for r in ratings],
                 "arrayminus": [r.rating - r.lower for r in ratings]},
        customdata=[[r.lower, r.upper, r.battles, r.wins] for r in ratings],
        hovertemplate=("%{x}: %{y:.0f} [%{customdata[0]:.0f}, %{customdata[1]:.0f}]"
                       "<br>%{customdata[3]:g} wins in %{customdata[2]} battles<extra></extra>")))
    fig.update_yaxes(title="rating (mean 1000)")
    fig.update_xaxes(title="version", type="category")
    return _layout(fig, title)


def win_matrix_figure(matrix: WinMatrix) -> go.Figure:
    title = "Win fraction of the row version against the column version"
    if not matrix.versions:
        return empty(title, "no CHOICE battles between two versions yet")
    text = [[("" if n == 0 else f"{f:.0%}<br>n={n}") for f, n in zip(frow, nrow)]
            for frow, nrow in zip(matrix.fraction, matrix.battles)]
    z = [[None if math.isnan(f) else float(f) for f in row] for row in matrix.fraction]
    fig = go.Figure(go.Heatmap(
        z=z, x=matrix.versions, y=matrix.versions, text=text, texttemplate="%{text}", zmin=0, zmax=1,
        colorscale="RdBu", hovertemplate="%{y} beat %{x} in %{z:.0%} of their battles<extra></extra>",
        colorbar={"tickformat": ".0%"}))
    fig.update_xaxes(title="against", type="category", side="top")
    fig.update_yaxes(title="version", type="category", autorange="reversed")
    return _layout(fig, title, height=max(300, 120 + 60 * len(matrix.versions)))


__all__ = ["empty", "rate_figure", "pairs_figure", "drift_figure", "trigger_figure", "rollout_figure",
           "registry_figure", "ratings_figure", "win_matrix_figure"]
