"""Bradley–Terry ratings of model versions from pairwise battles, with bootstrap confidence intervals.

The statistics of FastChat's arena (`fastchat/serve/monitor/elo_analysis.py`, `rating_systems.py`):
each version has a strength θ; version i beats j with probability σ(θ_i − θ_j). The ratings are
the maximum of the likelihood of every battle, shown on the Elo scale (1,000 + 400 · log10 of the
odds). A tie counts as half a win for each side. Confidence intervals come from refitting on
battles resampled with replacement (the bootstrap) and taking percentiles, widened where needed
to the normal (Laplace) interval from the fit's curvature: a bootstrap of a handful of battles
cannot vary (one battle resampled is always that battle), so alone it would show a version with
one vote as known to the point.

One difference from FastChat's unpenalised fit: a weak Gaussian prior on θ (`prior_sd`, in rating
points). Without it, a version that won every one of its battles — common with a handful of votes —
has an infinite maximum-likelihood rating; with it, the rating stays finite and the prior's pull
fades as battles accumulate (a 400-point sd changes a 300-battle rating by well under a point).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import norm

SCALE = 400.0  # rating points per factor of 10 in the odds (Elo's scale)
INIT = 1000.0  # the mean rating
POINTS_PER_NAT = SCALE / math.log(10.0)


@dataclass(frozen=True)
class Outcome:
    """Battles between two versions with one result, `count` times: score 1 = `a` won, 0 = `b` won, 0.5 = tie."""

    a: str
    b: str
    score: float
    count: int = 1

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise ValueError(f"a battle needs two different versions, got {self.a!r} twice")
        if self.score not in (0.0, 0.5, 1.0):
            raise ValueError(f"score should be 1 (a won), 0 (b won) or 0.5 (tie), got {self.score!r}")
        if self.count < 1:
            raise ValueError(f"count should be at least 1, got {self.count}")


@dataclass(frozen=True)
class Rating:
    version: str
    rating: float
    lower: float  # bootstrap interval at the requested confidence
    upper: float
    battles: int
    wins: float  # ties count half
    losses: float


@dataclass(frozen=True)
class WinMatrix:
    """`fraction[i][j]`: share of the battles between versions[i] and versions[j] that i won (NaN: none);
    `battles[i][j]`: how many there were."""

    versions: list[str]
    fraction: np.ndarray
    battles: np.ndarray


@dataclass(frozen=True)
class _Table:
    """Outcomes as arrays over version indices (one row per distinct outcome)."""

    versions: list[str]
    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    count: np.ndarray


def _table(outcomes: Iterable[Outcome]) -> _Table:
    rows = list(outcomes)
    versions = sorted({o.a for o in rows} | {o.b for o in rows})
    index = {v: i for i, v in enumerate(versions)}
    return _Table(
        versions,
        np.array([index[o.a] for o in rows], dtype=np.int64),
        np.array([index[o.b] for o in rows], dtype=np.int64),
        np.array([o.score for o in rows], dtype=np.float64),
        np.array([o.count for o in rows], dtype=np.float64),
    )


def prior_precision(prior_sd: float | None) -> float:
    """The L2 weight on θ (natural-log odds) of a Gaussian prior with sd `prior_sd` rating points; 0 for none."""
    if prior_sd is None or math.isinf(prior_sd):
        return 0.0
    if prior_sd <= 0:
        raise ValueError(f"prior_sd should be greater than zero, got {prior_sd}")
    return 1.0 / (prior_sd / POINTS_PER_NAT) ** 2


def _loss(theta: np.ndarray, design: np.ndarray, wins_a: np.ndarray, wins_b: np.ndarray, precision: float) -> np.ndarray:
    d = theta @ design.T
    # -log σ(d) = log(1 + e^-d), computed without overflow.
    return (np.sum(wins_a * np.logaddexp(0.0, -d) + wins_b * np.logaddexp(0.0, d), axis=1)
            + 0.5 * precision * np.sum(theta * theta, axis=1))


def _fit(n: int, a: np.ndarray, b: np.ndarray, wins_a: np.ndarray, wins_b: np.ndarray, precision: float,
         max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    """θ maximising Σ [wins_a·log σ(θa−θb) + wins_b·log σ(θb−θa)] − precision/2·|θ|², centred on 0, for every
    row of `wins_a`/`wins_b` (shape (rounds, outcomes)) at once: Newton's method with step halving, batched
    over the bootstrap's rounds (a scipy minimize per round took ~80 ms; all rounds together take a few).

    The likelihood only sees differences, so the Hessian is singular along the common shift; adding
    11ᵀ/n fixes that direction without changing the step in any other (the gradient of a centred θ
    sums to zero), and θ is re-centred after each step so the mean rating stays INIT."""
    rounds, m = wins_a.shape
    design = np.zeros((m, n))
    design[np.arange(m), a] += 1.0
    design[np.arange(m), b] -= 1.0
    total = wins_a + wins_b
    fixed = precision * np.eye(n) + np.ones((n, n)) / n
    theta = np.zeros((rounds, n))
    loss = _loss(theta, design, wins_a, wins_b, precision)
    for _ in range(max_iter):
        p = expit(theta @ design.T)
        grad = (total * p - wins_a) @ design + precision * theta
        if np.abs(grad).max() < tol:
            break
        hessian = np.einsum("rk,ki,kj->rij", total * p * (1.0 - p), design, design) + fixed
        step = np.linalg.solve(hessian, grad[..., None])[..., 0]
        scale = np.ones(rounds)
        for _ in range(40):  # halve the step of each round whose loss would rise
            candidate = theta - scale[:, None] * step
            candidate -= candidate.mean(axis=1, keepdims=True)
            new_loss = _loss(candidate, design, wins_a, wins_b, precision)
            worse = new_loss > loss + 1e-12 * np.abs(loss)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        theta, loss = candidate, new_loss
    return theta


def _fit_table(t: _Table, weights: np.ndarray, precision: float) -> np.ndarray:
    """θ for one weighting of the outcomes (shape (outcomes,)) or many (shape (rounds, outcomes))."""
    batch = np.atleast_2d(weights)
    theta = _fit(len(t.versions), t.a, t.b, batch * t.score, batch * (1.0 - t.score), precision)
    return theta if weights.ndim == 2 else theta[0]


def laplace_sd(t: _Table, theta: np.ndarray, precision: float) -> np.ndarray:
    """Each centred rating's standard deviation (rating points) from the inverse curvature of the penalised
    negative log-likelihood at its optimum (the normal approximation of the posterior)."""
    n = len(t.versions)
    p = expit(theta[t.a] - theta[t.b])
    w = t.count * p * (1.0 - p)
    hessian = precision * np.eye(n)
    np.add.at(hessian, (t.a, t.a), w)
    np.add.at(hessian, (t.b, t.b), w)
    np.add.at(hessian, (t.a, t.b), -w)
    np.add.at(hessian, (t.b, t.a), -w)
    centre = np.eye(n) - 1.0 / n
    # pinv: without a prior the likelihood is flat along the common shift; centring removes that direction.
    covariance = centre @ np.linalg.pinv(hessian) @ centre.T
    return POINTS_PER_NAT * np.sqrt(np.clip(np.diag(covariance), 0.0, None))


def to_points(theta: np.ndarray) -> np.ndarray:
    return INIT + POINTS_PER_NAT * theta


def fit_ratings(outcomes: Sequence[Outcome], prior_sd: float | None = SCALE) -> dict[str, float]:
    """Each version's Bradley–Terry rating (mean 1,000) from the battles; `prior_sd=None` fits without a prior."""
    t = _table(outcomes)
    if not t.versions:
        return {}
    points = to_points(_fit_table(t, t.count, prior_precision(prior_sd)))
    return dict(zip(t.versions, points.tolist()))


