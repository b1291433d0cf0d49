"""The gate through the session's real Kafka, Redis and analytics store: `prefloop eval` publishing, the
evaluator service (exactly one PromotionEvent per SUCCEEDED result, FAILED skipped, redelivery
republishes the same event), a SIGKILL mid-evaluation, and `prefloop models list`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from gate_helpers import install_candidate

from evaluator.gate.service import promotion_event_id, run_service
from prefloop import topics
from prefloop.cli import main as prefloop_main
import kafka_testing
from prefloop.settings import Settings
from schemas import PromotionEvent, TrainingResult, TrainingStatus, decode, encode
from trainer.registry import ModelRegistry, VersionStatus

pytestmark = [pytest.mark.services, pytest.mark.slow]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    return asyncio.run(kafka_testing.end_offsets(settings.bootstrap_servers, topic))


def records_since(settings: Settings, topic: str, start: dict[int, int]) -> list[PromotionEvent]:
    """Every record of `topic` written after `start` (end offsets taken earlier)."""
    consumed = asyncio.run(kafka_testing.read_range(settings.bootstrap_servers, topic, start))
    return [decode(c.value, expect=PromotionEvent) for c in consumed]


def wait_for_records(settings: Settings, topic: str, start: dict[int, int], count: int, timeout_s: float) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        found = records_since(settings, topic, start)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(1)


def produce(settings: Settings, topic: str, records: list) -> None:
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(topic, encode(record), key=record.request_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def group_at_end(settings: Settings, group: str, topic: str) -> None:
    """Commit `group`'s offsets at the end of `topic`: results other tests published are not ours."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    async def commit() -> None:
        ends = await kafka_testing.end_offsets(settings.bootstrap_servers, topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in ends])
            await consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(off, "") for p, off in ends.items()})
        finally:
            await consumer.stop()

    asyncio.run(commit())


def promotions_rows(store, event_id: str) -> list:
    return store.query(f"SELECT candidate_version, decision, metrics['win_rate'] FROM promotions FINAL "
                       f"WHERE event_id = '{event_id}'").rows


def journal(home: Path) -> list[dict]:
    path = home / "evaluator" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture
def service_home(tmp_path, gate_cache, services, monkeypatch):
    """A fresh home on the session's services, with the gate's test settings and a consumer group of its own."""
    from gate_helpers import gate_environment

    (tmp_path / "home").mkdir()
    monkeypatch.setenv("PREFLOOP_EVALUATOR_CONSUMER_GROUP", f"evaluator-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PREFLOOP_EVALUATOR_MIN_PAIRS", "30")
    settings = gate_environment(monkeypatch, tmp_path / "home", gate_cache, services)
    group_at_end(settings, os.environ["PREFLOOP_EVALUATOR_CONSUMER_GROUP"], topics.TRAINING_RESULTS)
    return settings


def succeeded(version: str, adapter: Path, snapshot_id: str) -> TrainingResult:
    return TrainingResult(request_id=f"req-{uuid.uuid4().hex[:8]}", status=TrainingStatus.SUCCEEDED, version=version,
                          parent_version="v1.0", snapshot_id=snapshot_id, adapter_path=str(adapter))


