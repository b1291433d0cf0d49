"""ClickHouse sinks: batched, blocking inserts that never drop and never double a row.

Each sink is an agent over one topic: it takes up to `sink_batch_rows` rows or waits at most
`sink_batch_s`, inserts them (one insert per table), and only returns, letting Faust commit
the offsets, once the store has taken them. A slow or unreachable store makes the insert
wait and retry with backoff; the agent stops pulling, Faust's bounded buffers fill, and the
consumer pauses: backpressure instead of loss. Rows replayed after a crash land on
ReplacingMergeTree tables keyed by event_id / pair_id, so reading with FINAL counts them once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

from prefloop.analytics.store import AnalyticsError, connect
from streams.runtime import Runtime, fatal
from streams.sinks.rows import COLUMNS

log = logging.getLogger("prefloop.streams.sink")


class ClickHouseSink:
    def __init__(self, rt: Runtime, name: str, to_rows: Callable[[Any], Iterable[tuple[str, list[list[Any]]]]],
                 max_messages: int) -> None:
        self.rt = rt
        self.max_messages = max_messages
        self.name = name
        self.to_rows = to_rows
        self._store = None
        self.inserted = 0

    @property
    def store(self):
        if self._store is None:
            self._store = connect(self.rt.settings)
        return self._store

    async def run(self, stream) -> None:
        async for events in stream.take_events(self.max_messages, self.rt.ss.sink_batch_s):
            try:
                tables: dict[str, list[list[Any]]] = defaultdict(list)
                for event in events:
                    for table, rows in self.to_rows(event):
                        tables[table].extend(rows)
                for table, rows in tables.items():
                    await self.insert(table, rows)
            except Exception as exc:
                fatal(exc, f"{self.name} sink")

    async def insert(self, table: str, rows: list[list[Any]]) -> None:
        delay = self.rt.ss.sink_retry_s
        loop = asyncio.get_running_loop()
        for start in range(0, len(rows), self.rt.ss.sink_batch_rows):
            chunk = rows[start:start + self.rt.ss.sink_batch_rows]
            while True:
                t0 = time.perf_counter()
                try:
                    await loop.run_in_executor(None, self.store.insert_rows, table, COLUMNS[table], chunk)
                    break
                except AnalyticsError as exc:
                    log.warning("%s sink: insert of %d row(s) into %s failed, retrying in %.1fs: %s",
                                self.name, len(chunk), table, delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self.inserted += len(chunk)
            self.rt.stats.add(f"sink.{table}", len(chunk))
            log.debug("%s sink: %d row(s) into %s in %.3fs", self.name, len(chunk), table, time.perf_counter() - t0)


def analytics_rows(event: Any) -> Iterable[tuple[str, list[list[Any]]]]:
    table, rows = json.loads(event.value)
    if table not in COLUMNS:
        log.error("analytics row bundle for unknown table %r skipped", table)
        return []
    return [(table, rows)]


def sinks(rt: Runtime) -> Sequence[ClickHouseSink]:
    """One sink over the analytics row bundles (feedback_events, action_facts, pair_drops, preference_pairs)."""
    from streams.stages.group import ROWS_PER_MESSAGE

    bundles = max(1, rt.ss.sink_batch_rows // ROWS_PER_MESSAGE)
    return (ClickHouseSink(rt, "analytics", analytics_rows, bundles),)
