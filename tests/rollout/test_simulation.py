"""The issue's simulation: over 200 seeded runs of a canary identical to production, fewer than 5% roll back;
a canary 30% worse rolls back in more than 95% of runs, within its first stage. Pure: the real policy on
simulated traffic (tests/rollout/simulation.py), checked every hour of the default 24 h / 48 h / 72 h plan."""

from __future__ import annotations

from evaluator.rollout.policy import Verdict
from evaluator.rollout.settings import RolloutSettings
from simulation import Arm, run, worse

RUNS = 200
SETTINGS = RolloutSettings()  # the default plan and thresholds
PRODUCTION = Arm()


def test_a_canary_identical_to_production_rarely_rolls_back():
    results = [run(seed, PRODUCTION, PRODUCTION, SETTINGS) for seed in range(RUNS)]
    rolled_back = sum(r.verdict is Verdict.ROLLBACK for r in results)
    assert rolled_back < 0.05 * RUNS
    assert all(r.verdict is Verdict.COMPLETE for r in results if r.verdict is not Verdict.ROLLBACK)
    assert all(r.hours >= 24 + 48 + 72 for r in results if r.verdict is Verdict.COMPLETE)  # every stage held


def test_a_canary_30_percent_worse_rolls_back_within_its_first_stage():
    canary = worse(PRODUCTION, 0.7)
    results = [run(10_000 + seed, canary, PRODUCTION, SETTINGS) for seed in range(RUNS)]
    in_first_stage = sum(r.verdict is Verdict.ROLLBACK and r.stage_index == 0 for r in results)
    assert in_first_stage > 0.95 * RUNS
    assert all(r.verdict is Verdict.ROLLBACK for r in results)
