"""The pure policy: each rule fires on its threshold through the bound, no data is never a pass, stages
advance only with their time and data, the last one completes, a paused rollout only rolls back."""

from __future__ import annotations

import dataclasses

import pytest

from evaluator.rollout.metrics import ArmMetrics, LiveMetrics
from evaluator.rollout.policy import Outcome, Verdict, check_rules, decide
from evaluator.rollout.settings import RolloutSettings
from evaluator.rollout.state import Rollout

SETTINGS = RolloutSettings(stages="0.05:1h,0.2:1h,1.0", min_events=200, min_feedback=50, max_stage_s=7200)
HOUR_MS = 3_600_000


def rollout(stage_index: int = 0) -> Rollout:
    return Rollout("r", "v1.1", "v1.0", "test", list(SETTINGS.plan), stage_index, 0, 0)


def arm(version: str, n: int, errors: float = 0.01, crashes: float = 0.0, slow: float = 0.0, thumbs_up: float = 0.8,
        rating: float = 4.0) -> ArmMetrics:
    thumbs = n // 2
    ratings = n // 5
    return ArmMetrics(version, responses=n, errors=round(n * errors), crashes=round(n * crashes), timed=n,
                      slow=round(n * slow), p99_latency_ms=2500.0 if slow > 0.01 else 800.0,
                      thumbs_up=round(thumbs * thumbs_up), thumbs_down=thumbs - round(thumbs * thumbs_up),
                      ratings=ratings, rating_sum=rating * ratings)


def live(canary: ArmMetrics, production: ArmMetrics | None = None, wins: int = 0, losses: int = 0,
         stage_responses: int | None = None, stage_feedback: int | None = None) -> LiveMetrics:
    production = production or arm("v1.0", canary.responses * 19)
    return LiveMetrics(canary, production, wins, losses,
                       canary.responses if stage_responses is None else stage_responses,
                       canary.thumbs + canary.ratings + wins + losses if stage_feedback is None else stage_feedback)


def test_a_healthy_canary_with_its_time_and_data_advances_then_completes():
    metrics = live(arm("v1.1", 1000))
    first = decide(rollout(0), metrics, SETTINGS, now_ms=HOUR_MS)
    assert (first.verdict, first.outcome, first.stage_index, first.fraction) == (Verdict.ADVANCE, Outcome.SUCCESSFUL, 1, 0.2)
    assert "no rule fired -> 20%" in first.reason
    last = decide(rollout(1), metrics, SETTINGS, now_ms=HOUR_MS)
    assert (last.verdict, last.fraction) == (Verdict.COMPLETE, 1.0)
    assert all(c.outcome is Outcome.SUCCESSFUL for c in first.checks if c.rule != "choice_win_rate")


def test_before_its_duration_a_stage_waits_even_with_all_its_data():
    decision = decide(rollout(0), live(arm("v1.1", 1000)), SETTINGS, now_ms=HOUR_MS - 60_000)
    assert (decision.verdict, decision.outcome) == (Verdict.WAIT, Outcome.SUCCESSFUL)
    assert "waiting for 1m00s of the stage's time" in decision.reason


@pytest.mark.parametrize("metrics, missing", [
    (live(ArmMetrics("v1.1"), ArmMetrics("v1.0")), "0/200 canary responses"),
    (live(arm("v1.1", 100)), "100/200 canary responses"),
    (live(dataclasses.replace(arm("v1.1", 1000), thumbs_up=0, thumbs_down=0, ratings=0, rating_sum=0)),
     "0/50 canary judgements"),
])
def test_no_data_or_too_little_is_inconclusive_never_a_pass(metrics: LiveMetrics, missing: str):
    decision = decide(rollout(0), metrics, SETTINGS, now_ms=2 * HOUR_MS - 1)
    assert (decision.verdict, decision.outcome) == (Verdict.WAIT, Outcome.INCONCLUSIVE)
    assert missing in decision.reason


