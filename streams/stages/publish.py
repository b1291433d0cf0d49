"""Stage C, keyed by pair_id: publish each pair to feedback.pairs exactly once.

Candidates arrive bundled per pairs partition p (partition = murmur2(pair_id) mod the pairs
partition count), so one worker owns every candidate of a given pair_id. For each batch:

1. Recover p once per assignment: read feedback.pairs[p] from the Redis watermark
   `prefloop:pairs:wm:<p>` to its end and add every pair_id found to `prefloop:pairs:ids:<p>`.
   This catches pairs a crashed owner published but had not yet recorded.
2. Drop candidates whose pair_id is in the set (SMISMEMBER, one round trip for all
   partitions) or in flight from an earlier batch of this worker (in memory).
3. Produce the rest to feedback.pairs[p] (key pair_id), and their `preference_pairs` rows
   (from the very bytes published) to the analytics sink.
4. In the background, so the next batch goes on meanwhile: wait for the acks of both.
5. Then record them atomically (Lua): SADD the ids, move the watermark past the highest acked
   offset, and add the number of new ids to `prefloop:pairs:total`. Batches record in order.

Only then does Faust commit the candidates' offsets (`settle` runs before every commit).
The pairs topic is therefore the source of truth and Redis an index of it with a watermark:
a crash between 3 and 5 is repaired by 1 on the next owner (which also re-sends the rows of
the pairs it finds), so no pair is published twice and none is lost, on the topic or in
ClickHouse. Redis losing its data is also repaired by 1 (no watermark: read the partition
from its start).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from prefloop import topics as contract
from prefloop.kafka_client import kafka_options
from schemas import decode
from streams import wire
from prefloop.keys import PAIR_IDS_PREFIX, PAIR_WM_PREFIX, PAIRS_TOTAL
from streams.runtime import BatchStage, Runtime, SentBatch, fatal, wait_all
from streams.sinks import rows
from streams.sinks.rows import send_json_rows, send_rows
from streams.wire import PairCandidate

log = logging.getLogger("prefloop.streams.publish")

MAX_IN_FLIGHT = 8  # batches whose acks and Redis records are still pending

# KEYS: ids set, watermark, total. ARGV: new watermark, then ids. Returns how many ids were new.
RECORD_SCRIPT = """
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('SADD', KEYS[1], ARGV[i])
end
local wm = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > wm then redis.call('SET', KEYS[2], ARGV[1]) end
if added > 0 then redis.call('INCRBY', KEYS[3], added) end
return added
"""


class PublishStage(BatchStage):
    name = "publish stage"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.lock = asyncio.Lock()
        self.recovered: set[int] = set()
        self._recovered_epoch = 0  # the Redis epoch `recovered` is valid for (`_known`)
        self._record = None
        self._reader: AIOKafkaConsumer | None = None
        self.inflight: dict[int, set[str]] = defaultdict(set)  # pairs partition -> ids sent, not yet recorded
        self.completions: list[asyncio.Future] = []  # background steps 4-5 of each batch, in order

    def on_revoked(self) -> None:
        """Any partition may come back with pairs another worker published meanwhile (call after `settle`)."""
        self.recovered.clear()
        self.inflight.clear()

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def process(self, events: Sequence[Any]) -> None:
        """Steps 2 and 3 for a batch, and its rows; steps 4-5 go on in the background (`_complete`).

        The next batch need not wait for this one's acks and Redis writes: ids in flight are
        checked in memory, and completions record in batch order (so the watermark never passes
        an id not yet recorded). `settle` waits for them all; the pipeline calls it before every
        offset commit, so a candidate's offset is committed only after its pair is recorded.
        """
        rt = self.rt
        by_partition: dict[int, dict[str, PairCandidate]] = defaultdict(dict)
        for event in events:
            try:
                for candidate in wire.unpack(event.value, PairCandidate):
                    by_partition[event.message.partition].setdefault(candidate.pair_id, candidate)
            except wire.BundleError as exc:
                log.error("skipping corrupt candidate bundle at offset %d: %s", event.message.offset, exc)
        candidates = {p: [pid for pid in pairs if pid not in self.inflight[p]] for p, pairs in by_partition.items()}
        present = await self._known(candidates)
        sent: dict[int, tuple[list[str], list[SentBatch]]] = {}
        published: list[bytes] = []
        for (partition, ids), seen in zip(candidates.items(), present):
            pairs = by_partition[partition]
            fresh = [pid for pid, known in zip(ids, seen) if not known]
            rt.stats.add("pairs.duplicate", len(pairs) - len(fresh))
            if fresh:
                self.inflight[partition].update(fresh)
                batches = await rt.send_batch(rt.pairs, partition, [(pid.encode(), pairs[pid].record) for pid in fresh])
                sent[partition] = (fresh, batches)
                published.extend(pairs[pid].row for pid in fresh)
        if not sent:
            return
        # Rows go out with the pairs; Redis records both only once every ack is in.
        row_futures = await send_json_rows(rt, "preference_pairs", published)
        self.completions = [c for c in self.completions if not c.done()]
        if len(self.completions) >= MAX_IN_FLIGHT:  # backpressure: broker or Redis slower than us
            await asyncio.shield(self.completions[0])
        previous = self.completions[-1] if self.completions else None
        self.completions.append(asyncio.ensure_future(self._complete(sent, row_futures, previous)))

    async def _known(self, candidates: dict[int, list[str]]) -> list[list[int]]:
        """Steps 1 and 2: recover the partitions not recovered yet, then which candidates are recorded.

        A Redis that came back from an outage may have lost its last writes (ids and the
        watermark roll back together: one script writes both), so every partition is then
        recovered again from its watermark. The answers stand only if Redis did not come back
        while they were read; otherwise recover and ask again.
        """
        rt = self.rt
        while True:
            epoch = rt.redis_epoch
            if epoch != self._recovered_epoch:
                self._recovered_epoch = epoch
                self.recovered.clear()
            for partition in candidates:
                if partition not in self.recovered:
                    await self.settle()  # recovery reads the partition as recorded so far
                    await self.recover(partition)
            async with rt.redis.pipeline(transaction=False) as pipe:
                for partition, ids in candidates.items():
                    pipe.smismember(PAIR_IDS_PREFIX + str(partition), ids or [""])
                present = await pipe.execute()
            if rt.redis_epoch == epoch:
                return present

    async def _complete(self, sent: dict[int, tuple[list[str], list[SentBatch]]], row_futures: list,
                        previous: asyncio.Future | None) -> None:
        try:
            watermarks = {}
            for partition, (_, batches) in sent.items():
                watermarks[partition] = max(await wait_all(b.last_offset() for b in batches)) + 1
            await wait_all(row_futures)
            if previous is not None:
                await asyncio.shield(previous)
            for partition, watermark in watermarks.items():
                ids = sent[partition][0]
                await self._store(partition, ids, watermark)
                self.inflight[partition].difference_update(ids)
                self.rt.stats.add("pairs.published", len(ids))
        except Exception as exc:
            fatal(exc, self.name)

    async def settle(self) -> None:
        """Wait until every pair sent so far is acknowledged and recorded in Redis."""
        while not all(c.done() for c in self.completions):
            await asyncio.shield(self.completions[-1])  # completes after every earlier one

    async def _send_rows(self, published: list[bytes]) -> None:
        """preference_pairs rows of these pairs, through the analytics sink; waits for the ack."""
        if not published:
            return
        table_rows = [rows.preference_pair(decode(data)) for data in published]  # type: ignore[arg-type]
        await wait_all(await send_rows(self.rt, {"preference_pairs": table_rows}))

    async def _store(self, partition: int, ids: list[str], watermark: int) -> int:
        if self._record is None:
            self._record = self.rt.redis.register_script(RECORD_SCRIPT)
        added = 0
        for start in range(0, max(len(ids), 1), 5000):
            added += await self._record(
                keys=[PAIR_IDS_PREFIX + str(partition), PAIR_WM_PREFIX + str(partition), PAIRS_TOTAL],
                args=[watermark, *ids[start:start + 5000]])
        return added

    async def recover(self, partition: int) -> None:
        """Index every pair in feedback.pairs[partition] past the watermark (see the module doc)."""
        rt = self.rt
        if self._reader is None:
            self._reader = AIOKafkaConsumer(**kafka_options(rt.settings), group_id=None,
                                            enable_auto_commit=False, auto_offset_reset="earliest",
                                            max_partition_fetch_bytes=4 * 1024 * 1024)
            await self._reader.start()
        reader = self._reader
        tp = TopicPartition(contract.PAIRS, partition)
        reader.assign([tp])
        start = int(await rt.redis.get(PAIR_WM_PREFIX + str(partition)) or 0)
        first = (await reader.beginning_offsets([tp]))[tp]
        end = (await reader.end_offsets([tp]))[tp]
        position = max(start, first)
        found: list[str] = []
        found_values: list[bytes] = []
        if position < end:
            reader.seek(tp, position)
            while position < end:
                batch = await reader.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, []):
                    if record.key is not None and record.offset < end:
                        found.append(record.key.decode())
                        found_values.append(record.value)
                position = await reader.position(tp)
        await self._send_rows(found_values)
        if found or end > start:
            added = await self._store(partition, found, end)
            if added:
                log.warning("pairs partition %d: indexed %d pair(s) published before a crash", partition, added)
        self.recovered.add(partition)
