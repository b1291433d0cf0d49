"""The rollout plan: traffic stages parsed from text such as "0.05:24h,0.2:48h,0.5:72h,1.0".

Each stage is a canary traffic fraction and the least time it is held; durations take a unit
(s, m, h, d, w). The last stage is 1.0 with no duration: reaching it is COMPLETE (the canary becomes
production). Fractions strictly increase, so each stage sends more users to the canary and, with
the sticky monotone routing rule, a user who has the canary keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefloop import durations
from prefloop.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    fraction: float
    duration_s: float  # 0 for the final 100% stage, which is never held

    @property
    def label(self) -> str:
        return f"{self.fraction * 100:g}%"


def parse_duration(text: str) -> float:
    """Seconds in "90s", "30m", "24h", "2d" (a number and one unit)."""
    seconds = durations.parse_duration(text)
    if seconds is None:
        raise ConfigError(f'"stages": duration should be a number with a unit s, m, h, d or w (e.g. 24h), got {text!r}')
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: 45s, 12m30s, 3h05m, 2d04h."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def parse_stages(text: str) -> tuple[Stage, ...]:
    """The stages of `text`; raises ConfigError naming what is wrong."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) < 2:
        raise ConfigError(f'"stages" should list at least one canary stage and the final 1.0, got {text!r}')
    stages = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        fraction_text, _, duration_text = part.partition(":")
        try:
            fraction = float(fraction_text)
        except ValueError:
            raise ConfigError(f'"stages": {part!r} should start with a traffic fraction such as 0.05') from None
        if last:
            if fraction != 1.0 or duration_text:
                raise ConfigError(f'"stages" should end with 1.0 and no duration (the complete rollout), got {part!r}')
            stages.append(Stage(1.0, 0.0))
            continue
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f'"stages": canary fraction should be in (0, 1), got {part!r}')
        if not duration_text:
            raise ConfigError(f'"stages": canary stage {part!r} needs a duration, e.g. {fraction:g}:24h')
        if stages and fraction <= stages[-1].fraction:
            raise ConfigError(f'"stages": fractions should increase, got {stages[-1].fraction:g} then {fraction:g}')
        stages.append(Stage(fraction, parse_duration(duration_text)))
    return tuple(stages)


def format_stages(stages: tuple[Stage, ...]) -> str:
    return ",".join(f"{s.fraction:g}:{s.duration_s:g}s" if s.duration_s else f"{s.fraction:g}" for s in stages)
