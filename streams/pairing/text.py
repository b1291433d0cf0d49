"""Text measures for the quality rules and the edit analytics.

Levenshtein distance comes from rapidfuzz (C++): the EDIT analytics and the near-duplicate
rule compare every pair's texts on the hot path, where a Python implementation cost more
than the rest of an action's processing.
"""

from __future__ import annotations

import math

from rapidfuzz.distance import Levenshtein


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    return Levenshtein.distance(a, b)


def normalised_distance(a: str, b: str) -> float:
    """Levenshtein distance divided by the longer length: 0 for equal texts, 1 for nothing in common."""
    return Levenshtein.normalized_distance(a, b)


def similarity_at_least(a: str, b: str, threshold: float) -> bool:
    """Whether 1 - levenshtein(a, b) / max(len) >= threshold (two empty texts are identical)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return True
    # An integer edit budget, so a similarity exactly at the threshold passes whatever the
    # float rounding; score_cutoff lets rapidfuzz stop once the distance exceeds it.
    budget = math.floor((1.0 - threshold) * longest + 1e-9)
    return Levenshtein.distance(a, b, score_cutoff=budget) <= budget