def test_a_stage_short_of_data_for_max_stage_s_rolls_back():
    decision = decide(rollout(0), live(arm("v1.1", 100)), SETTINGS, now_ms=2 * HOUR_MS)
    assert (decision.verdict, decision.outcome, decision.fraction) == (Verdict.ROLLBACK, Outcome.INCONCLUSIVE, 0.0)
    assert "lacks data after 2h00m (max_stage_s): 100/200 canary responses" in decision.reason


def test_judgements_without_a_production_arm_to_compare_are_inconclusive():
    production = dataclasses.replace(arm("v1.0", 19000), thumbs_up=0, thumbs_down=0, ratings=0, rating_sum=0)
    decision = decide(rollout(0), live(arm("v1.1", 1000), production), SETTINGS, now_ms=HOUR_MS)
    assert decision.verdict is Verdict.WAIT and "a satisfaction signal in both arms" in decision.reason


@pytest.mark.parametrize("canary, wins, losses, rule, words", [
    (arm("v1.1", 1000, errors=0.05), 0, 0, "error_rate", "error rate 5.00% vs production 1.00%"),
    (arm("v1.1", 1000, crashes=0.05), 0, 0, "crash_rate", "crash rate 5.00%"),
    (arm("v1.1", 1000, slow=0.05), 0, 0, "p99_latency", "p99 latency 2500 ms"),
    (arm("v1.1", 1000, thumbs_up=0.6), 0, 0, "thumbs_up_rate", "thumbs-up rate 60.00% vs production 80.00%"),
    (arm("v1.1", 1000, rating=2.5), 0, 0, "mean_rating", "mean rating 2.50 vs production 4.00"),
    (arm("v1.1", 1000), 60, 140, "choice_win_rate", "CHOICE win rate against production 30.00% (60/200)"),
])
def test_each_rule_rolls_back_at_once_with_its_figures(canary: ArmMetrics, wins: int, losses: int, rule: str, words: str):
    decision = decide(rollout(0), live(canary, wins=wins, losses=losses), SETTINGS, now_ms=60_000)  # mid-stage
    assert (decision.verdict, decision.outcome, decision.fraction) == (Verdict.ROLLBACK, Outcome.FAILED, 0.0)
    failed = [c.rule for c in decision.checks if c.outcome is Outcome.FAILED]
    assert failed == [rule]
    assert words in decision.reason and decision.reason.startswith("stage 1/2 (5%)")
    assert f"{rule}_bound" in decision.figures and decision.figures["canary_responses"] == 1000


@pytest.mark.parametrize("canary", [
    arm("v1.1", 1000, errors=0.012),  # above production's point estimate, below 1.5x
    arm("v1.1", 1000, thumbs_up=0.76),  # 95% of production's, above 0.9x
])
def test_a_canary_within_the_thresholds_does_not_fire(canary: ArmMetrics):
    assert all(c.outcome is not Outcome.FAILED for c in check_rules(live(canary), SETTINGS))


def test_a_point_estimate_past_the_threshold_is_not_enough_on_little_data():
    """1 error in 20 is 5% against production's 1%, beyond 1.5x; the bound says that proves nothing yet."""
    checks = {c.rule: c for c in check_rules(live(arm("v1.1", 20, errors=0.05)), SETTINGS)}
    assert checks["error_rate"].canary == 0.05 and checks["error_rate"].outcome is Outcome.SUCCESSFUL
    assert checks["error_rate"].bound < 0


def test_paused_rollouts_never_advance_but_still_roll_back():
    healthy = decide(rollout(0), live(arm("v1.1", 1000)), SETTINGS, now_ms=10 * HOUR_MS, paused=True)
    assert healthy.verdict is Verdict.WAIT and "paused" in healthy.reason
    starving = decide(rollout(0), live(arm("v1.1", 10)), SETTINGS, now_ms=10 * HOUR_MS, paused=True)
    assert starving.verdict is Verdict.WAIT
    failing = decide(rollout(0), live(arm("v1.1", 1000, errors=0.2)), SETTINGS, now_ms=60_000, paused=True)
    assert failing.verdict is Verdict.ROLLBACK
