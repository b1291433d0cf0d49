"""The rollout policy, pure: `decide(rollout, metrics, settings, now_ms)` → a `Decision`.

Every rule is checked with an always-valid confidence bound (`bounds`), never with point
estimates, because the same growing data is looked at every `check_interval_s`:

- error rate:   lower bound of (canary − max_error_ratio × production) above 0  → the canary fails
- crash rate:   lower bound of the canary's crash rate above max_crash_rate
- p99 latency:  lower bound of the canary's share of responses slower than max_p99_latency_ms above
                1% (the p99 is above the limit exactly when more than 1% of responses are slower)
- satisfaction: upper bound of (canary − min_satisfaction_ratio × production) below 0, for the
                thumbs-up rate and for the mean rating; for CHOICE votes between the two, the upper
                bound of the canary's win rate below ratio / (1 + ratio), i.e. its win rate below
                `ratio` × production's (1 − win rate)

A comparison of two arms splits `alpha` between them (each arm's sequence at alpha / 2), so each
rule fires by chance with probability at most `alpha` over the whole rollout. A rule with no data
in an arm it needs is *inconclusive*.

As in Argo Rollouts' analysis, a check is Failed (a rule fired → ROLLBACK now), Successful (the
stage's time and data are complete and no rule fired → ADVANCE, or COMPLETE into the final 100%
stage) or Inconclusive (wait; and ROLLBACK once the stage has waited `max_stage_s` without enough
data). No data is never Successful. A paused rollout never advances, but its rules still roll back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from evaluator.rollout.bounds import rate_bound, rating_bound
from evaluator.rollout.metrics import LiveMetrics
from evaluator.rollout.plan import format_duration
from evaluator.rollout.settings import RolloutSettings
from evaluator.rollout.state import Rollout

LATENCY_QUANTILE = 0.99


class Outcome(str, enum.Enum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class Verdict(str, enum.Enum):
    WAIT = "WAIT"
    ADVANCE = "ADVANCE"
    COMPLETE = "COMPLETE"
    ROLLBACK = "ROLLBACK"


@dataclass(frozen=True)
class RuleCheck:
    rule: str
    outcome: Outcome  # FAILED: the bound crossed the threshold; INCONCLUSIVE: no data to compare
    canary: float | None  # the canary's point estimate (for people; the decision uses `bound`)
    production: float | None
    bound: float | None  # the confidence bound the rule compares with `limit`
    limit: float
    text: str
    satisfaction: bool = False


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    outcome: Outcome
    reason: str
    checks: tuple[RuleCheck, ...]
    stage_index: int  # the stage after this decision
    fraction: float  # the canary's traffic after this decision
    figures: dict[str, float]  # every metric, bound and the stage's progress, for the event and the log


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def check_rules(metrics: LiveMetrics, settings: RolloutSettings) -> tuple[RuleCheck, ...]:
    """Every rule's outcome on `metrics` (pure; also shown by `prefloop rollout status`)."""
    c, p = metrics.canary, metrics.production
    a, half = settings.alpha, settings.alpha / 2
    out: list[RuleCheck] = []

    ratio = settings.max_error_ratio
    if c.responses and p.responses:
        bound = (rate_bound(c.errors, c.responses, half, upper=False)
                 - ratio * rate_bound(p.errors, p.responses, half, upper=True))
        fired = bound > 0
        text = (f"error rate {_pct(c.error_rate)} vs production {_pct(p.error_rate)}: lower bound of "
                f"canary - {ratio:g}x production = {bound * 100:+.2f}% {'>' if fired else '<='} 0")
        out.append(RuleCheck("error_rate", Outcome.FAILED if fired else Outcome.SUCCESSFUL, c.error_rate, p.error_rate,
                             bound, 0.0, text))
    else:
        out.append(RuleCheck("error_rate", Outcome.INCONCLUSIVE, c.error_rate, p.error_rate, None, 0.0,
                             "error rate: no responses in an arm yet"))

    if c.responses:
        bound = rate_bound(c.crashes, c.responses, a, upper=False)
        fired = bound > settings.max_crash_rate
        text = (f"crash rate {_pct(c.crash_rate)}: lower bound {_pct(bound)} "
                f"{'>' if fired else '<='} {_pct(settings.max_crash_rate)}")
        out.append(RuleCheck("crash_rate", Outcome.FAILED if fired else Outcome.SUCCESSFUL, c.crash_rate, p.crash_rate,
                             bound, settings.max_crash_rate, text))
    else:
        out.append(RuleCheck("crash_rate", Outcome.INCONCLUSIVE, None, p.crash_rate, None, settings.max_crash_rate,
                             "crash rate: no canary responses yet"))

    slow_limit = 1 - LATENCY_QUANTILE
    if c.timed:
        bound = rate_bound(c.slow, c.timed, a, upper=False)
        fired = bound > slow_limit
        text = (f"p99 latency {_num(c.p99_latency_ms, '.0f')} ms (production {_num(p.p99_latency_ms, '.0f')} ms): "
                f"lower bound of the share slower than {settings.max_p99_latency_ms:g} ms {_pct(bound)} "
                f"{'>' if fired else '<='} {_pct(slow_limit)}")
        out.append(RuleCheck("p99_latency", Outcome.FAILED if fired else Outcome.SUCCESSFUL, c.p99_latency_ms,
                             p.p99_latency_ms, bound, slow_limit, text))
    else:
        out.append(RuleCheck("p99_latency", Outcome.INCONCLUSIVE, None, p.p99_latency_ms, None, slow_limit,
                             "p99 latency: no canary response carries a latency yet"))

    ratio = settings.min_satisfaction_ratio
    if c.thumbs and p.thumbs:
        bound = (rate_bound(c.thumbs_up, c.thumbs, half, upper=True)
                 - ratio * rate_bound(p.thumbs_up, p.thumbs, half, upper=False))
        fired = bound < 0
        text = (f"thumbs-up rate {_pct(c.thumbs_up_rate)} vs production {_pct(p.thumbs_up_rate)}: upper bound of "
                f"canary - {ratio:g}x production = {bound * 100:+.2f}% {'<' if fired else '>='} 0")
        out.append(RuleCheck("thumbs_up_rate", Outcome.FAILED if fired else Outcome.SUCCESSFUL, c.thumbs_up_rate,
                             p.thumbs_up_rate, bound, 0.0, text, satisfaction=True))
    else:
        out.append(RuleCheck("thumbs_up_rate", Outcome.INCONCLUSIVE, c.thumbs_up_rate, p.thumbs_up_rate, None, 0.0,
                             "thumbs-up rate: no thumbs in an arm yet", satisfaction=True))

    if c.ratings and p.ratings:
        bound = (rating_bound(c.rating_sum, c.ratings, half, upper=True)
                 - ratio * rating_bound(p.rating_sum, p.ratings, half, upper=False))
        fired = bound < 0
        text = (f"mean rating {_num(c.mean_rating, '.2f')} vs production {_num(p.mean_rating, '.2f')}: upper bound of "
                f"canary - {ratio:g}x production = {bound:+.3f} {'<' if fired else '>='} 0")
        out.append(RuleCheck("mean_rating", Outcome.FAILED if fired else Outcome.SUCCESSFUL, c.mean_rating,
                             p.mean_rating, bound, 0.0, text, satisfaction=True))
    else:
        out.append(RuleCheck("mean_rating", Outcome.INCONCLUSIVE, c.mean_rating, p.mean_rating, None, 0.0,
                             "mean rating: no ratings in an arm yet", satisfaction=True))

    parity = ratio / (1 + ratio)
    if metrics.choices:
        bound = rate_bound(metrics.choice_wins, metrics.choices, a, upper=True)
        fired = bound < parity
        rate = metrics.choice_win_rate
        text = (f"CHOICE win rate against production {_pct(rate)} ({metrics.choice_wins}/{metrics.choices}): upper bound "
                f"{_pct(bound)} {'<' if fired else '>='} {_pct(parity)}")
        out.append(RuleCheck("choice_win_rate", Outcome.FAILED if fired else Outcome.SUCCESSFUL, rate,
                             None if rate is None else 1 - rate, bound, parity, text, satisfaction=True))
    else:
        out.append(RuleCheck("choice_win_rate", Outcome.INCONCLUSIVE, None, None, None, parity,
                             "CHOICE win rate: no votes between canary and production yet", satisfaction=True))
    return tuple(out)


