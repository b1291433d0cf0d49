"""Fuzz: bad inputs of every kind, mixed with good events, through Kafka and through the collector,
against the session's real Kafka, Redis and chDB and the streams worker of `pipeline`.

- every bad Kafka record is in feedback.dlq with the expected reason and its source coordinates;
- every bad HTTP request is answered 4xx with an error naming the problem, and produces nothing;
- every good event (from Kafka or HTTP) reaches `feedback_events`, and every good EDIT its pair;
- the worker stays up (same process) with bounded memory; the collector keeps answering.

`PREFLOOP_FUZZ_INPUTS` sets the number of bad Kafka records (default 10,000; `scripts/fuzz.sh`
runs more). The figures (counts by kind, the worker's peak RSS) are printed and written to
`$PREFLOOP_FUZZ_REPORT` when set.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from fuzz_corpus import HTTP_KINDS, KAFKA_KINDS, BadRequest, http_corpus, kafka_corpus
from prefloop.auth import AuthSettings
from prefloop.collector import create_app
from prefloop.sdk import FeedbackClient
from prefloop.services.kafka import end_offsets
from prefloop.settings import Settings
from schemas import encode
from streams_helpers import key_of, read_dlq, topic_of, wait_for, wait_rows

pytestmark = pytest.mark.services

BAD_RECORDS = int(os.environ.get("PREFLOOP_FUZZ_INPUTS", "10000"))
GOOD_GROUPS = max(50, BAD_RECORDS // 50)
BAD_REQUESTS = max(600, BAD_RECORDS // 8)
GOOD_REQUESTS = max(40, BAD_REQUESTS // 20)


def _report(name: str, figures: dict) -> None:
    print(f"\n{name}: {json.dumps(figures, indent=1)}")
    path = os.environ.get("PREFLOOP_FUZZ_REPORT")
    if path:
        report = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        report[name] = figures
        Path(path).write_text(json.dumps(report, indent=1))


def _memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}


async def _produce_in_order(settings: Settings, items: list[tuple[str, bytes | None, bytes | None]]) -> list:
    """Send each (topic, key, value) and return its RecordMetadata (partition, offset), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all",
                                max_batch_size=256 * 1024, enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in items]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def test_fuzzed_kafka_records_go_to_the_dlq_and_good_events_are_processed(services, pipeline, store, tag):
    worker = pipeline.started[0]
    assert worker.proc.poll() is None
    before = _memory_kib(worker.pid)
    corpus = kafka_corpus(tag, BAD_RECORDS, GOOD_GROUPS)
    items = []
    for is_bad, index in corpus.order:
        if is_bad:
            bad = corpus.bad[index]
            items.append((bad.topic, bad.key, bad.value))
        else:
            record = corpus.good[index]
            items.append((topic_of(record), key_of(record), encode(record)))
    started = time.monotonic()
    metadata = asyncio.run(_produce_in_order(services, items))
    expected = {}  # (topic, partition, offset) -> the bad record
    for (is_bad, index), meta in zip(corpus.order, metadata):
        if is_bad:
            expected[(meta.topic, meta.partition, meta.offset)] = corpus.bad[index]
    good_coordinates = {(m.topic, m.partition, m.offset) for (is_bad, _), m in zip(corpus.order, metadata) if not is_bad}

    def letters() -> dict:
        return {(d.source_topic, d.source_partition, d.source_offset): d for d in read_dlq(services)
                if (d.source_topic, d.source_partition, d.source_offset) in expected or
                (d.source_topic, d.source_partition, d.source_offset) in good_coordinates}

    found = wait_for(lambda: (got := letters()) and len(got) >= len(expected) and got, 240, interval_s=3,
                     what=f"{len(expected)} dead letters")
    assert not good_coordinates & set(found), "a good event was dead-lettered"
    wrong = {c: (expected[c].kind, expected[c].reason, d.reason, d.detail) for c, d in found.items() if d.reason != expected[c].reason}
    assert not wrong, list(wrong.values())[:5]
    assert all(d.detail for d in found.values()), "every letter says why"
    assert all(d.payload == (expected[c].value or b"") for c, d in found.items()), "each letter carries the bytes at its offset"

    good_events = len(corpus.good)
    wait_rows(store, f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE '{tag}-r%'", good_events, timeout_s=180)
    wait_rows(store, f"SELECT count() FROM preference_pairs FINAL WHERE prompt LIKE '[{tag}]%'", GOOD_GROUPS, timeout_s=180)
    elapsed = time.monotonic() - started

    assert worker.proc.poll() is None, f"the worker died:\n{worker.log_tail()}"
    after = _memory_kib(worker.pid)
    assert after["VmRSS"] < before["VmRSS"] + 400 * 1024, f"worker RSS grew from {before} to {after}"
    by_kind = collections.Counter(b.kind for b in expected.values())
    assert set(by_kind) == set(KAFKA_KINDS) and len(KAFKA_KINDS) >= 10
    _report("kafka", {
        "bad_records": len(expected), "good_events": good_events, "pairs": GOOD_GROUPS,
        "by_kind": dict(sorted(by_kind.items())),
        "by_reason": dict(collections.Counter(d.reason for d in found.values())),
        "seconds_until_all_processed": round(elapsed, 1),
        "worker_rss_mib_before": round(before["VmRSS"] / 1024), "worker_rss_mib_after": round(after["VmRSS"] / 1024),
        "worker_peak_rss_mib": round(after["VmHWM"] / 1024),
    })


async def test_fuzzed_http_requests_are_4xx_naming_the_problem_and_good_ones_are_processed(services, pipeline, store, tag):
    client = FeedbackClient(services, linger_ms=2)
    http = TestClient(TestServer(create_app(services, client, AuthSettings())))
    await http.start_server()
    items = http_corpus(tag, BAD_REQUESTS, GOOD_REQUESTS, services.collector_max_events, services.collector_max_body_bytes)
    health_ms: list[float] = []
    done = asyncio.Event()

    async def watch_health() -> None:  # the collector must keep answering while it is fuzzed
        while not done.is_set():
            t0 = time.perf_counter()
            reply = await http.get("/healthz")
            assert reply.status == 200
            health_ms.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)

    contract = [t.name for t in services.topics()[:2]]
    offsets_before = await end_offsets(services.bootstrap_servers, contract)
    failures: list[str] = []
    statuses: collections.Counter = collections.Counter()
    accepted = 0
    gate = asyncio.Semaphore(8)

    async def send(item: BadRequest | list[dict]) -> None:
        nonlocal accepted
        async with gate:
            if isinstance(item, list):
                reply = await http.post("/v1/events", json=item)
                if reply.status != 202:
                    failures.append(f"good batch answered {reply.status}: {await reply.text()}")
                accepted += len(item)
                return
            headers = {"Content-Type": item.content_type} if item.content_type else {"Content-Type": ""}
            reply = await http.request(item.method, item.path, data=item.body, headers=headers)
            text = await reply.text()
            statuses[(item.kind, reply.status)] += 1
            try:
                answer = json.loads(text)
                error = answer["error"]  # what went wrong, then each bad field of each bad event
                named = " ".join([error, *(f"{e['field']}: {e['message']}" for e in answer.get("errors", []))])
            except (ValueError, KeyError, TypeError):
                error = named = None
            if reply.status != item.status or not error or item.says not in named:
                failures.append(f"{item.kind}: expected {item.status} saying {item.says!r}, got {reply.status}: {text[:200]}")

    watcher = asyncio.create_task(watch_health())
    try:
        started = time.monotonic()
        await asyncio.gather(*(send(item) for item in items))
        elapsed = time.monotonic() - started
    finally:
        done.set()
        await watcher
        await http.close()
        await client.close()
    assert not failures, failures[:5]

    # only the good batches reached Kafka, and the worker processed every one of their events
    offsets_after = await end_offsets(services.bootstrap_servers, contract)
    assert sum(offsets_after.values()) - sum(offsets_before.values()) >= accepted
    await asyncio.to_thread(wait_rows, store, f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE '{tag}-h%'",
                            accepted, 180)
    bad_in_store = store.query(f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE '{tag}-x%'").rows[0][0]
    assert bad_in_store == 0
    assert pipeline.started[0].proc.poll() is None

    by_kind = collections.Counter(kind for kind, _ in statuses.elements())
    assert set(by_kind) == set(HTTP_KINDS) and len(HTTP_KINDS) >= 10
    health_ms.sort()
    _report("http", {
        "bad_requests": sum(by_kind.values()), "good_requests": GOOD_REQUESTS, "good_events": accepted,
        "by_kind_and_status": {f"{k} {s}": n for (k, s), n in sorted(statuses.items())},
        "seconds": round(elapsed, 1), "healthz_checks": len(health_ms),
        "healthz_p50_ms": round(health_ms[len(health_ms) // 2], 1), "healthz_max_ms": round(health_ms[-1], 1),
    })
    assert health_ms[-1] < 5000, f"/healthz took {health_ms[-1]:.0f} ms during the fuzz"
