"""One arm of `prefloop bench trainer`, run in its own subprocess so its peak memory is its own.

    python -m trainer.bench_arm --arm prefloop|trl --pairs FILE --model DIR --steps K --batch-size B --out FILE

Both arms train the same LoRA shape on the same pairs, on the same device, for the same number of
optimizer steps with the same batch size, and time the same span: from loading the model to the
adapter saved on disk (tokenization and reference log-probs included).

- `trl`: TRL's DPOTrainer with `DPOConfig` defaults, changing only what is needed to run at all or
  to make the comparison like for like: output dir, steps, batch size, seed, `bf16` from the device
  (TRL's default bf16=True fails on CPU), no checkpoints or reporting, and the same `peft_config`
  (LoRA, `ref_model=None`). Everything else (gradient checkpointing on, reference forward inside
  every step, random sampler, max_length 1024, lr 1e-6) is TRL's default.
- `prefloop`: `run_training` with TrainerSettings defaults for the same steps / batch size, held-out
  split and replay off and every pair weighted once (so both arms see the same rows), and a fresh
  reference cache (cold: it pays for every reference forward, as a first run does). With
  `--cache-dir DIR` it uses a cache an earlier arm filled (a later run over the same pairs);
  `--gradient-checkpointing` and `--liger-kernel` set those TrainerSettings.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl_default(pairs: list[dict], model_dir: Path, steps: int, batch_size: int, seed: int, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trainer.devices import resolve_device, use_bf16
    from trainer.dpo import build_lora_config
    from trainer.settings import TrainerSettings

    device = resolve_device("auto")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = DPOConfig(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        seed=seed,
        bf16=use_bf16(device),
        use_cpu=device == "cpu",
        save_strategy="no",
        report_to="none",
    )
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=build_lora_config(TrainerSettings()))
    train_started = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - train_started
    trainer.save_model(str(out_dir))
    seconds = time.monotonic() - started
    return {"seconds": seconds, "train_seconds": train_seconds, "steps": trainer.state.global_step, "device": device,
            "peak_memory_mb": _peak_mb(device), "gradient_checkpointing": config.gradient_checkpointing,
            "bf16": bool(config.bf16)}


def run_prefloop(pairs: list[dict], model_dir: Path, steps: int, batch_size: int, seed: int, out_dir: Path,
                 cache_dir: Path, gradient_checkpointing: str = "auto", liger_kernel: bool = False) -> dict:
    import torch

    from trainer.devices import resolve_device
    from trainer.settings import TrainerSettings
    from trainer.snapshots import create_snapshot
    from trainer.train import run_training

    device = resolve_device("auto")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    home = out_dir / "home"
    snapshot = create_snapshot(pairs, home)
    settings = TrainerSettings(
        base_model=str(model_dir), max_steps=steps, batch_size=batch_size, seed=seed, heldout_fraction=0.0,
        min_heldout_pairs=0, replay_fraction=0.0, min_pairs=1, source_weights={s: 1.0 for s in ("EDIT", "CHOICE", "THUMBS", "RATING")},
        gradient_checkpointing=gradient_checkpointing, liger_kernel=liger_kernel,
    )
    started = time.monotonic()
    run = run_training(settings, snapshot=snapshot, output_dir=out_dir / "adapter", home=home, cache_dir=cache_dir)
    seconds = time.monotonic() - started
    m = run.metrics
    return {"seconds": seconds, "train_seconds": m["train_seconds"], "steps": m["steps"], "device": m["device"],
            "peak_memory_mb": _peak_mb(device), "gradient_checkpointing": f"{m['checkpointed_layers']} layers ({settings.gradient_checkpointing})",
            "bf16": m["dtype"] == "bfloat16", "ref_forward_pairs": m["ref_forward_pairs"], "ref_cache_hits": m["ref_cache_hits"],
            "ref_seconds": m["ref_seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench_arm")
    parser.add_argument("--arm", choices=["prefloop", "trl"], required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="reference cache to use (default: a fresh one)")
    parser.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--liger-kernel", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.arm}-") as tmp:
        work = Path(tmp)
        if args.arm == "trl":
            result = run_trl_default(pairs, args.model, args.steps, args.batch_size, args.seed, work)
        else:
            cache = args.cache_dir or work / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            result = run_prefloop(pairs, args.model, args.steps, args.batch_size, args.seed, work, cache,
                                  args.gradient_checkpointing, args.liger_kernel)
    result["pairs_trained"] = result["steps"] * args.batch_size
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
