"""`GateSettings`: every knob of the offline gate, with its default and why.

Loaded with `settings.section(GateSettings)`: the `[evaluator]` table of prefloop.toml,
then `PREFLOOP_EVALUATOR_<FIELD>` environment variables (e.g. `PREFLOOP_EVALUATOR_MIN_PAIRS=100`).
`prefloop eval` flags override both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from prefloop.setting_fields import check_fields, setting


@dataclass
class GateSettings:
    SECTION: ClassVar[str] = "evaluator"

    # --- the decision ---
    min_pairs: int = setting(
        50, ge=1,
        help="Fewest held-out pairs a decision needs; below it the verdict is REJECT `inconclusive` (a win over a "
             "handful of pairs says nothing).")
    min_improvement: float = setting(
        0.0, ge=0, lt=0.5,
        help="The win rate's lower confidence bound must exceed 0.5 + this. 0 asks only that the candidate be "
             "significantly better than the baseline; 0.05 asks for at least 55% wins.")
    alpha: float = setting(
        0.05, gt=0, lt=0.5,
        help="One-sided significance level of the sign test and of every bootstrap bound (a 95% lower bound at 0.05).")
    min_slice_pairs: int = setting(
        20, ge=1,
        help="Fewest pairs a slice (one pair source, or the pairs whose chosen text is not longer) needs before it "
             "can fail the gate; smaller slices are reported only.")
    tie_tolerance: float = setting(
        1e-4, ge=0,
        help="|s_C - s_B| at or below this (nats) is a tie and dropped from the sign test: a reference log-prob "
             "read from the trainer's cache was computed in other batches, so an unchanged model differs in the "
             "last bits.")
    bootstrap_samples: int = setting(
        2000, ge=100,
        help="Bootstrap resamples (by prompt group) behind each confidence bound.")
    seed: int = setting(0, help="Seed of the bootstrap's numpy Generator: the same scores give the same bounds.")

    # --- guardrails on generated text ---
    guardrail_prompts: int = setting(
        32, ge=0,
        help="Held-out prompts answered greedily by the candidate and the baseline to compare their outputs; "
             "0 turns the guardrails off.")
    max_new_tokens: int = setting(64, ge=1, help="Longest greedy answer per guardrail prompt, in tokens.")
    empty_margin: float = setting(
        0.05, ge=0, le=1,
        help="The candidate fails when its share of empty answers exceeds the baseline's by more than this.")
    repeat_margin: float = setting(
        0.10, ge=0, le=1,
        help="The candidate fails when its share of repeated token 3-grams exceeds the baseline's by more than this.")
    min_length_ratio: float = setting(
        0.5, gt=0, le=1,
        help="The candidate fails when its mean answer length over the baseline's is below this.")
    max_length_ratio: float = setting(
        2.0, ge=1,
        help="The candidate fails when its mean answer length over the baseline's is above this.")

    # --- the held-out set ---
    max_pairs: int = setting(
        2000, ge=1,
        help="Most held-out pairs scored: the snapshot's own held-out pairs, then earlier held-out pairs, newest first.")

    # --- efficiency ---
    batch_size: int = setting(
        16, ge=1,
        help="Pairs per forward pass when scoring (no gradients, pairs sorted by length so a batch pads little).")
    generation_batch_size: int = setting(16, ge=1, help="Prompts per batch when generating guardrail answers.")
    device: str = setting(
        "auto", choices=("auto", "cpu", "cuda"),
        help="`cuda`, `cpu` or `auto` (CUDA when available). bf16 is used only on CUDA; CPU scores in fp32.")
    cpu_threads: int = setting(
        0, ge=0,
        help="torch intra-op threads on CPU; 0 keeps torch's default (one per core).")

    # --- service ---
    consumer_group: str = setting("prefloop-evaluator", help="Kafka consumer group of the evaluator service.")
    max_evaluation_s: float = setting(
        3600.0, gt=0,
        help="Longest one evaluation may hold the service's Kafka consumer; past it Kafka hands the partition to "
             "another member (Kafka's max.poll.interval.ms).")
    publish_timeout_s: float = setting(
        30.0, gt=0,
        help="How long publishing a decision on Kafka may take before it is reported as failed.")

    def __post_init__(self) -> None:
        check_fields(self)

    def replace(self, **overrides: Any) -> "GateSettings":
        """A copy with the given fields changed (None values are ignored), validated again."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_gate_settings(settings: Any, **overrides: Any) -> GateSettings:
    """`GateSettings` from prefloop's settings object (file `[evaluator]` + env), then `overrides`."""
    return settings.section(GateSettings).replace(**overrides)
