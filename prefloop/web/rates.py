"""A rate with its count and confidence interval: win rates, thumbs-up rates, shares of clear winners.

Wilson's score interval (scipy's `binomtest(...).proportion_ci(method="wilson")`): unlike the plain
Wald interval it stays inside [0, 1] and keeps its coverage at the small counts a new version has
on its first days.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    lower: float | None  # None when there were no trials
    upper: float | None

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    def text(self) -> str:
        """'62.5% [40.9%, 80.0%] (n=16)', or 'no data (n=0)'."""
        if not self.trials:
            return "no data (n=0)"
        return f"{self.value:.1%} [{self.lower:.1%}, {self.upper:.1%}] (n={self.trials})"


def rate(successes: int, trials: int, confidence: float = 0.95) -> Rate:
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Rate(0, 0, None, None)
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(successes, trials, float(ci.low), float(ci.high))


__all__ = ["Rate", "rate"]