def test_eval_publishes_one_decision_and_models_list_shows_it(service_home, train_candidate, store, capsys):
    trained = train_candidate("true")
    version = install_candidate(trained, service_home.home)
    start = end_offsets(service_home, topics.PROMOTIONS)
    assert prefloop_main(["eval", "--candidate", version, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "published PROMOTE" in out
    report = json.loads((service_home.home / "runs" / "adapter" / "evaluation.json").read_text())
    assert (service_home.home / "runs" / "adapter" / "evaluation.md").read_text().startswith(f"# Evaluation of {version}")
    events = records_since(service_home, topics.PROMOTIONS, start)
    assert [(e.event_id, e.candidate_version, e.baseline_version, e.decision.value) for e in events] == [
        (report["event"]["event_id"], version, "v1.0", "PROMOTE")]
    assert events[0].traffic_fraction == 0.0 and events[0].reason == report["reason"]
    assert events[0].metrics["win_rate"] == report["win_rate"] and "guardrail_length_ratio" in events[0].metrics
    assert promotions_rows(store, events[0].event_id) == [[version, "PROMOTE", report["win_rate"]]]
    record = ModelRegistry(service_home.home).get(version)
    assert record.status is VersionStatus.APPROVED
    assert record.evaluation["decision"] == "PROMOTE" and record.evaluation["event_id"] == events[0].event_id
    assert prefloop_main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"PROMOTE win {report['win_rate']:.2f} (>= {report['win_rate_lower']:.2f}) vs v1.0" in listing


def test_service_publishes_exactly_one_event_per_succeeded_result_and_republishes_on_redelivery(
        service_home, train_candidate, store):
    trained = train_candidate("true")
    version = install_candidate(trained, service_home.home)
    failed = TrainingResult(request_id="req-failed", status=TrainingStatus.FAILED, reason="attempt 1: training job was killed")
    ok = succeeded(version, service_home.home / "runs" / "adapter", trained.snapshot_id)
    start = end_offsets(service_home, topics.PROMOTIONS)
    produce(service_home, topics.TRAINING_RESULTS, [failed, ok])

    async def serve_until(entries: int) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_service(service_home, stop=stop))
        deadline = time.monotonic() + 180
        while len(journal(service_home.home)) < entries and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, timeout=60)

    asyncio.run(serve_until(2))
    entries = journal(service_home.home)
    assert [(e["status"], e["outcome"]) for e in entries] == [("FAILED", "skipped"), ("SUCCEEDED", "evaluated")]
    events = wait_for_records(service_home, topics.PROMOTIONS, start, 1, timeout_s=10)
    expected_id = promotion_event_id(ok)
    assert [(e.event_id, e.candidate_version, e.decision.value) for e in events] == [(expected_id, version, "PROMOTE")]
    assert len(promotions_rows(store, expected_id)) == 1
    assert ModelRegistry(service_home.home).get(version).status is VersionStatus.APPROVED
    report = service_home.home / "runs" / "adapter" / "evaluation.json"
    first_report = report.read_bytes()

    # The same result delivered again (a crash after publishing, before the commit): same event, no new evaluation.
    produce(service_home, topics.TRAINING_RESULTS, [ok])
    asyncio.run(serve_until(3))
    assert journal(service_home.home)[-1]["outcome"] == "republished"
    again = wait_for_records(service_home, topics.PROMOTIONS, start, 2, timeout_s=10)
    assert [e.event_id for e in again] == [expected_id, expected_id]
    assert again[1].to_avro() == events[0].to_avro()
    assert report.read_bytes() == first_report
    assert len(promotions_rows(store, expected_id)) == 1


def test_evaluator_killed_mid_evaluation_still_publishes_exactly_one_event(service_home, train_candidate, store, tmp_path):
    from prefloop.services.supervisor import service_env

    trained = train_candidate("true")
    version = install_candidate(trained, service_home.home)
    ok = succeeded(version, service_home.home / "runs" / "adapter", trained.snapshot_id)
    env = {**os.environ, **{k: v for k, v in service_env(service_home).items() if k.startswith("PREFLOOP_")}}
    # A slower evaluation (longer guardrail answers) leaves room to kill it in the middle.
    env.update(PREFLOOP_EVALUATOR_MAX_NEW_TOKENS="64", PREFLOOP_EVALUATOR_GUARDRAIL_PROMPTS="32")
    start = end_offsets(service_home, topics.PROMOTIONS)
    produce(service_home, topics.TRAINING_RESULTS, [ok])
    argv = [sys.executable, "-m", "prefloop.cli", "evaluator", "--once"]
    report = service_home.home / "runs" / "adapter" / "evaluation.json"

    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while f"evaluating {version}" not in log.read_text() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        assert f"evaluating {version}" in log.read_text(), log.read_text()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not report.exists(), "the evaluation finished before the kill; the test needs a slower evaluation"
    assert records_since(service_home, topics.PROMOTIONS, start) == []

    second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"evaluating {version}" in second.stderr  # redelivered (never committed) and evaluated again
    events = wait_for_records(service_home, topics.PROMOTIONS, start, 1, timeout_s=10)
    time.sleep(2)  # anything published twice would be there by now
    events = records_since(service_home, topics.PROMOTIONS, start)
    assert [(e.event_id, e.candidate_version) for e in events] == [(promotion_event_id(ok), version)]
    assert len(promotions_rows(store, promotion_event_id(ok))) == 1
    record = ModelRegistry(service_home.home).get(version)
    assert record.status.value == {"PROMOTE": "approved", "REJECT": "rejected"}[events[0].decision.value]
    assert json.loads(report.read_text())["event"]["event_id"] == promotion_event_id(ok)


def test_the_registry_says_approved_before_the_promote_event_goes_out(service_home, train_candidate):
    """The rollout controller acts on a PROMOTE only for an approved version, so the status comes first."""
    from evaluator.gate.service import handle_result

    trained = train_candidate("true")
    version = install_candidate(trained, service_home.home)
    seen: list[tuple[str, str]] = []

    async def publish(event: PromotionEvent) -> None:
        seen.append((event.decision.value, ModelRegistry(service_home.home).get(version).status.value))

    outcome = asyncio.run(handle_result(succeeded(version, service_home.home / "runs" / "adapter", trained.snapshot_id),
                                        service_home, publish))
    assert outcome.event is not None and not outcome.republished
    assert seen == [("PROMOTE", "approved")]
