"""`prefloop worker`: argument parsing only; the worker is streams/app.py.

Imported when the `prefloop` parser is built, so Faust is imported by the handler, not here.
"""

from __future__ import annotations

import argparse

from streams.trigger import SnapshotFn


def add_commands(sub: argparse._SubParsersAction, snapshot: SnapshotFn) -> None:
    """`snapshot` freezes the pairs of each training request the trigger makes (the trainer's snapshot store,
    given by prefloop/cli.py so that streams never imports the trainer)."""
    p = sub.add_parser("worker", help="run one streams worker in the foreground (several may run)")
    p.set_defaults(handler=cmd_worker, snapshot=snapshot)


def cmd_worker(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from streams.app import run_worker
    from streams.settings import StreamsSettings

    settings = load_settings()
    return run_worker(settings, settings.section(StreamsSettings), args.snapshot)
