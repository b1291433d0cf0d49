"""Stage plans and `[rollout]` settings: parsing, bounds, one-line errors naming the setting."""

from __future__ import annotations

import pytest

from evaluator.rollout.plan import Stage, format_duration, parse_duration, parse_stages
from evaluator.rollout.settings import RolloutSettings, load_rollout_settings
from prefloop.errors import ConfigError
from prefloop.setting_fields import settings_table
from prefloop.settings import Settings


def test_a_demo_plan_in_seconds():
    assert parse_stages(" 0.1:30s, 0.5:1m ,1.0") == (Stage(0.1, 30.0), Stage(0.5, 60.0), Stage(1.0, 0.0))


def test_default_plan_is_the_product_briefs():
    assert RolloutSettings().plan == (Stage(0.05, 86400.0), Stage(0.2, 172800.0), Stage(0.5, 259200.0), Stage(1.0, 0.0))


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("1.5m", 90), ("24h", 86400), ("2d", 172800), ("1w", 604800), ("0s", 0)])
def test_durations_take_a_unit(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (754, "12m34s"), (3 * 3600 + 300, "3h05m"), (2 * 86400 + 4 * 3600, "2d04h")])
def test_durations_print_short(seconds: float, text: str):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "stages, message",
    [
        ("1.0", "at least one canary stage and the final 1.0"),
        ("0.05:24h,0.5:1h", "should end with 1.0 and no duration"),
        ("0.05:24h,1.0:1h", "should end with 1.0 and no duration"),
        ("0.05,1.0", "needs a duration, e.g. 0.05:24h"),
        ("0.05:1y,1.0", "duration should be a number with a unit s, m, h, d or w"),
        ("0.2:1h,0.1:1h,1.0", "fractions should increase, got 0.2 then 0.1"),
        ("1.5:1h,1.0", "canary fraction should be in (0, 1)"),
        ("five:1h,1.0", "should start with a traffic fraction"),
    ],
)
def test_bad_plans_name_the_problem(stages: str, message: str):
    with pytest.raises(ConfigError, match="stages") as info:
        RolloutSettings(stages=stages)
    assert message in str(info.value)


def test_max_stage_s_must_exceed_every_stage():
    with pytest.raises(ConfigError, match=r'"max_stage_s" should exceed the longest stage \(3d00h\)'):
        RolloutSettings(max_stage_s=86400)
    assert RolloutSettings(stages="0.1:5s,1.0", max_stage_s=6).max_stage_s == 6


@pytest.mark.parametrize("field, value, message", [
    ("min_satisfaction_ratio", 1.5, '"min_satisfaction_ratio" should be in (0, 1], got 1.5'),
    ("alpha", 0.5, '"alpha" should be in (0, 0.5), got 0.5'),
    ("max_crash_rate", 1.0, '"max_crash_rate" should be in [0, 1), got 1'),
    ("min_events", -1, '"min_events" should be zero or more, got -1'),
    ("check_interval_s", 0, '"check_interval_s" should be greater than zero, got 0'),
])
def test_thresholds_are_bounded(field: str, value: float, message: str):
    with pytest.raises(ConfigError) as info:
        RolloutSettings(**{field: value})
    assert str(info.value) == message


def test_settings_come_from_the_rollout_section_and_env(tmp_path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "prefloop.toml"
    config.write_text('[rollout]\nstages = "0.1:1h,1.0"\nmin_events = 10\n')
    monkeypatch.setenv("PREFLOOP_CONFIG", str(config))
    monkeypatch.setenv("PREFLOOP_ROLLOUT_MAX_ERROR_RATIO", "2.0")
    loaded = load_rollout_settings(Settings(home=tmp_path / "home"))
    assert (loaded.plan, loaded.min_events, loaded.max_error_ratio) == ((Stage(0.1, 3600.0), Stage(1.0, 0.0)), 10, 2.0)
    monkeypatch.setenv("PREFLOOP_ROLLOUT_ALPHA", "2")
    with pytest.raises(ConfigError, match='"alpha" should be in'):
        load_rollout_settings(Settings(home=tmp_path / "home"))


def test_every_setting_is_documented():
    table = settings_table(RolloutSettings)
    for name in ("stages", "min_events", "min_feedback", "check_interval_s", "max_stage_s", "max_error_ratio",
                 "max_p99_latency_ms", "min_satisfaction_ratio", "max_crash_rate", "alpha"):
        assert f"| `{name}` |" in table
