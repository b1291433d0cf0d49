"""ClickHouse sink: batched, blocking inserts that never drop and never double a row.

The sink is an agent over the analytics-rows topic: it takes bundles for at most
`sink_batch_s` and inserts each table's rows as JSONCompactEachRow, the bytes the stages
wrote, never decoded here: whole bundles, at most `sink_batch_rows` rows per insert unless
one bundle alone holds more. It only returns, letting
Faust commit the offsets, once the store has taken them. A slow or unreachable store makes
the insert wait and retry with backoff; the agent stops pulling, Faust's bounded buffers
fill, and the consumer pauses: backpressure instead of loss. Rows replayed after a crash
land on ReplacingMergeTree tables keyed by event_id / pair_id, so reading with FINAL counts
them once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from prefloop.analytics.store import AnalyticsError, connect
from streams.runtime import Runtime, fatal
from prefloop.analytics.columns import COLUMNS
from streams.wire import unpack_rows

log = logging.getLogger("prefloop.streams.sink")

INSERT_FORMAT = "JSONCompactEachRow"
BUNDLES_PER_TAKE = 64  # bundles (up to 512 KiB each) per batch the agent takes off its stream


class ClickHouseSink:
    def __init__(self, rt: Runtime, name: str) -> None:
        self.rt = rt
        self.name = name
        self._store = None
        self.inserted = 0

    @property
    def store(self):
        if self._store is None:
            self._store = connect(self.rt.settings)
        return self._store

    async def run(self, stream) -> None:
        async for events in stream.take_events(BUNDLES_PER_TAKE, self.rt.ss.sink_batch_s):
            try:
                tables: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
                for event in events:
                    table, body, count = unpack_rows(event.value)
                    if table not in COLUMNS:
                        log.error("analytics row bundle for unknown table %r skipped", table)
                        continue
                    tables[table].append((body, count))
                for table, bodies in tables.items():
                    await self.insert(table, bodies)
            except Exception as exc:
                fatal(exc, f"{self.name} sink")

    async def insert(self, table: str, bodies: list[tuple[bytes, int]]) -> None:
        """Insert the bundles' rows (see the module doc for the per-insert bound); retries until the store takes them."""
        chunk: list[bytes] = []
        rows = 0
        for body, count in bodies:
            if chunk and rows + count > self.rt.ss.sink_batch_rows:
                await self._insert(table, b"".join(chunk), rows)
                chunk, rows = [], 0
            chunk.append(body)
            rows += count
        if chunk:
            await self._insert(table, b"".join(chunk), rows)

    async def _insert(self, table: str, body: bytes, rows: int) -> None:
        delay = self.rt.ss.sink_retry_s
        loop = asyncio.get_running_loop()
        while True:
            t0 = time.perf_counter()
            try:
                await loop.run_in_executor(None, self.store.insert_json, table, COLUMNS[table], body, INSERT_FORMAT)
                break
            except AnalyticsError as exc:
                log.warning("%s sink: insert of %d row(s) into %s failed, retrying in %.1fs: %s",
                            self.name, rows, table, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.inserted += rows
        self.rt.stats.add(f"sink.{table}", rows)
        log.debug("%s sink: %d row(s) into %s in %.3fs", self.name, rows, table, time.perf_counter() - t0)


def sinks(rt: Runtime) -> tuple[ClickHouseSink, ...]:
    """One sink over the analytics row bundles (feedback_events, action_facts, pair_drops, preference_pairs)."""
    return (ClickHouseSink(rt, "analytics"),)
