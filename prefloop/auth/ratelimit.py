"""A token bucket per caller (an API key's name, or a client address): `rate` requests per
second on average, `burst` at once. In-process: each collector or gateway process limits on
its own, so N processes behind a balancer allow N times the rate."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

MAX_CALLERS = 10_000  # buckets kept; the least recently seen caller's is dropped beyond (addresses are unbounded)


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def retry_after(self, caller: str) -> int | None:
        """Take one token for `caller`: None when allowed, else whole seconds until a token is back."""
        if self.rate <= 0:
            return None
        now = self._clock()
        tokens, at = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[caller] = (tokens, now)
        if len(self._buckets) > MAX_CALLERS:
            self._buckets.popitem(last=False)
        return None if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
