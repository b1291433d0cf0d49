"""The Faust patch (faust-streaming 0.15.3): its consumer, acks and app, for consumer-side batching.

Faust hands every Kafka record to its streams one at a time: a `ConsumerMessage`, the
conductor's channel fan-out, an `Event`, sensors, stream iteration and an ack, plus (in
`Consumer._drain_messages`) a `wait_first` that creates two tasks per record. On a small
machine that costs more than the whole pipeline's own work (measured: a no-op Faust agent
reads ~5,000 events/s where raw aiokafka passes ~29,000 through). The input topics carry
one small Avro record per message, so this is where the throughput goes.

`BatchingConsumer` keeps everything Faust does — group membership, assignment, flow
control, acks, offset commits, table changelogs and recovery — and changes one thing: for
the topics in `App.batch_topics`, all records of one topic-partition in one fetch reach the
agent as a single message whose value is a `RecordBatch` (aiokafka's records, with no
per-record Faust message) and whose offset is the batch's last record. Acking that message
acks every offset of the batch at once, so a batch is committed all or nothing, after the
agent has processed it. Every other topic (internal bundles, changelogs) is delivered
exactly as Faust does.

It also closes a loss that Faust leaves open around rebalances: messages delivered into a
stream buffer that Faust then clears, or that a stream skips (and acks) for a stale
generation, were never processed, yet the read offset is past them, and Faust's seek back
after recovery skips partitions that have no commit yet. Here such acks do not count, every
buffer clear leads to a seek back before the next delivery (including partitions without a
commit, to the beginning), and seeks never overlap a delivery. The same holds for table
recovery: aiokafka is asked for a copy of the active partitions fixed when a fetch starts
(`_getmany`), and changelog records dropped undelivered are sought back to where recovery
has read them to (`_rewind_changelogs`), so a recovery never waits for records already consumed.

`App.before_commit`, when set, runs right before every offset commit: the pipeline writes
its deferred table state there (streams/runtime.py). `App.hold_back`, when set, names
partitions not to fetch for now (event-time alignment, streams/alignment.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import faust
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from prefloop.compat import Internal, require_version
from streams.batching import CODEC, RecordBatch
from streams.compat.aiokafka import assignment_state

VERSION = "0.15.3"
MODE_VERSION = "0.7.1"  # mode-streaming, Faust's service library (FlowControlEvent, cached_property)
require_version("faust-streaming", VERSION, __name__)
require_version("mode-streaming", MODE_VERSION, __name__)

# Every Faust internal this module overrides, replaces or reads, with its source digest in VERSION.
INTERNALS = (
    Internal("faust.transport.consumer:Consumer.getmany", "4b168d84882a70d6", "replaced by BatchingConsumer.getmany"),
    Internal("faust.transport.consumer:Consumer._wait_next_records", "6218e1969a636b3f", "called by getmany"),
    Internal("faust.transport.consumer:Consumer.ack", "5fcf41cf45153475", "extended: batch acks, stale acks not counted"),
    Internal("faust.transport.consumer:Consumer._commit_offsets", "1a69799041188441", "extended: App.before_commit first"),
    Internal("faust.transport.consumer:Consumer.perform_seek", "0e8c130ff4b0afd8", "replaced: atomic with deliveries"),
    Internal("faust.transport.consumer:Consumer.__init__", "302410d59e6972d1",
             "reads _read_offset, _committed_offset, _acked, _acked_index, _gap, _unacked_messages, "
             "_waiting_for_ack, _buffered_partitions"),
    Internal("faust.transport.consumer:ThreadDelegateConsumer._getmany", "f9d47aa9010b5ff2",
             "extended: a copy of the active set, minus App.hold_back"),
    Internal("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._fetch_records", "39a2c6c79fc1455a",
             "hands the active set to aiokafka, which reads an empty one as every partition"),
    Internal("faust.transport.drivers.aiokafka:Consumer._to_message", "7c24f6511b2fcef7", "builds unbatched messages"),
    Internal("faust.tables.recovery:Recovery.__init__", "acec96bd78fac09b",
             "reads active_tps, active_offsets, standby_tps, standby_offsets (_rewind_changelogs)"),
    Internal("faust.app.base:App._new_transport", "42db531312dd776f", "replaced: the batching transport"),
    Internal("faust.app.base:App.flow_control", "f664abbe76e25985", "replaced: clearing buffers makes the consumer re-read"),
    Internal("mode.utils.queues:FlowControlEvent.clear", "dda5e40d80288a8f", "extended by _RereadOnClear"),
    Internal("faust.transport.drivers.aiokafka:Producer._ensure_producer", "5592a4bbdf251325",
             "the aiokafka producer behind app.producer (aiokafka_producer)"),
)


class BatchingConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, delivering each fetch of a batched topic-partition as one
    message, and re-reading whatever a rebalance may have dropped (see `reread`)."""

    _delivery_lock: asyncio.Lock | None = None
    _seek_epoch = 0  # bumped by every seek of the stream partitions
    _reread = False  # set when delivered messages may have been dropped unprocessed
    _delivered: dict[TP, tuple[int, int]] | None = None

    @property
    def delivered(self) -> dict[TP, tuple[int, int]]:
        """Batched topic-partition -> (offset, timestamp ms) of the last record delivered since its last seek."""
        if self._delivered is None:
            self._delivered = {}
        return self._delivered

    def fetch_state(self, tp: TP) -> Any:
        """aiokafka's fetch state of `tp` (`highwater`, `position`), or None when not assigned."""
        try:
            consumer = self._thread._ensure_consumer()
        except Exception:  # not started
            return None
        return assignment_state(consumer, tp)

    @property
    def delivery_lock(self) -> asyncio.Lock:
        """Held while a fetch is delivered and while stream partitions are sought: never both."""
        if self._delivery_lock is None:
            self._delivery_lock = asyncio.Lock()
        return self._delivery_lock

    def reread(self) -> None:
        """Seek the stream partitions back to their committed offsets before the next delivery.

        Called whenever Faust clears the stream buffers (rebalances, recovery). Messages in those
        buffers were delivered, so the read offset is past them, yet no stage saw them; the
        same holds for messages a stream skips for a stale generation. Without a seek back
        nothing would deliver them again, and a later commit would pass over them.
        """
        self._reread = True

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, made atomic with deliveries (`_seek_back`)."""
        async with self.delivery_lock:
            await self._seek_back()

    async def _seek_back(self) -> None:
        """Seek every assigned stream partition to its committed offset, or to the beginning
        when it has none; forget the acks since (their messages are read again).

        Unlike Faust's `perform_seek` (aiokafka's `seek_to_committed`), a partition whose
        committed offset is missing or 0 is sought too: otherwise a worker that restarts
        before its first commit keeps reading from wherever the fetcher had got to.
        """
        self._seek_epoch += 1
        changelogs = self.app.tables.changelog_topics
        tps = [tp for tp in self.assignment() if tp.topic not in changelogs]
        committed = await self._thread.call_thread(self._seek_committed_or_beginning, tps) if tps else {}
        self._reread = False
        for tp, offset in committed.items():
            self.delivered.pop(tp, None)
            self._read_offset[tp] = offset or None
            self._committed_offset[tp] = offset or None
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)

    async def _seek_committed_or_beginning(self, tps: list[TP]) -> dict[TP, int | None]:
        consumer = self._thread._ensure_consumer()
        committed: dict[TP, int | None] = {}
        uncommitted: list[TopicPartition] = []
        for tp in tps:
            ktp = TopicPartition(tp.topic, tp.partition)
            offset = await consumer.committed(ktp)
            committed[tp] = offset
            if offset:
                consumer.seek(ktp, offset)
            else:
                uncommitted.append(ktp)
        if uncommitted:  # no commit yet: start where the reset policy (earliest) would
            # An explicit offset rather than `seek_to_beginning`, which leaves the position
            # unset until the next fetch (and Faust's livelock check reads it).
            for ktp, offset in (await consumer.beginning_offsets(uncommitted)).items():
                consumer.seek(ktp, offset)
        return committed

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's `getmany`, except that a batched topic-partition's records become one message,
        and that stream partitions are sought back first when deliveries may have been dropped.

        Nothing awaits between a fetch and its delivery (a seek by Faust's recovery in between
        would make the fetched records stale). A fetch that overlapped a seek of the stream
        partitions delivers only its changelog records; the stream partitions are sought back
        before the next fetch and read again.
        """
        if self._reread and self.flow_active:
            async with self.delivery_lock:
                if self._reread:
                    try:
                        await self._seek_back()
                    except Exception as exc:  # e.g. a rebalance began: retried before the next fetch
                        self.log.warning("seek back to the committed offsets failed, will retry: %r", exc)
        epoch = self._seek_epoch
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:  # as Faust does: back to the committed offsets, deliver nothing
            self._reread = True
            await self._rewind_changelogs(records)
            return
        guard: Any = self.delivery_lock  # free, so taken at once: a seek waits until this fetch is delivered
        if self._reread or epoch != self._seek_epoch or self.delivery_lock.locked():
            self._reread = True
            changelogs = self.app.tables.changelog_topics
            records = {tp: rs for tp, rs in records.items() if tp.topic in changelogs}
            guard = contextlib.nullcontext()  # changelog records only: no seek of ours touches them
        async with guard:
            async for item in self._deliver(records, active_partitions):
                yield item

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Faust's fetch of the partitions active when it starts, leaving out those `App.hold_back`
        names (their fetched records stay buffered in aiokafka).

        aiokafka gets a copy of the set, never Faust's own: a rebalance empties that set while the
        fetch waits (it pauses every partition), and aiokafka reads an empty set as "every
        partition". The waiting fetch then took the records of every assigned partition, among
        them the changelog partitions the new recovery had just positioned, and returned them
        while flow was stopped, so nothing delivered them: the recovery waited for good for
        records already consumed (seen: "No event received for active tp ... since recovery
        start" on the partitions a joining worker took over).
        """
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            hold_back = self.app.hold_back
            if hold_back is not None and active_partitions:
                active_partitions -= hold_back()
            if not active_partitions:
                await asyncio.sleep(min(timeout, 0.05))
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def _deliver(self, records: Any, active_partitions: set[TP] | None) -> AsyncIterator[tuple[TP, Message]]:
        app = self.app
        batched = app.batch_topics
        generation_id = app.consumer_generation_id
        pending = list(records)
        for tp, tp_records in records.items():
            if not self.flow_active or app.consumer_generation_id != generation_id:
                await self._rewind_changelogs(pending)
                return  # a rebalance began: like Faust, deliver nothing more of this fetch
            pending.remove(tp)
            if not (active_partitions is None or tp in active_partitions or tp in self._buffered_partitions):
                continue
            app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic not in batched:
                for record in tp_records:
                    yield tp, self._to_message(tp, record)
                continue
            read = self._read_offset[tp]
            if read is not None:  # records before the read offset were delivered already
                tp_records = [r for r in tp_records if r.offset >= read]
            if not tp_records:
                continue
            last = tp_records[-1]
            self.delivered[tp] = (last.offset, last.timestamp)
            # Faust's delivery loop registers a jump in offsets as a gap (acked ahead of time);
            # the batch is acked as a whole instead (`ack`), so present it as the next offset.
            self._read_offset[tp] = last.offset - 1
            yield tp, _batch_message(tp, tp_records, generation_id)

    async def _rewind_changelogs(self, tps: Any) -> None:
        """Seek the changelog partitions among `tps`, whose fetched records are dropped undelivered,
        back to where table recovery has read them to (what each recovery seeks to first), so a
        recovery in progress still gets those records. Stream partitions are read again by `reread`."""
        recovery = self.app.tables.recovery
        offsets = {}
        for tp in tps:
            tp = TP(tp.topic, tp.partition)
            if tp in recovery.active_tps:
                offsets[tp] = max(0, recovery.active_offsets[tp])
            elif tp in recovery.standby_tps:
                offsets[tp] = max(0, recovery.standby_offsets[tp])
        if offsets:
            try:
                await self.seek_wait(offsets)
            except Exception as exc:  # a rebalance began: its recovery seeks these partitions itself
                self.log.warning("rewinding changelog partitions failed: %r", exc)

    def ack(self, message: Message) -> bool:
        """Faust's ack; for a batch message, every offset from the batch's first record on.

        A message of an older generation, or acked while flow control is suspended, is let go
        without counting for commits: Faust's streams ack the messages they skip during a
        rebalance, unprocessed. It is read again after the rebalance (`reread`).
        """
        app = self.app
        if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
            with ack_lock:
                message.acked = True
                self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
            return False
        acked = super().ack(message)
        batch = message.value
        if acked and isinstance(batch, RecordBatch):
            tp = message.tp
            first = batch.records[0].offset
            committed = self._committed_offset[tp]
            if committed is not None:
                first = max(first, committed)
            offsets = range(first, message.offset)  # the last one was acked by Faust above
            if offsets:
                self._acked[tp].extend(offsets)
                self._acked_index[tp].update(offsets)
        return acked

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        hook = self.app.before_commit
        if hook is not None:
            await hook()
        return await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction)


class _RereadOnClear(FlowControlEvent):
    """The app's flow control: clearing the stream buffers makes the consumer read again."""

    def __init__(self, app: "BatchingApp", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    def clear(self) -> None:
        super().clear()
        consumer = self._app._consumer
        if isinstance(consumer, BatchingConsumer):
            consumer.reread()


def _batch_message(tp: TP, records: list[Any], generation_id: int) -> Message:
    last = records[-1]
    return aiokafka_driver.ConsumerMessage(
        tp.topic, tp.partition, last.offset, last.timestamp / 1000.0, last.timestamp_type, [], None,
        RecordBatch(records), None, 0, sum(r.serialized_value_size or 0 for r in records), tp,
        generation_id=generation_id,
    )


class BatchingTransport(aiokafka_driver.Transport):
    Consumer = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose consumer batches `batch_topics` (see the module doc)."""

    batch_topics: frozenset[str] = frozenset()
    before_commit: Callable[[], Awaitable[None]] | None = None
    hold_back: Callable[[], set[TP]] | None = None

    def _new_transport(self) -> BatchingTransport:
        return BatchingTransport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _RereadOnClear(self, loop=self.loop)

    def batch_topic(self, *names: str, batched: Sequence[str]) -> faust.types.TopicT:
        """A topic over `names`: events of the `batched` ones carry a `RecordBatch`, the others bytes."""
        unknown = set(batched) - set(names)
        if unknown:
            raise ValueError(f"batched topics should be among {sorted(names)}, got {sorted(unknown)}")
        self.batch_topics = self.batch_topics | frozenset(batched)
        return self.topic(*names, key_type=None, value_type=None, key_serializer="raw", value_serializer=CODEC)


def aiokafka_producer(app: faust.App) -> Any:
    """The aiokafka producer behind Faust's `app.producer` (started with it)."""
    return app.producer._ensure_producer()