def _missing_data(checks: tuple[RuleCheck, ...], metrics: LiveMetrics, settings: RolloutSettings) -> list[str]:
    """What the stage still lacks before it can pass (empty when it has enough data)."""
    by_rule = {c.rule: c for c in checks}
    missing = []
    if metrics.stage_responses < settings.min_events:
        missing.append(f"{metrics.stage_responses}/{settings.min_events} canary responses")
    if metrics.stage_feedback < settings.min_feedback:
        missing.append(f"{metrics.stage_feedback}/{settings.min_feedback} canary judgements")
    if settings.min_events and by_rule["error_rate"].outcome is Outcome.INCONCLUSIVE:
        missing.append("responses of both arms")
    if settings.min_feedback and all(c.outcome is Outcome.INCONCLUSIVE for c in checks if c.satisfaction):
        missing.append("a satisfaction signal in both arms")
    return missing


def _figures(metrics: LiveMetrics, checks: tuple[RuleCheck, ...], rollout: Rollout, elapsed_s: float) -> dict[str, float]:
    figures = metrics.figures()
    for check in checks:
        if check.bound is not None:
            figures[f"{check.rule}_bound"] = float(check.bound)
    figures["stage"] = float(rollout.stage_index + 1)
    figures["stage_elapsed_s"] = round(elapsed_s, 3)
    return figures


