"""`prefloop rollout run | status | pause | resume` and `prefloop models promote | rollback`: parsing only.

`models promote` and `models rollback` were the registry's own verbs (trainer/cli.py); they now go
through the rollout controller (a command it applies with its own logic), so they are registered
here, on the `models` parser the trainer's CLI builds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefloop.arguments import one_line_errors


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a traffic fraction such as 0.2 or 1.0, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"should be in (0, 1], got {value:g}")
    return value


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    for action in parser._actions:  # argparse has no public accessor for a parser's subcommands
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError(f"{parser.prog} has no subcommands")


def add_commands(sub: argparse._SubParsersAction) -> None:
    rollout = one_line_errors(sub.add_parser(
        "rollout", help="the canary rollout controller: run it, see the rollout, pause or resume it"))
    rollout_sub = rollout.add_subparsers(dest="rollout_command", metavar="ACTION")
    rollout_sub.required = True
    p = one_line_errors(rollout_sub.add_parser(
        "run", help="run the controller service (started by `prefloop up`): act on PROMOTE events and live metrics"))
    p.set_defaults(handler=cmd_run)
    p = one_line_errors(rollout_sub.add_parser(
        "status", help="stage, traffic, time left, both arms' live metrics with their bounds, the last decisions"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--decisions", type=int, default=5, metavar="N", help="how many of the last decisions to show")
    p.set_defaults(handler=cmd_status)
    p = one_line_errors(rollout_sub.add_parser(
        "pause", help="hold the rollout at its stage (no advance, no new rollout); rollback rules still apply"))
    p.add_argument("--reason", default="", help="why, shown by `prefloop rollout status`")
    p.set_defaults(handler=cmd_pause)
    p = one_line_errors(rollout_sub.add_parser("resume", help="let a paused rollout advance again"))
    p.set_defaults(handler=cmd_resume)

    models = _subcommands(sub.choices["models"])
    p = one_line_errors(models.add_parser(
        "promote", help="roll a version out from the first canary stage (any status but production; "
                        "--to 1.0 makes it production now)"))
    p.add_argument("version")
    p.add_argument("--to", type=_fraction, metavar="FRACTION", dest="to_fraction",
                   help="start at the stage with this traffic fraction; 1.0 skips the canary")
    p.add_argument("--reason", default="", help="recorded in the decision")
    p.set_defaults(handler=cmd_models_promote)
    p = one_line_errors(models.add_parser(
        "rollback", help="roll back now: the running canary, or else production to the version before it"))
    p.add_argument("--reason", default="", help="recorded in the decision")
    p.set_defaults(handler=cmd_models_rollback)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from evaluator.rollout.service import run_service
    from prefloop.settings import load_settings

    asyncio.run(run_service(load_settings()))
    return 0


def _submit(command: Any) -> str:
    import asyncio

    from evaluator.rollout.commands import ERROR_PREFIX
    from evaluator.rollout.service import submit
    from prefloop.errors import PrefloopError
    from prefloop.settings import load_settings

    result = asyncio.run(submit(load_settings(), command))
    if result.startswith(ERROR_PREFIX):
        raise PrefloopError(result.removeprefix(ERROR_PREFIX))
    return result


def cmd_models_promote(args: argparse.Namespace) -> int:
    from evaluator.rollout.commands import Command, CommandKind
    from evaluator.rollout.settings import load_rollout_settings
    from prefloop.errors import PrefloopError
    from prefloop.settings import load_settings
    from trainer.registry import ModelRegistry

    settings = load_settings()
    ModelRegistry(settings.home).get(args.version)  # an unknown version fails here, before anything is queued
    plan = load_rollout_settings(settings).plan
    if args.to_fraction is not None and not any(abs(s.fraction - args.to_fraction) < 1e-9 for s in plan):
        raise PrefloopError(f"--to {args.to_fraction:g} is not a stage of the plan "
                            f"({', '.join(f'{s.fraction:g}' for s in plan)}); see setting rollout.stages")
    print(_submit(Command(CommandKind.PROMOTE, version=args.version, to_fraction=args.to_fraction, reason=args.reason)))
    _warn_without_controller(settings)
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from evaluator.rollout.commands import Command, CommandKind

    print(_submit(Command(CommandKind.ROLLBACK, reason=args.reason)))
    return 0


def _warn_without_controller(settings: Any) -> None:
    from evaluator.rollout.service import open_redis
    from evaluator.rollout.state import RolloutState
    from prefloop import keys

    client = open_redis(settings)
    try:
        running = RolloutState.from_json(client.get(keys.ROLLOUT_STATE)).running
        if running is not None and client.get(keys.ROLLOUT_LEASE) is None:
            print("note: no rollout controller is running, so the canary will not advance or roll back by itself; "
                  "`prefloop up` starts one", file=sys.stderr)
    finally:
        client.close()


def cmd_pause(args: argparse.Namespace) -> int:
    from evaluator.rollout.service import open_redis
    from prefloop import keys
    from prefloop.settings import load_settings
    from schemas.records import now_ms

    client = open_redis(load_settings())
    try:
        client.set(keys.ROLLOUT_PAUSED, json.dumps({"since_ms": now_ms(), "reason": args.reason}))
    finally:
        client.close()
    print("rollout paused: no stage advances and no new rollout starts until `prefloop rollout resume`; "
          "rollback rules still apply")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from evaluator.rollout.service import open_redis
    from prefloop import keys
    from prefloop.settings import load_settings

    client = open_redis(load_settings())
    try:
        was_paused = client.delete(keys.ROLLOUT_PAUSED)
    finally:
        client.close()
    print("rollout resumed" if was_paused else "the rollout was not paused")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from evaluator.rollout.status import gather, render
    from prefloop.settings import load_settings

    import dataclasses

    report = gather(load_settings(), decisions=max(0, args.decisions))
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        print(render(report))
    return 0
