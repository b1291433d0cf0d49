"""What every stage of one worker shares: settings, the Faust app, its topics and tables, Redis, sends.

Stages write table state with an explicit partition: they work on batches that span
partitions and on timers outside any event, where Faust's "current event" partition would be
wrong or missing.

Table writes are deferred: `stage_put` / `stage_delete` change the in-memory table and mark
the key dirty, and `write_dirty` sends each dirty key's current value to the changelog once.
The pipeline calls `write_dirty` right before every offset commit (and on revocation), under
the stage's lock, so between batches. The changelog then always holds at least the state
of the committed input, which is all recovery needs: a group touched by ten batches in one
commit interval is written once instead of ten times, and an action held and released within
the interval is never written at all.

Acks are deferred the same way: a stage hands its sends' futures to `expect_acks` and goes on
to its next batch; `write_dirty` first waits for all of them (`settle`), so state never
reaches the changelog ahead of the outputs it produced. Offsets need no more: Faust flushes
the producer before it commits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Iterable

import faust
import orjson
import redis.asyncio as aioredis

from prefloop import keys, redis_outage
from prefloop import topics as contract
from prefloop.settings import Settings, TopicSpec
from streams.compat.aiokafka import keep_in_metadata, send_in_batches
from streams.compat.faust import aiokafka_producer
from streams.freeze import FreezeWatch, FrozenError
from streams.settings import StreamsSettings

log = logging.getLogger("prefloop.streams")


def internal_topic(ss: StreamsSettings, name: str) -> str:
    return f"{ss.app_id}-{name}"


@dataclass(frozen=True)
class InternalTopics:
    """The topics between the stages of one pipeline, each with the partition count of the stage it feeds."""

    resolved_actions: TopicSpec  # resolve -> group, partitioned like feedback.responses
    indexed: TopicSpec  # group -> resolve (response ids indexed), partitioned like feedback.actions
    candidates: TopicSpec  # group -> publish, partitioned like feedback.pairs
    analytics: TopicSpec  # every stage -> the analytics sink

    @classmethod
    def of(cls, settings: Settings, ss: StreamsSettings) -> "InternalTopics":
        return cls(
            TopicSpec(internal_topic(ss, "resolved-actions"), settings.responses_partitions),
            TopicSpec(internal_topic(ss, "indexed-responses"), settings.actions_partitions),
            TopicSpec(internal_topic(ss, "pair-candidates"), settings.pairs_partitions),
            TopicSpec(internal_topic(ss, "analytics-rows"), ss.analytics_partitions),
        )

    def all(self) -> list[TopicSpec]:
        return [self.resolved_actions, self.indexed, self.candidates, self.analytics]


@dataclass
class Stats:
    """In-process counters, logged periodically; exact counts live in ClickHouse and Redis."""

    counts: Counter = field(default_factory=Counter)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


class Runtime:
    def __init__(self, settings: Settings, ss: StreamsSettings, app: faust.App, worker_id: str) -> None:
        self.settings = settings
        self.ss = ss
        self.app = app
        self.worker_id = worker_id
        self.stats = Stats()
        # Every send checks it first: a worker frozen past the session timeout must not write (streams/freeze.py).
        self.freeze = FreezeWatch(ss.session_timeout_s)
        # When this worker last got partitions: held actions recovered from a changelog start
        # their TTL again from here, so time spent with no worker alive never expires them.
        self.assigned_at_ms = self.now_ms()
        self._redis: aioredis.Redis | None = None
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        # Contract topics: never created by Faust (internal=False); their partition counts come from Settings.
        self.responses = app.topic(contract.RESPONSES, partitions=settings.responses_partitions, internal=False, **raw)
        self.actions = app.topic(contract.ACTIONS, partitions=settings.actions_partitions, internal=False, **raw)
        self.pairs = app.topic(contract.PAIRS, partitions=settings.pairs_partitions, internal=False, **raw)
        self.dlq = app.topic(contract.DLQ, partitions=settings.dlq_partitions, internal=False, **raw)
        self.training_requests = app.topic(contract.TRAINING_REQUESTS, partitions=settings.control_partitions,
                                           internal=False, **raw)
        # Internal topics, created by Faust with the partition counts of the stage they feed.
        internal = InternalTopics.of(settings, ss)
        self.resolved_actions, self.indexed, self.candidates, self.analytics = (
            app.topic(spec.name, partitions=spec.partitions, internal=True, **raw) for spec in internal.all())
        # Changelog-backed state (memory store; the changelog topic is the durable copy).
        self.pending = app.Table("pending-actions", partitions=settings.actions_partitions,
                                 key_type=str, value_type=None)
        self.groups = app.Table("prompt-groups", partitions=settings.responses_partitions,
                                key_type=str, value_type=None)
        self._dirty: dict[str, dict[str, int]] = {}  # table name -> {key: partition} not yet in the changelog
        self._created: dict[str, set[str]] = {}  # table name -> keys that are new since the last write_dirty
        self._unacked: list[Awaitable[Any]] = []  # sends that must be acknowledged before the next state write
        self._tracked: set[str] = set()  # topics the producer's metadata is told to keep (`_producer_for`)

    # --- services --------------------------------------------------------------------------------
    @property
    def redis(self) -> aioredis.Redis:
        """The worker's Redis client: a command waits out an outage of up to `redis_outage_s`
        (prefloop/redis_outage.py) instead of failing the batch that sent it."""
        if self._redis is None:
            self._redis = redis_outage.connect(self.settings.redis_dsn, self.ss.redis_outage_s)
        return self._redis

    @property
    def redis_epoch(self) -> int:
        """Bumped each time Redis answers again after an outage: a restarted Redis may have lost
        its last second of writes, which the stages then repair (docs/reliability.md)."""
        outage = redis_outage.outage_of(self.redis)
        return outage.epoch if outage is not None else 0

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- sends --------------------------------------------------------------------------------------
    async def send(self, topic: faust.types.TopicT | str, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> Awaitable[Any]:
        """Hand the record to the producer now; await the returned future for the broker's ack.

        Goes straight to Faust's transport producer (aiokafka): no per-message channel/buffer
        machinery, and never attached to a commit. Faust flushes this producer before it
        commits offsets, so everything sent while processing an event is acked before the
        event's offset is committed.
        """
        self.check_not_frozen()
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        self._producer_for(name)
        return await self.app.producer.send(name, key, value, partition, None, None)

    def _producer_for(self, name: str) -> Any:
        """The aiokafka producer, with `name` among the topics its metadata refreshes ask for
        (streams/compat/aiokafka.py, `keep_in_metadata`)."""
        producer = aiokafka_producer(self.app)
        if name not in self._tracked:
            keep_in_metadata(producer, name)
            self._tracked.add(name)
        return producer

    async def send_batch(self, topic: faust.types.TopicT | str, partition: int,
                         records: Iterable[tuple[bytes | None, bytes | None]]) -> list["SentBatch"]:
        """Send (key, value) records to one partition, in order, as whole producer batches
        (streams/compat/aiokafka.py, `send_in_batches`). Like `send`, Faust's flush before a commit
        waits for these batches too."""
        self.check_not_frozen()
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        producer = self._producer_for(name)
        return [SentBatch(future, count) for future, count in await send_in_batches(producer, name, partition, records)]

    def check_not_frozen(self) -> None:
        """Exit before writing anything if this worker stood still past the session timeout."""
        try:
            self.freeze.check()
        except FrozenError as exc:
            fatal(exc, "freeze check")

    async def send_dead_letter(self, key_value: tuple[bytes, bytes], reason: str) -> Awaitable[Any]:
        self.stats.add(f"dlq.{reason}")
        key, value = key_value
        return await self.send(self.dlq, key, value)

    # --- table state with explicit partitions ------------------------------------------------
    # Keys and values are JSON, exactly as Faust's "json" codec writes them, so Faust's own
    # changelog recovery reads them back into the tables.
    def stage_put(self, table: faust.Table, partition: int, key: str, value: Any) -> None:
        """Set the value in memory; `write_dirty` sends it to the changelog (see the module doc)."""
        name = table.name
        if key not in table.data:
            self._created.setdefault(name, set()).add(key)
        table.data[key] = value
        self._dirty.setdefault(name, {})[key] = partition

    def stage_delete(self, table: faust.Table, partition: int, key: str) -> None:
        table.data.pop(key, None)
        self._dirty.setdefault(table.name, {})[key] = partition

    def expect_acks(self, futures: list[Awaitable[Any]]) -> None:
        self._unacked.extend(futures)

    async def settle(self) -> None:
        """Wait for the broker's ack of every send given to `expect_acks`; a failed send raises."""
        futures, self._unacked = self._unacked, []
        await wait_all(futures)

    async def write_dirty(self, table: faust.Table) -> int:
        """Once every expected ack is in (`settle`), send the current value of every dirty key
        of `table` (a tombstone for deleted ones).

        Call only between batches of the stage that owns the table (under its lock), so every
        output of the changes being written is among the acknowledged sends.
        """
        await self.settle()
        dirty = self._dirty.pop(table.name, None)
        created = self._created.pop(table.name, set())
        if not dirty:
            return 0
        data = table.data
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, partition in dirty.items():
            value = data.get(key)
            if value is None and key in created:
                continue  # created and deleted since the last write: the changelog never had it
            by_partition.setdefault(partition, []).append((_json(key), None if value is None else _json(value)))
        for partition, records in by_partition.items():
            await self.send_batch(table.changelog_topic, partition, records)
        written = sum(len(records) for records in by_partition.values())
        self.stats.add(f"changelog.{table.name}", written)
        return written

    def owned(self, topic: str) -> set[int]:
        """Partitions of `topic` this worker owns right now."""
        try:
            return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        except Exception:
            return set()

    async def mark_busy(self) -> None:
        """Tell every worker's sweeps that input is backlogged: no TTL expiry until it clears."""
        await self.redis.set(keys.STREAMS_BUSY, self.worker_id, px=int(max(2.0, 4 * self.ss.sweep_interval_s) * 1000))

    async def mark_backlog(self) -> None:
        """Responses lag behind: no worker expires held actions until they catch up."""
        await self.redis.set(keys.STREAMS_BACKLOG, self.worker_id, px=int(max(2.0, 4 * self.ss.sweep_interval_s) * 1000))

    async def expiry_allowed(self) -> bool:
        """Orphans may expire only while no worker is catching up (the response may be in its backlog)."""
        if self.now_ms() - self.assigned_at_ms < 1000 * max(2.0, 4 * self.ss.sweep_interval_s):
            return False
        return not await self.redis.exists(keys.STREAMS_BUSY, keys.STREAMS_BACKLOG)

    def lag(self, topic: str, read: dict[int, int]) -> int:
        """Records of `topic` on this worker's partitions not yet read (by the offsets in `read`)."""
        total = 0
        for tp in self.app.consumer.assignment():
            if tp.topic == topic:
                high = self.app.consumer.highwater(tp)
                if high is not None and tp.partition in read:
                    total += max(0, high - read[tp.partition] - 1)
        return total

    def expired(self, arrived_ms: int, now_ms: int) -> bool:
        return now_ms - max(arrived_ms, self.assigned_at_ms) >= self.ss.orphan_ttl_s * 1000

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)


