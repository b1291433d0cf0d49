"""`RolloutSettings`: the canary plan, the rollback thresholds and the controller's timing.

Loaded with `settings.section(RolloutSettings)`: the `[rollout]` table of prefloop.toml,
then `PREFLOOP_ROLLOUT_<FIELD>` environment variables (e.g. `PREFLOOP_ROLLOUT_STAGES=0.1:10s,1.0`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from evaluator.rollout.plan import Stage, format_duration, parse_stages
from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting


@dataclass
class RolloutSettings:
    SECTION: ClassVar[str] = "rollout"

    stages: str = setting(
        "0.05:24h,0.2:48h,0.5:72h,1.0",
        help="Canary traffic fraction and least time held per stage (units s, m, h, d, w), ending with 1.0: "
             "reaching it makes the canary production (COMPLETE).",
    )
    min_events: int = setting(
        200, help="Fewest canary responses (live feedback events) a stage needs before it can advance.", ge=0)
    min_feedback: int = setting(
        50, help="Fewest user judgements of canary responses (thumbs, ratings, CHOICE votes) a stage needs before "
                 "it can advance; 0 lets a stage advance on serving metrics alone.", ge=0)
    check_interval_s: float = setting(60.0, help="Seconds between two checks of the live metrics.", gt=0)
    max_stage_s: float = setting(
        604800.0, help="A stage still short of data after this many seconds is rolled back: a canary nobody "
                       "uses never reaches 100%. Must exceed every stage's duration.", gt=0)
    max_error_ratio: float = setting(
        1.5, help="Roll back when the canary's error rate is above this multiple of production's.", gt=0)
    max_p99_latency_ms: float = setting(
        2000.0, help="Roll back when the canary's p99 latency is above this (more than 1% of its responses slower).",
        gt=0)
    min_satisfaction_ratio: float = setting(
        0.9, help="Roll back when the canary's satisfaction (thumbs-up rate, mean rating or CHOICE win rate) is "
                  "below this multiple of production's.", gt=0, le=1)
    max_crash_rate: float = setting(
        0.01, help="Roll back when more than this share of the canary's responses failed with an error of kind "
                   "crash (the text before the first ':').", ge=0, lt=1)
    alpha: float = setting(
        0.05, help="Error level of each rule's always-valid confidence sequence: a rule fires by chance with "
                   "probability at most alpha over the whole rollout, however often it is checked.", gt=0, lt=0.5)
    decision_log: int = setting(50, help="Decisions kept in the rollout record (`prefloop rollout status`).", ge=1)
    lease_ttl_s: float = setting(
        15.0, help="Seconds the controller's lease lives without renewal; a standby takes over after it lapses.",
        gt=0)
    poll_s: float = setting(
        0.5, help="Seconds between two reads of models.promotions and of operators' commands (promote, rollback).",
        gt=0)
    command_timeout_s: float = setting(
        30.0, help="How long `prefloop models promote|rollback` waits for the controller to apply the command.",
        gt=0)

    def __post_init__(self) -> None:
        check_fields(self)
        longest = max(s.duration_s for s in self.plan)
        if longest >= self.max_stage_s:
            raise ConfigError(f'"max_stage_s" should exceed the longest stage ({format_duration(longest)}), '
                              f"got {self.max_stage_s:g}")
        if self.lease_ttl_s <= 2 * self.poll_s:
            raise ConfigError(f'"lease_ttl_s" should be more than twice "poll_s" ({self.poll_s:g}), got {self.lease_ttl_s:g}')

    @cached_property
    def plan(self) -> tuple[Stage, ...]:
        return parse_stages(self.stages)


def load_rollout_settings(settings: Any, **overrides: Any) -> RolloutSettings:
    """`RolloutSettings` from prefloop's settings object (file `[rollout]` + env), then `overrides`."""
    import dataclasses

    loaded = settings.section(RolloutSettings)
    values = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(loaded, **values) if values else loaded
