"""Settings fields that carry their own documentation and bounds, as TRL's configs do.

    @dataclass
    class GateSettings:
        min_pairs: int = setting(50, help="Fewest held-out pairs a decision needs.", ge=1)

        def __post_init__(self) -> None:
            check_fields(self)

One declaration gives the default, the help text (README tables: `settings_table`), the range
check with a one-line message naming the field (`check_fields`) and, for the fields a command
exposes, its flag (`add_flags`). A `secret=True` field never appears in a repr or a table's
default column.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefloop.errors import ConfigError

HELP = "help"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the name TRL's configs use
    factory: Callable[[], Any] | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Sequence[str] | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field with its help text and bounds in `metadata`."""
    metadata = {HELP: help, "gt": gt, "ge": ge, "lt": lt, "le": le, "choices": tuple(choices) if choices else None, "secret": secret}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bound_problem(meta: typing.Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with `value` under a field's bounds ("should be …"), or None."""
    choices = meta.get("choices")
    if choices and value not in choices:
        return f"should be one of {', '.join(choices)}"
    low = ("gt", meta["gt"]) if meta.get("gt") is not None else ("ge", meta.get("ge"))
    high = ("lt", meta["lt"]) if meta.get("lt") is not None else ("le", meta.get("le"))
    if low[1] is None and high[1] is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    ok = True
    if low[1] is not None:
        ok &= value > low[1] if low[0] == "gt" else value >= low[1]
    if high[1] is not None:
        ok &= value < high[1] if high[0] == "lt" else value <= high[1]
    if ok:
        return None
    if low[1] is not None and high[1] is not None:
        left = "(" if low[0] == "gt" else "["
        right = ")" if high[0] == "lt" else "]"
        return f"should be in {left}{_number(low[1])}, {_number(high[1])}{right}"
    if low[1] is not None:
        if low[1] == 0:
            return "should be greater than zero" if low[0] == "gt" else "should be zero or more"
        return f"should be greater than {_number(low[1])}" if low[0] == "gt" else f"should be at least {_number(low[1])}"
    return f"should be less than {_number(high[1])}" if high[0] == "lt" else f"should be at most {_number(high[1])}"


def check_fields(obj: Any) -> None:
    """Raise `ConfigError` for the first field of `obj` outside its declared bounds."""
    for f in dataclasses.fields(obj):
        if HELP not in f.metadata:
            continue
        value = getattr(obj, f.name)
        problem = bound_problem(f.metadata, value)
        if problem:
            shown = "(hidden)" if f.metadata.get("secret") else repr(value) if isinstance(value, str) else _number(value)
            raise ConfigError(f'"{f.name}" {problem}, got {shown}')


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata.get("secret"):
        return "(secret)"
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_number(v)}" for k, v in value.items()) or "(empty)"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, str):
        return value or "(empty)"
    if isinstance(value, Path):
        return str(value)
    return _number(value)


def settings_table(cls: type, exclude: Iterable[str] = ()) -> str:
    """The README table of a settings dataclass: one row per documented field."""
    skip = set(exclude)
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if HELP in f.metadata and f.name not in skip:
            text = " ".join(f.metadata[HELP].split()).replace("|", "\\|")
            rows.append(f"| `{f.name}` | `{_default_text(f)}` | {text} |")
    return "\n".join(rows) + "\n"


def _flag_type(f: dataclasses.Field, hint: Any) -> Callable[[str], Any]:
    base = {int: int, float: float, str: str, Path: Path}.get(hint, str)

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            kind = "an integer" if base is int else "a number" if base is float else "a value"
            raise argparse.ArgumentTypeError(f"should be {kind}, got {text!r}") from None
        problem = bound_problem(f.metadata, value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, names: Iterable[str],
              options: Mapping[str, Sequence[str]] | None = None) -> None:
    """One `--field-name` flag per named field, typed and range-checked from the field itself.
    A flag left out is None (the settings file and environment then decide). `options` gives a field
    other option strings than `--field-name` (e.g. a short alias kept for an existing command)."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    options = options or {}
    for name in names:
        f = by_name[name]
        flags = list(options.get(name, ["--" + name.replace("_", "-")]))
        help_text = " ".join(f.metadata.get(HELP, "").split()).replace("%", "%%")
        if hints[name] is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.metadata.get("choices"):
            parser.add_argument(*flags, dest=name, choices=f.metadata["choices"], default=None, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=_flag_type(f, hints[name]), default=None, metavar=name.upper(),
                                help=help_text)


def flag_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The settings given on the command line among `names` (flags left out are not in it)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


__all__ = ["setting", "check_fields", "bound_problem", "settings_table", "add_flags", "flag_values"]
