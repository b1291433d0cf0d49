"""`prefloop pairs export`: argument parsing and the handler (the logic is trainer/pairs_export.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prefloop.arguments import one_line_errors, positive_int
from schemas.records import PairSource


def _since(text: str) -> int:
    """Epoch ms of `now - DURATION` (7d, 24h) or of an ISO-8601 instant (UTC when no offset)."""
    from datetime import datetime, timezone

    from prefloop.durations import parse_duration

    seconds = parse_duration(text)
    if seconds:
        return int((time.time() - seconds) * 1000)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a duration (7d, 24h, 30m) or an ISO date (2026-11-01), got {text!r}") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return int(instant.timestamp() * 1000)


def add_commands(sub: argparse._SubParsersAction) -> None:
    pairs = one_line_errors(sub.add_parser("pairs", help="the collected preference pairs: export"))
    pairs_sub = pairs.add_subparsers(dest="pairs_command", metavar="ACTION")
    pairs_sub.required = True
    p = one_line_errors(pairs_sub.add_parser(
        "export", help="write the pairs in the analytics store as JSON lines (for prefloop train --pairs or TRL)",
        description="Pairs from preference_pairs (deduplicated by pair id), in pair-id order. The count goes to stderr."))
    p.add_argument("--out", default="-", metavar="FILE.jsonl", help="output file (default: stdout)")
    p.add_argument("--since", type=_since, metavar="PERIOD|DATE", help="only pairs created in the last PERIOD (7d, 24h) or since DATE")
    p.add_argument("--source", action="append", choices=[s.value for s in PairSource], help="only pairs of this source (repeatable)")
    p.add_argument("--model-version", metavar="V", help="only pairs whose chosen answer came from version V")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N pairs")
    p.add_argument("--format", choices=("full", "trl"), default="full",
                   help="full: every pair field (default, read back by prefloop train); trl: prompt, chosen, rejected only")
    p.set_defaults(handler=cmd_pairs_export)


def cmd_pairs_export(args: argparse.Namespace) -> int:
    from prefloop.analytics.store import open_for_command
    from prefloop.settings import load_settings
    from trainer.pairs_export import PairFilter, export_pairs

    pair_filter = PairFilter(since_ms=args.since, sources=tuple(PairSource(s) for s in args.source or ()),
                             model_version=args.model_version, limit=args.limit)
    to_file = args.out != "-"
    store = open_for_command(load_settings())
    try:
        if not to_file:
            count = export_pairs(store, pair_filter, sys.stdout.write, args.format)
        else:
            out = Path(args.out)
            tmp = out.with_name(out.name + ".part")  # a complete file or none: an interrupted export leaves no half file
            with open(tmp, "w", encoding="utf-8") as handle:
                count = export_pairs(store, pair_filter, handle.write, args.format,
                                     progress=lambda n: print(f"exported {n} pairs…", file=sys.stderr, flush=True))
            tmp.replace(out)
    finally:
        store.close()
    print(f"exported {count} pairs" + (f" to {args.out}" if to_file else ""), file=sys.stderr)
    return 0
