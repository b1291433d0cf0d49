"""Durations as people type them: a number and one unit (s, m, h, d, w), e.g. 90s, 30m, 24h, 7d, 2w.

One parser for every flag and setting that takes one (report periods, rollout stages, pair exports).
"""

from __future__ import annotations

import re

UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float | None:
    """Seconds in `text`, or None when it is not a number followed by one unit s, m, h, d or w."""
    match = _DURATION.match(text)
    return float(match.group(1)) * UNITS_S[match.group(2)] if match else None
