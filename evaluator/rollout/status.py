"""`prefloop rollout status`: the rollout record, the routing table and both arms' live metrics with the
bounds each rule compares, read the same way the controller reads them."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from evaluator.rollout.bounds import mean_cs, rating_bound
from evaluator.rollout.metrics import LiveMetrics, read_metrics
from evaluator.rollout.plan import format_duration
from evaluator.rollout.policy import check_rules
from evaluator.rollout.settings import load_rollout_settings
from evaluator.rollout.state import Decided, RolloutState
from prefloop import keys, routing
from prefloop.errors import ServiceError
from prefloop.settings import redact_url


@dataclass
class StatusReport:
    rollout: dict[str, Any] | None = None  # the current or last rollout
    stage: str = ""  # "2/3 (20%)"
    time_left_s: float | None = None
    traffic: dict[str, Any] = field(default_factory=dict)  # the routing table
    paused: dict[str, Any] | None = None
    controller: str | None = None  # the lease holder
    metrics: dict[str, float] = field(default_factory=dict)
    # metric -> arm -> [lower, upper]: each arm's confidence sequence at alpha / 2, as the two-arm rules use it
    intervals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    last_check: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _decision_json(d: Decided) -> dict[str, Any]:
    out = dataclasses.asdict(d)
    out["decision"] = d.decision.value
    return out


def gather(settings: Any, decisions: int = 5) -> StatusReport:
    import json

    from evaluator.rollout.service import open_redis

    rollout_settings = load_rollout_settings(settings)
    client = open_redis(settings)
    try:
        try:
            state = RolloutState.from_json(client.get(keys.ROLLOUT_STATE))
            paused_raw = client.get(keys.ROLLOUT_PAUSED)
            table = routing.read_table(client)
            holder = client.get(keys.ROLLOUT_LEASE)
        except Exception as exc:  # noqa: BLE001 - any client error means the same to the user
            raise ServiceError(f"Redis at {redact_url(settings.redis_dsn)} is not reachable ({type(exc).__name__}); "
                               "start the services with `prefloop up`") from None
    finally:
        client.close()
    report = StatusReport(
        traffic=dataclasses.asdict(table) if table else {},
        paused=json.loads(paused_raw) if paused_raw else None,
        controller=holder.decode() if holder else None,
        last_check=state.last_check,
        decisions=[_decision_json(d) for d in state.decisions[-decisions:]] if decisions else [],
        waiting=[dataclasses.asdict(w) for w in state.waiting],
    )
    rollout = state.rollout
    if rollout is None:
        return report
    report.rollout = json.loads(state.to_json())["rollout"]
    report.stage = f"{rollout.stage_index + 1}/{rollout.canary_stages} ({rollout.stage.label})"
    if not rollout.running:
        return report
    now = int(time.time() * 1000)
    report.time_left_s = max(0.0, rollout.stage.duration_s - (now - rollout.stage_started_ms) / 1000)
    from prefloop.analytics.store import AnalyticsError, connect

    store = connect(settings)
    try:
        metrics = read_metrics(store, rollout.candidate, rollout.baseline, rollout.started_ms, rollout.stage_started_ms,
                               rollout_settings.max_p99_latency_ms)
    except AnalyticsError as exc:
        report.problems.append(f"live metrics unavailable: {exc}")
        return report
    finally:
        store.close()
    report.metrics = metrics.figures()
    report.intervals = arm_intervals(metrics, rollout_settings.alpha / 2)
    for check in check_rules(metrics, rollout_settings):
        row = dataclasses.asdict(check)
        row["outcome"] = check.outcome.value
        report.rules.append(row)
    return report


def arm_intervals(metrics: LiveMetrics, alpha: float) -> dict[str, dict[str, list[float]]]:
    """Each arm's confidence interval (always valid) for every rate and the mean rating."""
    out: dict[str, dict[str, list[float]]] = {}
    for prefix, arm in (("canary", metrics.canary), ("production", metrics.production)):
        rates = {"error_rate": (arm.errors, arm.responses), "crash_rate": (arm.crashes, arm.responses),
                 "slow_share": (arm.slow, arm.timed), "thumbs_up_rate": (arm.thumbs_up, arm.thumbs)}
        for name, (events, trials) in rates.items():
            if trials:
                interval = mean_cs(float(events), trials, alpha)
                out.setdefault(name, {})[prefix] = [interval.lower, interval.upper]
        if arm.ratings:
            out.setdefault("mean_rating", {})[prefix] = [rating_bound(arm.rating_sum, arm.ratings, alpha, upper=False),
                                                          rating_bound(arm.rating_sum, arm.ratings, alpha, upper=True)]
    return out


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _value(x: Any, interval: list[float] | None = None) -> str:
    if x is None:
        return "-"
    text = f"{x:.4g}" if isinstance(x, float) else str(x)
    return f"{text} [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else text


