"""One DPO LoRA training job from `TrainerSettings`: snapshot → mix → TRL DPOTrainer → adapter + metrics.

    result = run_training(settings, snapshot=snap, output_dir=out, home=home, cache_dir=cache)

Every run trains a fresh LoRA adapter on the base model, so the reference (base with adapters
disabled, `ref_model=None`) is the same in every run and its log-probs are cached across runs. The
output directory receives the adapter (`adapter_config.json`, `adapter_model.safetensors`, tokenizer
files), `metrics.json` and `run.json` (settings, snapshot, base model, pair ids of the split).
Input problems (too few pairs, bad base model, taken output directory) are raised before anything
is written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from schemas import PreferencePair
from trainer.errors import TooFewPairsError, TrainerError
from trainer.fsutil import atomic_write_json
from trainer.mix import TrainingMix, build_mix
from trainer.settings import TrainerSettings
from trainer.snapshots import Snapshot
from trainer.split import HeldoutLedger

if TYPE_CHECKING:
    from trainer.memory import CheckpointingChoice

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class TrainingRun:
    output_dir: Path
    metrics: dict[str, Any]
    snapshot_id: str
    base_model: str  # the spec given (tiny, smollm2 or a path)
    base_model_dir: Path

    @property
    def numeric_metrics(self) -> dict[str, float]:
        """The metrics that are numbers (what TrainingResult.metrics and the registry's table carry)."""
        return {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainerError(f"output {output_dir} exists and is not a directory; pass a new directory with --output")
    taken = [name for name in (*ADAPTER_FILES, "metrics.json") if (output_dir / name).exists()]
    if taken:
        raise TrainerError(f"output {output_dir} already holds a trained adapter ({taken[0]}); pass a new directory with --output")


def check_mix(mix: TrainingMix, settings: TrainerSettings, snapshot: Snapshot) -> None:
    train = len(mix.unique_train)
    if train < settings.min_pairs:
        raise TooFewPairsError(
            f"snapshot {snapshot.snapshot_id} gives {train} training pairs ({len(mix.new)} new, {len(mix.replay)} replayed, "
            f"{len(mix.heldout)} held out), fewer than min_pairs={settings.min_pairs}; collect more pairs or lower min_pairs"
        )
    if len(mix.heldout) < settings.min_heldout_pairs:
        raise TooFewPairsError(
            f"snapshot {snapshot.snapshot_id} gives {len(mix.heldout)} held-out pairs, fewer than "
            f"min_heldout_pairs={settings.min_heldout_pairs}; collect more pairs or raise heldout_fraction"
        )


def plan_run(settings: TrainerSettings, snapshot: Snapshot, home: Path) -> TrainingMix:
    """The training mix of a run, validated; writes nothing."""
    mix = build_mix(snapshot, home, settings, HeldoutLedger(home).load())
    check_mix(mix, settings, snapshot)
    return mix


def to_columns(pairs: list[PreferencePair], tokenizer, conversational: bool) -> dict[str, list]:
    """TRL preference columns (`prompt`, `chosen`, `rejected`) plus `pair_id` and an approximate
    token `length` for the length-grouped sampler."""
    columns: dict[str, list] = {"pair_id": [], "prompt": [], "chosen": [], "rejected": [], "length": []}
    texts = [p.prompt + (p.chosen if len(p.chosen) >= len(p.rejected) else p.rejected) for p in pairs]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if pairs else []
    for pair, length in zip(pairs, lengths, strict=True):
        columns["pair_id"].append(pair.pair_id)
        columns["length"].append(length)
        if conversational:
            columns["prompt"].append([{"role": "user", "content": pair.prompt}])
            columns["chosen"].append([{"role": "assistant", "content": pair.chosen}])
            columns["rejected"].append([{"role": "assistant", "content": pair.rejected}])
        else:
            columns["prompt"].append(pair.prompt)
            columns["chosen"].append(pair.chosen)
            columns["rejected"].append(pair.rejected)
    return columns


def pairs_seen(steps: int, rows: int, settings: TrainerSettings) -> int:
    """Training rows consumed by `steps` optimizer steps (an epoch's last batch may be short)."""
    per_step = settings.batch_size * settings.grad_accum
    if settings.max_steps > 0:
        return steps * per_step
    return min(steps * per_step, math.ceil(rows * settings.epochs))


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def quiet_libraries() -> None:
    """No progress bars or info logs from datasets and transformers: the trainer and the gate print their own."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_training(
    settings: TrainerSettings,
    *,
    snapshot: Snapshot,
    output_dir: Path,
    home: Path,
    cache_dir: Path,
    progress_stream: IO[str] | None = None,
) -> TrainingRun:
    started = time.monotonic()
    output_dir = Path(output_dir).resolve()
    check_output_dir(output_dir)
    mix = plan_run(settings, snapshot, home)

    from trainer.base_models import load_tokenizer, resolve_base_model

    model_dir = resolve_base_model(settings.base_model, cache_dir)
    quiet_libraries()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback

    from trainer.devices import resolve_device, use_bf16
    from trainer.compat_trl import CachedReferenceDPOTrainer
    from trainer.dpo import SelectiveCheckpointing, attention_backends, build_dpo_config, build_lora_config
    from trainer.heldout import evaluate_heldout
    from trainer.progress import ProgressLine
    from trainer.ref_cache import RefLogpCache, reference_revision

    device = resolve_device(settings.device)
    if settings.liger_kernel:
        import importlib.util

        if device != "cuda":
            raise TrainerError("liger_kernel needs a CUDA device (its kernels are Triton GPU kernels); set it to false on CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise TrainerError("liger_kernel is on but the liger-kernel package is not installed; pip install liger-kernel")
    if device == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
    dtype = torch.bfloat16 if use_bf16(device) else torch.float32
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(model_dir)
    conversational = settings.chat_template and bool(getattr(tokenizer, "chat_template", None))
    revision = reference_revision(model_dir, max_length=settings.max_length, chat_template=conversational, dtype=str(dtype))
    cache = RefLogpCache(Path(cache_dir) / "ref-logps.sqlite", revision)

    train_ds = Dataset.from_dict(to_columns(mix.rows, tokenizer, conversational))
    heldout_ds = Dataset.from_dict(to_columns(mix.heldout, tokenizer, conversational)) if mix.heldout else None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    checkpointing = plan_checkpointing(settings, model, train_ds, device, dtype)
    print(f"prefloop train: gradient checkpointing {checkpointing.checkpointed_layers}/{checkpointing.layers} layers "
          f"({checkpointing.reason})", file=progress_stream or sys.stderr, flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [ProgressLine(progress_stream)] if settings.progress else []
    if checkpointing.enabled:
        callbacks.append(SelectiveCheckpointing(checkpointing.checkpointed_layers))
    # The reference forward runs inside the trainer's __init__, so it is inside the block too.
    with attention_backends(settings):
        trainer = CachedReferenceDPOTrainer(
            model=model,
            ref_model=None,
            args=build_dpo_config(settings, output_dir, device, checkpointing.enabled),
            train_dataset=train_ds,
            eval_dataset=heldout_ds,
            processing_class=tokenizer,
            peft_config=build_lora_config(settings),
            callbacks=callbacks,
            ref_cache=cache,
        )
        trainer.remove_callback(PrinterCallback)
        train_started = time.monotonic()
        output = trainer.train()
        train_seconds = time.monotonic() - train_started
        heldout = evaluate_heldout(trainer, trainer.eval_dataset)
    trainer.save_model(str(output_dir))

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    last = logs[-max(1, len(logs) // 5):] if logs else []  # mean over the last fifth of the steps

    def tail_mean(key: str) -> float:
        values = [entry[key] for entry in last if key in entry]
        return sum(values) / len(values) if values else math.nan

    ref_stats = trainer.ref_stats
    metrics: dict[str, Any] = {
        "heldout_reward_accuracy": heldout.accuracy,
        "heldout_reward_margin": heldout.margin,
        "heldout_chosen_reward": heldout.chosen_reward,
        "heldout_rejected_reward": heldout.rejected_reward,
        "heldout_pairs": heldout.pairs,
        "train_pairs": len(mix.unique_train),
        "new_pairs": len(mix.new),
        "replay_pairs": len(mix.replay),
        "train_rows": len(mix.rows),
        "steps": trainer.state.global_step,
        "train_loss": float(output.training_loss),
        "train_reward_accuracy": tail_mean("rewards/accuracies"),
        "train_reward_margin": tail_mean("rewards/margins"),
        "ref_forward_pairs": sum(s.forward_pairs for s in ref_stats.values()),
        "ref_cache_hits": sum(s.cache_hits for s in ref_stats.values()),
        "ref_seconds": sum(s.seconds for s in ref_stats.values()),
        "train_seconds": train_seconds,
        "train_pairs_per_second": pairs_seen(trainer.state.global_step, len(mix.rows), settings) / max(train_seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "checkpointed_layers": checkpointing.checkpointed_layers,
        "estimated_memory_mb": checkpointing.estimate_chosen.total / 2**20,
        "gradient_checkpointing": checkpointing.reason,
        "seconds": time.monotonic() - started,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "snapshot_id": snapshot.snapshot_id,
        "base_model": settings.base_model,
        "reference_revision": revision,
    }
    atomic_write_json(output_dir / "metrics.json", _json_safe(metrics))
    atomic_write_json(
        output_dir / "run.json",
        {
            "settings": dataclasses.asdict(settings),
            "snapshot_id": snapshot.snapshot_id,
            "base_model": settings.base_model,
            "base_model_dir": str(model_dir),
            "new_pair_ids": [p.pair_id for p in mix.new],
            "replay_pair_ids": [p.pair_id for p in mix.replay],
            "heldout_pair_ids": [p.pair_id for p in mix.heldout],
        },
    )
    HeldoutLedger(home).add(p.pair_id for p in mix.heldout)
    return TrainingRun(output_dir=output_dir, metrics=metrics, snapshot_id=snapshot.snapshot_id,
                       base_model=settings.base_model, base_model_dir=model_dir)


# Tokens a chat template adds around a prompt and a completion (role markers, turn ends).
_TEMPLATE_TOKENS = 32


def plan_checkpointing(settings: TrainerSettings, model, train_ds, device: str, dtype) -> "CheckpointingChoice":
    """The run's gradient checkpointing: how many decoder layers, from the setting and trainer/memory.py's
    estimate at the longest padded batch (batch_size pairs = 2 × batch_size sequences)."""
    import torch

    from trainer.memory import ModelShape, choose_checkpointing, free_memory_bytes, lora_parameter_count

    longest = max(train_ds["length"], default=settings.max_length) + _TEMPLATE_TOKENS
    tokens = 2 * settings.batch_size * min(settings.max_length, longest)
    shape = ModelShape.from_config(model.config, parameters=sum(p.numel() for p in model.parameters()))
    free = free_memory_bytes(device) if settings.gradient_checkpointing == "auto" else None
    return choose_checkpointing(
        settings.gradient_checkpointing, shape, tokens=tokens, dtype_bytes=torch.finfo(dtype).bits // 8,
        lora_parameters=lora_parameter_count(shape, settings.lora_r, list(settings.lora_target_modules)),
        free_bytes=free, budget_fraction=settings.memory_budget_fraction,
    )


def _json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN (no held-out pairs) becomes null so metrics.json stays standard JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def print_summary(run: TrainingRun, stream: IO[str] = sys.stdout) -> None:
    m = run.metrics
    acc = m["heldout_reward_accuracy"]
    acc_text = "n/a" if isinstance(acc, float) and math.isnan(acc) else f"{acc:.3f}"
    stream.write(
        f"trained {m['steps']} steps on {m['train_pairs']} pairs ({m['new_pairs']} new, {m['replay_pairs']} replayed) "
        f"in {m['seconds']:.1f}s on {m['device']}; held-out reward accuracy {acc_text} over {m['heldout_pairs']} pairs, "
        f"margin {m['heldout_reward_margin']:.4f}; reference log-probs: {m['ref_forward_pairs']} computed, "
        f"{m['ref_cache_hits']} from cache\nadapter: {run.output_dir}\n"
    )
    stream.flush()
