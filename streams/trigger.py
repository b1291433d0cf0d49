"""The retraining trigger: when to ask for a training run, and asking exactly once.

Policy (`decide`), checked by every worker every `trigger_check_s`:
- NEW_PAIRS: at least `trigger_new_pairs` new unique pairs since the last request;
- DRIFT: input drift (max PSI of the newest window) above `trigger_drift_threshold`, with at
  least `trigger_min_pairs` new pairs;
- STALENESS: more than `trigger_staleness_s` since the last request (or since the first pair,
  before any), with at least `trigger_min_pairs` new pairs;
and never within `trigger_cooldown_s` of the last request.

"New unique pairs" is exact: `prefloop:pairs:total` counts the pair ids published (stage C
adds them in the same Redis script that records them), and each request records the
watermark of every feedback.pairs partition it covered. The snapshot of a request is the
pairs between the previous request's watermarks and its own, read from the pairs topic
(the source of truth), frozen by the snapshot function the worker is given (`SnapshotFn`: the
trainer's snapshot store, wired in by prefloop/cli.py; streams never imports the trainer).

Exactly one request per crossing, with any number of workers: the firing worker must take
the Redis lock `prefloop:trigger:lock` (SET NX, value = request id, expiry
`trigger_lock_ttl_s` as a safety net); the trainer deletes it when the job ends. Holding the
lock, the worker re-reads the state, records the request as *pending* together with the new
watermarks (one MULTI), publishes it, then clears *pending*. A worker that finds a pending
request (its publisher crashed) re-publishes the same request with the same event id, so a
crash yields at worst a duplicate delivery that consumers drop by `event_id`.

The topic, not Redis, is the record of the requests made: each request carries the pairs
total and the pairs watermarks it covered (metrics `pairs_total` and `pairs_end.<p>`). A
Redis restart may lose its last second of writes, the state of a request just published
among them; before firing, the lock holder therefore reads the newest trigger request on
`training.requests` and, when the state is older, takes it back from there
(`adopt_published`): the same crossing never fires twice (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from prefloop import topics
from prefloop.errors import DecodeError, ValidationError
from prefloop.kafka_client import kafka_options
from prefloop.settings import Settings
from schemas import PreferencePair, TrainingRequest, TriggerReason, decode, encode
from prefloop.keys import PAIR_WM_PREFIX, PAIRS_TOTAL, TRIGGER_LOCK, TRIGGER_STATE
from streams.settings import StreamsSettings

log = logging.getLogger("prefloop.streams.trigger")

PAIRS_TOTAL_METRIC = "pairs_total"  # request metric: prefloop:pairs:total when the request fired
PAIRS_END_METRIC = "pairs_end."  # + pairs partition: the watermark the request's snapshot ends at
TAIL_RECORDS = 20  # records read back from the end of each training.requests partition by `adopt_published`


# Freezes the pairs a request covers under the prefloop home and returns their snapshot id (blocking).
SnapshotFn = Callable[[list[PreferencePair], Path], str]


@dataclass(frozen=True)
class Policy:
    """The trigger's thresholds (`trigger_*` of the streams settings, where their defaults and bounds live)."""

    new_pairs: int
    min_pairs: int
    drift_threshold: float
    staleness_s: float
    cooldown_s: float

    @classmethod
    def from_settings(cls, ss: StreamsSettings) -> "Policy":
        return cls(ss.trigger_new_pairs, ss.trigger_min_pairs, ss.trigger_drift_threshold, ss.trigger_staleness_s,
                   ss.trigger_cooldown_s)


@dataclass
class State:
    pairs_total: int = 0
    pairs_at_last: int = 0
    last_request_ms: int = 0  # 0: never
    since_ms: int = 0  # when the first pair was seen, the staleness origin before any request
    drift: float | None = None
    now_ms: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def new_pairs(self) -> int:
        return self.pairs_total - self.pairs_at_last

    @property
    def staleness_s(self) -> float:
        origin = self.last_request_ms or self.since_ms
        return (self.now_ms - origin) / 1000 if origin else 0.0


def cooldown_left_s(policy: Policy, state: State) -> float:
    if not state.last_request_ms:
        return 0.0
    return max(0.0, policy.cooldown_s - (state.now_ms - state.last_request_ms) / 1000)


