"""The demo's summary: what happened at each step and what users now measure, beside the simulator's
ground truth; written as `summary.json` and printed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prefloop.analytics.store import sql_string
from prefloop.simulator.ground_truth import GroundTruth
from prefloop.web.rates import Rate, rate


@dataclass
class StepRecord:
    name: str
    started_s: float  # seconds since the demo started
    seconds: float
    detail: str


@dataclass
class DemoSummary:
    trigger_reason: str = ""
    trigger_pairs: int = 0
    pairs_by_source: dict[str, int] = field(default_factory=dict)
    candidate_version: str = ""
    baseline_version: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=lambda: {"decisions": [], "final": ""})
    live: dict[str, Any] = field(default_factory=dict)
    ground_truth: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    report_path: str = ""
    seconds: float = 0.0
    outcome: str = ""  # "promoted", "rejected", "rolled back" or the failing step

    def to_json(self) -> dict[str, Any]:
        return _finite({
            "outcome": self.outcome, "seconds": self.seconds, "trigger_reason": self.trigger_reason,
            "trigger_pairs": self.trigger_pairs, "pairs_by_source": self.pairs_by_source,
            "candidate_version": self.candidate_version, "baseline_version": self.baseline_version,
            "training": self.training, "evaluation": self.evaluation, "rollout": self.rollout, "live": self.live,
            "ground_truth": self.ground_truth, "report_path": self.report_path,
            "steps": [s.__dict__ for s in self.steps],
        })

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so summary.json is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def rate_json(r: Rate) -> dict[str, Any]:
    return {"value": r.value, "lower": r.lower, "upper": r.upper, "n": r.trials}


def live_figures(store, old: str, new: str) -> dict[str, Any]:
    """What users did, from the analytics tables: the new version's CHOICE win rate against the old one,
    and each version's thumbs-up rate, with 95% Wilson intervals."""
    o, n = sql_string(old), sql_string(new)
    wins, losses = store.query(
        f"SELECT countIf(model_version = {n} AND rejected_model_version = {o}), "
        f"countIf(model_version = {o} AND rejected_model_version = {n}) FROM action_facts FINAL WHERE kind = 'CHOICE'").rows[0]
    thumbs = {version: (int(up), int(down)) for version, up, down in store.query(
        f"SELECT model_version, countIf(kind = 'THUMBS_UP'), countIf(kind = 'THUMBS_DOWN') FROM action_facts FINAL "
        f"WHERE model_version IN ({o}, {n}) GROUP BY model_version").rows}
    out: dict[str, Any] = {"new_win_rate": rate_json(rate(int(wins), int(wins) + int(losses)))}
    for name, version in (("old", old), ("new", new)):
        up, down = thumbs.get(version, (0, 0))
        out[f"{name}_thumbs_up_rate"] = rate_json(rate(up, up + down))
    out["old_version"], out["new_version"] = old, new
    return out


def truth_figures(truth: GroundTruth, old: str, new: str) -> dict[str, Any]:
    """The simulator's own view: the true utility and expected thumbs-up rate of what each version
    served, and the share of A/B choices the new one won."""
    data = truth.to_json()
    wins = truth.ab_wins.get((new, old), 0)
    losses = truth.ab_wins.get((old, new), 0)
    data["new_win_rate"] = wins / (wins + losses) if wins + losses else None
    return data


def _fmt(r: dict[str, Any] | None) -> str:
    if not r or not r.get("n"):
        return "no data"
    return f"{r['value']:.1%} [{r['lower']:.1%}, {r['upper']:.1%}] (n={r['n']})"


def print_summary(s: DemoSummary, out: IO[str]) -> None:
    w = out.write
    w(f"\nprefloop demo: {s.outcome} in {s.seconds / 60:.1f} min\n")
    w(f"  trigger        {s.trigger_reason} after {s.trigger_pairs} new pairs; pairs by source: "
      + ", ".join(f"{k} {v}" for k, v in sorted(s.pairs_by_source.items())) + "\n")
    if s.training:
        w(f"  training       {s.candidate_version} in {s.training.get('seconds', 0):.0f}s on {s.training.get('train_pairs', 0):.0f} "
          f"pairs (held-out reward accuracy {s.training.get('heldout_reward_accuracy', float('nan')):.2f})\n")
    if s.evaluation:
        e = s.evaluation
        w(f"  evaluation     {e.get('decision')}: win rate {e.get('win_rate', float('nan')):.2f} "
          f"(lower bound {e.get('win_rate_lower', float('nan')):.2f}, n={e.get('n', 0):.0f}) vs {s.baseline_version}; {e.get('reason', '')}\n")
    for d in s.rollout.get("decisions", []):
        w(f"  rollout        {d['decision']:<8} traffic {d['traffic_fraction']:.0%}  {d['reason'][:110]}\n")
    if s.live:
        live, truth = s.live, s.ground_truth
        w(f"  live           {live['new_version']} vs {live['old_version']}: A/B win rate {_fmt(live['new_win_rate'])}"
          f" (simulator's truth {truth.get('new_win_rate') if truth.get('new_win_rate') is None else format(truth['new_win_rate'], '.1%')})\n")
        for name in ("old", "new"):
            version = live[f"{name}_version"]
            true = truth.get("versions", {}).get(version, {})
            expected = true.get("expected_thumbs_up_rate")
            w(f"  thumbs-up      {version}: {_fmt(live[f'{name}_thumbs_up_rate'])} (users' hidden preference implies "
              f"{'-' if expected is None else format(expected, '.1%')}; polite openers "
              f"{'-' if true.get('polite_share') is None else format(true['polite_share'], '.0%')})\n")
    if s.report_path:
        w(f"  report         {s.report_path}\n")
