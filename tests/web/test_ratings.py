"""Bradley–Terry, bootstrap and rate intervals on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefloop.web.rates import rate
from prefloop.web.ratings import INIT, Outcome, bootstrap_ratings, fit_ratings, leaderboard, win_matrix

POINTS = 400 / math.log(10)


def zermelo(wins: dict[tuple[str, str], float], versions: list[str], iterations: int = 20000) -> dict[str, float]:
    """The Bradley–Terry MLE by Zermelo's / Hunter's MM iteration, an algorithm independent of the one under
    test: p_i <- W_i / sum_j n_ij / (p_i + p_j)."""
    p = {v: 1.0 for v in versions}
    for _ in range(iterations):
        new = {}
        for i in versions:
            w = sum(wins.get((i, j), 0.0) for j in versions if j != i)
            denom = sum((wins.get((i, j), 0.0) + wins.get((j, i), 0.0)) / (p[i] + p[j]) for j in versions if j != i)
            new[i] = w / denom
        g = math.exp(sum(math.log(x) for x in new.values()) / len(new))
        p = {v: x / g for v, x in new.items()}
    return {v: INIT + POINTS * math.log(x) for v, x in p.items()}


def test_two_versions_rating_gap_is_the_log_odds() -> None:
    ratings = fit_ratings([Outcome("v1.1", "v1.0", 1.0, 300), Outcome("v1.1", "v1.0", 0.0, 100)], prior_sd=None)
    assert ratings["v1.1"] - ratings["v1.0"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["v1.1"] + ratings["v1.0"]) / 2 == pytest.approx(INIT)


def test_three_versions_match_zermelos_iteration() -> None:
    wins = {("a", "b"): 7, ("b", "a"): 3, ("b", "c"): 6, ("c", "b"): 4, ("a", "c"): 8, ("c", "a"): 2}
    outcomes = [Outcome(x, y, 1.0, n) for (x, y), n in wins.items()]
    ours = fit_ratings(outcomes, prior_sd=None)
    reference = zermelo({k: float(v) for k, v in wins.items()}, ["a", "b", "c"])
    for v in "abc":
        assert ours[v] == pytest.approx(reference[v], abs=1e-3)
    assert ours["a"] > ours["b"] > ours["c"]


def test_ties_count_half_a_win_each() -> None:
    with_ties = fit_ratings([Outcome("a", "b", 1.0, 2), Outcome("a", "b", 0.5, 2)], prior_sd=None)
    as_wins = fit_ratings([Outcome("a", "b", 1.0, 3), Outcome("a", "b", 0.0, 1)], prior_sd=None)
    assert with_ties["a"] == pytest.approx(as_wins["a"], abs=1e-6)


def test_balanced_battles_give_equal_ratings() -> None:
    ratings = fit_ratings([Outcome("a", "b", 1.0, 5), Outcome("b", "a", 1.0, 5)])
    assert ratings == pytest.approx({"a": INIT, "b": INIT})


def test_the_prior_keeps_an_unbeaten_version_finite_and_fades_with_data() -> None:
    few = fit_ratings([Outcome("a", "b", 1.0, 2)])
    assert 1000 < few["a"] < 1400  # finite, and pulled towards the mean
    unpenalised = fit_ratings([Outcome("a", "b", 1.0, 2)], prior_sd=None)
    assert unpenalised["a"] > few["a"] + 200  # the MLE runs off towards infinity
    many = [Outcome("a", "b", 1.0, 900), Outcome("a", "b", 0.0, 300)]
    assert fit_ratings(many)["a"] == pytest.approx(fit_ratings(many, prior_sd=None)["a"], abs=1.0)


def test_bootstrap_is_reproducible_and_its_spread_matches_the_binomial() -> None:
    outcomes = [Outcome("a", "b", 1.0, 300), Outcome("a", "b", 0.0, 100)]
    versions, samples = bootstrap_ratings(outcomes, rounds=1000, seed=7, prior_sd=None)
    again = bootstrap_ratings(outcomes, rounds=1000, seed=7, prior_sd=None)[1]
    assert versions == ["a", "b"] and samples.shape == (1000, 2)
    assert np.array_equal(samples, again)
    # Delta method: sd of the log-odds gap is 1/sqrt(n p (1-p)); each centred rating carries half of it.
    expected_sd = POINTS / math.sqrt(400 * 0.75 * 0.25) / 2
    assert samples[:, 0].std() == pytest.approx(expected_sd, rel=0.15)
    assert np.allclose(samples.mean(axis=1), INIT)


def test_leaderboard_intervals_contain_the_rating_and_narrow_with_more_battles() -> None:
    small = [Outcome("a", "b", 1.0, 30), Outcome("a", "b", 0.0, 10), Outcome("b", "c", 1.0, 12),
             Outcome("c", "b", 1.0, 8)]
    big = [Outcome(o.a, o.b, o.score, o.count * 16) for o in small]
    rows = leaderboard(small, rounds=300, seed=1)
    assert [r.version for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert r.lower <= r.rating <= r.upper
    width = {r.version: r.upper - r.lower for r in rows}
    big_width = {r.version: r.upper - r.lower for r in leaderboard(big, rounds=300, seed=1)}
    for v in "abc":
        assert big_width[v] < width[v] * 0.4  # about a quarter: the square root of 16 times the data
    b = next(r for r in rows if r.version == "b")
    assert (b.battles, b.wins, b.losses) == (60, 22.0, 38.0)


def test_one_battle_gets_a_wide_interval_where_the_bootstrap_alone_cannot_vary() -> None:
    one = [Outcome("a", "b", 1.0, 1)]
    samples = bootstrap_ratings(one, rounds=50, seed=0)[1]
    assert np.ptp(samples, axis=0).max() == 0  # resampling one battle always gives that battle
    for r in leaderboard(one, rounds=50):
        assert r.upper - r.lower > 300  # the curvature (Laplace) interval of the prior-weighted fit
        assert r.lower < r.rating < r.upper


def test_with_many_battles_the_interval_is_the_bootstraps() -> None:
    many = [Outcome("a", "b", 1.0, 300), Outcome("a", "b", 0.0, 100)]
    rows = {r.version: r for r in leaderboard(many, rounds=500, seed=3)}
    samples = bootstrap_ratings(many, rounds=500, seed=3)[1]
    boot_width = np.percentile(samples[:, 0], 97.5) - np.percentile(samples[:, 0], 2.5)
    assert rows["a"].upper - rows["a"].lower == pytest.approx(boot_width, rel=0.1)


def test_win_matrix_counts_each_pair_and_leaves_unplayed_pairs_empty() -> None:
    m = win_matrix([Outcome("a", "b", 1.0, 3), Outcome("b", "a", 1.0, 1), Outcome("a", "c", 0.5, 2)],
                   order=["a", "b", "c"])
    assert m.fraction[0, 1] == pytest.approx(0.75) and m.fraction[1, 0] == pytest.approx(0.25)
    assert m.fraction[0, 2] == pytest.approx(0.5) and m.battles[0, 2] == 2
    assert math.isnan(m.fraction[1, 2]) and m.battles[1, 2] == 0
    assert math.isnan(m.fraction[0, 0])


def test_no_battles_make_an_empty_leaderboard() -> None:
    assert leaderboard([]) == []
    assert fit_ratings([]) == {}


@pytest.mark.parametrize("kwargs, message", [
    (dict(a="a", b="a", score=1.0), "two different versions"),
    (dict(a="a", b="b", score=0.3), "score should be"),
    (dict(a="a", b="b", score=1.0, count=0), "count should be"),
])
def test_bad_outcomes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Outcome(**kwargs)


def test_wilson_interval_matches_its_formula() -> None:
    k, n, z = 3, 4, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = rate(k, n)
    assert (r.lower, r.upper) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert r.value == 0.75 and r.text() == "75.0% [30.1%, 95.4%] (n=4)"
    assert rate(0, 0).text() == "no data (n=0)" and rate(0, 0).value is None
    assert rate(0, 10).lower == 0.0 and rate(10, 10).upper == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rate(5, 4)