def render(report: StatusReport) -> str:
    lines: list[str] = []
    r = report.rollout
    if r is None:
        lines.append("no rollout yet: the controller starts one on a PROMOTE event or `prefloop models promote VERSION`")
    else:
        lines.append(f"rollout {r['rollout_id']}: {r['candidate']} against {r['baseline']} - {r['status']}, "
                     f"stage {report.stage}, started {_when(r['started_ms'])} ({r['origin']})")
        if report.time_left_s is not None:
            lines.append(f"stage time left: {format_duration(report.time_left_s)}")
    t = report.traffic
    if t:
        canary = f", canary {t['canary']} at {t['canary_fraction'] * 100:g}%" if t.get("canary") else ", no canary"
        lines.append(f"traffic: production {t['production']}{canary}")
    if report.paused is not None:
        reason = report.paused.get("reason") or "no reason given"
        lines.append(f"PAUSED since {_when(report.paused['since_ms'])} ({reason}); `prefloop rollout resume` continues")
    lines.append(f"controller: {report.controller or 'none running (`prefloop up` starts one)'}")
    if report.rules:
        m = report.metrics
        lines.append("")
        lines.append(f"{'live, same window':<22} {'canary [confidence sequence]':>34} {'production':>34}")
        for label, name in (("responses", "responses"), ("error rate", "error_rate"), ("crash rate", "crash_rate"),
                            ("p99 latency ms", "p99_latency_ms"), ("share > limit", "slow_share"),
                            ("thumbs-up rate", "thumbs_up_rate"), ("mean rating", "mean_rating")):
            bounds = report.intervals.get(name, {})
            lines.append(f"  {label:<20} {_value(m.get('canary_' + name), bounds.get('canary')):>34} "
                         f"{_value(m.get('production_' + name), bounds.get('production')):>34}")
        lines.append(f"  {'CHOICE wins/losses':<20} {int(m.get('choice_wins', 0))}/{int(m.get('choice_losses', 0))}")
        lines.append(f"  {'this stage':<20} {int(m.get('stage_responses', 0))} canary responses, "
                     f"{int(m.get('stage_feedback', 0))} judgements")
        lines.append("rules (confidence-sequence bound vs limit):")
        for rule in report.rules:
            lines.append(f"  [{rule['outcome']:<12}] {rule['text']}")
    if report.last_check:
        lines.append(f"last check {_when(report.last_check['at_ms'])}: {report.last_check['verdict']} "
                     f"({report.last_check['outcome']}) {report.last_check['reason']}")
    if report.waiting:
        lines.append("waiting: " + ", ".join(f"{w['candidate']} ({w['origin']})" for w in report.waiting))
    if report.decisions:
        lines.append("")
        lines.append("last decisions:")
        for d in report.decisions:
            lines.append(f"  {_when(d['at_ms'])} {d['decision']:<8} {d['candidate']} traffic "
                         f"{d['traffic_fraction'] * 100:g}% - {d['reason']}")
    for problem in report.problems:
        lines.append(f"warning: {problem}")
    return "\n".join(lines)
