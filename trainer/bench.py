"""`prefloop bench trainer`: prefloop's trainer vs TRL's DPOTrainer defaults, in one run.

Both arms run as separate subprocesses (`trainer.bench_arm`), one after the other, on the same
synthetic pairs, model, device, step count and batch size (see `bench_arm` for exactly what
"TRL default" means). Reported per arm: pairs/s end to end (model load → adapter saved, including
tokenization and reference log-probs), pairs/s of the training loop alone, and peak memory (peak
RSS of the arm's process on CPU, `torch.cuda.max_memory_allocated` on GPU); then the ratios.
`--warm` adds a third arm: prefloop again with the reference cache the first prefloop arm filled.
Each arm is bounded by `--steps` and killed after `--time-limit` seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WORDS = (
    "the a model answer user question please thanks help code error data train test value list file time day "
    "order email report meeting budget weather recipe garden music travel plan team project bug fix update "
    "explain describe summarise compare check review write read send open close start stop quickly carefully "
    "simple short long clear polite friendly helpful detailed correct wrong better worse first next last"
).split()


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` preference pairs of varied length (prompts 8-60 words, replies 10-90 words); chosen = polite."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = f"Request {i}: " + " ".join(rng.choices(_WORDS, k=rng.randint(8, 60))) + "?\n"
        body = " ".join(rng.choices(_WORDS, k=rng.randint(10, 90)))
        pairs.append({"prompt": prompt, "chosen": f"Sure, happy to help: {body}. Thank you!",
                      "rejected": f"{body}. Whatever."})
    return pairs


def add_bench_command(bench_sub: argparse._SubParsersAction) -> None:
    from trainer.cli import _one_line_errors, _positive_float, _positive_int

    p = _one_line_errors(bench_sub.add_parser("trainer", help="DPO training pairs/s and peak memory: prefloop vs TRL defaults"))
    p.add_argument("--pairs", type=_positive_int, default=64, help="distinct synthetic pairs (default 64)")
    p.add_argument("--model", default="smollm2", metavar="tiny|smollm2|PATH", help="base model (default smollm2)")
    p.add_argument("--steps", type=_positive_int, default=8, help="optimizer steps per arm (default 8)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="pairs per step (default 8)")
    p.add_argument("--time-limit", type=_positive_float, default=900.0, help="seconds before an arm is killed (default 900)")
    p.add_argument("--warm", action="store_true", help="add an arm re-running prefloop with a warm reference cache")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    p.set_defaults(handler=cmd_bench_trainer)


def _run_arm(name: str, argv: list[str], log: Path, limit: float) -> dict:
    started = time.monotonic()
    with open(log, "w") as handle:
        try:
            proc = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, timeout=limit)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {limit:g}s (log: {log})"}
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0]} (log: {log})"}
    result = json.loads(Path(argv[argv.index("--out") + 1]).read_text())
    result["wall_seconds"] = time.monotonic() - started
    return result


def cmd_bench_trainer(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from trainer.base_models import resolve_base_model

    settings = load_settings()
    model_dir = resolve_base_model(args.model, settings.cache_dir)
    out_root = settings.home / "bench"
    out_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = Path(tempfile.mkdtemp(prefix=f"trainer-{stamp}-", dir=out_root))
    pairs_file = work / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in synthetic_pairs(args.pairs)))
    cache = work / "ref-cache"
    cache.mkdir()
    common = ["--pairs", str(pairs_file), "--model", str(model_dir), "--steps", str(args.steps),
              "--batch-size", str(args.batch_size)]
    arms = [("trl-default", ["--arm", "trl"]), ("prefloop", ["--arm", "prefloop", "--cache-dir", str(cache)])]
    if args.warm:
        arms.append(("prefloop-warm-cache", ["--arm", "prefloop", "--cache-dir", str(cache)]))
    print(f"bench trainer: {args.pairs} pairs, {args.steps} steps x {args.batch_size} pairs, model {args.model} ({model_dir}); "
          f"arms run one at a time in subprocesses (logs in {work})", flush=True)
    results: dict[str, dict] = {}
    for name, extra in arms:
        print(f"  running {name} …", flush=True)
        argv = [sys.executable, "-m", "trainer.bench_arm", *extra, *common, "--out", str(work / f"{name}.json")]
        results[name] = _run_arm(name, argv, work / f"{name}.log", args.time_limit)
    _print_table(results)
    summary = {"pairs": args.pairs, "steps": args.steps, "batch_size": args.batch_size, "model": args.model,
               "model_dir": str(model_dir), "arms": results, "ratios": _ratios(results)}
    record = out_root / f"trainer-{stamp}.json"
    record.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {record}")
    return 0 if all("error" not in r for r in results.values()) else 1


def _rates(r: dict) -> tuple[float, float]:
    return r["pairs_trained"] / r["seconds"], r["pairs_trained"] / r["train_seconds"]


def _ratios(results: dict[str, dict]) -> dict[str, float]:
    base = results.get("trl-default", {})
    out: dict[str, float] = {}
    if "error" in base or not base:
        return out
    for name, r in results.items():
        if name == "trl-default" or "error" in r:
            continue
        e2e, loop = _rates(r)
        b_e2e, b_loop = _rates(base)
        out[f"{name}/pairs_per_s"] = e2e / b_e2e
        out[f"{name}/train_loop_pairs_per_s"] = loop / b_loop
        out[f"{name}/peak_memory"] = r["peak_memory_mb"] / base["peak_memory_mb"]
    return out


def _print_table(results: dict[str, dict]) -> None:
    print(f"  {'arm':<22}{'pairs/s':>10}{'loop pairs/s':>14}{'peak MiB':>11}{'seconds':>9}  notes")
    for name, r in results.items():
        if "error" in r:
            print(f"  {name:<22}{'-':>10}{'-':>14}{'-':>11}{'-':>9}  {r['error']}")
            continue
        e2e, loop = _rates(r)
        notes = f"{r['device']}, bf16={r['bf16']}, grad-ckpt={r['gradient_checkpointing']}"
        if "ref_forward_pairs" in r:
            notes += f", ref forward {r['ref_forward_pairs']} / cached {r['ref_cache_hits']}"
        print(f"  {name:<22}{e2e:>10.2f}{loop:>14.2f}{r['peak_memory_mb']:>11.0f}{r['seconds']:>9.1f}  {notes}")
    for key, value in _ratios(results).items():
        print(f"  ratio {key} vs trl-default: {value:.2f}x")
