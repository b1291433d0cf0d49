"""Quality rules: a pair is dropped when its texts are empty, tiny, identical or near-identical."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import normalise_text
from streams.pairing.text import similarity_at_least
from streams.settings import StreamsSettings

EMPTY = "empty"
TINY = "tiny"
IDENTICAL = "identical"
NEAR_DUPLICATE = "near_duplicate"
REASONS = (EMPTY, TINY, IDENTICAL, NEAR_DUPLICATE)


@dataclass(frozen=True)
class QualityRules:
    """The thresholds of the quality rules; their defaults and bounds are the streams settings'."""

    min_chars: int
    similarity_threshold: float

    @classmethod
    def from_settings(cls, ss: StreamsSettings) -> "QualityRules":
        return cls(ss.min_chars, ss.similarity_threshold)

    def check(self, chosen: str, rejected: str) -> str | None:
        """The reason to drop the pair, or None when it passes."""
        a, b = chosen.strip(), rejected.strip()
        if not a or not b:
            return EMPTY
        if len(a) < self.min_chars or len(b) < self.min_chars:
            return TINY
        na, nb = normalise_text(a), normalise_text(b)
        if na == nb:
            return IDENTICAL
        if similarity_at_least(na, nb, self.similarity_threshold):
            return NEAR_DUPLICATE
        return None
