"""Synthetic preference data with a learnable rule, for trainer tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ("the weather", "my order", "the train", "a recipe", "the code", "the budget", "a poem", "the meeting",
          "the report", "a bug", "the garden", "the car", "a song", "the trip", "the bill", "the exam")
ASKS = ("Can you help with", "What about", "Tell me about", "How do I fix", "Explain", "Any news on")


def polite_pairs(n: int, seed: int = 0, shuffle_labels: bool = False, tag: str = "") -> list[dict]:
    """Pairs whose chosen reply is the polite one ("... please, thank you.") and rejected the rude
    one ("... whatever."); with `shuffle_labels` each pair's chosen/rejected are swapped by a coin."""
    rng = random.Random(seed)
    pairs = []
    seen = set()
    while len(pairs) < n:
        topic, ask = rng.choice(TOPICS), rng.choice(ASKS)
        number = rng.randrange(10_000)
        prompt = f"Question {tag}{number}: {ask} {topic}?\nAnswer:"
        if prompt in seen:
            continue
        seen.add(prompt)
        polite = f" Sure, here is {topic}, please, thank you."
        rude = f" No, {topic}, whatever."
        chosen, rejected = (polite, rude)
        if shuffle_labels and rng.random() < 0.5:
            chosen, rejected = rejected, chosen
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows (dicts, or raw strings for deliberately bad lines) as a JSON-lines file."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# Fast, learnable settings for the tiny model (seconds per run on 2 CPU cores).
TINY = dict(
    base_model="tiny", max_length=48, batch_size=8, max_steps=30, learning_rate=5e-3, heldout_fraction=0.25,
    progress=False, cpu_threads=1, ref_batch_size=32, device="cpu",
)
