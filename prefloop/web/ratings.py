"""Bradley–Terry ratings of model versions from pairwise battles, with bootstrap confidence intervals.

The statistics of FastChat's arena (`fastchat/serve/monitor/elo_analysis.py`, `rating_systems.py`):
each version has a strength θ; version i beats j with probability σ(θ_i − θ_j). The ratings are
the maximum of the likelihood of every battle, shown on the Elo scale (1,000 + 400 · log10 of the
odds). A tie counts as half a win for each side. Confidence intervals come from refitting on
battles resampled with replacement (the bootstrap) and taking percentiles.

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
from scipy.optimize import minimize
from scipy.special import expit

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


def _fit(n: int, a: np.ndarray, b: np.ndarray, wins_a: np.ndarray, wins_b: np.ndarray, precision: float) -> np.ndarray:
    """θ maximising Σ [wins_a·log σ(θa−θb) + wins_b·log σ(θb−θa)] − precision/2·|θ|², centred on 0."""

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[a] - theta[b]
        # -log σ(d) = log(1 + e^-d), computed without overflow.
        loss = float(np.sum(wins_a * np.logaddexp(0.0, -d) + wins_b * np.logaddexp(0.0, d)))
        g_d = (wins_a + wins_b) * expit(d) - wins_a
        grad = np.zeros(n)
        np.add.at(grad, a, g_d)
        np.add.at(grad, b, -g_d)
        loss += 0.5 * precision * float(theta @ theta)
        return loss, grad + precision * theta

    result = minimize(loss_and_grad, np.zeros(n), jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
    theta = result.x
    return theta - theta.mean()  # the likelihood only sees differences; centre so the mean rating is INIT


def _fit_table(t: _Table, weights: np.ndarray, precision: float) -> np.ndarray:
    return _fit(len(t.versions), t.a, t.b, weights * t.score, weights * (1.0 - t.score), precision)


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
    precision = prior_precision(prior_sd)
    samples = np.stack([to_points(_fit_table(t, w, precision)) for w in draws])
    return t.versions, samples


def leaderboard(outcomes: Sequence[Outcome], rounds: int = 200, confidence: float = 0.95, seed: int = 0,
                prior_sd: float | None = SCALE) -> list[Rating]:
    """Every version that fought a battle: rating, bootstrap interval, battles, wins and losses; best first."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence should be in (0, 1), got {confidence}")
    point = fit_ratings(outcomes, prior_sd)
    if not point:
        return []
    versions, samples = bootstrap_ratings(outcomes, rounds, seed, prior_sd)
    tail = (1.0 - confidence) / 2 * 100
    lower = np.percentile(samples, tail, axis=0)
    upper = np.percentile(samples, 100 - tail, axis=0)
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
           "prior_precision", "SCALE", "INIT"]
