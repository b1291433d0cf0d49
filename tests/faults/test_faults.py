"""Faults of every service while events flow, on a stack `prefloop up` started (docs/reliability.md).

Each test checks what a fault must leave behind: the expected pairs, each once, on feedback.pairs
and in `preference_pairs FINAL`, and every event in `feedback_events FINAL`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from prefloop import keys, topics
from schemas import Action, ActionKind, DeadLetter, decode
from streams_helpers import assert_each_pair_once, produce, read_dlq, read_pairs, read_topic, wait_for
from streams.workload import Workload, mixed

pytestmark = pytest.mark.services


# --- helpers -------------------------------------------------------------------------------------------------
def tagged_pairs(settings, tag: str) -> list:
    return [p for p in read_pairs(settings) if tag in p.prompt]


def wait_all_pairs(settings, tag: str, expected: dict, timeout_s: float = 180.0) -> list:
    wait_for(lambda: {p.pair_id for p in tagged_pairs(settings, tag)} >= set(expected), timeout_s, interval_s=1.0,
             what=f"{len(expected)} pairs for {tag}")
    time.sleep(3)  # a duplicate would follow within moments
    return tagged_pairs(settings, tag)


def produce_retrying(settings, records: list, deadline_s: float = 180.0) -> None:
    """Produce, retrying while the broker is away (what an app's SDK does); a retried chunk may
    arrive twice, which the pipeline deduplicates."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            produce(settings, records)
            return
        except Exception:  # noqa: BLE001 - any broker error: try again until the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


class Feeder(threading.Thread):
    """Produces a workload in chunks while a test breaks things; `reached(i)` waits for chunk i."""

    def __init__(self, settings, records: list, chunks: int, pause_s: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.chunks = [records[i::chunks] for i in range(chunks)]
        self.pause_s = pause_s
        self.sent = 0
        self.error: BaseException | None = None
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            for chunk in self.chunks:
                produce_retrying(self.settings, chunk)
                with self._progress:
                    self.sent += 1
                    self._progress.notify_all()
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def reached(self, n: int, timeout_s: float = 120.0) -> None:
        with self._progress:
            assert self._progress.wait_for(lambda: self.sent >= n or self.error, timeout_s), f"chunk {n} not sent"

    def finish(self, timeout_s: float = 300.0) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error:
            raise self.error


def kill(stack, name: str) -> int:
    pid = stack.pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def tag_dead_letters(settings, tag: str) -> list[DeadLetter]:
    out = []
    for letter in read_dlq(settings):
        try:
            event = decode(letter.payload)
        except Exception:  # noqa: BLE001 - not one of ours
            continue
        if tag in getattr(event, "response_id", ""):
            out.append(letter)
    return out


def write_jsonl(path: Path, records: list) -> Path:
    with path.open("w") as out:
        for record in records:
            kind = "action" if isinstance(record, Action) else "response"
            out.write(json.dumps({"type": kind, **record.to_avro()}) + "\n")
    return path


# --- Redis ---------------------------------------------------------------------------------------------------
def test_redis_blip_on_supervised_services_needs_no_manual_start(stack, store_of, tag, tmp_path):
    """The issue's hand test: half of a fixture emitted, redis-server SIGKILLed (the watchdog starts
    it again 3 s later), the rest emitted: every pair once, and the worker rode it out."""
    w = mixed(tag, 40, duplicate_every=0)
    expected = w.expected_pairs()
    records = w.records()
    half = len(records) // 2
    first, second = write_jsonl(tmp_path / "first.jsonl", records[:half]), write_jsonl(tmp_path / "second.jsonl", records[half:])
    worker_before = stack.status()["worker"]
    assert worker_before["healthy"]

    assert stack.cli("emit", str(first)).returncode == 0
    wait_for(lambda: tagged_pairs(stack.settings, tag), 60, what="pairs from the first half")
    redis_pid = kill(stack, "redis")
    assert stack.cli("emit", str(second)).returncode == 0  # Kafka takes it; the worker holds while Redis is away
    pairs = wait_all_pairs(stack.settings, tag, expected)
    assert_each_pair_once(store_of(stack), tag, w, expected, pairs)

    status = stack.status()
    assert status["redis"]["restarts"] >= 1 and status["redis"]["pid"] != redis_pid
    assert "was killed by SIGKILL" in stack.log("redis")  # the watchdog's reason, in the service's log
    worker = status["worker"]
    assert (worker["pid"], worker["restarts"]) == (worker_before["pid"], worker_before["restarts"]), \
        "the worker was restarted: it did not ride the Redis blip out"
    log = stack.log("worker")
    assert "Redis unreachable" in log and "Redis answers again" in log


def aof_incr_file(settings) -> Path:
    directory = settings.home / "redis" / "appendonlydir"
    manifest = (directory / "appendonly.aof.manifest").read_text().split("\n")
    names = [line.split()[1] for line in manifest if " type i" in line]
    return directory / names[-1]


def test_redis_losing_its_last_second_of_writes_loses_and_doubles_nothing(stack, store_of, tag):
    """redis-server SIGKILLed with its append-only file one second behind (what `appendfsync everysec`
    can lose in a power cut): dedup ids, pair watermarks and the response index roll back. The
    worker repairs them when Redis answers again; later votes for the same pairs are not published
    twice and no action waits for an index entry that was lost."""
    w = mixed(tag, 60, duplicate_every=0)
    expected = w.expected_pairs()
    feeder = Feeder(stack.settings, w.records(), chunks=12, pause_s=0.4)
    feeder.start()
    feeder.reached(5)
    wait_for(lambda: tagged_pairs(stack.settings, tag), 60, what="pairs before the fault")
    client = redis.Redis.from_url(stack.settings.redis_dsn)
    incr = aof_incr_file(stack.settings)
    behind = incr.with_name("behind.aof")
    recorded = int(client.get(keys.PAIRS_TOTAL) or 0)
    shutil.copyfile(incr, behind)
    # About a second of writes the copy does not have, pairs recorded as published among them.
    wait_for(lambda: int(client.get(keys.PAIRS_TOTAL) or 0) > recorded, 60, interval_s=0.05, what="pairs after the copy")
    time.sleep(1.0)
    client.close()
    size_at_kill = incr.stat().st_size
    os.replace(behind, incr)  # redis-server keeps writing to the old file, which the restart will not read
    kill(stack, "redis")
    assert size_at_kill > incr.stat().st_size, "no write was lost: the test proves nothing"
    feeder.finish()
    stack.wait_healthy("redis")

    # The same choices again from other users: the same pair ids reach the publish stage.
    again = [Action(response_id=a.response_id, kind=ActionKind.CHOICE, rejected_response_id=a.rejected_response_id,
                    user_id=f"again-{i}") for i, a in enumerate(w.actions) if a.kind is ActionKind.CHOICE]
    produce(stack.settings, again)
    pairs = wait_all_pairs(stack.settings, tag, expected)
    revotes = Workload(tag, w.responses, [*w.actions, *again])
    assert_each_pair_once(store_of(stack), tag, revotes, expected, pairs)
    assert tag_dead_letters(stack.settings, tag) == []  # no action stranded by a lost index entry
    assert "Redis came back: wrote the last" in stack.log("worker")
    client = redis.Redis.from_url(stack.settings.redis_dsn)
    try:  # the dedup index holds every published pair again (the watermarks rolled back with the ids)
        from prefloop.partitioner import partition_for

        for pair in pairs:
            part = partition_for(pair.pair_id, stack.settings.pairs_partitions)
            assert client.sismember(keys.PAIR_IDS_PREFIX + str(part), pair.pair_id)
    finally:
        client.close()


# --- Kafka ---------------------------------------------------------------------------------------------------
def test_kafka_broker_sigkilled_mid_stream_and_restarted_on_its_log_dir(stack, store_of, tag):
    w = mixed(tag, 60, duplicate_every=5)
    expected = w.expected_pairs()
    worker_before = stack.status()["worker"]
    feeder = Feeder(stack.settings, w.records(), chunks=12, pause_s=0.3)
    feeder.start()
    feeder.reached(4)
    wait_for(lambda: tagged_pairs(stack.settings, tag), 60, what="pairs before the fault")
    kafka_pid = kill(stack, "kafka")
    stack.wait_healthy("kafka", other_than=kafka_pid)  # the watchdog restarts it on the same log dir
    feeder.finish()
    pairs = wait_all_pairs(stack.settings, tag, expected)
    assert_each_pair_once(store_of(stack), tag, w, expected, pairs)
    worker = stack.status()["worker"]
    assert (worker["pid"], worker["restarts"]) == (worker_before["pid"], worker_before["restarts"])


# --- the analytics store ---------------------------------------------------------------------------------------
def committed_offsets(settings, topic: str, partitions: int, group: str = "prefloop-streams") -> int:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)])
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_analytics_store_unreachable_for_30s_holds_rows_then_catches_up(stack, store_of, tag):
    """The analytics service stops answering (SIGSTOP) for 30 s mid-stream: pairs keep flowing to
    Kafka, the sink holds its rows (its input offsets stay put) and, once the store answers,
    inserts them: FINAL counts exactly as expected."""
    from streams.settings import StreamsSettings

    rows_topic, rows_partitions = "prefloop-streams-analytics-rows", StreamsSettings().analytics_partitions
    w = mixed(tag, 50, duplicate_every=5)
    expected = w.expected_pairs()
    analytics = stack.pid("analytics")
    feeder = Feeder(stack.settings, w.records(), chunks=10, pause_s=1.0)
    feeder.start()
    feeder.reached(2)
    os.kill(analytics, signal.SIGSTOP)
    try:
        time.sleep(3)  # inserts already on their way settle into the wait
        held_at = committed_offsets(stack.settings, rows_topic, rows_partitions)
        published_at = len(tagged_pairs(stack.settings, tag))
        time.sleep(27)
        assert committed_offsets(stack.settings, rows_topic, rows_partitions) == held_at  # rows held, not dropped
        assert len(tagged_pairs(stack.settings, tag)) > published_at  # the pipeline did not stop with the sink
    finally:
        os.kill(analytics, signal.SIGCONT)
    feeder.finish()
    pairs = wait_all_pairs(stack.settings, tag, expected)
    assert_each_pair_once(store_of(stack), tag, w, expected, pairs)
    assert committed_offsets(stack.settings, rows_topic, rows_partitions) > held_at


