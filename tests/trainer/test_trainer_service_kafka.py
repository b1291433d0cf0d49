"""The trainer service end to end on the session's real Kafka, Redis and analytics store."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from trainer_synthetic import TINY
from trainer_synthetic import polite_pairs

from prefloop import topics
from schemas import TrainingRequest, TrainingResult, TrainingStatus, TriggerReason, decode, encode
from prefloop import routing
from prefloop.keys import TRIGGER_LOCK as TRIGGER_LOCK_KEY
from trainer.service import run_service
from trainer.snapshots import create_snapshot


@pytest.mark.services
@pytest.mark.slow
def test_service_consumes_a_request_and_publishes_the_result(services, redis_client, store, tmp_path, tiny_models, monkeypatch):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(tiny_models, target_is_directory=True)
    settings = dataclasses.replace(services, home=tmp_path / "home", cache_dir=cache)
    group = f"trainer-test-{uuid.uuid4().hex[:8]}"
    for key, value in {**TINY, "job_retries": 0, "job_timeout_s": 300, "consumer_group": group}.items():
        monkeypatch.setenv(f"PREFLOOP_TRAINER_{key.upper()}", str(value))
    snap = create_snapshot(polite_pairs(60, seed=5), settings.home)
    redis_client.set(TRIGGER_LOCK_KEY, "held-by-the-trigger")
    req = TrainingRequest(snapshot_id=snap.snapshot_id, reason=TriggerReason.MANUAL, pair_count=60)

    async def scenario() -> TrainingResult:
        results = AIOKafkaConsumer(topics.TRAINING_RESULTS, bootstrap_servers=settings.bootstrap_servers,
                                   group_id=None, auto_offset_reset="earliest")
        await results.start()
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topics.TRAINING_REQUESTS, encode(req), key=req.event_id.encode())
        finally:
            await producer.stop()
        stop = asyncio.Event()
        service = asyncio.create_task(run_service(settings, stop=stop))
        try:
            deadline = asyncio.get_running_loop().time() + 240
            while asyncio.get_running_loop().time() < deadline:
                if service.done():
                    service.result()  # raises what the service died of
                    raise AssertionError("the service stopped before publishing a result")
                batch = await results.getmany(timeout_ms=1000)
                for messages in batch.values():
                    for message in messages:
                        result = decode(message.value, expect=TrainingResult)
                        if result.request_id == req.event_id:
                            return result
            raise AssertionError("no training result within 240 s")
        finally:
            stop.set()
            await asyncio.wait_for(service, timeout=60)
            await results.stop()

    result = asyncio.run(scenario())
    assert result.status is TrainingStatus.SUCCEEDED, result.reason
    assert result.version == "v1.1" and result.snapshot_id == snap.snapshot_id
    assert result.metrics["heldout_reward_accuracy"] >= 0.9
    assert redis_client.get(TRIGGER_LOCK_KEY) is None  # the trigger may fire again
    assert routing.read_table(redis_client).production == "v1.0"  # the base model is production until a promotion
    rows = store.query("SELECT version, status, snapshot_id FROM model_versions FINAL WHERE version IN ('v1.0', 'v1.1') "
                       f"AND (snapshot_id = '{snap.snapshot_id}' OR version = 'v1.0') ORDER BY version").rows
    assert ["v1.1", "candidate", snap.snapshot_id] in [list(r) for r in rows]
