"""What the demo waits for: the contract topics `training.requests`, `training.results` and
`models.promotions`, read from their end at the demo's start, so the demo reacts to the system's own
events rather than to its internals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from prefloop import topics
from prefloop.errors import PrefloopError
from prefloop.kafka_client import options_for
from prefloop.settings import Settings
from schemas import PromotionEvent, TrainingRequest, TrainingResult, decode

R = TypeVar("R")
WATCHED = (topics.TRAINING_REQUESTS, topics.TRAINING_RESULTS, topics.PROMOTIONS)


class StepFailed(PrefloopError):
    """A demo step failed: it waited longer than its limit, or the system reported a failure."""


class ContractWatcher:
    """Collects every record published on the watched topics after `start()`."""

    def __init__(self, bootstrap_servers: Settings | str) -> None:
        # the [kafka] security settings, as every other client (prefloop/kafka_client.py)
        self.consumer = AIOKafkaConsumer(**options_for(bootstrap_servers), enable_auto_commit=False)
        self.records: list[TrainingRequest | TrainingResult | PromotionEvent] = []
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(t, p) for t in WATCHED for p in sorted(self.consumer.partitions_for_topic(t) or {0})]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # pin the positions now: later records are the demo's
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            decoded = [decode(m.value) for messages in batches.values() for m in messages]
            if decoded:
                async with self._arrived:
                    self.records.extend(decoded)
                    self._arrived.notify_all()

    async def wait_for(self, pick: Callable[[object], R | None], timeout_s: float, what: str,
                       tick: Callable[[float], None] | None = None) -> R:
        """The first record `pick` accepts (returns non-None for), waiting up to `timeout_s`; `tick(elapsed)`
        is called every few seconds while waiting (progress lines)."""
        started = time.monotonic()
        seen = 0
        while True:
            async with self._arrived:
                for record in self.records[seen:]:
                    found = pick(record)
                    if found is not None:
                        return found
                seen = len(self.records)
                left = timeout_s - (time.monotonic() - started)
                if left <= 0:
                    raise StepFailed(f"no {what} within {timeout_s:.0f}s")
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 5.0))
                except asyncio.TimeoutError:
                    pass
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise the poller's error
            if tick:
                tick(time.monotonic() - started)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