# --- a slow consumer -------------------------------------------------------------------------------------------
def test_worker_paused_longer_than_the_session_timeout_rejoins(stack, store_of, extra_workers, tag):
    """A worker frozen (SIGSTOP) mid-stream for 2.5 x session_timeout_s loses its partitions to the
    other worker. Woken (SIGCONT), it writes nothing (its checks and state are older than the new
    owner's: streams/freeze.py) and exits; the watchdog restarts it and it rejoins. No pair lost
    or published twice."""
    other = extra_workers.start()
    other.wait_ready(120)
    time.sleep(2)  # the group settles on two members
    w = mixed(tag, 80, duplicate_every=5)
    expected = w.expected_pairs()
    feeder = Feeder(stack.settings, w.records(), chunks=16, pause_s=0.5)
    feeder.start()
    feeder.reached(3)
    paused = stack.pid("worker")
    restarts = stack.status()["worker"]["restarts"]
    os.kill(paused, signal.SIGSTOP)
    try:
        time.sleep(2.5 * 6)  # FAULT_ENV's session_timeout_s
    finally:
        os.kill(paused, signal.SIGCONT)
    feeder.finish()
    pairs = wait_all_pairs(stack.settings, tag, expected)
    assert_each_pair_once(store_of(stack), tag, w, expected, pairs)
    assert other.proc.poll() is None, other.log_tail()
    assert stack.wait_healthy("worker", other_than=paused)
    status = stack.status()["worker"]
    assert status["restarts"] == restarts + 1 and status["last_exit"] == "exited with code 70"
    assert "this worker stood still for" in stack.log("worker")


