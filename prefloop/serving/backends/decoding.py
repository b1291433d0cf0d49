"""Per-request settings inside one `model.generate` call, through transformers' own hooks.

`generate` takes one generation config per batch; a batch here mixes requests with their own
temperature, top_p, seed, max_tokens and stop sequences. Two hooks make that work:

- `RowSampler` (a LogitsProcessor) draws each sampling row's token itself (its temperature, its
  nucleus, its seeded generator) and leaves only that token possible, so `generate` runs greedy
  (`do_sample=False`) and its argmax picks the drawn token. Greedy rows (temperature 0) pass through.
- `RowTracker` (a StoppingCriteria) hands each row its new token (`rows.Row`), streams the text
  that is safe to show and returns which rows are done; `generate` stops when all are.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria

from prefloop.serving.backends.rows import Row
from prefloop.serving.generation import SamplingParams


class RowSampler(LogitsProcessor):
    def __init__(self, params: Sequence[SamplingParams], device: torch.device) -> None:
        self.rows = [i for i, p in enumerate(params) if p.temperature > 0]
        self.temperature = torch.tensor([params[i].temperature for i in self.rows], device=device).unsqueeze(1)
        self.top_p = torch.tensor([params[i].top_p for i in self.rows], device=device).unsqueeze(1)
        self.generators = []
        for i in self.rows:
            generator = torch.Generator(device=device)
            seed = params[i].seed
            generator.manual_seed(seed if seed is not None else random.getrandbits(63))
            self.generators.append(generator)
        self.index = torch.tensor(self.rows, device=device, dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        probs = torch.softmax(scores[self.index] / self.temperature, dim=-1)
        # Nucleus: keep the most likely tokens whose cumulative probability reaches top_p (at least one).
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= self.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        drawn = torch.stack([torch.multinomial(sorted_probs[j], 1, generator=g) for j, g in enumerate(self.generators)])
        tokens = order.gather(1, drawn).squeeze(1)
        out = scores.clone()
        out[self.index] = float("-inf")
        out[self.index, tokens] = 0.0
        return out


class RowTracker(StoppingCriteria):
    def __init__(self, rows: Sequence[Row], on_text: Callable[[int, str], None]) -> None:
        self.rows = rows
        self.on_text = on_text

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()
        done = []
        for i, row in enumerate(self.rows):
            text = row.add(newest[i])
            if text:
                self.on_text(i, text)
            done.append(row.finished)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
