"""Periodic jobs of a worker beyond the pipeline: drift metrics and the retraining trigger.

Every worker runs both timers; Redis makes each happen once: the drift job takes a short
lock per run, the trigger its own lock (streams/trigger.py). Both call the analytics store,
which is blocking HTTP, from a thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prefloop import keys
from prefloop.analytics.store import ch_time, connect
from schemas import TrainingRequest
from streams import drift
from streams.trigger import SnapshotFn, Trigger

log = logging.getLogger("prefloop.streams.jobs")



class Jobs:
    def __init__(self, pipeline: Any, snapshot: SnapshotFn) -> None:
        self.rt = pipeline.rt
        self._store = None
        self.trigger = Trigger(self.rt.settings, self.rt.ss, self.rt.redis, self.rt.send, snapshot,
                               drift=self.latest_drift, on_fired=self.record_request)

    @property
    def store(self):
        if self._store is None:
            self._store = connect(self.rt.settings)
        return self._store

    def latest_drift(self) -> float | None:
        return drift.latest_input_drift(self.store)

    def record_request(self, request: TrainingRequest) -> None:
        """Keep the request in ClickHouse and freeze the inputs it trained on as the next drift reference."""
        ss = self.rt.ss
        self.store.insert_rows(
            "training_requests", ["request_id", "occurred_at", "snapshot_id", "reason", "pair_count", "metrics"],
            [[request.event_id, ch_time(request.occurred_at), request.snapshot_id, request.reason.value,
              request.pair_count, dict(request.metrics)]])
        drift.store_reference(self.store, request.snapshot_id, request.occurred_at, ss.reference_s, ss.drift_top_values)

    async def run_drift(self) -> None:
        ss = self.rt.ss
        got = await self.rt.redis.set(keys.DRIFT_LOCK, self.rt.worker_id, nx=True,
                                      px=int(max(1.0, ss.drift_interval_s * 0.9) * 1000))
        if not got:
            return
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                None, drift.run_drift, self.store, None, ss.window_s, ss.drift_min_samples, ss.drift_top_values)
            log.debug("drift: %d row(s)", rows)
        except Exception as exc:  # analytics down or slow: try again next interval
            log.warning("drift job failed: %s", exc)

    async def run_trigger(self) -> None:
        try:
            await self.trigger.check()
        except Exception as exc:
            log.warning("trigger check failed: %s", exc)


def install(pipeline: Any, snapshot: SnapshotFn) -> Jobs:
    jobs = Jobs(pipeline, snapshot)
    ss = pipeline.rt.ss
    pipeline.app.timer(ss.drift_interval_s, on_leader=False)(jobs.run_drift)
    pipeline.app.timer(ss.trigger_check_s, on_leader=False)(jobs.run_trigger)
    return jobs