# --- a training job --------------------------------------------------------------------------------------------
@dataclass
class TrainingInFlight:
    snapshot_id: str
    request_id: str
    attempt: Path  # attempt-1 of the request
    job_pid: int

    def results(self, stack) -> list:
        return [r for r in (decode(m.value) for m in read_topic(stack.settings, topics.TRAINING_RESULTS))
                if r.request_id == self.request_id]


def start_training(stack, tag: str, request_id: str, seed: int) -> TrainingInFlight:
    """The supervised trainer service up, one request of 60 polite pairs on training.requests, and its
    first job past its first training steps (its progress line: mid-run)."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from trainer_synthetic import polite_pairs

    from prefloop.services.supervisor import up
    from schemas import TrainingRequest, TriggerReason, encode
    from trainer.service import runs_root
    from trainer.snapshots import create_snapshot
    from trainer.tiny_model import ensure_tiny_model

    ensure_tiny_model(stack.settings.cache_dir)
    with open(os.devnull, "w") as quiet:
        up(stack.settings, only=["trainer"], out=quiet)
    snapshot = create_snapshot(polite_pairs(60, seed=seed, tag=tag), stack.settings.home)
    request = TrainingRequest(snapshot_id=snapshot.snapshot_id, reason=TriggerReason.MANUAL, pair_count=60,
                              event_id=request_id)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topics.TRAINING_REQUESTS, encode(request), key=request.event_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())
    attempt = runs_root(stack.settings) / request.event_id / "attempt-1"
    job_pid = int(wait_for(lambda: (attempt / "job.pid").exists() and (attempt / "job.pid").read_text().strip(), 120,
                           what="the training job to start"))
    wait_for(lambda: "train [" in (attempt / "job.log").read_text(errors="replace"), 180, interval_s=0.2,
             what="the job's first training steps")
    return TrainingInFlight(snapshot.snapshot_id, request.event_id, attempt, job_pid)


def test_training_job_sigkilled_mid_run_gives_exactly_one_result(stack, tag):
    """The trainer's job process is SIGKILLed (what the OOM killer does) while it trains: the
    service retries it and publishes exactly one result for the request, SUCCEEDED."""
    from prefloop.services.process import pid_alive
    from schemas import TrainingStatus

    run = start_training(stack, tag, f"req-{tag}", seed=3)
    assert pid_alive(run.job_pid), "the job ended before it could be killed"
    os.kill(run.job_pid, signal.SIGKILL)

    wait_for(lambda: run.results(stack), 300, interval_s=2.0, what="a training result")
    time.sleep(5)  # a second result would follow at once
    got = run.results(stack)
    assert len(got) == 1, got
    assert got[0].status is TrainingStatus.SUCCEEDED, got[0].reason
    assert (run.attempt.parent / "attempt-2" / "result.json").exists()
    assert not (run.attempt / "result.json").exists()  # the killed attempt left no result behind


def test_trainer_service_sigkilled_mid_job_leaves_one_job_and_one_result(stack, tag):
    """The trainer SERVICE is SIGKILLed while its job trains (the job, in its own session, survives it):
    the watchdog restarts the service, which stops the orphaned job before anything else, so the request
    never has two jobs at once; a job that finished meanwhile is adopted, not trained again. Exactly one
    result, and one registry version."""
    from prefloop.services.process import ManagedProcess, pid_alive
    from schemas import TrainingStatus
    from trainer.registry import ModelRegistry

    service = ManagedProcess.of(stack.settings, "trainer")
    run = start_training(stack, tag, f"req-svc-{tag}", seed=5)
    service_pid = service.pid()
    assert service_pid and pid_alive(run.job_pid)
    os.kill(service_pid, signal.SIGKILL)
    time.sleep(0.5)
    assert pid_alive(run.job_pid), "the job should outlive its service (its own session): the case under test"

    # The tiny model's job may finish on its own before the watchdog has restarted the service.
    wait_for(lambda: service.pid() not in (None, service_pid), 120, what="the watchdog to restart the trainer")
    wait_for(lambda: not pid_alive(run.job_pid), 180, what="the restarted service to stop the orphaned job")
    wait_for(lambda: run.results(stack), 300, interval_s=2.0, what="a training result")
    time.sleep(5)
    got = run.results(stack)
    assert len(got) == 1, got
    assert got[0].status is TrainingStatus.SUCCEEDED, got[0].reason
    # The tiny model may finish before the watchdog restarts the service (adopted: attempt-1's result),
    # or be killed by the restarted service (then attempt-2 trained after it was gone).
    produced = Path(got[0].adapter_path).parent
    assert produced.name in ("attempt-1", "attempt-2") and (produced / "result.json").exists()
    if produced.name == "attempt-2":
        assert not (run.attempt / "result.json").exists()
    log = (stack.settings.home / "logs" / "trainer.log").read_text(errors="replace")
    assert ("adopting the finished attempt" in log) == (produced.name == "attempt-1")
    versions = [v for v in ModelRegistry(stack.settings.home).versions() if v.snapshot_id == run.snapshot_id]
    assert [v.adapter_path for v in versions] == [got[0].adapter_path]


@pytest.fixture
def store_of():
    """An analytics client for a stack, closed after the test."""
    from prefloop.analytics.store import connect

    opened = []

    def open_for(stack):
        client = connect(stack.settings)
        opened.append(client)
        return client

    yield open_for
    for client in opened:
        client.close()


# --- Redis: what the trigger state and the routing table lose with the last second -------------------------------
def test_lost_trigger_state_and_routing_write_are_taken_back(stack, tag, tmp_path):
    """The trigger publishes a training request and a version is promoted; Redis then loses that
    last second (AOF one second behind, SIGKILL). The next trigger check takes the request back
    from training.requests instead of asking again for the same pairs, and the trainer service
    sets the routing table's production from the registry again."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from prefloop import routing
    from prefloop.services.supervisor import up
    from schemas import TrainingRequest
    from streams.settings import StreamsSettings
    from streams.trigger import Trigger
    from trainer.snapshots import freeze_pairs
    from trainer.mirror import open_registry

    w = mixed(tag, 10, duplicate_every=0)
    produce(stack.settings, w.records())
    wait_all_pairs(stack.settings, tag, w.expected_pairs())
    with open(os.devnull, "w") as quiet:
        up(stack.settings, only=["trainer"], out=quiet)
    candidate = open_registry(stack.settings, mirror=False).register_candidate(
        adapter_path=tmp_path / "adapter", base_model="tiny", snapshot_id="snap-test", metrics={})
    client = redis.Redis.from_url(stack.settings.redis_dsn)
    client.delete(keys.TRIGGER_STATE, keys.TRIGGER_LOCK)  # this test owns the trigger
    total = int(client.get(keys.PAIRS_TOTAL))
    ss = StreamsSettings(trigger_new_pairs=total, trigger_min_pairs=1, trigger_cooldown_s=3600)

    async def check() -> TrainingRequest | None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
        redis_async = redis.asyncio.Redis.from_url(stack.settings.redis_dsn)
        await producer.start()
        try:
            async def send(topic, key, value):
                return await producer.send(topic, value=value, key=key)

            return await Trigger(stack.settings, ss, redis_async, send, freeze_pairs).check()
        finally:
            await producer.stop()
            await redis_async.aclose()

    def requests() -> list[str]:
        return [decode(m.value).event_id for m in read_topic(stack.settings, topics.TRAINING_REQUESTS)]

    incr = aof_incr_file(stack.settings)
    behind = incr.with_name("behind.aof")
    shutil.copyfile(incr, behind)
    fired = asyncio.run(check())
    assert fired is not None and fired.event_id in requests()
    promoted = stack.cli("models", "promote", candidate.version, "--to", "1.0")  # production now, no canary
    assert promoted.returncode == 0, promoted.stderr
    assert routing.read_table(client).production == candidate.version
    time.sleep(1.0)
    os.replace(behind, incr)
    kill(stack, "redis")
    client.close()
    stack.wait_healthy("redis")
    client = redis.Redis.from_url(stack.settings.redis_dsn)
    try:
        assert client.hget(keys.TRIGGER_STATE, "last_request_id") != fired.event_id.encode()  # lost with the second
        before = requests()
        assert asyncio.run(check()) is None  # the same crossing: nothing asked again
        assert requests() == before
        assert client.hget(keys.TRIGGER_STATE, "last_request_id") == fired.event_id.encode()
        wait_for(lambda: routing.read_table(client) and routing.read_table(client).production == candidate.version, 30,
                 what="the routing table's production set again")
    finally:
        client.close()
    assert f"routing table production was not {candidate.version}; set it again" in stack.log("trainer")
