"""Dynamic batching: requests wait in one bounded queue; the runner takes batches of one version.

After the first waiting request, the runner waits a short window for more (unless a full batch is
already there), then takes up to `max_batch` requests of the oldest request's version, in arrival
order; requests of other versions keep their place for the next batch. Concurrent requests thus
share forward passes, and one adapter is active per batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Hashable, Protocol, TypeVar

from prefloop.serving.generation import GenerationError


class Queued(Protocol):
    @property
    def batch_key(self) -> Hashable: ...

    @property
    def abandoned(self) -> bool: ...


J = TypeVar("J", bound=Queued)


class QueueFullError(GenerationError):
    pass


class BatchQueue(Generic[J]):
    def __init__(self, max_waiting: int, max_batch: int, window_s: float) -> None:
        self.max_waiting = max_waiting
        self.max_batch = max_batch
        self.window_s = window_s
        self._waiting: deque[J] = deque()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, job: J) -> None:
        """Queue `job`, or raise QueueFullError (HTTP 429) when `max_waiting` requests already wait."""
        if len(self._waiting) >= self.max_waiting:
            raise QueueFullError("queue_full", f"the gateway's queue is full ({self.max_waiting} requests waiting); retry shortly",
                                 status=429, retry_after_s=1.0)
        self._waiting.append(job)
        self._arrived.set()

    async def next_batch(self) -> list[J]:
        """Wait for requests, then return the next batch (never empty)."""
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            if self.window_s > 0 and self._count(self._waiting[0].batch_key) < self.max_batch:
                await asyncio.sleep(self.window_s)
            batch = self._take()
            if batch:
                return batch

    def _count(self, key: Hashable) -> int:
        return sum(1 for job in self._waiting if job.batch_key == key)

    def _take(self) -> list[J]:
        # Requests whose client already left are dropped here, before they cost a forward pass.
        live = [job for job in self._waiting if not job.abandoned]
        if not live:
            self._waiting.clear()
            return []
        key = live[0].batch_key
        batch: list[J] = []
        rest: deque[J] = deque()
        for job in live:
            if job.batch_key == key and len(batch) < self.max_batch:
                batch.append(job)
            else:
                rest.append(job)
        self._waiting = rest
        return batch
