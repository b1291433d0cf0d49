"""Riding out Redis outages: a redis-py retry policy bounded by how long Redis has been gone.

redis-py retries a command a fixed number of times (three by default), which turns a
restart of redis-server (a few seconds) into an exception in the middle of a batch. This
policy instead retries connection errors, timeouts and "loading the dataset" answers with
exponential back-off (capped at `backoff_cap_s`) until Redis answers again or has been
unreachable for `max_outage_s`; only then does the error reach the caller. The caller is
simply held meanwhile: a streams stage keeps its batch and its lock, Faust's bounded buffers
fill and the consumer stops fetching (backpressure), nothing is dropped or done twice.

Every command prefloop retries this way is idempotent (reads, SET of a fixed value, SADD/SET
scripts whose counters only count new members), so a command that reached Redis but whose
answer was lost can be sent again safely.

One `OutageRetry` is shared by all connections of a client (redis-py deep-copies the policy
per connection; `__deepcopy__` returns the same object), so it sees the outage as a whole:
one warning when Redis goes away, one when it answers again, and `epoch`, bumped each time
it does. A restarted Redis may have lost its last writes (appendfsync everysec), so code that
must repair them compares `epoch` with the value it last repaired at (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from prefloop.errors import one_line

log = logging.getLogger("prefloop.redis")

T = TypeVar("T")

STILL_DOWN_LOG_S = 30.0  # while Redis stays away, log a reminder this often


class OutageRetry(Retry):
    """Retry until Redis answers or has been unreachable for `max_outage_s` (see the module doc)."""

    def __init__(self, max_outage_s: float, backoff_cap_s: float = 2.0, name: str = "Redis") -> None:
        if max_outage_s <= 0:
            raise ValueError(f'"max_outage_s" should be greater than zero, got {max_outage_s}')
        # BusyLoadingError (Redis replaying its AOF after a restart) is a ConnectionError.
        super().__init__(ExponentialBackoff(cap=backoff_cap_s, base=0.05), retries=-1,
                         supported_errors=(ConnectionError, TimeoutError))
        self.max_outage_s = max_outage_s
        self.name = name
        self.down_since: float | None = None  # monotonic time of the first failure of the current outage
        self.epoch = 0  # outages survived so far
        self._last_log = 0.0

    def __deepcopy__(self, memo: dict[int, Any]) -> "OutageRetry":
        return self  # one outage state for every connection of the client

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[..., Any],
                              is_retryable: Callable[[Exception], bool] | None = None,
                              with_failure_count: bool = False) -> T:
        failures = 0
        while True:
            try:
                result = await do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                await (fail(error, failures) if with_failure_count else fail(error))
                self._failed(error)
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            # Only a call that failed and then went through shows that Redis is back: another one may
            # just have been answered late, or found its pooled connection not yet known to be closed.
            if failures and self.down_since is not None:
                self._recovered()
            return result

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = self._last_log = now
            log.warning("%s unreachable (%s: %s); holding and retrying for up to %.0fs",
                        self.name, type(error).__name__, one_line(error), self.max_outage_s)
            return
        down_s = now - self.down_since
        if down_s > self.max_outage_s:
            log.error("%s unreachable for %.0fs (max_outage_s %.0f); giving up: %s",
                      self.name, down_s, self.max_outage_s, one_line(error))
            raise error
        if now - self._last_log >= STILL_DOWN_LOG_S:
            self._last_log = now
            log.warning("%s still unreachable after %.0fs (%s)", self.name, down_s, one_line(error))

    def _recovered(self) -> None:
        down_s = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        self.epoch += 1
        log.warning("%s answers again after %.1fs", self.name, down_s)


def connect(url: str, max_outage_s: float, socket_timeout_s: float = 15.0, name: str = "Redis") -> Any:
    """An asyncio Redis client at `url` whose commands ride out outages of up to `max_outage_s`."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
                                   health_check_interval=30, retry=OutageRetry(max_outage_s, name=name))


def outage_of(client: Any) -> OutageRetry | None:
    """The `OutageRetry` of a client made by `connect` (None for other clients)."""
    retry = client.get_retry()
    return retry if isinstance(retry, OutageRetry) else None
