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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be greater than zero, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"should be greater than zero, got {value}")
    return value
