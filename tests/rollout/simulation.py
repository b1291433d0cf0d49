"""A seeded simulation of live traffic during a rollout, driving the real pure policy (`decide`).

Hourly traffic is split between the arms by the stage's canary fraction. Each response may fail
(error, crash), is slow with a small probability, and gets a thumb, a rating or a CHOICE vote
against the other arm with fixed probabilities; the arms differ only in their satisfaction. The
controller checks every `check_every_h` hours with the cumulative figures since the rollout began,
exactly as the service reads them from ClickHouse.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from evaluator.rollout.metrics import ArmMetrics, LiveMetrics
from evaluator.rollout.policy import Verdict, decide
from evaluator.rollout.settings import RolloutSettings
from evaluator.rollout.state import Rollout

HOUR_MS = 3_600_000
RATINGS = np.arange(1, 6)


@dataclass(frozen=True)
class Arm:
    thumbs_up_rate: float = 0.7
    rating_probs: tuple[float, ...] = (0.05, 0.05, 0.15, 0.35, 0.40)  # mean 4.0
    error_rate: float = 0.01
    crash_rate: float = 0.001
    slow_share: float = 0.004  # p99 under the limit


def worse(arm: Arm, factor: float) -> Arm:
    """`arm` with every satisfaction signal scaled by `factor` (thumbs-up rate and mean rating)."""
    probs = np.array(arm.rating_probs)
    target = factor * float(RATINGS @ probs)
    # Tilt the rating distribution exponentially until its mean is the target (bisection on the tilt).
    low, high = -20.0, 20.0
    for _ in range(100):
        tilt = (low + high) / 2
        tilted = probs * np.exp(tilt * RATINGS)
        tilted /= tilted.sum()
        low, high = (tilt, high) if RATINGS @ tilted < target else (low, tilt)
    return replace(arm, thumbs_up_rate=arm.thumbs_up_rate * factor, rating_probs=tuple(tilted))


@dataclass(frozen=True)
class Traffic:
    responses_per_hour: int = 2000
    thumbs_share: float = 0.3  # responses that get a thumb
    rating_share: float = 0.1
    choice_share: float = 0.05  # canary responses shown beside a production one, with a vote


@dataclass
class RunResult:
    verdict: Verdict  # ROLLBACK or COMPLETE (or WAIT when the run hit its hour limit)
    stage_index: int  # the stage the run ended in
    hours: int


def _draw(rng: np.random.Generator, arm: Arm, n: int, traffic: Traffic) -> dict[str, float]:
    thumbs = rng.binomial(n, traffic.thumbs_share)
    ratings = rng.binomial(n, traffic.rating_share)
    rating_counts = rng.multinomial(ratings, arm.rating_probs)
    return {
        "responses": n, "errors": rng.binomial(n, arm.error_rate), "crashes": rng.binomial(n, arm.crash_rate),
        "timed": n, "slow": rng.binomial(n, arm.slow_share), "thumbs_up": rng.binomial(thumbs, arm.thumbs_up_rate),
        "thumbs_down": 0, "ratings": ratings, "rating_sum": float(RATINGS @ rating_counts), "_thumbs": thumbs,
    }


def run(seed: int, canary: Arm, production: Arm, settings: RolloutSettings, traffic: Traffic = Traffic(),
        check_every_h: int = 1, max_hours: int = 24 * 30) -> RunResult:
    rng = np.random.default_rng(seed)
    rollout = Rollout("sim", "canary", "production", "simulation", list(settings.plan), 0, 0, 0)
    total = {"c": dict.fromkeys(("responses", "errors", "crashes", "timed", "slow", "thumbs_up", "thumbs_down",
                                  "ratings", "rating_sum"), 0), }
    total["p"] = dict(total["c"])
    wins = losses = stage_responses = stage_feedback = 0
    win_prob = canary.thumbs_up_rate / (canary.thumbs_up_rate + production.thumbs_up_rate)  # Bradley-Terry
    for hour in range(1, max_hours + 1):
        n_canary = rng.binomial(traffic.responses_per_hour, rollout.stage.fraction)
        for key, arm, n in (("c", canary, n_canary), ("p", production, traffic.responses_per_hour - n_canary)):
            drawn = _draw(rng, arm, n, traffic)
            thumbs = drawn.pop("_thumbs")
            drawn["thumbs_down"] = thumbs - drawn["thumbs_up"]
            for name, value in drawn.items():
                total[key][name] += value
            if key == "c":
                stage_responses += n
                stage_feedback += thumbs + drawn["ratings"]
        votes = rng.binomial(n_canary, traffic.choice_share)
        won = rng.binomial(votes, win_prob)
        wins, losses, stage_feedback = wins + won, losses + votes - won, stage_feedback + votes
        if hour % check_every_h:
            continue
        metrics = LiveMetrics(
            canary=ArmMetrics("canary", **total["c"]), production=ArmMetrics("production", **total["p"]),
            choice_wins=wins, choice_losses=losses, stage_responses=stage_responses, stage_feedback=stage_feedback,
        )
        decision = decide(rollout, metrics, settings, hour * HOUR_MS)
        if decision.verdict in (Verdict.ROLLBACK, Verdict.COMPLETE):
            return RunResult(decision.verdict, rollout.stage_index, hour)
        if decision.verdict is Verdict.ADVANCE:
            rollout.stage_index, rollout.stage_started_ms = decision.stage_index, hour * HOUR_MS
            stage_responses = stage_feedback = 0
    return RunResult(Verdict.WAIT, rollout.stage_index, max_hours)


def main() -> None:
    """The table in docs/rollout.md: how often the default policy rolls back, and in which stage, by how
    much worse the canary is and how much traffic the product gets (`python tests/rollout/simulation.py`)."""
    import collections

    settings, production = RolloutSettings(), Arm()
    print("| canary | responses/hour | rolled back | of which in stage 1 | median hours to rollback |")
    print("| --- | --- | --- | --- | --- |")
    for factor in (1.0, 0.9, 0.8, 0.7):
        for per_hour in (500, 1000, 2000):
            canary = production if factor == 1.0 else worse(production, factor)
            results = [run(seed, canary, production, settings, Traffic(responses_per_hour=per_hour)) for seed in range(200)]
            stages = collections.Counter(r.stage_index for r in results if r.verdict is Verdict.ROLLBACK)
            back = sum(stages.values())
            hours = sorted(r.hours for r in results if r.verdict is Verdict.ROLLBACK)
            label = "identical" if factor == 1.0 else f"{round((1 - factor) * 100)}% worse"
            print(f"| {label} | {per_hour} | {back / 2:.1f}% | {stages[0] / 2:.1f}% | "
                  f"{hours[len(hours) // 2] if hours else '-'} |")


if __name__ == "__main__":
    main()
