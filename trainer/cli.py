"""`prefloop train`, `prefloop trainer` and `prefloop models …`: argument parsing only.

Imported when the `prefloop` parser is built, so nothing heavy (torch, transformers, TRL) is
imported here at module level; each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prefloop.arguments import one_line_errors
from prefloop.setting_fields import add_flags, flag_values
from trainer.settings import TrainerSettings

# The [trainer] settings `prefloop train` takes as flags; each flag's type, bounds and help come from the field.
TRAIN_FLAGS = (
    "base_model", "epochs", "max_steps", "batch_size", "grad_accum", "learning_rate", "beta", "max_length",
    "heldout_fraction", "replay_fraction", "min_pairs", "seed", "device", "gradient_checkpointing", "progress",
)
FLAG_OPTIONS = {"learning_rate": ("--learning-rate", "--lr")}  # --lr: the flag's name before it was generated


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = one_line_errors(sub.add_parser(
        "train",
        help="train a DPO LoRA adapter on a pairs file or a snapshot, in the foreground, and register it",
        description="One DPO micro-batch run (TRL DPOTrainer + PEFT LoRA). Flags override [trainer] settings.",
    ))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", type=Path, metavar="FILE.jsonl", help="JSON lines with prompt, chosen, rejected (frozen as a snapshot first)")
    source.add_argument("--snapshot", metavar="ID", help="re-run an existing snapshot (exactly repeatable)")
    p.add_argument("--output", type=Path, metavar="DIR", help="adapter directory (default: <home>/runs/<snapshot>-<time>)")
    p.add_argument("--snapshot-id", metavar="ID", help="id for the snapshot made from --pairs (default: content hash)")
    add_flags(p, TrainerSettings, TRAIN_FLAGS, FLAG_OPTIONS)
    p.add_argument("--no-register", action="store_true", help="do not add the adapter to the model registry")
    p.set_defaults(handler=cmd_train)

    p = one_line_errors(sub.add_parser(
        "trainer", help="run the trainer service: consume training.requests, one job at a time, publish training.results"
    ))
    p.add_argument("--once", action="store_true", help="handle one request, then exit")
    p.set_defaults(handler=cmd_trainer)

    models = one_line_errors(sub.add_parser("models", help="the model registry: list, promote, rollback"))
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.required = True
    p = one_line_errors(models_sub.add_parser("list", help="every version with status, parent, snapshot and metrics"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_models_list)
    # `models promote` and `models rollback` go through the rollout controller: evaluator/rollout/cli.py adds them.


def cmd_train(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from trainer.base_models import resolve_base_model
    from trainer.pairs_io import read_pairs_file
    from trainer.settings import load_trainer_settings
    from trainer.snapshots import load_snapshot, preview_snapshot, write_snapshot
    from trainer.train import check_output_dir, plan_run

    settings = load_settings()
    trainer_settings = load_trainer_settings(settings, **flag_values(args, TRAIN_FLAGS))

    # Validate everything before anything is written: pairs, split sizes, output dir, base model.
    if args.pairs is not None:
        pairs = read_pairs_file(args.pairs, min_pairs=trainer_settings.min_pairs)
        snapshot = preview_snapshot(pairs, settings.home, args.snapshot_id)
    else:
        snapshot = load_snapshot(settings.home, args.snapshot)
    plan_run(trainer_settings, snapshot, settings.home)
    output = args.output or settings.home / "runs" / f"{snapshot.snapshot_id}-{time.strftime('%Y%m%dT%H%M%S')}"
    check_output_dir(Path(output))
    resolve_base_model(trainer_settings.base_model, settings.cache_dir)

    if not snapshot.path.exists():
        snapshot = write_snapshot(snapshot, settings.home)
    from trainer.train import print_summary, run_training

    run = run_training(
        trainer_settings, snapshot=snapshot, output_dir=Path(output), home=settings.home, cache_dir=settings.cache_dir
    )
    print_summary(run)
    if not args.no_register:
        from trainer.mirror import open_registry

        record = open_registry(settings).register_candidate(
            adapter_path=run.output_dir,
            base_model=run.base_model,
            snapshot_id=run.snapshot_id,
            metrics=run.numeric_metrics,
        )
        print(f"registered {record.version} (candidate, parent {record.parent_version}, snapshot {record.snapshot_id})")
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    import asyncio

    from prefloop.settings import load_settings
    from trainer.service import run_service

    asyncio.run(run_service(load_settings(), once=args.once))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    import json

    from prefloop.settings import load_settings
    from trainer.registry import ModelRegistry

    settings = load_settings()
    registry = ModelRegistry(settings.home)
    versions = registry.versions()
    if args.json:
        print(json.dumps([v.to_json() for v in versions], indent=2))
        return 0
    if not versions:
        print(f"no model versions yet in {registry.path}; `prefloop train` registers the first")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model versions ({registry.path})")
    for column in ("version", "status", "parent", "base", "snapshot", "held-out acc", "margin", "pairs", "evaluation",
                   "created", "adapter"):
        table.add_column(column, overflow="fold")
    for v in versions:
        acc = v.metrics.get("heldout_reward_accuracy")
        margin = v.metrics.get("heldout_reward_margin")
        pairs = v.metrics.get("train_pairs")
        table.add_row(
            v.version,
            v.status.value,
            v.parent_version or "-",
            v.base_model,
            v.snapshot_id or "-",
            "-" if acc is None else f"{acc:.3f}",
            "-" if margin is None else f"{margin:.4f}",
            "-" if pairs is None else str(int(pairs)),
            _evaluation_text(v.evaluation),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created_at / 1000)),
            v.adapter_path or "(base)",
        )
    # Off a terminal rich would wrap at 80 columns; keep one row per line for logs and pipes.
    Console(width=None if sys.stdout.isatty() else 220).print(table)
    return 0


def _evaluation_text(evaluation: dict) -> str:
    """The gate's outcome in a cell: decision, win rate with its lower bound, baseline."""
    if not evaluation:
        return "-"
    text = evaluation.get("decision", "?")
    if evaluation.get("win_rate") is not None and evaluation.get("win_rate_lower") is not None:
        text += f" win {evaluation['win_rate']:.2f} (>= {evaluation['win_rate_lower']:.2f})"
    return f"{text} vs {evaluation['baseline']}" if evaluation.get("baseline") else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `prefloop train` / `prefloop models`")
