"""Always-valid (sequential) confidence bounds for a mean in [0, 1], from counts alone.

The rollout controller looks at the same growing data at every check, so a fixed-sample interval
(Wald, Wilson) checked again and again crosses any threshold by chance sooner or later. A
*confidence sequence* holds at every sample size at once: P(the true mean leaves it, ever) ≤ alpha
(Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences"; Robbins' conjugate mixture). Here the mixture is the beta-binomial one:

    M_n(m) = B(a + S, b + n − S) / B(a, b)  /  (m^S (1 − m)^(n − S))

with S the sum of n observations in [0, 1]. For every true mean m, M_n(m) is a nonnegative
supermartingale with M_0 = 1 — an equality for 0/1 data, and for any data in [0, 1] because
x ↦ (q/m)^x ((1−q)/(1−m))^(1−x) is convex, so its mean is at most the 0/1 case — and Ville's
inequality bounds P(∃n: M_n(m) ≥ 1/alpha) by alpha. The confidence sequence is
{m : M_n(m) < 1/alpha}, an interval around S/n found by root finding. It needs only (S, n), so it
is computed from SQL aggregates, and it adapts to the variance (it is a Bernoulli likelihood
ratio), so rare events such as error rates get tight bounds.

Rates (errors, crashes, thumbs-up, CHOICE wins, slow responses) are means of 0/1 outcomes; a mean
rating on 1..5 is the mean of (rating − 1) / 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import betaln

# Beta(1/2, 1/2) (Jeffreys) mixing: no tuning parameter, and tighter than the uniform prior at the
# extremes where error and crash rates live.
PRIOR_A = 0.5
PRIOR_B = 0.5
_EDGE = 1e-12


@dataclass(frozen=True)
class Interval:
    """A confidence interval [lower, upper] for a mean; [0, 1] when there is no data."""

    lower: float
    upper: float

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper


def log_mixture(total: ArrayLike, count: ArrayLike, mean: float) -> np.ndarray:
    """log M_n(mean), the evidence against `mean` after `count` observations summing to `total`
    (element-wise on arrays): the confidence sequence is where it stays below log(1/alpha)."""
    total, count = np.asarray(total, dtype=float), np.asarray(count, dtype=float)
    rest = count - total
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lik = np.where(total > 0, total * np.log(mean), 0.0) + np.where(rest > 0, rest * np.log1p(-mean), 0.0)
    return betaln(PRIOR_A + total, PRIOR_B + rest) - betaln(PRIOR_A, PRIOR_B) - log_lik


def _check(total: float, count: int, alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha should be in (0, 1), got {alpha}")
    if count < 0 or not 0 <= total <= count:
        raise ValueError(f"need 0 <= total <= count, got total={total}, count={count}")


def _edge(total: float, count: int, alpha: float, upper: bool) -> float:
    """The upper (or lower) end of the confidence sequence: the root of log M_n(m) = log(1/alpha) on
    that side of the sample mean, where log M_n is convex in m and negative at the sample mean."""
    if count == 0:
        return 1.0 if upper else 0.0
    threshold = math.log(1 / alpha)
    centre = min(max(total / count, _EDGE), 1 - _EDGE)
    constant = float(betaln(PRIOR_A + total, PRIOR_B + count - total) - betaln(PRIOR_A, PRIOR_B)) - threshold
    rest = count - total

    def excess(mean: float) -> float:
        return constant - total * math.log(mean) - rest * math.log1p(-mean)

    far = 1 - _EDGE if upper else _EDGE
    if excess(far) < 0:  # no evidence can rule out the extreme (e.g. no events at all for the lower end)
        return 1.0 if upper else 0.0
    # A bracket near the sample mean (the root is about sqrt(2 log(1/alpha) / n) away), widened
    # towards the extreme until it holds the root: fewer iterations than bracketing all of [0, 1].
    step = 2 * math.sqrt((threshold + math.log(count + 1)) / count)
    near = centre + step if upper else centre - step
    while (near < far if upper else near > far) and excess(near) < 0:
        near = (near + far) / 2
    if upper:
        near = min(near, far)
        return brentq(excess, centre, near, xtol=1e-8)
    near = max(near, far)
    return brentq(excess, near, centre, xtol=1e-8)


def mean_upper(total: float, count: int, alpha: float) -> float:
    """Upper end of the (1 − alpha) confidence sequence for the mean of `count` observations in [0, 1]
    summing to `total`."""
    _check(total, count, alpha)
    return _edge(total, count, alpha, upper=True)


def mean_lower(total: float, count: int, alpha: float) -> float:
    """Lower end of the (1 − alpha) confidence sequence (see `mean_upper`)."""
    _check(total, count, alpha)
    return _edge(total, count, alpha, upper=False)


def mean_cs(total: float, count: int, alpha: float) -> Interval:
    """The time-uniform (1 − alpha) confidence sequence for the mean of `count` observations in [0, 1]
    summing to `total`, at this sample size: P(the mean leaves it at any sample size) ≤ alpha."""
    return Interval(mean_lower(total, count, alpha), mean_upper(total, count, alpha))


def rate_bound(events: int, trials: int, alpha: float, upper: bool) -> float:
    """One end of the confidence sequence for a rate: `events` of `trials` 0/1 outcomes."""
    return mean_upper(float(events), trials, alpha) if upper else mean_lower(float(events), trials, alpha)


def rating_bound(rating_sum: float, ratings: int, alpha: float, upper: bool, low: float = 1.0,
                 high: float = 5.0) -> float:
    """One end of the confidence sequence for a mean rating on [low, high] (rescaled to [0, 1] and back)."""
    scaled = (rating_sum - low * ratings) / (high - low)
    edge = mean_upper(scaled, ratings, alpha) if upper else mean_lower(scaled, ratings, alpha)
    return low + (high - low) * edge