def bootstrap_ratings(outcomes: Sequence[Outcome], rounds: int, seed: int = 0,
                      prior_sd: float | None = SCALE) -> tuple[list[str], np.ndarray]:
    """Ratings refitted on `rounds` resamples of the battles (with replacement, the same total): an array
    of shape (rounds, versions). A resample draws every battle independently, so each distinct outcome's
    count is multinomial over the observed shares, as FastChat resamples."""
    if rounds < 1:
        raise ValueError(f"rounds should be at least 1, got {rounds}")
    t = _table(outcomes)
    if not t.versions:
        return [], np.zeros((rounds, 0))
    total = int(t.count.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, t.count / total, size=rounds).astype(np.float64)
    samples = to_points(_fit_table(t, draws, prior_precision(prior_sd)))
    return t.versions, samples


def leaderboard(outcomes: Sequence[Outcome], rounds: int = 200, confidence: float = 0.95, seed: int = 0,
                prior_sd: float | None = SCALE) -> list[Rating]:
    """Every version that fought a battle: rating, bootstrap interval, battles, wins and losses; best first."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence should be in (0, 1), got {confidence}")
    t = _table(outcomes)
    if not t.versions:
        return []
    precision = prior_precision(prior_sd)
    theta = _fit_table(t, t.count, precision)
    point = dict(zip(t.versions, to_points(theta).tolist()))
    versions, samples = bootstrap_ratings(outcomes, rounds, seed, prior_sd)
    tail = (1.0 - confidence) / 2 * 100
    half = norm.ppf(1.0 - (1.0 - confidence) / 2) * laplace_sd(t, theta, precision)
    centre = to_points(theta)
    lower = np.minimum(np.percentile(samples, tail, axis=0), centre - half)
    upper = np.maximum(np.percentile(samples, 100 - tail, axis=0), centre + half)
    battles = {v: 0 for v in versions}
    wins = {v: 0.0 for v in versions}
    for o in outcomes:
        battles[o.a] += o.count
        battles[o.b] += o.count
        wins[o.a] += o.score * o.count
        wins[o.b] += (1.0 - o.score) * o.count
    rows = [Rating(v, point[v], float(lower[i]), float(upper[i]), battles[v], wins[v], battles[v] - wins[v])
            for i, v in enumerate(versions)]
    return sorted(rows, key=lambda r: (-r.rating, r.version))


def win_matrix(outcomes: Sequence[Outcome], order: Sequence[str] | None = None) -> WinMatrix:
    """The pairwise win-fraction matrix (ties count half), rows and columns in `order` (default: sorted)."""
    t = _table(outcomes)
    versions = list(order) if order is not None else t.versions
    index = {v: i for i, v in enumerate(versions)}
    won = np.zeros((len(versions), len(versions)))
    fought = np.zeros((len(versions), len(versions)))
    for o in outcomes:
        i, j = index[o.a], index[o.b]
        won[i, j] += o.score * o.count
        won[j, i] += (1.0 - o.score) * o.count
        fought[i, j] += o.count
        fought[j, i] += o.count
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(fought > 0, won / np.where(fought > 0, fought, 1), np.nan)
    return WinMatrix(versions, fraction, fought.astype(np.int64))


__all__ = ["Outcome", "Rating", "WinMatrix", "fit_ratings", "bootstrap_ratings", "leaderboard", "win_matrix",
           "prior_precision", "laplace_sd", "SCALE", "INIT"]
