"""Guardrails on generated text: the candidate C and the baseline B answer the same held-out prompts
greedily, and C is compared with B (not with absolute thresholds, so a weak base model does not block
its own improvement).

Per side: the share of empty answers (no token, or only whitespace), the share of repeated token
3-grams (3-grams that occur again within the same answer, over all 3-grams: tokens, not words, so a
degenerate answer repeating one sub-word without spaces is caught), and the mean answer length in
tokens (up to the end-of-sequence token). The gate fails C when
its empty share exceeds B's by more than `empty_margin`, its repeated share exceeds B's by more than
`repeat_margin`, or its mean length over B's leaves [min_length_ratio, max_length_ratio] (not checked
when B answers nothing at all: the ratio has no meaning there).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evaluator.gate.scoring import BASELINE, CANDIDATE, Progress

if TYPE_CHECKING:
    from evaluator.gate.scoring import GateModels


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: tuple[int, ...]  # generated token ids, up to (not including) the end-of-sequence token


@dataclass(frozen=True)
class TextStats:
    answers: int
    empty_rate: float
    repeat_rate: float  # repeated token 3-grams / all token 3-grams, pooled over answers
    mean_length: float  # tokens per answer


@dataclass(frozen=True)
class GuardrailMetrics:
    candidate: TextStats
    baseline: TextStats

    @property
    def length_ratio(self) -> float:
        """Mean answer length of C over B's; NaN when B's answers are all empty."""
        if self.baseline.mean_length == 0:
            return math.nan
        return self.candidate.mean_length / self.baseline.mean_length


def text_stats(answers: Sequence[Answer]) -> TextStats:
    if not answers:
        return TextStats(answers=0, empty_rate=math.nan, repeat_rate=math.nan, mean_length=math.nan)
    empty = 0
    grams = 0
    repeated = 0
    tokens_total = 0
    for answer in answers:
        tokens = answer.tokens
        empty += not tokens or not answer.text.strip()
        tokens_total += len(tokens)
        counts = Counter(zip(tokens, tokens[1:], tokens[2:]))
        grams += sum(counts.values())
        repeated += sum(c - 1 for c in counts.values())
    return TextStats(answers=len(answers), empty_rate=empty / len(answers), repeat_rate=repeated / grams if grams else 0.0,
                     mean_length=tokens_total / len(answers))


def guardrail_prompts(prompts: Sequence[str], count: int) -> list[str]:
    """The first `count` distinct prompts, in held-out order (newest first)."""
    return list(dict.fromkeys(prompts))[:count]


def generate(models: "GateModels", prompts: Sequence[str], side: str, *, max_new_tokens: int, batch_size: int,
             progress: Progress | None = None) -> list[Answer]:
    """Greedy answers of `side` (candidate or baseline) to `prompts`, in the format the candidate trained on."""
    import torch
    from transformers import GenerationConfig

    tokenizer = models.tokenizer
    if models.conversational:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts]
    else:
        texts = list(prompts)
    eos = models.trainer.model.generation_config.eos_token_id
    eos = eos if eos is not None else tokenizer.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos])
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=eos)
    device = models.trainer.accelerator.device
    answers: list[Answer] = []
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues at the right end of every row
    try:
        with torch.no_grad(), models.using(side) as model:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not models.conversational)
                enc = {k: v.to(device) for k, v in enc.items()}
                out = model.generate(**enc, generation_config=config)
                for row in out[:, enc["input_ids"].shape[1]:].tolist():
                    end = next((i for i, t in enumerate(row) if t in stop), len(row))
                    answers.append(Answer(tokenizer.decode(row[:end], skip_special_tokens=True), tuple(row[:end])))
                if progress:
                    progress(len(answers), len(texts))
    finally:
        tokenizer.padding_side = padding_side
    return answers


def measure(models: "GateModels", prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
            progress: Progress | None = None) -> tuple[GuardrailMetrics, dict[str, list[Answer]]]:
    """Both sides' answers to `prompts` and their statistics."""
    total = 2 * len(prompts)
    answers: dict[str, list[Answer]] = {}
    for offset, side in ((0, CANDIDATE), (len(prompts), BASELINE)):
        report = (lambda done, _all, o=offset: progress(o + done, total)) if progress else None
        answers[side] = generate(models, prompts, side, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=report)
    return GuardrailMetrics(candidate=text_stats(answers[CANDIDATE]), baseline=text_stats(answers[BASELINE])), answers
