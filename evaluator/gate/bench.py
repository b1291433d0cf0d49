"""`prefloop bench eval`: prefloop's held-out scorer vs TRL's `DPOTrainer.evaluate()`, in one run.

All arms score the same synthetic pairs with the same base model, the same LoRA adapter (the one given,
or a random one of the trainer's shape: speed does not depend on what an adapter learned), the same
device, dtype, tokenization (chat format, max_length) and batch size, one after the other in this
process after an untimed warm-up. Each arm is timed from loading the model to having every pair's
score; pairs/s is pairs over that time.

- `trl-evaluate`: TRL's DPOTrainer with `DPOConfig` defaults except what the comparison needs (device,
  dtype, batch size, max_length), the adapter loaded into its LoRA model (reference = adapters
  disabled = the base), then `evaluate()`: a policy and a reference forward per batch, its loss and metrics.
- `prefloop-cold`: `GateModels.score()` against the base model with an empty reference cache (it pays
  for every reference forward).
- `prefloop-warm`: the same with the cache the cold arm filled: what the gate sees after training, when
  the trainer has already cached the held-out pairs' reference log-probs.

The win rate against the base model of each arm (TRL's `eval_rewards/accuracies`) is printed as a
cross-check that both score the same thing.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from prefloop.bench.records import BenchRun

ARMS = ("trl-evaluate", "prefloop-cold", "prefloop-warm")


def add_bench_command(bench_sub: argparse._SubParsersAction) -> None:
    from prefloop.arguments import one_line_errors, positive_int

    p = one_line_errors(bench_sub.add_parser("eval", help="held-out scoring pairs/s: prefloop's gate vs TRL's DPOTrainer.evaluate()"))
    p.add_argument("--pairs", type=positive_int, default=256, help="synthetic held-out pairs (default 256)")
    p.add_argument("--model", default="smollm2", metavar="tiny|smollm2|PATH", help="base model (default smollm2)")
    p.add_argument("--adapter", type=Path, metavar="DIR", help="LoRA adapter to score (default: a random one of the trainer's shape)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="pairs per forward pass in every arm (default 16)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: CUDA when available")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    p.set_defaults(handler=cmd_bench_eval)


def random_adapter(model_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A LoRA adapter of the trainer's default shape with random (non-zero) weights, saved to `out_dir`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.dpo import build_lora_config
    from trainer.settings import TrainerSettings

    config = build_lora_config(TrainerSettings())
    config.init_lora_weights = False  # random A and B: the adapter changes the model
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    model.save_pretrained(out_dir)
    return out_dir


def run_trl_evaluate(model_dir: Path, adapter: Path, pairs: list, training: Any, batch_size: int, device: str) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from peft.utils import load_peft_weights, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from trainer.base_models import load_tokenizer
    from trainer.dpo import use_bf16
    from trainer.train import to_columns

    started = time.monotonic()
    tokenizer = load_tokenizer(model_dir)
    conversational = training.chat_template and bool(getattr(tokenizer, "chat_template", None))
    bf16 = use_bf16(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    columns = to_columns(pairs, tokenizer, conversational)
    dataset = Dataset.from_dict({k: columns[k] for k in ("prompt", "chosen", "rejected")})
    with tempfile.TemporaryDirectory(prefix="bench-trl-eval-") as tmp:
        config = DPOConfig(output_dir=tmp, per_device_eval_batch_size=batch_size, max_length=training.max_length, bf16=bf16,
                           use_cpu=device == "cpu", report_to="none", save_strategy="no", disable_tqdm=True)
        # train_dataset is required; one pair keeps its tokenization out of the way.
        trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=dataset.select([0]), eval_dataset=dataset,
                             processing_class=tokenizer, peft_config=LoraConfig.from_pretrained(str(adapter)))
        trainer.remove_callback(PrinterCallback)  # its metrics line would interleave with the table
        set_peft_model_state_dict(trainer.model, load_peft_weights(str(adapter), device="cpu"))
        metrics = trainer.evaluate()
    seconds = time.monotonic() - started
    return {"seconds": seconds, "pairs": len(pairs), "win_rate_vs_base": metrics["eval_rewards/accuracies"]}


def run_prefloop(model_dir: Path, adapter: Path, pairs: list, training: Any, batch_size: int, device: str,
                 cache_dir: Path) -> dict[str, Any]:
    from evaluator.gate.scoring import GateModels, Side
    from evaluator.gate.stats import sign_test

    started = time.monotonic()
    with GateModels(base_model_dir=model_dir, training=training, candidate=Side("bench adapter", adapter),
                    baseline=Side("base model", None), pairs=pairs, cache_dir=cache_dir, device=device,
                    batch_size=batch_size) as models:
        scores = models.score()
        dtype = models.dtype
        resolved = models.device
    seconds = time.monotonic() - started
    return {"seconds": seconds, "pairs": len(scores.pair_ids), "win_rate_vs_base": sign_test(scores.diffs).win_rate,
            "ref_cache_hits": scores.ref_cache_hits, "ref_forward_pairs": scores.ref_forward_pairs, "device": resolved,
            "dtype": dtype}


def cmd_bench_eval(args: argparse.Namespace) -> int:
    from evaluator.gate.scoring import run_settings
    from prefloop.settings import load_settings
    from trainer.base_models import resolve_base_model
    from trainer.bench import synthetic_pairs
    from trainer.devices import resolve_device
    from trainer.pairs_io import coerce_pairs
    from trainer.settings import TrainerSettings
    from trainer.train import quiet_libraries

    quiet_libraries()
    settings = load_settings()
    model_dir = resolve_base_model(args.model, settings.cache_dir)
    device = resolve_device(args.device)
    run = BenchRun.start(settings.home, "eval")
    work = run.work_dir()
    adapter = args.adapter or random_adapter(model_dir, work / "adapter")
    training = run_settings(adapter, TrainerSettings(base_model=str(model_dir))).replace(device=device)
    pairs = coerce_pairs(synthetic_pairs(args.pairs))
    print(f"bench eval: {len(pairs)} pairs, model {args.model} ({model_dir}), adapter {adapter}, batch {args.batch_size}, "
          f"device {device}; arms run one after the other in this process (work dir {work})", flush=True)
    # Untimed warm-up of both code paths (imports, kernels, allocator) on a few pairs.
    run_trl_evaluate(model_dir, adapter, pairs[:4], training, args.batch_size, device)
    run_prefloop(model_dir, adapter, pairs[:4], training, args.batch_size, device, work / "warmup-cache")
    results: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        print(f"  running {arm} …", flush=True)
        if arm == "trl-evaluate":
            results[arm] = run_trl_evaluate(model_dir, adapter, pairs, training, args.batch_size, device)
        else:
            results[arm] = run_prefloop(model_dir, adapter, pairs, training, args.batch_size, device, work / "ref-cache")
        results[arm]["pairs_per_second"] = results[arm]["pairs"] / results[arm]["seconds"]
        gc.collect()
    ratios = {arm: results[arm]["pairs_per_second"] / results["trl-evaluate"]["pairs_per_second"] for arm in ARMS[1:]}
    _print_table(results, ratios)
    summary = {"pairs": len(pairs), "model": args.model, "model_dir": str(model_dir), "adapter": str(adapter),
               "batch_size": args.batch_size, "device": device, "max_length": training.max_length, "arms": results,
               "ratios": ratios}
    run.save(summary, args.json)
    return 0


def _print_table(results: dict[str, dict[str, Any]], ratios: dict[str, float]) -> None:
    print(f"  {'arm':<16}{'pairs/s':>10}{'seconds':>10}{'win rate vs base':>18}  notes")
    for arm, r in results.items():
        notes = f"reference cache {r['ref_cache_hits']} hits / {r['ref_forward_pairs']} computed" if "ref_cache_hits" in r else \
            "policy + reference forward per batch, DPO loss and metrics"
        print(f"  {arm:<16}{r['pairs_per_second']:>10.2f}{r['seconds']:>10.2f}{r['win_rate_vs_base']:>18.3f}  {notes}")
    for arm, ratio in ratios.items():
        print(f"  ratio {arm} vs trl-evaluate: {ratio:.2f}x pairs/s")
