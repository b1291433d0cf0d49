"""Settings fields that carry their help and bounds: checks, README tables and CLI flags from one declaration."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from prefloop.errors import ConfigError
from prefloop.setting_fields import add_flags, check_fields, flag_values, setting, settings_table


@dataclass
class Example:
    count: int = setting(50, help="How many.", ge=1)
    share: float = setting(0.05, help="A share | of something.", gt=0, lt=1)
    mode: str = setting("fast", help="Which way.", choices=("fast", "slow"))
    token: str = setting("", help="An API token.", secret=True)
    verbose: bool = setting(False, help="Say more.")
    names: list[str] = setting(help="Some names.", factory=lambda: ["a", "b"])

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, '"count" should be at least 1, got 0'),
        ({"share": 1.0}, '"share" should be in (0, 1), got 1'),
        ({"share": 0.0}, '"share" should be in (0, 1), got 0'),
        ({"mode": "medium"}, "\"mode\" should be one of fast, slow, got 'medium'"),
    ],
)
def test_out_of_bounds_values_name_the_field(kwargs: dict, message: str):
    with pytest.raises(ConfigError) as info:
        Example(**kwargs)
    assert str(info.value) == message


def test_secret_is_hidden_from_repr_and_table():
    example = Example(token="s3cr3t-value")
    assert "s3cr3t" not in repr(example)
    table = settings_table(Example)
    assert "s3cr3t" not in table and "| `token` | `(secret)` |" in table


def test_table_rows_carry_default_and_escaped_help():
    table = settings_table(Example).splitlines()
    assert table[0] == "| setting | default | meaning |"
    assert "| `count` | `50` | How many. |" in table
    assert "| `share` | `0.05` | A share \\| of something. |" in table
    assert "| `names` | `a,b` | Some names. |" in table


def test_flags_are_typed_and_range_checked(capsys: pytest.CaptureFixture[str]):
    parser = argparse.ArgumentParser(prog="t")
    add_flags(parser, Example, ["count", "share", "mode", "verbose"])
    args = parser.parse_args(["--count", "7", "--verbose"])
    assert (args.count, args.share, args.mode, args.verbose) == (7, None, None, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "0"])
    assert "should be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--share", "x"])
    assert "should be a number, got 'x'" in capsys.readouterr().err


def test_extra_option_strings_and_flag_values():
    parser = argparse.ArgumentParser(prog="t")
    add_flags(parser, Example, ["count", "share"], {"count": ("--count", "-n")})
    args = parser.parse_args(["-n", "3"])
    assert flag_values(args, ["count", "share"]) == {"count": 3}


def test_train_flags_come_from_the_trainer_settings(capsys: pytest.CaptureFixture[str]):
    """`prefloop train`'s flags are generated from TrainerSettings: names, the old --lr, bounds, booleans."""
    from prefloop.cli import build_parser
    from trainer.cli import TRAIN_FLAGS

    parser = build_parser()
    args = parser.parse_args(["train", "--pairs", "p.jsonl", "--lr", "0.001", "--no-progress", "--heldout-fraction", "0.2"])
    assert flag_values(args, TRAIN_FLAGS) == {"learning_rate": 0.001, "progress": False, "heldout_fraction": 0.2}
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--pairs", "p.jsonl", "--replay-fraction", "1"])
    assert "argument --replay-fraction: should be in [0, 1), got 1" in capsys.readouterr().err
