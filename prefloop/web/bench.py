"""`prefloop bench ratings`: the leaderboard's Bradley–Terry fit with bootstrap intervals, prefloop's
batched Newton against the baseline of one scipy L-BFGS-B fit per bootstrap round (how FastChat's
`rating_systems.py` refits), on the same synthetic battles and resamples in the same run.

Battles are drawn from known strengths (seeded); both arms see the same multinomial resamples, so
their ratings must agree, and the bench reports the largest difference beside the timings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from prefloop.web.ratings import Outcome, _table, bootstrap_ratings, prior_precision, to_points


def synthetic_battles(versions: int, battles: int, seed: int = 0) -> list[Outcome]:
    """`battles` battles between random pairs of `versions` versions 50 rating points apart each."""
    rng = np.random.default_rng(seed)
    strength = np.arange(versions)[::-1] * 50.0 / (400.0 / np.log(10.0))
    counts: dict[tuple[int, int], int] = {}
    for _ in range(battles):
        i, j = rng.choice(versions, size=2, replace=False)
        winner, loser = (i, j) if rng.random() < expit(strength[i] - strength[j]) else (j, i)
        counts[(winner, loser)] = counts.get((winner, loser), 0) + 1
    return [Outcome(f"v1.{w}", f"v1.{l}", 1.0, n) for (w, l), n in sorted(counts.items())]


def scipy_per_round(outcomes: list[Outcome], rounds: int, seed: int, prior_sd: float) -> np.ndarray:
    """The baseline: the same resamples, each fitted by its own scipy.optimize.minimize (L-BFGS-B)."""
    t = _table(outcomes)
    n = len(t.versions)
    total = int(t.count.sum())
    draws = np.random.default_rng(seed).multinomial(total, t.count / total, size=rounds).astype(np.float64)
    precision = prior_precision(prior_sd)
    out = []
    for weights in draws:
        wins_a, wins_b = weights * t.score, weights * (1.0 - t.score)

        def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            d = theta[t.a] - theta[t.b]
            loss = float(np.sum(wins_a * np.logaddexp(0.0, -d) + wins_b * np.logaddexp(0.0, d)))
            g_d = (wins_a + wins_b) * expit(d) - wins_a
            grad = np.zeros(n)
            np.add.at(grad, t.a, g_d)
            np.add.at(grad, t.b, -g_d)
            return loss + 0.5 * precision * float(theta @ theta), grad + precision * theta

        theta = minimize(loss_and_grad, np.zeros(n), jac=True, method="L-BFGS-B",
                         options={"maxiter": 1000, "gtol": 1e-9}).x
        out.append(to_points(theta - theta.mean()))
    return np.stack(out)


def run(versions: int, battles: int, rounds: int, repeat: int, prior_sd: float = 400.0) -> dict[str, float]:
    outcomes = synthetic_battles(versions, battles)
    timings: dict[str, list[float]] = {"scipy": [], "newton": []}
    for i in range(repeat):
        order = ("scipy", "newton") if i % 2 == 0 else ("newton", "scipy")
        for arm in order:
            started = time.perf_counter()
            if arm == "scipy":
                baseline = scipy_per_round(outcomes, rounds, seed=i, prior_sd=prior_sd)
            else:
                ours = bootstrap_ratings(outcomes, rounds, seed=i, prior_sd=prior_sd)[1]
            timings[arm].append(time.perf_counter() - started)
        gap = float(np.abs(baseline - ours).max())
    best = {arm: min(values) for arm, values in timings.items()}
    return {"scipy_s": best["scipy"], "newton_s": best["newton"], "speedup": best["scipy"] / best["newton"],
            "max_rating_gap": gap, "versions": versions, "battles": battles, "rounds": rounds}


def add_bench_command(bench_sub: argparse._SubParsersAction) -> None:
    from prefloop.arguments import one_line_errors, positive_int

    p = one_line_errors(bench_sub.add_parser(
        "ratings", help="leaderboard fit + bootstrap: batched Newton vs one scipy fit per round"))
    p.add_argument("--versions", type=positive_int, default=8, help="model versions (default 8)")
    p.add_argument("--battles", type=positive_int, default=5000, help="CHOICE battles (default 5000)")
    p.add_argument("--rounds", type=positive_int, default=200, help="bootstrap rounds (default 200, the app's)")
    p.add_argument("--repeat", type=positive_int, default=3, help="alternating runs of both arms; the best is shown")
    p.set_defaults(handler=cmd_bench_ratings)


def cmd_bench_ratings(args: argparse.Namespace) -> int:
    if args.versions < 2:
        from prefloop.errors import ConfigError

        raise ConfigError(f"--versions should be at least 2, got {args.versions}")
    r = run(args.versions, args.battles, args.rounds, args.repeat)
    print(f"{r['versions']} versions, {r['battles']} battles, {r['rounds']} bootstrap rounds (best of {args.repeat})")
    print(f"  scipy L-BFGS-B per round (baseline): {r['scipy_s'] * 1000:10.1f} ms")
    print(f"  batched Newton (prefloop):           {r['newton_s'] * 1000:10.1f} ms   {r['speedup']:.0f}x")
    print(f"  largest rating difference between the arms: {r['max_rating_gap']:.2e} points")
    return 0
