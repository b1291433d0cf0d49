"""The gate's statistics (pure functions) against scipy and fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from evaluator.gate import stats


@pytest.mark.parametrize("wins,losses", [(9, 1), (30, 20), (0, 12), (50, 50), (1, 0), (120, 80)])
def test_sign_test_is_scipys_exact_one_sided_binomial_test(wins, losses):
    diffs = [0.5] * wins + [-0.25] * losses + [0.0] * 7  # ties are dropped
    result = stats.sign_test(diffs)
    expected = scipy_stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
    assert (result.wins, result.losses, result.ties) == (wins, losses, 7)
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    assert result.win_rate == pytest.approx(wins / (wins + losses))


def test_sign_test_counts_differences_within_the_tolerance_as_ties():
    result = stats.sign_test([1e-6, -1e-6, 0.2, -0.3, 5e-5], tie_tolerance=1e-4)
    assert (result.wins, result.losses, result.ties) == (1, 1, 3)
    assert stats.sign_test([0.0, 0.0]).p_value == 1.0 and math.isnan(stats.sign_test([0.0]).win_rate)
    assert stats.sign_test([1.0] * 9 + [-1.0]).p_value == pytest.approx(11 / 1024)


def test_group_bootstrap_is_fixed_by_its_seed():
    rng = np.random.default_rng(7)
    diffs = rng.normal(0.2, 1.0, 300)
    groups = [f"p{i // 3}" for i in range(300)]
    a = stats.group_bootstrap(diffs, groups, seed=3, samples=1000)
    b = stats.group_bootstrap(diffs, groups, seed=3, samples=1000)
    c = stats.group_bootstrap(diffs, groups, seed=4, samples=1000)
    assert a == b
    assert a.mean_diff.lower != c.mean_diff.lower  # another stream (win-rate quantiles are discrete and may coincide)
    assert a.win_rate.lower < a.win_rate.estimate < a.win_rate.upper
    assert a.mean_diff.lower < a.mean_diff.estimate < a.mean_diff.upper
    assert a.mean_diff.estimate == pytest.approx(diffs.mean())


def test_singleton_groups_match_scipys_percentile_bootstrap():
    rng = np.random.default_rng(11)
    diffs = rng.normal(0.15, 1.0, 400)
    ours = stats.group_bootstrap(diffs, [str(i) for i in range(400)], alpha=0.05, samples=4000, seed=0)
    # scipy's two-sided 90% percentile interval has the one-sided 5% bounds as its ends.
    wins = (diffs > 0).astype(float)
    theirs = scipy_stats.bootstrap((wins,), np.mean, confidence_level=0.90, method="percentile", n_resamples=4000,
                                   random_state=np.random.default_rng(0)).confidence_interval
    assert ours.win_rate.lower == pytest.approx(theirs.low, abs=0.01)
    assert ours.win_rate.upper == pytest.approx(theirs.high, abs=0.01)
    means = scipy_stats.bootstrap((diffs,), np.mean, confidence_level=0.90, method="percentile", n_resamples=4000,
                                  random_state=np.random.default_rng(0)).confidence_interval
    assert ours.mean_diff.lower == pytest.approx(means.low, abs=0.02)


def test_resampling_by_prompt_group_widens_the_bounds_of_dependent_pairs():
    # 40 prompts, 10 pairs each, every pair of a prompt with the same outcome: 40 independent units, not 400.
    rng = np.random.default_rng(5)
    per_prompt = rng.random(40) < 0.6
    diffs = np.repeat(np.where(per_prompt, 1.0, -1.0), 10)
    grouped = stats.group_bootstrap(diffs, [f"p{i // 10}" for i in range(400)], seed=0)
    naive = stats.group_bootstrap(diffs, [str(i) for i in range(400)], seed=0)
    assert grouped.win_rate.estimate == naive.win_rate.estimate
    assert grouped.win_rate.estimate - grouped.win_rate.lower > 2 * (naive.win_rate.estimate - naive.win_rate.lower)


def test_a_resample_without_decisive_pairs_counts_as_an_even_win_rate():
    boot = stats.group_bootstrap([0.0, 0.0, 0.0], ["a", "b", "c"], seed=0)
    assert math.isnan(boot.win_rate.estimate)
    assert boot.win_rate.lower == boot.win_rate.upper == 0.5
    empty = stats.group_bootstrap([], [], seed=0)
    assert math.isnan(empty.win_rate.lower) and math.isnan(empty.mean_diff.estimate)


def test_slices_report_each_source_with_its_own_n():
    diffs = [1.0] * 30 + [-1.0] * 25 + [1.0, -1.0] * 5
    labels = ["EDIT"] * 30 + ["THUMBS"] * 25 + ["CHOICE"] * 10
    groups = [str(i) for i in range(len(diffs))]
    out = stats.slices(diffs, groups, labels, tie_tolerance=0.0, alpha=0.05, samples=500, seed=0)
    assert list(out) == ["CHOICE", "EDIT", "THUMBS"]
    assert (out["EDIT"].n, out["EDIT"].sign.win_rate, out["EDIT"].win_rate.lower) == (30, 1.0, 1.0)
    assert (out["THUMBS"].n, out["THUMBS"].win_rate.upper) == (25, 0.0)
    assert out["CHOICE"].n == 10 and out["CHOICE"].win_rate.lower < 0.5 < out["CHOICE"].win_rate.upper


def test_length_control_takes_the_not_longer_pairs_and_spearmans_rho():
    chosen = [10, 20, 30, 40, 5, 5, 8, 9]
    rejected = [5, 5, 5, 5, 10, 6, 8, 20]
    diffs = [0.4, 0.9, 1.3, 2.0, -0.5, -0.1, -0.2, -1.0]
    out = stats.length_control(diffs, [str(i) for i in range(8)], chosen, rejected, tie_tolerance=0.0, alpha=0.05,
                               samples=500, seed=0)
    assert out.not_longer.n == 4  # 5<=10, 5<=6, 8<=8, 9<=20
    assert out.not_longer.sign.wins == 0 and out.not_longer.win_rate.upper == 0.0
    expected = scipy_stats.spearmanr(diffs, np.subtract(chosen, rejected))
    assert out.correlation == pytest.approx(expected.statistic) and out.correlation > 0.9
    assert out.correlation_p == pytest.approx(expected.pvalue)
    flat = stats.length_control([0.1, 0.2, 0.3], ["a", "b", "c"], [3, 3, 3], [3, 3, 3], tie_tolerance=0.0, alpha=0.05,
                                samples=100, seed=0)
    assert math.isnan(flat.correlation)  # no length difference to correlate with
