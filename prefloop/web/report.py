"""`prefloop report`: one self-contained HTML file with the dashboard's figures and the weekly
monitoring report of the product brief.

The file opens offline: plotly's JavaScript is inlined once (`include_plotlyjs=True` on the first
figure), nothing is loaded from elsewhere, and every number the text shows is also in a JSON block
(`<script type="application/json" id="prefloop-report-data">`) so it can be checked against SQL.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import plotly.io as pio

from prefloop.analytics.store import connect
from prefloop.durations import parse_duration
from prefloop.errors import ConfigError, PrefloopError
from prefloop.settings import Settings
from prefloop.web import queries
from prefloop.web.arena import BattleStore, Vote
from prefloop.web.dashboard import DAY_MS, DashboardData, dashboard_figures, gather_dashboard, gather_leaderboard, \
    leaderboard_figures
from prefloop.web.rates import Rate, rate
from prefloop.web.settings import WebSettings
from prefloop.web.sources import LoopSources, RegistryRow


def parse_period(text: str) -> float:
    """'7d' -> seconds; units s, m, h, d, w."""
    seconds = parse_duration(text)
    if not seconds:
        raise ConfigError(f"a period such as 7d, 24h or 2w, got {text!r}")
    return seconds


@dataclass
class Comparison:
    newest: str = ""
    previous: str = ""
    wins: int = 0  # CHOICE votes for the newest over the previous
    losses: int = 0
    win_rate: float | None = None
    lower: float | None = None
    upper: float | None = None
    note: str = ""


@dataclass
class Quality:
    arena_votes: dict[str, int] = field(default_factory=dict)  # vote -> battles in the period
    clear_winner_share: float | None = None  # (A + B) / all arena votes
    clear_winner_lower: float | None = None
    clear_winner_upper: float | None = None
    pairs: int = 0
    dropped: int = 0
    pass_share: float | None = None  # pairs / (pairs + dropped by the quality rules)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> responses, pairs
    missing_categories: list[str] = field(default_factory=list)
    untagged_responses: int = 0


@dataclass
class WeeklyReport:
    generated_at: str
    since: str
    until: str
    since_ms: int  # the period's bounds, epoch ms: every count is of rows at or after since_ms
    until_ms: int
    days: float
    pairs_collected: int
    pairs_target: int
    pairs_by_source: dict[str, int]
    comparison: Comparison
    quality: Quality
    next_actions: list[str]
    figures: list[str]
    problems: list[str]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _days_between(since_ms: int, until_ms: int) -> list[str]:
    first = since_ms - since_ms % DAY_MS
    return [datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%d") for t in range(first, until_ms + 1, DAY_MS)]


def _comparison(store, registry: list[RegistryRow], since_ms: int, confidence: float) -> Comparison:
    if len(registry) < 2:
        return Comparison(note="only one registry version so far: nothing to compare")
    ordered = sorted(registry, key=lambda r: (r.created_at, r.version))
    newest = ordered[-1]
    previous = newest.parent_version if newest.parent_version and newest.parent_version != newest.version \
        else ordered[-2].version
    wins, losses = queries.head_to_head(store, newest.version, previous, since_ms)
    r: Rate = rate(wins, wins + losses, confidence)
    note = "" if wins + losses else f"no CHOICE votes between {newest.version} and {previous} in the period"
    return Comparison(newest.version, previous, wins, losses, r.value, r.lower, r.upper, note)


def _quality(store, settings: Settings, web: WebSettings, since_ms: int, until_ms: int,
             problems: list[str]) -> Quality:
    q = Quality()
    q.pairs = queries.pairs_since(store, since_ms)
    q.dropped = queries.drops_since(store, since_ms)
    if q.pairs + q.dropped:
        q.pass_share = q.pairs / (q.pairs + q.dropped)
    client = LoopSources(settings).redis()
    try:
        by_day = BattleStore(client, web.battle_ttl_s).votes_by_day(_days_between(since_ms, until_ms))
        for counts in by_day.values():
            for vote, n in counts.items():
                q.arena_votes[vote.value] = q.arena_votes.get(vote.value, 0) + n
    except Exception as exc:  # noqa: BLE001 - the rest of the report still stands
        problems.append(f"arena vote tallies (Redis): {type(exc).__name__}")
    finally:
        client.close()
    total = sum(q.arena_votes.values())
    if total:
        clear = q.arena_votes.get(Vote.A.value, 0) + q.arena_votes.get(Vote.B.value, 0)
        share = rate(clear, total, web.confidence)
        q.clear_winner_share, q.clear_winner_lower, q.clear_winner_upper = share.value, share.lower, share.upper
    for c in queries.category_counts(store, since_ms):
        if c.category:
            q.categories[c.category] = {"responses": c.responses, "pairs": c.pairs}
        else:
            q.untagged_responses = c.responses
    q.missing_categories = [c for c in web.categories if c not in q.categories]
    return q


def _next_actions(data: DashboardData, report: WeeklyReport) -> list[str]:
    out: list[str] = []
    t = data.trigger
    if t is not None:
        if t.training_running:
            out.append("A training run is in progress (the trigger lock is held).")
        elif t.pairs_needed > 0:
            out.append(f"Collect {t.pairs_needed} more preference pairs for the next training run "
                       f"({t.pairs_since_last} of {t.new_pairs_threshold} since the last one).")
        else:
            out.append(f"{t.pairs_since_last} new pairs: the next training run is due.")
    if report.pairs_collected < report.pairs_target:
        out.append(f"Preferences are behind target: {report.pairs_collected} of {report.pairs_target} in the period; "
                   "send more people to the arena.")
    for row in sorted(data.registry, key=lambda r: r.created_at):
        if row.status == "approved":
            out.append(f"{row.version} passed the gate and waits for its rollout (`prefloop rollout status`).")
        elif row.status == "canary":
            out.append(f"{row.version} is in canary: watch `prefloop rollout status`.")
        elif row.status == "candidate":
            out.append(f"{row.version} is trained and waits for the evaluator's gate.")
    if t is not None and data.drift:
        latest = max(p.window_start for p in data.drift)
        for p in data.drift:
            if p.window_start == latest and p.psi > t.drift_threshold:
                out.append(f"Input drift on {p.feature}: PSI {p.psi:.3f} is over the trigger threshold {t.drift_threshold:g}.")
    for category in report.quality.missing_categories:
        out.append(f"No responses tagged category={category} in the period.")
    return out or ["Nothing needs attention."]


def build_report(settings: Settings, web: WebSettings, period_s: float, now_ms: int | None = None
                 ) -> tuple[WeeklyReport, dict]:
    """The report's numbers and its figures (name -> plotly figure)."""
    until_ms = int(time.time() * 1000) if now_ms is None else now_ms
    since_ms = int(until_ms - period_s * 1000)
    data = gather_dashboard(settings, since_ms)
    board = gather_leaderboard(settings, web, since_ms)
    problems = list(data.problems)
    store = connect(settings)
    try:
        comparison = _comparison(store, data.registry, since_ms, web.confidence)
        quality = _quality(store, settings, web, since_ms, until_ms, problems)
    finally:
        store.close()
    by_source: dict[str, int] = {}
    for c in data.pairs:
        by_source[c.key] = by_source.get(c.key, 0) + c.count
    days = period_s / 86400
    figs = {**dashboard_figures(data, web), **leaderboard_figures(board, web)}
    report = WeeklyReport(
        generated_at=_iso(until_ms), since=_iso(since_ms), until=_iso(until_ms), since_ms=since_ms, until_ms=until_ms,
        days=round(days, 3),
        pairs_collected=quality.pairs, pairs_target=math.ceil(web.daily_target * days), pairs_by_source=by_source,
        comparison=comparison, quality=quality, next_actions=[], figures=list(figs), problems=problems)
    report.next_actions = _next_actions(data, report)
    return report, figs


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _interval(value: float | None, lower: float | None, upper: float | None) -> str:
    return "—" if value is None else f"{value:.1%} [{lower:.1%}, {upper:.1%}]"


