"""The gate's statistics, as pure functions of per-pair score differences d = s_C - s_B.

- `sign_test`: wins (d > tol), losses (d < -tol), ties dropped; exact one-sided binomial test of
  "the candidate wins more than half" (scipy.stats.binomtest).
- `group_bootstrap`: win rate and mean of d with percentile bounds, resampling whole prompt groups
  with replacement (pairs built from the responses to one prompt share that prompt, so they are not
  independent; resampling pairs one by one would make the bounds too narrow).
- `slices`: the same per label (pair source), each with its own n.
- `length_control`: the win rate on pairs whose chosen text is not longer than the rejected one, and
  the rank correlation of d with the length difference (DPO is known to learn "longer is better").

Every bootstrap draws from a numpy Generator seeded by `seed` (and the slice name), so the same
scores always give the same bounds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class SignTest:
    wins: int
    losses: int
    ties: int
    p_value: float  # one-sided: P(at least `wins` of wins+losses under p = 0.5); 1.0 with no decisive pair

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def win_rate(self) -> float:
        """Wins over decisive pairs (ties dropped); NaN when every pair ties."""
        return self.wins / self.decisive if self.decisive else math.nan


@dataclass(frozen=True)
class Bounds:
    estimate: float
    lower: float  # the alpha quantile of the bootstrap distribution
    upper: float  # the 1 - alpha quantile


@dataclass(frozen=True)
class GroupBootstrap:
    win_rate: Bounds
    mean_diff: Bounds


@dataclass(frozen=True)
class SliceStats:
    n: int
    sign: SignTest
    win_rate: Bounds


@dataclass(frozen=True)
class LengthControl:
    not_longer: SliceStats  # pairs whose chosen text is not longer than the rejected one
    correlation: float  # Spearman's rho of d with len(chosen) - len(rejected); NaN when either is constant
    correlation_p: float


def outcomes(diffs: Sequence[float], tie_tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(wins, losses) as 0/1 arrays: a win is d > tolerance, a loss d < -tolerance, the rest tie."""
    d = np.asarray(diffs, dtype=float)
    return (d > tie_tolerance).astype(np.int64), (d < -tie_tolerance).astype(np.int64)


def sign_test(diffs: Sequence[float], tie_tolerance: float = 0.0) -> SignTest:
    wins, losses = outcomes(diffs, tie_tolerance)
    w, l = int(wins.sum()), int(losses.sum())
    p = scipy_stats.binomtest(w, w + l, 0.5, alternative="greater").pvalue if w + l else 1.0
    return SignTest(wins=w, losses=l, ties=len(wins) - w - l, p_value=float(p))


def _group_index(groups: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each pair's group as an integer 0..G-1, in order of first appearance, and G."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(g, len(index)) for g in groups), dtype=np.int64, count=len(groups))
    return codes, len(index)


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator fixed by the seed and a name (each slice draws its own stream)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def group_bootstrap(
    diffs: Sequence[float],
    groups: Sequence[str],
    *,
    tie_tolerance: float = 0.0,
    alpha: float = 0.05,
    samples: int = 2000,
    seed: int = 0,
    name: str = "all",
) -> GroupBootstrap:
    """Win rate (ties dropped) and mean d, each with one-sided percentile bounds at `alpha`, from
    `samples` resamples of whole groups. A resample with no decisive pair counts as a 0.5 win rate."""
    if len(diffs) != len(groups):
        raise ValueError(f"{len(diffs)} differences but {len(groups)} group labels")
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        nan = Bounds(math.nan, math.nan, math.nan)
        return GroupBootstrap(win_rate=nan, mean_diff=nan)
    wins, losses = outcomes(d, tie_tolerance)
    codes, n_groups = _group_index(groups)
    per_group = np.zeros((4, n_groups))  # wins, losses, sum of d, pairs
    for row, values in enumerate((wins, losses, d, np.ones_like(d))):
        np.add.at(per_group[row], codes, values)
    # counts[b, g]: how often group g is drawn in resample b (a multinomial draw of G groups).
    counts = _rng(seed, name).multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=samples)
    w, l, total, pairs = (counts @ per_group[row] for row in range(4))
    decisive = w + l
    rates = np.divide(w, decisive, out=np.full(samples, 0.5), where=decisive > 0)
    means = total / pairs
    sign = sign_test(d, tie_tolerance)
    return GroupBootstrap(
        win_rate=Bounds(sign.win_rate, float(np.quantile(rates, alpha)), float(np.quantile(rates, 1 - alpha))),
        mean_diff=Bounds(float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))),
    )


def slice_stats(diffs: Sequence[float], groups: Sequence[str], mask: Sequence[bool], *, name: str,
                tie_tolerance: float, alpha: float, samples: int, seed: int) -> SliceStats:
    """Sign test and bootstrapped win rate of the pairs selected by `mask`."""
    keep = np.asarray(mask, dtype=bool)
    d = np.asarray(diffs, dtype=float)[keep]
    g = [group for group, k in zip(groups, keep, strict=True) if k]
    boot = group_bootstrap(d, g, tie_tolerance=tie_tolerance, alpha=alpha, samples=samples, seed=seed, name=name)
    return SliceStats(n=len(d), sign=sign_test(d, tie_tolerance), win_rate=boot.win_rate)


def slices(diffs: Sequence[float], groups: Sequence[str], labels: Sequence[str], *, tie_tolerance: float,
           alpha: float, samples: int, seed: int) -> dict[str, SliceStats]:
    """`slice_stats` for each distinct label (e.g. pair source), in sorted label order."""
    return {
        label: slice_stats(diffs, groups, [x == label for x in labels], name=f"slice:{label}",
                           tie_tolerance=tie_tolerance, alpha=alpha, samples=samples, seed=seed)
        for label in sorted(set(labels))
    }


def length_control(diffs: Sequence[float], groups: Sequence[str], chosen_lengths: Sequence[int],
                   rejected_lengths: Sequence[int], *, tie_tolerance: float, alpha: float, samples: int,
                   seed: int) -> LengthControl:
    """The win rate where the chosen text is not longer, and Spearman's rho of d with the length difference."""
    chosen = np.asarray(chosen_lengths, dtype=float)
    rejected = np.asarray(rejected_lengths, dtype=float)
    not_longer = slice_stats(diffs, groups, chosen <= rejected, name="length:not-longer", tie_tolerance=tie_tolerance,
                             alpha=alpha, samples=samples, seed=seed)
    delta = chosen - rejected
    d = np.asarray(diffs, dtype=float)
    if len(d) < 3 or np.ptp(delta) == 0 or np.ptp(d) == 0:
        rho, p = math.nan, math.nan
    else:
        result = scipy_stats.spearmanr(d, delta)
        rho, p = float(result.statistic), float(result.pvalue)
    return LengthControl(not_longer=not_longer, correlation=rho, correlation_p=p)
