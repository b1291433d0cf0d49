"""TRL's DPOTrainer configured for prefloop, with reference log-probs served from the on-disk cache.

TRL 1.16 consumes precomputed reference log-probs through `precompute_ref_log_probs=True`: its
`__init__` calls `_precompute_ref_logps(dataset, name, batch_size)` on the tokenized train and eval
sets, which must return them with `ref_chosen_logps` / `ref_rejected_logps` columns; the collator
carries the columns into each batch and `_compute_loss` uses them instead of a reference forward.
`CachedReferenceDPOTrainer` overrides only that step: it looks each pair_id up in `RefLogpCache`,
runs TRL's own `compute_ref_log_probs` (base model, adapters disabled, no grad) on the misses alone,
stores them, and adds the columns. The DPO loss, tokenization and collation stay TRL's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import trl.trainer.dpo_trainer as trl_dpo_trainer
from datasets import Dataset
from peft import LoraConfig
from torch.utils.data import DataLoader
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer

from trainer.ref_cache import RefLogpCache
from trainer.settings import TrainerSettings


@dataclass
class RefStats:
    """Counts of unique pairs whose reference log-probs were computed (`forward_pairs`) or read from
    the cache (`cache_hits`), per dataset name (train / eval)."""

    forward_pairs: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from trainer.errors import TrainerError

        raise TrainerError("device cuda was requested but torch sees no CUDA device; use --device cpu or auto")
    return requested


@contextlib.contextmanager
def attention_backends(settings: TrainerSettings) -> Iterator[None]:
    """The SDPA backends training may use: all but cuDNN's unless `cudnn_attention` (see the setting)."""
    if settings.cudnn_attention:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        yield


def use_bf16(device: str) -> bool:
    """bf16 only on a CUDA device that supports it; CPU trains in fp32 (TRL's bf16 default fails there)."""
    return device == "cuda" and torch.cuda.is_bf16_supported()


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


@contextlib.contextmanager
def _reference_revision_as_model_hash(revision: str) -> Iterator[None]:
    """With `precompute_ref_log_probs`, TRL's `__init__` hashes every weight (copied to the CPU, widened to
    fp32, sha256) to key its own precompute cache. Our `_precompute_ref_logps` replaces that cache and
    keys it by the reference revision, so the hash is pure cost: ~20 s of a 1.7B model's start on an
    H100 host. The revision stands in for it while `__init__` runs."""
    original = trl_dpo_trainer.hash_module
    trl_dpo_trainer.hash_module = lambda module: revision
    try:
        yield
    finally:
        trl_dpo_trainer.hash_module = original


class CachedReferenceDPOTrainer(DPOTrainer):
    """DPOTrainer whose precomputed reference log-probs come from (and go to) a `RefLogpCache`."""

    def __init__(self, *args, ref_cache: RefLogpCache, **kwargs) -> None:
        # Set before super().__init__, which precomputes the reference log-probs.
        self.ref_cache = ref_cache
        self.ref_stats: dict[str, RefStats] = {}
        with _reference_revision_as_model_hash(ref_cache.revision):
            super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        import time

        started = time.monotonic()
        stats = self.ref_stats.setdefault(name, RefStats())
        ids: list[str] = list(dataset["pair_id"])
        unique = list(dict.fromkeys(ids))
        known = self.ref_cache.get_many(unique)
        missing = [pid for pid in unique if pid not in known]
        stats.cache_hits += len(unique) - len(missing)
        stats.forward_pairs += len(missing)
        if missing:
            first = {}
            for index, pid in enumerate(ids):
                first.setdefault(pid, index)
            subset = dataset.select([first[pid] for pid in missing])
            computed = self._reference_forward(subset, batch_size)
            self.ref_cache.put_many(computed)
            known.update(computed)
        dataset = dataset.add_column("ref_chosen_logps", [known[pid][0] for pid in ids])
        dataset = dataset.add_column("ref_rejected_logps", [known[pid][1] for pid in ids])
        stats.seconds += time.monotonic() - started
        return dataset

    def _reference_forward(self, subset: Dataset, batch_size: int) -> dict[str, tuple[float, float]]:
        """TRL's `compute_ref_log_probs` over `subset`, longest-first batches of similar length."""
        lengths = subset["length"] if "length" in subset.column_names else [0] * len(subset)
        order = sorted(range(len(subset)), key=lambda i: -lengths[i])
        subset = subset.select(order)
        # A private generator: iterating a DataLoader draws a seed, and drawing it from the global RNG
        # would make a cold-cache run train differently from a warm one.
        loader = DataLoader(subset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
                            generator=torch.Generator())
        device = self.accelerator.device
        out: dict[str, tuple[float, float]] = {}
        pair_ids = subset["pair_id"]
        offset = 0
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            chosen, rejected = self.compute_ref_log_probs(self.model, batch)
            for c, r in zip(chosen.float().cpu().tolist(), rejected.float().cpu().tolist(), strict=True):
                out[pair_ids[offset]] = (c, r)
                offset += 1
        return out
