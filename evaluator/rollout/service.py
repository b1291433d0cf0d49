"""The rollout controller as a service (`prefloop rollout run`, started by `prefloop up`), and the CLI's
way of applying a command when no service holds the lease.

Every controller process polls for the lease; the holder reads models.promotions from the offsets
kept in the rollout record (no consumer group: the record, written under the lease, is the only
place that says how far PROMOTE events were taken) and runs `Controller.step`; the others stand by.
A new record starts reading at the topic's end: PROMOTE events published before any controller ever
ran are not acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from evaluator.rollout.commands import Command, push
from evaluator.rollout.controller import Controller, Record, log
from evaluator.rollout.lease import LeaseLost, new_owner_id
from evaluator.rollout.settings import RolloutSettings, load_rollout_settings
from evaluator.rollout.state import RolloutState
from prefloop import keys, topics
from prefloop.errors import PrefloopError, ServiceError, one_line
from prefloop.kafka_client import kafka_options
from prefloop.settings import redact_url
from schemas import encode
from schemas.records import PromotionEvent

READY_LINE = f"prefloop rollout: watching {topics.PROMOTIONS}"


class KafkaPublisher:
    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def publish(self, event: PromotionEvent) -> None:
        await self.producer.send_and_wait(topics.PROMOTIONS, encode(event), key=event.candidate_version.encode())


def open_redis(settings: Any) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_dsn, socket_connect_timeout=5, socket_timeout=10)


async def _producer(settings: Any) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", enable_idempotence=True)
    try:
        await producer.start()
    except Exception as exc:  # noqa: BLE001 - aiokafka raises several kinds for an unreachable broker
        await producer.stop()
        raise ServiceError(f"Kafka at {settings.bootstrap_servers} is not reachable ({type(exc).__name__}); "
                           "start the services with `prefloop up`") from None
    return producer


def build_controller(settings: Any, rollout_settings: RolloutSettings, redis_client: Any, producer: Any,
                     owner: str, say: Callable[[str], None] = log) -> Controller:
    from prefloop.analytics.store import connect
    from trainer.mirror import open_registry

    return Controller(rollout_settings, redis_client, open_registry(settings), connect(settings),
                      KafkaPublisher(producer), owner, say=say)


async def _open_consumer(settings: Any, controller: Controller) -> Any:
    """A consumer of models.promotions positioned at the offsets in the rollout record (the end, for a new one)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = next(spec.partitions for spec in settings.topics() if spec.name == topics.PROMOTIONS)
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.PROMOTIONS, p) for p in range(partitions)]
        consumer.assign(tps)
        state = controller.load()
        new = False
        for tp in tps:
            offset = state.offsets.get(str(tp.partition))
            if offset is None:
                await consumer.seek_to_end(tp)
                state.offsets[str(tp.partition)] = await consumer.position(tp)
                new = True
            else:
                consumer.seek(tp, offset)
        if new:
            controller.save(state)
        return consumer
    except BaseException:
        await consumer.stop()
        raise


async def run_service(settings: Any, stop: asyncio.Event | None = None) -> None:
    """Stand by for the lease, then act as the controller until stopped (SIGTERM, SIGINT or `stop`)."""
    rollout_settings = load_rollout_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    redis_client = open_redis(settings)
    producer = await _producer(settings)
    owner = new_owner_id()
    controller = build_controller(settings, rollout_settings, redis_client, producer, owner)
    consumer = None
    log(f"watching {topics.PROMOTIONS} as {owner} (stages {rollout_settings.stages}, checks every "
        f"{rollout_settings.check_interval_s:g}s)")
    try:
        while not stop.is_set():
            try:
                if not controller.lease.acquire():
                    if consumer is not None:
                        await consumer.stop()
                        consumer = None
                        log(f"lost the lease to {controller.lease.holder()}; standing by")
                    await _sleep(stop, rollout_settings.poll_s)
                    continue
                if consumer is None:
                    consumer = await _open_consumer(settings, controller)
                    log(f"holding the lease as {owner}; acting")
                batch = await consumer.getmany(timeout_ms=int(rollout_settings.poll_s * 1000))
                records = [Record(tp.partition, m.offset, m.value) for tp, msgs in batch.items() for m in msgs]
                await controller.step(records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a service logs, re-reads the record and carries on
                what = "lost the lease" if isinstance(exc, LeaseLost) else f"{type(exc).__name__}: {one_line(exc)}"
                log(f"step failed ({what}); starting again from the rollout record")
                if consumer is not None:  # its position may be ahead of the record: re-seek from the record
                    await consumer.stop()
                    consumer = None
                await _sleep(stop, rollout_settings.poll_s)
    finally:
        if consumer is not None:
            await consumer.stop()
        with contextlib.suppress(Exception):
            controller.lease.release()
        await producer.stop()
        controller.store.close()
        redis_client.close()
        log("stopped")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def submit(settings: Any, command: Command, timeout_s: float | None = None) -> str:
    """Push `command`, then wait for its result; when no controller holds the lease, apply it here."""
    rollout_settings = load_rollout_settings(settings)
    redis_client = open_redis(settings)
    try:
        try:
            push(redis_client, command)
        except Exception as exc:  # noqa: BLE001 - any client error means the same to the user
            raise ServiceError(f"Redis at {redact_url(settings.redis_dsn)} is not reachable ({type(exc).__name__}); "
                               "start the services with `prefloop up`") from None
        deadline = loop_time() + (timeout_s or rollout_settings.command_timeout_s)
        while loop_time() < deadline:
            state = RolloutState.from_json(redis_client.get(keys.ROLLOUT_STATE))
            if command.command_id in state.commands:
                return state.commands[command.command_id]
            if redis_client.get(keys.ROLLOUT_LEASE) is None:
                await _apply_here(settings, rollout_settings, redis_client)
                continue
            await asyncio.sleep(0.2)
        holder = redis_client.get(keys.ROLLOUT_LEASE)
        raise PrefloopError(f"the rollout controller ({holder.decode() if holder else 'none'}) did not apply the "
                            f"{command.kind.value} command within {timeout_s or rollout_settings.command_timeout_s:g}s;"
                            " it stays queued and runs when the controller does")
    finally:
        redis_client.close()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def _apply_here(settings: Any, rollout_settings: RolloutSettings, redis_client: Any) -> None:
    """Act as the controller for one step without metric checks, then give the lease back."""
    producer = await _producer(settings)
    controller = build_controller(settings, rollout_settings, redis_client, producer, new_owner_id("cli"),
                                  say=lambda message: None)
    try:
        if controller.lease.acquire():
            try:
                await controller.step(checks=False)
            finally:
                controller.lease.release()
    finally:
        await producer.stop()
        controller.store.close()