def decide(rollout: Rollout, metrics: LiveMetrics, settings: RolloutSettings, now_ms: int,
           paused: bool = False) -> Decision:
    """What to do with a running rollout after a check of `metrics` at `now_ms`."""
    checks = check_rules(metrics, settings)
    stage = rollout.stage
    elapsed_s = max(0.0, (now_ms - rollout.stage_started_ms) / 1000)
    figures = _figures(metrics, checks, rollout, elapsed_s)
    where = f"stage {rollout.stage_index + 1}/{rollout.canary_stages} ({stage.label})"

    failed = [c for c in checks if c.outcome is Outcome.FAILED]
    if failed:
        reason = f"{where}: " + "; ".join(c.text for c in failed)
        return Decision(Verdict.ROLLBACK, Outcome.FAILED, reason, checks, rollout.stage_index, 0.0, figures)
    if paused:
        return Decision(Verdict.WAIT, Outcome.INCONCLUSIVE, f"{where}: paused by an operator (rules still roll back)",
                        checks, rollout.stage_index, stage.fraction, figures)

    missing = _missing_data(checks, metrics, settings)
    time_left = stage.duration_s - elapsed_s
    if not missing and time_left <= 0:
        following = rollout.stage_index + 1
        nxt = rollout.stages[following]
        verdict = Verdict.COMPLETE if following == len(rollout.stages) - 1 else Verdict.ADVANCE
        reason = (f"{where} passed after {format_duration(elapsed_s)} with {metrics.stage_responses} canary responses "
                  f"and {metrics.stage_feedback} judgements; no rule fired -> {nxt.label}")
        return Decision(verdict, Outcome.SUCCESSFUL, reason, checks, following, nxt.fraction, figures)
    if missing and elapsed_s >= settings.max_stage_s:
        reason = (f"{where} still lacks data after {format_duration(elapsed_s)} (max_stage_s): "
                  f"{', '.join(missing)}")
        return Decision(Verdict.ROLLBACK, Outcome.INCONCLUSIVE, reason, checks, rollout.stage_index, 0.0, figures)
    waiting_for = list(missing)
    if time_left > 0:
        waiting_for.insert(0, f"{format_duration(time_left)} of the stage's time")
    outcome = Outcome.INCONCLUSIVE if missing else Outcome.SUCCESSFUL
    return Decision(Verdict.WAIT, outcome, f"{where}: waiting for {', '.join(waiting_for)}", checks,
                    rollout.stage_index, stage.fraction, figures)
