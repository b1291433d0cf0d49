"""`prefloop bench trainer`: prefloop's trainer vs TRL's DPOTrainer defaults, in one run.

Both arms run as separate subprocesses (`trainer.bench_arm`), one after the other, on the same
synthetic pairs, model, device, step count and batch size (see `bench_arm` for exactly what
"TRL default" means). Reported per arm: pairs/s end to end (model load → adapter saved, including
tokenization and reference log-probs), pairs/s of the training loop alone, and peak memory (peak
RSS of the arm's process on CPU, `torch.cuda.max_memory_allocated` on GPU); then the ratios.
`--warm` adds a third arm: prefloop again with the reference cache the first prefloop arm filled.
`--arms` picks other arms (every layer checkpointed, Liger kernels), `--repeat N` runs N rounds with
the arm order alternating and prints every round and the spread of the ratios. Each arm is bounded by
`--steps` and killed after `--time-limit` seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from prefloop.bench.records import BenchRun

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


# Arms a run can include: name -> extra arguments of `python -m trainer.bench_arm`.
ARMS: dict[str, list[str]] = {
    "trl-default": ["--arm", "trl"],
    "prefloop": ["--arm", "prefloop"],  # TrainerSettings defaults: gradient checkpointing auto
    "prefloop-warm-cache": ["--arm", "prefloop"],  # again, with the reference cache the round's prefloop arm filled
    "prefloop-ckpt": ["--arm", "prefloop", "--gradient-checkpointing", "on"],  # every layer, as TRL
    "prefloop-liger": ["--arm", "prefloop", "--liger-kernel"],  # Liger's layer kernels (GPU)
    "prefloop-ckpt-liger": ["--arm", "prefloop", "--gradient-checkpointing", "on", "--liger-kernel"],
}


def _arm_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}")
    return names


def add_bench_command(bench_sub: argparse._SubParsersAction) -> None:
    from prefloop.arguments import one_line_errors, positive_float, positive_int

    p = one_line_errors(bench_sub.add_parser("trainer", help="DPO training pairs/s and peak memory: prefloop vs TRL defaults"))
    p.add_argument("--pairs", type=positive_int, default=64, help="distinct synthetic pairs (default 64)")
    p.add_argument("--model", default="smollm2", metavar="tiny|smollm2|PATH", help="base model (default smollm2)")
    p.add_argument("--steps", type=positive_int, default=8, help="optimizer steps per arm (default 8)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="pairs per step (default 8)")
    p.add_argument("--time-limit", type=positive_float, default=900.0, help="seconds before an arm is killed (default 900)")
    p.add_argument("--arms", type=_arm_list, default=["trl-default", "prefloop"], metavar="LIST",
                   help=f"comma-separated arms, run in this order (default trl-default,prefloop; known: {', '.join(ARMS)})")
    p.add_argument("--warm", action="store_true", help="add the prefloop-warm-cache arm")
    p.add_argument("--repeat", type=positive_int, default=1,
                   help="rounds; the arm order alternates (reversed every other round) so drift hits every arm alike")
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


def _round_order(arms: list[str], round_index: int) -> list[str]:
    """Alternate the order every round; a warm-cache arm always runs after a cold prefloop arm of its round."""
    order = arms if round_index % 2 == 0 else list(reversed(arms))
    if "prefloop-warm-cache" in order and "prefloop" in order:
        order = [a for a in order if a != "prefloop-warm-cache"]
        order.insert(order.index("prefloop") + 1, "prefloop-warm-cache")
    return order


def cmd_bench_trainer(args: argparse.Namespace) -> int:
    from prefloop.errors import PrefloopError
    from prefloop.settings import load_settings
    from trainer.base_models import resolve_base_model

    arms = list(args.arms)
    if args.warm and "prefloop-warm-cache" not in arms:
        arms.append("prefloop-warm-cache")
    if "prefloop-warm-cache" in arms and "prefloop" not in arms:
        raise PrefloopError("the prefloop-warm-cache arm reuses the cache the prefloop arm fills: add prefloop to --arms")
    settings = load_settings()
    model_dir = resolve_base_model(args.model, settings.cache_dir)
    run = BenchRun.start(settings.home, "trainer")
    work = run.work_dir()
    pairs_file = work / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in synthetic_pairs(args.pairs)))
    common = ["--pairs", str(pairs_file), "--model", str(model_dir), "--steps", str(args.steps),
              "--batch-size", str(args.batch_size)]
    print(f"bench trainer: {args.pairs} pairs, {args.steps} steps x {args.batch_size} pairs, model {args.model} ({model_dir}); "
          f"arms {', '.join(arms)}, {args.repeat} round(s), one at a time in subprocesses (logs in {work})", flush=True)
    rounds: list[dict[str, dict]] = []
    for index in range(args.repeat):
        cache = work / f"ref-cache-{index}"  # cold for each round's prefloop arm
        cache.mkdir()
        results: dict[str, dict] = {}
        for name in _round_order(arms, index):
            print(f"  round {index + 1}: running {name} …", flush=True)
            extra = list(ARMS[name])
            if extra[1] == "prefloop":
                extra += ["--cache-dir", str(cache if name in ("prefloop", "prefloop-warm-cache") else work / f"cache-{name}-{index}")]
            argv = [sys.executable, "-m", "trainer.bench_arm", *extra, *common, "--out", str(work / f"{name}-{index}.json")]
            results[name] = _run_arm(name, argv, work / f"{name}-{index}.log", args.time_limit)
        rounds.append({name: results[name] for name in arms})
        _print_table(rounds[-1])
    spread = _spread(rounds) if args.repeat > 1 else {}
    if spread:
        print(f"  over {args.repeat} rounds (median, min-max):")
        for key, (median, low, high) in spread.items():
            print(f"    {key}: {median:.2f}x ({low:.2f}-{high:.2f})")
    summary = {"pairs": args.pairs, "steps": args.steps, "batch_size": args.batch_size, "model": args.model,
               "model_dir": str(model_dir), "arms": rounds[0], "ratios": _ratios(rounds[0]),
               "rounds": [{"arms": r, "ratios": _ratios(r)} for r in rounds],
               "spread": {k: {"median": m, "min": lo, "max": hi} for k, (m, lo, hi) in spread.items()}}
    run.save(summary, args.json)
    return 0 if all("error" not in r for results in rounds for r in results.values()) else 1


def _spread(rounds: list[dict[str, dict]]) -> dict[str, tuple[float, float, float]]:
    import statistics

    values: dict[str, list[float]] = {}
    for results in rounds:
        for key, value in _ratios(results).items():
            values.setdefault(key, []).append(value)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in values.items()}


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
