"""`prefloop forget USER_ID`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from prefloop.settings import load_settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forget", help="delete a user's rows from the analytics store and keep their events out of later training snapshots",
        description="Deletes the user's rows from every table with a user_id (and the pairs built on their responses), "
                    "and records them in the forgotten-users ledger under the home, which every later training snapshot "
                    "obeys. Kafka's topics keep the events until their retention expires.",
    )
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_forget)


def cmd_forget(args: argparse.Namespace) -> int:
    from prefloop.privacy.forget import forget_user

    report = forget_user(load_settings(), args.user_id)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    deleted = ", ".join(f"{table} {n}" for table, n in report.deleted.items()) or "no table has a user_id column"
    print(f"forgot the user: rows deleted: {deleted}; {report.response_ids} response(s) left out of every later training "
          f"snapshot (ledger {report.ledger}). Kafka keeps their events until retention expires.")
    return 0
