"""Synthetic preference data for gate tests: pairs that turn on many independent features.

Each pair's two replies differ in `per_pair` of `len(FEATURES)` independent word features: the chosen
reply carries the preferred word of each, the rejected one the other word. A candidate that learned
the true preferences wins on every feature; one trained on coin-flip labels learns, per feature, a
direction set by chance, and a held-out set spread over many features averages those chances out
instead of lining up on one. Preferred and other words are of equal length, so length carries no signal.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# (preferred, other): same number of characters, so the replies of a pair are equally long.
FEATURES = (
    ("calm", "rude"), ("clear", "vague"), ("kind", "mean"), ("exact", "fuzzy"), ("brief", "messy"),
    ("tidy", "lazy"), ("warm", "cold"), ("safe", "risk"), ("true", "fake"), ("fair", "bias"),
    ("glad", "sour"), ("sure", "iffy"), ("neat", "ugly"), ("wise", "dumb"), ("open", "shut"),
    ("fresh", "stale"), ("solid", "shaky"), ("happy", "grump"), ("smart", "silly"), ("quick", "inert"),
    ("polite", "snappy"), ("honest", "sneaky"), ("useful", "futile"), ("gentle", "brutal"),
)
TOPICS = ("the weather", "my order", "the train", "a recipe", "the code", "the budget", "a poem", "the meeting",
          "the report", "a bug", "the garden", "the car", "a song", "the trip", "the bill", "the exam")
ASKS = ("Can you help with", "What about", "Tell me about", "How do I fix", "Explain", "Any news on")
SOURCES = ("EDIT", "CHOICE", "THUMBS", "RATING")


def feature_pairs(n: int, seed: int = 0, *, labels: str = "true", per_pair: int = 2, tag: str = "",
                  pairs_per_prompt: int = 2) -> list[dict]:
    """`n` pairs; `labels` is "true" (chosen = preferred words), "flipped" (always the other way) or
    "coin" (each pair's direction by a fair coin). Up to `pairs_per_prompt` pairs share a prompt."""
    rng = random.Random(seed)
    pairs: list[dict] = []
    prompt = ""
    for i in range(n):
        if i % pairs_per_prompt == 0:
            prompt = f"Note {tag}{i}: {rng.choice(ASKS)} {rng.choice(TOPICS)}?\nAnswer:"
        chosen_feats = rng.sample(range(len(FEATURES)), per_pair)
        good = " " + " and ".join(FEATURES[k][0] for k in chosen_feats) + "."
        bad = " " + " and ".join(FEATURES[k][1] for k in chosen_feats) + "."
        flip = labels == "flipped" or (labels == "coin" and rng.random() < 0.5)
        chosen, rejected = (bad, good) if flip else (good, bad)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": SOURCES[i % len(SOURCES)]})
    return pairs


def length_pairs(n: int, seed: int = 0, *, longer_share: float = 0.75, tag: str = "") -> list[dict]:
    """Pairs whose chosen reply is the longer one in `longer_share` of them: chosen = the other reply
    plus a polite tail; in the rest the rejected reply carries the tail."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = f"Ask {tag}{i}: {rng.choice(ASKS)} {rng.choice(TOPICS)}?\nAnswer:"
        k = rng.randrange(len(FEATURES))
        short = f" {FEATURES[k][0]}."
        long = f" {FEATURES[k][0]}, and thank you so much for asking, have a lovely day."
        chosen, rejected = (long, short) if rng.random() < longer_share else (short, long)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": SOURCES[i % len(SOURCES)]})
    return pairs


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows (dicts, or raw strings for deliberately bad lines) as a JSON-lines file."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
