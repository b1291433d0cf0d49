"""The `prefloop` command: argument parsing only; each verb calls into the package that owns it.

This is the one module that wires the packages together: each package adds its own verbs, and what one
package needs from another is handed to it here (the streams trigger freezes its snapshots with the
trainer's snapshot store; `prefloop status` shows the streams trigger's progress), so that no package
imports a package above it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from prefloop.errors import PrefloopError

Handler = Callable[[argparse.Namespace], int]


def _freeze_pairs(pairs: list, home: Path) -> str:
    """The streams trigger's snapshot function: the trainer's snapshot store."""
    from trainer.snapshots import freeze_pairs

    return freeze_pairs(pairs, home)


def _trigger_progress(settings: Any) -> dict[str, Any]:
    """`prefloop status`'s retraining-trigger section, from the streams trigger."""
    from streams.trigger_progress import trigger_progress

    return trigger_progress(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefloop", description="Users' feedback → DPO preference pairs → better models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each owning package adds its verbs; imports stay inside so `prefloop status` never loads torch.
    from prefloop import commands

    commands.add_commands(sub, trigger_progress=_trigger_progress)
    from streams import cli as streams_cli

    streams_cli.add_commands(sub, snapshot=_freeze_pairs)
    from trainer import cli as trainer_cli

    trainer_cli.add_commands(sub)
    from trainer import pairs_cli

    pairs_cli.add_commands(sub)
    from prefloop.serving import cli as serving_cli

    serving_cli.add_commands(sub)
    from evaluator.gate import cli as gate_cli

    gate_cli.add_commands(sub)
    from evaluator.rollout import cli as rollout_cli

    rollout_cli.add_commands(sub)  # after the trainer's: it adds `promote` and `rollback` to `models`
    from prefloop.simulator import cli as simulator_cli

    simulator_cli.add_commands(sub)
    from prefloop.web import cli as web_cli

    web_cli.add_commands(sub)
    from prefloop.demo import cli as demo_cli

    demo_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args) or 0
    except PrefloopError as exc:
        print(f"prefloop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prefloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
