"""The Faust application of one worker: the topic graph, read top to bottom as the data flow.

    feedback.actions ──▶ resolve (A, by response_id) ──▶ <app>-resolved-actions ─┐
    feedback.responses ──────────────────────────────────────────────────────────┴▶ group (B, by prompt_id)
    group ──▶ <app>-pair-candidates ──▶ publish (C, by pair_id, dedup) ──▶ feedback.pairs
    group ──▶ <app>-analytics-rows ──▶ analytics sink ──▶ feedback_events, action_facts, pair_drops
    feedback.pairs ──▶ pairs sink ──▶ preference_pairs
    any stage ──▶ feedback.dlq (undecodable, invalid, unknown_reference, expired_orphan)
    timers: sweeps of held actions, drift job, retraining trigger

Several workers with the same `app_id` share the partitions; every contract topic and the
internal topics of one stage have the same partition count, so Faust assigns a worker the
same partition numbers of each and a prompt group lives wholly on one worker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import faust

from prefloop.kafka_client import faust_broker_credentials
from prefloop.services.process import free_port, worker_ready_file
from prefloop.settings import Settings
from streams.alignment import EventTimeAlignment
from streams.compat.faust import BatchingApp
from streams.freeze import TICK_S
from streams.jobs import install as install_jobs
from streams.runtime import InternalTopics, Runtime, fatal
from streams.settings import StreamsSettings
from streams.sinks.clickhouse import sinks
from streams.stages.group import GroupStage
from streams.stages.publish import PublishStage
from streams.stages.resolve import ResolveStage
from streams.trigger import SnapshotFn

log = logging.getLogger("prefloop.streams")


def default_worker_id() -> str:
    return f"w{os.getpid()}"


def _broker_urls(settings: Settings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",") if server.strip()]


def create_app(settings: Settings, ss: StreamsSettings, snapshot: SnapshotFn,
               worker_id: str | None = None) -> tuple[faust.App, "Pipeline"]:
    worker_id = ss.worker_id or worker_id or default_worker_id()
    datadir = settings.home / "streams" / worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = BatchingApp(
        ss.app_id,
        broker=_broker_urls(settings),
        broker_credentials=faust_broker_credentials(settings),  # [kafka] security, as every other client
        store="memory://",
        datadir=str(datadir),
        web_enabled=ss.web_enabled,
        web_port=free_port() if ss.web_enabled else 6066,
        web_bind="127.0.0.1",
        topic_replication_factor=1,
        topic_allow_declare=True,
        table_standby_replicas=ss.standby_replicas,
        broker_commit_interval=ss.commit_interval_s,
        broker_session_timeout=ss.session_timeout_s,
        broker_heartbeat_interval=min(3.0, ss.session_timeout_s / 4),
        broker_max_poll_records=ss.batch_max,
        stream_buffer_maxsize=ss.stream_buffer_maxsize,
        producer_linger=ss.producer_linger_ms / 1000.0,
        producer_acks=-1,
        producer_max_batch_size=ss.producer_batch_bytes,
        producer_max_request_size=max(4 * 1024 * 1024, ss.producer_batch_bytes),
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
    )
    return app, Pipeline(app, settings, ss, worker_id, snapshot)


class Pipeline:
    """Wires the stages of streams/stages and the sinks onto the Faust app."""

    def __init__(self, app: faust.App, settings: Settings, ss: StreamsSettings, worker_id: str,
                 snapshot: SnapshotFn) -> None:
        self.app = app
        self.rt = rt = Runtime(settings, ss, app, worker_id)
        self.resolve = ResolveStage(rt)
        self.group = GroupStage(rt)
        self.publish = PublishStage(rt)
        self.sinks = sinks(rt)
        self.ready_file = worker_ready_file(settings, os.getpid())

        # The input topics arrive as one RecordBatch per fetched partition (streams/batching.py).
        actions, responses = rt.actions.get_topic_name(), rt.responses.get_topic_name()
        app.agent(app.batch_topic(actions, rt.indexed.get_topic_name(), batched=[actions]),
                  name="prefloop.resolve")(self.resolve.run)
        app.agent(app.batch_topic(responses, rt.resolved_actions.get_topic_name(), batched=[responses]),
                  name="prefloop.group")(self.group.run)
        app.agent(rt.candidates, name="prefloop.publish")(self.publish.run)
        app.agent(rt.analytics, name="prefloop.sink.analytics")(self.sinks[0].run)

        app.timer(ss.sweep_interval_s, on_leader=False)(self._sweep_pending)
        app.timer(max(1.0, ss.sweep_interval_s), on_leader=False)(self._sweep_groups)
        app.timer(ss.stats_interval_s, on_leader=False)(self._log_stats)
        app.timer(TICK_S, on_leader=False)(self._tick)
        app.before_commit = self.write_state
        if ss.event_time_alignment:
            app.hold_back = EventTimeAlignment(app, responses, actions, self.group.processed)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.jobs = install_jobs(self, snapshot)  # the drift job and the retraining trigger

    async def _sweep_pending(self) -> None:
        await self.resolve.sweep()

    async def _sweep_groups(self) -> None:
        await self.group.sweep()

    async def _tick(self) -> None:
        self.rt.check_not_frozen()
        self.rt.freeze.tick()

    async def _log_stats(self) -> None:
        counts = dict(sorted(self.rt.stats.counts.items()))
        if counts:
            log.info("worker %s counters: %s", self.rt.worker_id, counts)

    async def write_state(self) -> None:
        """Deferred table state to the changelogs, between batches, once the outputs behind it
        are acknowledged (called before every offset commit; see streams/runtime.py)."""
        try:
            await self.publish.settle()
            async with self.resolve.lock:
                await self.rt.write_dirty(self.rt.pending)
            async with self.group.lock:
                await self.rt.write_dirty(self.rt.groups)
        except Exception as exc:
            fatal(exc, "state write before commit")

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        # Faust committed before this signal, but only if some offset moved; the next owner
        # recovers from the changelog, so it must hold everything now.
        await self.write_state()
        await self.app.producer.flush()
        self.publish.on_revoked()
        self.group.on_revoked()
        self.resolve.on_revoked()

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        self.rt.assigned_at_ms = self.rt.now_ms()

    async def _on_rebalance_complete(self, sender, **kwargs) -> None:
        if not self.ready_file.exists():
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.write_text(f"{self.rt.worker_id}\n")
            log.info("worker %s ready (pid %d)", self.rt.worker_id, os.getpid())

    async def close(self) -> None:
        await self.publish.settle()
        await self.publish.close()
        await self.rt.close()

    def remove_ready_file(self) -> None:
        try:
            self.ready_file.unlink()
        except FileNotFoundError:
            pass


async def ensure_internal_topics(settings: Settings, ss: StreamsSettings) -> None:
    """Create the internal topics between stages (idempotent) before Faust subscribes to them.

    Contract topics are never created here: `prefloop up` creates them with Settings' counts.
    """
    from prefloop.kafka_admin import create_topics

    await create_topics(settings, InternalTopics.of(settings, ss).all())


# CPython's default (700 net allocations) runs a young collection every few events here, and
# the older generations, which hold every table's state, far too often: measured, a fifth of
# the stages' CPU went to the collector. Cycles are rare in the hot path; this still collects.
GC_THRESHOLDS = (50_000, 10, 10)


def run_worker(settings: Settings, ss: StreamsSettings, snapshot: SnapshotFn) -> int:
    """Run one worker in the foreground until SIGTERM/SIGINT; returns the exit code. `snapshot` freezes the
    pairs of each training request (streams/trigger.py)."""
    asyncio.run(ensure_internal_topics(settings, ss))
    app, pipeline = create_app(settings, ss, snapshot)
    gc.collect()
    gc.freeze()  # imports and the app itself: never garbage, never scanned again
    gc.set_threshold(*GC_THRESHOLDS)
    worker = faust.Worker(app, loglevel=ss.log_level, quiet=True, override_logging=True)

    @app.on_before_shutdown.connect
    async def _shutdown(sender, **kwargs) -> None:
        await pipeline.close()

    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        pipeline.remove_ready_file()
    return 0
