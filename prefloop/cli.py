"""The `prefloop` command: argument parsing only; each verb calls into the package that owns it."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from prefloop.errors import PrefloopError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefloop", description="Users' feedback → DPO preference pairs → better models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each owning package adds its verbs; imports stay inside so `prefloop status` never loads torch.
    from prefloop import commands

    commands.add_commands(sub)
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