def render_html(report: WeeklyReport, figs: dict, confidence: float) -> str:
    e = html.escape
    c, q = report.comparison, report.quality
    sources = ", ".join(f"{e(k)} {v}" for k, v in sorted(report.pairs_by_source.items())) or "none"
    if c.newest:
        versus = (f"<b>{e(c.newest)}</b> against <b>{e(c.previous)}</b>: win rate "
                  f"<span data-metric='comparison_win_rate'>{_interval(c.win_rate, c.lower, c.upper)}</span> "
                  f"({c.wins} wins, {c.losses} losses; {confidence:.0%} Wilson interval)")
    else:
        versus = ""
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v['responses']}</td><td>{v['pairs']}</td></tr>"
                   for k, v in sorted(q.categories.items()))
    votes = ", ".join(f"{e(Vote(k).label)} {v}" for k, v in sorted(q.arena_votes.items())) or "no arena votes"
    parts = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>prefloop report {e(report.since)} – {e(report.until)}</title>
<style>body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#222}}
h1{{font-size:24px}}h2{{font-size:19px;margin-top:28px;border-bottom:1px solid #ddd}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}.note{{color:#666}}.figure{{margin:18px 0}}</style></head><body>
<h1>prefloop weekly monitoring report</h1>
<p class="note">{e(report.since)} – {e(report.until)} ({report.days:g} days), generated {e(report.generated_at)}.</p>
<h2>Preferences collected</h2>
<p><span data-metric="pairs_collected">{report.pairs_collected}</span> of a target of
<span data-metric="pairs_target">{report.pairs_target}</span> preference pairs (by source: {sources}).</p>
<h2>Model comparison</h2><p>{versus}</p><p class="note">{e(c.note)}</p>
<h2>Data quality</h2>
<ul><li>Arena battles with a clear winner: <span data-metric="clear_winner_share">{_interval(q.clear_winner_share, q.clear_winner_lower, q.clear_winner_upper)}</span> ({votes}).</li>
<li>Proposed pairs that passed the quality rules: <span data-metric="pass_share">{_pct(q.pass_share)}</span>
({q.pairs} kept, {q.dropped} dropped).</li>
<li>Category coverage: {len(q.categories)} categories tagged; missing: {e(", ".join(q.missing_categories)) or "none"};
{q.untagged_responses} responses without a category.</li></ul>
<table><tr><th>category</th><th>responses</th><th>pairs (chosen response)</th></tr>{rows}</table>
<h2>Next actions</h2><ul>{"".join(f"<li>{e(a)}</li>" for a in report.next_actions)}</ul>"""]
    if report.problems:
        parts.append(f"<p class='note'>Unavailable: {e('; '.join(report.problems))}</p>")
    parts.append("<h2>Figures</h2>")
    for i, (name, fig) in enumerate(figs.items()):
        div = pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), div_id=f"figure-{name}",
                          config={"displaylogo": False, "responsive": True})
        parts.append(f"<div class='figure' data-figure='{e(name)}'>{div}</div>")
    payload = json.dumps(asdict(report), default=str).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="prefloop-report-data">{payload}</script></body></html>')
    return "\n".join(parts)


def default_path(settings: Settings, now_ms: int | None = None) -> Path:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return settings.home / "reports" / f"prefloop-report-{stamp}.html"


def write_report(settings: Settings, web: WebSettings, period_s: float, out: Path | None = None) -> Path:
    report, figs = build_report(settings, web, period_s)
    path = out or default_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_html(report, figs, web.confidence), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise PrefloopError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


__all__ = ["WeeklyReport", "build_report", "render_html", "write_report", "parse_period", "default_path"]
