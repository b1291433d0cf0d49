"""`prefloop web` and `prefloop report`: parsing only."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefloop.arguments import one_line_errors
from prefloop.setting_fields import add_flags, flag_values
from prefloop.settings import Settings

ADDRESS_FLAGS = ("web_host", "web_port")  # top-level settings, as --host and --port


def _period(text: str) -> float:
    from prefloop.errors import ConfigError
    from prefloop.web.report import parse_period

    try:
        return parse_period(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"should be {exc}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = one_line_errors(sub.add_parser(
        "web", help="the web app: A/B arena, leaderboard and dashboard (started by `prefloop up`)"))
    add_flags(p, Settings, ADDRESS_FLAGS, {"web_host": ("--host",), "web_port": ("--port",)})
    p.set_defaults(handler=cmd_web)

    p = one_line_errors(sub.add_parser(
        "report", help="write one self-contained HTML report: the dashboard's figures and the weekly monitoring report"))
    p.add_argument("--out", type=Path, metavar="FILE.html", help="where to write it (default: under the home directory)")
    p.add_argument("--since", type=_period, default=_period("7d"), metavar="PERIOD",
                   help="period covered, ending now: 7d (default), 24h, 2w, …")
    p.set_defaults(handler=cmd_report)


def cmd_web(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from prefloop.web.server import run

    run(load_settings(**flag_values(args, ADDRESS_FLAGS)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from prefloop.web.report import write_report
    from prefloop.web.settings import load_web_settings

    settings = load_settings()
    path = write_report(settings, load_web_settings(settings), args.since, args.out)
    print(path)
    return 0