@dataclass(frozen=True)
class SentBatch:
    """A producer batch handed to the broker: await `future` for its first record's metadata."""

    future: Awaitable[Any]
    count: int

    async def last_offset(self) -> int:
        """The offset the broker gave the batch's last record (waits for the ack)."""
        return (await self.future).offset + self.count - 1


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


async def wait_all(futures: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await every send; the first failure propagates (the batch is then retried from Kafka)."""
    futures = list(futures)
    if not futures:
        return []
    return list(await asyncio.gather(*futures))


def fatal(exc: BaseException, where: str) -> None:
    """Stop the process on a failure that left in-memory state ahead of the changelog.

    Restarting rebuilds every table from its changelog and replays uncommitted input, which
    the stages deduplicate; carrying on with diverged state could lose or double pairs.
    """
    log.critical("fatal error in %s, exiting so state is rebuilt from the changelogs: %r", where, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class BatchStage:
    """An agent body: takes batches off its stream and processes each one under the stage's lock."""

    name: str
    rt: "Runtime"
    lock: asyncio.Lock

    async def run(self, stream: Any) -> None:
        async for events in stream.take_events(self.rt.ss.batch_events, self.rt.ss.batch_s):
            async with self.lock:
                try:
                    await self.process(events)
                except Exception as exc:
                    fatal(exc, self.name)

    async def process(self, events: Any) -> None:
        raise NotImplementedError
