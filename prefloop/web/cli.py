"""`prefloop web` and `prefloop report`: parsing only."""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import NoReturn


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Bad arguments print one line and exit 2, without the usage block."""

    def error(self: argparse.ArgumentParser, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    parser.error = types.MethodType(error, parser)  # type: ignore[method-assign]
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a TCP port, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"should be a TCP port between 1 and 65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {value}")
    return value


def _period(text: str) -> float:
    from prefloop.errors import ConfigError
    from prefloop.web.report import parse_period

    try:
        return parse_period(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"should be {exc}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = _one_line_errors(sub.add_parser(
        "web", help="the web app: A/B arena, leaderboard and dashboard (started by `prefloop up`)"))
    p.add_argument("--host", help="address to bind (setting web_host); off loopback [web] username/password are required")
    p.add_argument("--port", type=_port, help="port (setting web_port, default 17860)")
    p.set_defaults(handler=cmd_web)

    p = _one_line_errors(sub.add_parser(
        "report", help="write one self-contained HTML report: the dashboard's figures and the weekly monitoring report"))
    p.add_argument("--out", type=Path, metavar="FILE.html", help="where to write it (default: under the home directory)")
    p.add_argument("--since", type=_period, default=_period("7d"), metavar="PERIOD",
                   help="period covered, ending now: 7d (default), 24h, 2w, …")
    p.set_defaults(handler=cmd_report)


def cmd_web(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from prefloop.web.server import run

    overrides = {"web_host": args.host, "web_port": args.port}
    run(load_settings(**{k: v for k, v in overrides.items() if v is not None}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings
    from prefloop.web.report import write_report
    from prefloop.web.settings import load_web_settings

    settings = load_settings()
    path = write_report(settings, load_web_settings(settings), args.since, args.out)
    print(path)
    return 0
