"""Text measures for the quality rules and the edit analytics, fast enough for the hot path.

Levenshtein distance uses Myers/Hyyrö's bit-parallel algorithm on Python integers: one pass
over the longer text, a handful of big-integer operations per character, so two 2,000-character
texts compare in a few milliseconds without a C extension.
"""

from __future__ import annotations

import re
from collections import Counter

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, whitespace-collapsed, stripped: the form the quality rules compare."""
    return _WS.sub(" ", text.strip().casefold())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return score


def normalised_distance(a: str, b: str) -> float:
    """Levenshtein distance divided by the longer length: 0 for equal texts, 1 for nothing in common."""
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def _qgram_lower_bound(a: str, b: str, q: int = 3) -> int:
    """A lower bound on levenshtein(a, b): one edit destroys at most q of a's q-grams."""
    if len(a) < q or len(b) < q:
        return abs(len(a) - len(b))
    ga = Counter(a[i:i + q] for i in range(len(a) - q + 1))
    gb = Counter(b[i:i + q] for i in range(len(b) - q + 1))
    missing = sum((ga - gb).values())
    return max(abs(len(a) - len(b)), -(-missing // q))


def similarity_at_least(a: str, b: str, threshold: float) -> bool:
    """Whether 1 - levenshtein(a, b) / max(len) >= threshold, skipping the full distance when a cheap bound decides."""
    longest = max(len(a), len(b))
    if longest == 0:
        return True
    budget = (1.0 - threshold) * longest  # most edits two "similar" texts may differ by
    if abs(len(a) - len(b)) > budget or _qgram_lower_bound(a, b) > budget:
        return False
    return levenshtein(a, b) <= budget + 1e-9