def decide(policy: Policy, state: State) -> TriggerReason | None:
    """The reason to request training now, or None."""
    if cooldown_left_s(policy, state) > 0:
        return None
    if state.new_pairs >= policy.new_pairs:
        return TriggerReason.NEW_PAIRS
    if state.new_pairs < max(1, policy.min_pairs):
        return None
    if state.drift is not None and state.drift > policy.drift_threshold:
        return TriggerReason.DRIFT
    if state.staleness_s > policy.staleness_s:
        return TriggerReason.STALENESS
    return None


# --- Redis state ------------------------------------------------------------------------------------------------
async def read_state(redis: Any, partitions: int, now_ms: int) -> tuple[State, dict[str, str]]:
    pipe = redis.pipeline(transaction=True)
    pipe.get(PAIRS_TOTAL)
    pipe.hgetall(TRIGGER_STATE)
    for p in range(partitions):
        pipe.get(PAIR_WM_PREFIX + str(p))
    total, raw, *wms = await pipe.execute()
    fields = {k.decode(): v.decode() for k, v in (raw or {}).items()}
    state = State(
        pairs_total=int(total or 0),
        pairs_at_last=int(fields.get("pairs_at_last", 0)),
        last_request_ms=int(fields.get("last_request_ms", 0)),
        since_ms=int(fields.get("since_ms", 0)),
        now_ms=now_ms,
        offsets={str(p): int(w or 0) for p, w in enumerate(wms)},
    )
    return state, fields


class Trigger:
    """One worker's side of the trigger: check the policy, take the lock, snapshot, publish."""

    def __init__(self, settings: Settings, ss: StreamsSettings, redis: Any, send: Callable[..., Any],
                 snapshot: SnapshotFn, drift: Callable[[], float | None] | None = None,
                 on_fired: Callable[[TrainingRequest], None] | None = None) -> None:
        self.settings = settings
        self.policy = Policy.from_settings(ss)
        self.ss = ss
        self.redis = redis
        self.send = send  # async (topic, key, value) -> awaitable ack
        self.snapshot = snapshot
        self.drift = drift  # blocking () -> latest input drift, run in a thread
        self.on_fired = on_fired  # blocking, run in a thread after publishing (analytics bookkeeping)

    async def check(self) -> TrainingRequest | None:
        """Run the policy once; returns the request this call published, if any."""
        now = int(time.time() * 1000)
        state, fields = await read_state(self.redis, self.settings.pairs_partitions, now)
        if fields.get("pending"):
            await self._republish(fields["pending"])
            return None
        if not state.since_ms and state.pairs_total:
            await self.redis.hsetnx(TRIGGER_STATE, "since_ms", now)
        if state.new_pairs < max(1, min(self.policy.min_pairs, self.policy.new_pairs)):
            return None
        state.drift = await asyncio.get_running_loop().run_in_executor(None, self.drift) if self.drift else None
        reason = decide(self.policy, state)
        if reason is None:
            return None
        request_id = f"req-{now}-{state.pairs_total}"
        locked = await self.redis.set(TRIGGER_LOCK, request_id, nx=True, px=int(self.ss.trigger_lock_ttl_s * 1000))
        # A SET sent again after Redis went away mid-answer finds the lock set by its first try.
        if not locked and await self.redis.get(TRIGGER_LOCK) != request_id.encode():
            return None  # another worker is asking, or a training job is running
        try:
            return await self._fire(request_id, reason, state.drift)
        except Exception:
            # Nothing was published: give the crossing back so the next check can try again.
            if await self.redis.get(TRIGGER_LOCK) == request_id.encode():
                await self.redis.delete(TRIGGER_LOCK)
            raise

    async def _fire(self, request_id: str, reason: TriggerReason, drift: float | None) -> TrainingRequest | None:
        now = int(time.time() * 1000)
        state, fields = await read_state(self.redis, self.settings.pairs_partitions, now)  # under the lock
        if await self.adopt_published(state):
            state, fields = await read_state(self.redis, self.settings.pairs_partitions, now)
        state.drift = drift
        if fields.get("pending") or decide(self.policy, state) is None:
            await self.redis.delete(TRIGGER_LOCK)
            return None
        previous = json.loads(fields.get("offsets", "{}"))
        pairs = await read_pairs(self.settings, previous, state.offsets)
        snapshot_id = await asyncio.get_running_loop().run_in_executor(None, self.snapshot, pairs, self.settings.home)
        metrics = {"new_pairs": float(state.new_pairs), "staleness_s": state.staleness_s,
                   PAIRS_TOTAL_METRIC: float(state.pairs_total),
                   **{PAIRS_END_METRIC + p: float(offset) for p, offset in state.offsets.items()}}
        if drift is not None:
            metrics["drift_psi"] = float(drift)
        request = TrainingRequest(snapshot_id=snapshot_id, reason=reason, pair_count=len(pairs), metrics=metrics,
                                  event_id=request_id, occurred_at=now)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(TRIGGER_STATE, mapping={
            "pairs_at_last": state.pairs_total, "last_request_ms": now, "last_request_id": request_id,
            "snapshot_id": snapshot_id, "offsets": json.dumps(state.offsets), "pending": _pending(request),
        })
        await pipe.execute()
        await self._publish(request)
        if self.on_fired is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.on_fired, request)
            except Exception as exc:  # bookkeeping only: the request is out
                log.warning("training request %s published, but recording it failed: %s", request_id, exc)
        log.info("training requested: %s, %d pairs in snapshot %s (%s)", reason.value, len(pairs), snapshot_id,
                 request_id)
        return request

    async def adopt_published(self, state: State) -> bool:
        """Take back the newest trigger request on the topic when Redis' state is older (its
        record was among writes a restarted Redis lost); True when the state was rewritten."""
        request = await latest_trigger_request(self.settings)
        if request is None or request.occurred_at <= state.last_request_ms:
            return False
        offsets = {k[len(PAIRS_END_METRIC):]: int(v) for k, v in request.metrics.items() if k.startswith(PAIRS_END_METRIC)}
        await self.redis.hset(TRIGGER_STATE, mapping={
            "pairs_at_last": int(request.metrics[PAIRS_TOTAL_METRIC]), "last_request_ms": request.occurred_at,
            "last_request_id": request.event_id, "snapshot_id": request.snapshot_id, "offsets": json.dumps(offsets),
        })
        log.warning("trigger state was behind training.requests (Redis lost writes?): took back request %s",
                    request.event_id)
        return True

    async def _publish(self, request: TrainingRequest) -> None:
        await (await self.send(topics.TRAINING_REQUESTS, request.event_id.encode(), encode(request)))
        await self.redis.hdel(TRIGGER_STATE, "pending")

    async def _republish(self, pending: str) -> None:
        request = decode(bytes.fromhex(pending))
        log.warning("re-publishing training request %s left pending by a crashed worker", request.event_id)
        await self._publish(request)  # type: ignore[arg-type]


