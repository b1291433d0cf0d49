"""Quality rules: a pair is dropped when its texts are empty, tiny, identical or near-identical."""

from __future__ import annotations

from dataclasses import dataclass

from streams.pairing.text import normalise, similarity_at_least

EMPTY = "empty"
TINY = "tiny"
IDENTICAL = "identical"
NEAR_DUPLICATE = "near_duplicate"
REASONS = (EMPTY, TINY, IDENTICAL, NEAR_DUPLICATE)


@dataclass(frozen=True)
class QualityRules:
    min_chars: int = 2
    similarity_threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise ValueError(f'"min_chars" should be zero or more, got {self.min_chars}')
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ValueError(f'"similarity_threshold" should be in (0, 1], got {self.similarity_threshold}')

    def check(self, chosen: str, rejected: str) -> str | None:
        """The reason to drop the pair, or None when it passes."""
        a, b = chosen.strip(), rejected.strip()
        if not a or not b:
            return EMPTY
        if len(a) < self.min_chars or len(b) < self.min_chars:
            return TINY
        na, nb = normalise(a), normalise(b)
        if na == nb:
            return IDENTICAL
        if similarity_at_least(na, nb, self.similarity_threshold):
            return NEAR_DUPLICATE
        return None
