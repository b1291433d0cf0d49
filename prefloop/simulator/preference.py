"""The simulated users' hidden preference: answers that open politely and stay short.

A small model can learn it from one DPO micro-batch: the opener is a few tokens at a fixed place, and
EDIT feedback rewrites answers into exactly that form. Every judgement is a deterministic function of
the text (`score`) plus noise drawn from the caller's seeded generator, so a run's ground truth (the
true score of what each version served) can be printed beside what prefloop measured.
"""

from __future__ import annotations

import math
import random
import re

POLITE_OPENERS = ("sure", "of course", "happy to help", "certainly", "great question", "thanks for asking")
SHORT_WORDS = 20  # answers up to this many words carry no length penalty
LENGTH_STEP = 10  # then one point of utility is lost per this many words

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def opens_politely(text: str) -> bool:
    head = text.strip().lower()[:24]
    return any(head.startswith(opener) for opener in POLITE_OPENERS)


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def score(text: str) -> float:
    """The hidden utility of an answer: +1.5 for a polite opener, −1 per 10 words beyond 20, −3 if empty.
    The length term varies between a model's own answers, so A/B choices, thumbs and ratings carry it;
    the opener is taught by edits."""
    if not text.strip():
        return -3.0
    return (1.5 if opens_politely(text) else 0.0) - max(0, word_count(text) - SHORT_WORDS) / LENGTH_STEP


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def thumbs_up_probability(text: str) -> float:
    """P(thumbs up): 0.38 for a plain short answer, 0.73 for a polite short one, 0.18 for a plain one of 30 words."""
    return sigmoid(score(text) - 0.5)


def prefers_first(first: str, second: str, rng: random.Random, temperature: float = 0.5) -> bool:
    """A Bradley-Terry choice between two answers: the higher score wins more often."""
    return rng.random() < sigmoid((score(first) - score(second)) / temperature)


def thumbs_up(text: str, rng: random.Random) -> bool:
    return rng.random() < thumbs_up_probability(text)


def rating(text: str, rng: random.Random) -> int:
    """1..5 stars around 3 + 1.2 × score, with the user's noise."""
    return max(1, min(5, round(3.0 + 1.2 * score(text) + rng.gauss(0.0, 0.7))))


def edit_toward_preference(text: str) -> str:
    """What a user who edits the answer makes of it: a polite opener and its first sentence, at most
    18 words. An empty answer gets a polite placeholder."""
    body = text.strip()
    if opens_politely(body):
        body = body.split(None, 1)[1] if " " in body else ""
    first = _SENTENCE_END.split(body, maxsplit=1)[0] if body else "here is what I know"
    words = first.split()[:18]
    sentence = " ".join(words).rstrip(",;:")
    if sentence and sentence[-1] not in ".!?":
        sentence += "."
    return f"Sure! {sentence[:1].upper()}{sentence[1:]}"