def _pending(request: TrainingRequest) -> str:
    return encode(request).hex()


async def latest_trigger_request(settings: Settings) -> TrainingRequest | None:
    """The newest request made by the trigger (one carrying `pairs_total`) among the last
    TAIL_RECORDS records of each training.requests partition."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        newest: TrainingRequest | None = None
        tps = [TopicPartition(topics.TRAINING_REQUESTS, p) for p in range(settings.control_partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            stop = ends[tp]
            if stop <= begins[tp]:
                continue
            consumer.seek(tp, max(begins[tp], stop - TAIL_RECORDS))
            deadline = time.monotonic() + 30
            while await consumer.position(tp) < stop:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read the last records of {tp} within 30 s")
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=TAIL_RECORDS)
                for record in batch.get(tp, []):
                    try:
                        request = decode(record.value, expect=TrainingRequest)
                    except (DecodeError, ValidationError):  # not a request of ours; the trainer reports it
                        continue
                    if PAIRS_TOTAL_METRIC in request.metrics and (newest is None or request.occurred_at > newest.occurred_at):
                        newest = request
        return newest
    finally:
        await consumer.stop()


async def read_pairs(settings: Settings, start: dict[str, int], end: dict[str, int]) -> list[PreferencePair]:
    """The pairs on feedback.pairs between two watermark sets (per partition, [start, end))."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        out: list[PreferencePair] = []
        for p, stop in end.items():
            first = int(start.get(p, 0))
            if stop <= first:
                continue
            tp = TopicPartition(topics.PAIRS, int(p))
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, max(first, begin))
            while await consumer.position(tp) < stop:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, []):
                    if record.offset < stop:
                        out.append(decode(record.value))  # type: ignore[arg-type]
        return out
    finally:
        await consumer.stop()
