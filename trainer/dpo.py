"""TRL's DPOTrainer configured for prefloop, with reference log-probs served from the on-disk cache.

TRL 1.16 consumes precomputed reference log-probs through `precompute_ref_log_probs=True`: its
`__init__` calls `_precompute_ref_logps(dataset, name, batch_size)` on the tokenized train and eval
sets, which must return them with `ref_chosen_logps` / `ref_rejected_logps` columns; the collator
carries the columns into each batch and `_compute_loss` uses them instead of a reference forward.
`CachedReferenceDPOTrainer` (trainer/compat_trl.py, the patch of TRL's internals) overrides only that
step: it looks each pair_id up in `RefLogpCache`, runs TRL's own `compute_ref_log_probs` (base model,
adapters disabled, no grad) on the misses alone, stores them, and adds the columns. The DPO loss,
tokenization and collation stay TRL's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from peft import LoraConfig
from transformers import TrainerCallback
from trl import DPOConfig

from trainer.devices import use_bf16
from trainer.settings import TrainerSettings


@contextlib.contextmanager
def attention_backends(settings: TrainerSettings) -> Iterator[None]:
    """The SDPA backends training may use: all but cuDNN's unless `cudnn_attention` (see the setting)."""
    if settings.cudnn_attention:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield


def build_lora_config(settings: TrainerSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_dpo_config(settings: TrainerSettings, output_dir: Path, device: str, gradient_checkpointing: bool) -> DPOConfig:
    """DPOConfig from our settings; every field that differs from TRL's default is set on purpose.
    `gradient_checkpointing` is the run's choice (trainer/memory.py), not the setting's raw value."""
    return DPOConfig(
        output_dir=str(output_dir),
        # Optimisation
        learning_rate=settings.learning_rate,  # TRL's 1e-6 is for full fine-tuning; LoRA needs ~1e-4
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.ref_batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        beta=settings.beta,
        loss_type=list(settings.loss_type),
        loss_weights=list(settings.loss_weights) or None,
        max_length=settings.max_length,
        seed=settings.seed,
        data_seed=settings.seed,
        # Device: bf16 only where it works; CPU runs fp32 and says so explicitly
        bf16=use_bf16(device),
        fp16=False,
        use_cpu=device == "cpu",
        # Memory and padding
        gradient_checkpointing=gradient_checkpointing,  # TRL defaults to True; prefloop chooses per run
        use_liger_kernel=settings.liger_kernel,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        length_column_name="length",
        # Keep our `pair_id` / `length` columns: the sampler reads `length`, the ref cache `pair_id`;
        # TRL's collator only reads the fields it knows.
        remove_unused_columns=False,
        # Reference log-probs come from our cache through TRL's precompute path
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=settings.ref_batch_size,
        # Output: only the final adapter; our callback prints progress
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


class SelectiveCheckpointing(TrainerCallback):
    """Keeps gradient checkpointing on the first `layers` decoder layers only. The Trainer enables it on
    every layer just before `on_train_begin`; this narrows it to the count the memory rule chose."""

    def __init__(self, layers: int) -> None:
        self.layers = layers

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from trainer.memory import checkpoint_layers

        if model is not None and args.gradient_checkpointing:
            checkpoint_layers(model, self.layers)
        return control
