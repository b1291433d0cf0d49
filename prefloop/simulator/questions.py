"""The questions simulated users ask, in the product brief's five categories, tagged `category`.

The bank is finite on purpose: users asking the same question form prompt groups, which is what
THUMBS and RATING pairs need (two responses to one prompt).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from schemas.records import BRIEF_CATEGORIES as CATEGORIES

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "factual_qa": ("What is the capital of {place}?", "When was {thing} invented?", "How many legs does a {animal} have?",
                   "Who wrote the first book about {topic}?"),
    "comparison": ("Which is better for a beginner, {thing} or {other}?", "What is the difference between {thing} and {other}?",
                   "Should I choose {thing} or {other} for {topic}?"),
    "creative": ("Write a short poem about {animal}s.", "Give me a slogan for a {topic} shop.",
                 "Tell a two-line story about {place}."),
    "problem_solving": ("My {thing} stopped working. What should I check first?", "How can I save time on {topic} every week?",
                        "How do I fix a slow {thing}?"),
    "explanation": ("Explain {topic} to a child.", "Why does {thing} need electricity?", "How does {topic} work?"),
}
_FILL = {
    "place": ("France", "Japan", "Kenya", "Peru", "Norway"),
    "thing": ("the bicycle", "a laptop", "the printer", "a phone", "the radio"),
    "other": ("a tablet", "a scooter", "the desktop", "a camera"),
    "animal": ("cat", "spider", "horse", "bird"),
    "topic": ("gardening", "cooking", "budgeting", "music", "travel"),
}


@dataclass(frozen=True)
class Question:
    text: str
    category: str


def question_bank(size_per_category: int = 12, seed: int = 0) -> list[Question]:
    """A fixed list of distinct questions, `size_per_category` per category, in a seeded order."""
    rng = random.Random(seed)
    bank: list[Question] = []
    for category in CATEGORIES:
        seen: set[str] = set()
        attempts = 0
        while len(seen) < size_per_category and attempts < 10_000:
            attempts += 1
            template = rng.choice(_TEMPLATES[category])
            text = template.format(**{k: rng.choice(v) for k, v in _FILL.items()})
            if text not in seen:
                seen.add(text)
                bank.append(Question(text, category))
    return bank
