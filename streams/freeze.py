"""Noticing that this worker stood still long enough to lose its partitions, before it writes again.

A worker frozen for longer than the consumer group's session timeout (SIGSTOP, a paused VM, a
machine starved of CPU) has been dropped from the group: another worker took its partitions,
replayed their uncommitted input and went on from the changelogs. When the frozen worker wakes
up it would carry on where it stopped: publish pairs it checked against Redis before the
freeze (the new owner may have published them since), and, when the group tells it its
partitions are gone, write its table state, older than the new owner's, to their changelogs.

So every send first asks `FreezeWatch.check`: when the time since the last tick (every
TICK_S) exceeds the session timeout while the process used almost no CPU meanwhile (so it was
stopped, not busy), the worker exits at once (code 70) without writing anything; its restart
(`prefloop up`'s watchdog, a container's restart policy) rejoins the group with state rebuilt
from the changelogs. A worker that was merely busy for that long kept its heartbeats (they
run on the consumer's own thread) and is left alone.
"""

from __future__ import annotations

import time

TICK_S = 0.25  # how often the event loop proves it is running
# A stopped process uses no CPU; one whose event loop is busy (or starved on a loaded machine)
# still gets more than this share of the wall time.
STOPPED_CPU_SHARE = 0.1


class FrozenError(RuntimeError):
    """The worker stood still longer than the session timeout: its partitions may belong to another worker."""


class FreezeWatch:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._wall: float | None = None  # armed by the first tick, once the event loop runs
        self._cpu = 0.0

    def tick(self) -> None:
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def check(self) -> None:
        """Raise FrozenError when the process stood still for longer than `limit_s` since the last tick."""
        if self._wall is None:
            return
        wall = time.monotonic() - self._wall
        if wall > self.limit_s and time.process_time() - self._cpu < STOPPED_CPU_SHARE * wall:
            raise FrozenError(f"this worker stood still for {wall:.1f}s (longer than session_timeout_s "
                              f"{self.limit_s:g}): its partitions may belong to another worker now")
