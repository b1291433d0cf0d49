"""The always-valid confidence sequences: exact at their ends, and valid at every sample size at once —
checked by simulation, beside the fixed-sample interval that the same repeated looks break."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.rollout.bounds import log_mixture, mean_cs, mean_lower, mean_upper, rate_bound, rating_bound

ALPHA = 0.05


def test_no_data_gives_the_whole_range():
    assert (mean_lower(0, 0, ALPHA), mean_upper(0, 0, ALPHA)) == (0.0, 1.0)


@pytest.mark.parametrize("total, count", [(1, 10), (140, 200), (38, 3800), (0, 500), (500, 500), (123.5, 400)])
def test_the_ends_are_where_the_evidence_reaches_one_over_alpha(total: float, count: int):
    interval = mean_cs(total, count, ALPHA)
    assert interval.contains(total / count)
    for end, extreme in ((interval.lower, 0.0), (interval.upper, 1.0)):
        if end == extreme:  # no data can rule the extreme out (no events at all, or all of them)
            assert log_mixture(total, count, min(max(end, 1e-12), 1 - 1e-12)) < math.log(1 / ALPHA)
        else:
            assert float(log_mixture(total, count, end)) == pytest.approx(math.log(1 / ALPHA), abs=1e-5)


def test_more_data_narrows_and_a_smaller_alpha_widens():
    widths = [mean_upper(0.7 * n, n, ALPHA) - mean_lower(0.7 * n, n, ALPHA) for n in (50, 500, 5000)]
    assert widths[0] > widths[1] > widths[2]
    assert mean_upper(70, 100, 0.01) > mean_upper(70, 100, 0.1)


def test_rare_events_get_tight_bounds():
    """A Bernoulli likelihood ratio adapts to the variance: 0 errors in 3,800 bounds the rate below 0.2%."""
    assert mean_upper(0, 3800, 0.025) < 0.0025
    assert rate_bound(38, 3800, 0.025, upper=False) > 0.004


def test_ratings_are_bounded_on_their_own_scale():
    low, high = rating_bound(4.0 * 400, 400, ALPHA, upper=False), rating_bound(4.0 * 400, 400, ALPHA, upper=True)
    assert 3.5 < low < 4.0 < high < 4.5
    assert rating_bound(5.0 * 10, 10, ALPHA, upper=True) == 5.0


@pytest.mark.parametrize("total, count, alpha", [(5, 4, ALPHA), (-1, 4, ALPHA), (1, 4, 0.0), (1, 4, 1.0)])
def test_impossible_arguments_are_refused(total: float, count: int, alpha: float):
    with pytest.raises(ValueError):
        mean_cs(total, count, alpha)


def _ever_excluded(samples: np.ndarray, mean: float) -> np.ndarray:
    """Per run: did the confidence sequence exclude the true mean at any sample size?"""
    sums = np.cumsum(samples, axis=1)
    counts = np.arange(1, samples.shape[1] + 1)
    return (log_mixture(sums, counts, mean) >= math.log(1 / ALPHA)).any(axis=1)


@pytest.mark.parametrize("rate", [0.01, 0.3, 0.7])
def test_bernoulli_coverage_holds_at_every_sample_size(rate: float):
    rng = np.random.default_rng(11)
    samples = (rng.random((1000, 2000)) < rate).astype(float)
    assert _ever_excluded(samples, rate).mean() <= ALPHA


def test_coverage_holds_for_any_data_in_zero_one_such_as_ratings():
    rng = np.random.default_rng(12)
    probs = np.array([0.05, 0.05, 0.15, 0.35, 0.40])
    ratings = rng.choice(np.arange(1, 6), size=(1000, 2000), p=probs)
    scaled = (ratings - 1) / 4
    assert _ever_excluded(scaled, float((np.arange(1, 6) @ probs - 1) / 4)).mean() <= ALPHA


def test_a_fixed_sample_interval_looked_at_every_time_is_not_valid():
    """Why the controller needs a sequence: a 95% Wald interval checked after every observation excludes
    the truth at some point in far more than 5% of runs; the confidence sequence does not."""
    rng = np.random.default_rng(13)
    rate = 0.3
    samples = (rng.random((400, 4000)) < rate).astype(float)
    counts = np.arange(1, samples.shape[1] + 1)
    means = np.cumsum(samples, axis=1) / counts
    half_width = 1.96 * np.sqrt(np.maximum(means * (1 - means), 1e-12) / counts)
    wald_misses = (np.abs(means - rate) > half_width)[:, 30:].any(axis=1).mean()
    assert wald_misses > 0.25
    assert _ever_excluded(samples, rate).mean() <= ALPHA
