"""Argument parsing shared by every `prefloop` verb: one-line errors and the numeric argument types.

A settings field exposed as a flag gets its type and bounds from the field (`setting_fields.add_flags`);
these are for the arguments that are not settings (bench sizes, time limits).
"""

from __future__ import annotations

import argparse
import types
from typing import NoReturn


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Bad arguments print one line (`prefloop train: error: …`) and exit 2, without the usage block."""

    def error(self: argparse.ArgumentParser, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    parser.error = types.MethodType(error, parser)  # type: ignore[method-assign]
    return parser


def _positive(kind: type, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"should be {what}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"should be greater than zero, got {value}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid <name> value" messages
    return parse


positive_int = _positive(int, "an integer")
positive_float = _positive(float, "a number")
