"""HTTP collector against the real Kafka of the test session: accepted events land decoded and keyed;
rejected requests produce nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
import uuid

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from prefloop import topics as contract
from prefloop.collector import create_app
from prefloop.sdk import FeedbackClient
from kafka_testing import create_topic, delete_topic, end_offsets, read_range
from prefloop.services.process import free_port
from prefloop.services.supervisor import service_env
from prefloop.settings import Settings
from schemas import Action, ActionKind, Response

pytestmark = pytest.mark.services

MAX_BODY = 4096


@pytest.fixture
async def topic_pair(services: Settings):
    suffix = uuid.uuid4().hex[:10]
    names = (f"test.collector.responses.{suffix}", f"test.collector.actions.{suffix}")
    for name in names:
        await create_topic(services.bootstrap_servers, name, 3)
    yield names
    for name in names:
        await delete_topic(services.bootstrap_servers, name)


async def _serve(settings: Settings, client: FeedbackClient):
    http = TestClient(TestServer(create_app(settings, client)))
    await http.start_server()
    return http


@pytest.fixture
async def http(services: Settings, topic_pair):
    settings = dataclasses.replace(services, collector_max_body_bytes=MAX_BODY)
    client = FeedbackClient(settings, responses_topic=topic_pair[0], actions_topic=topic_pair[1], linger_ms=1)
    http = await _serve(settings, client)
    yield http
    await http.close()
    await client.close()


async def produced(services: Settings, topic_pair) -> tuple[list, list]:
    return (
        await read_range(services.bootstrap_servers, topic_pair[0], since={}),
        await read_range(services.bootstrap_servers, topic_pair[1], since={}),
    )


RESPONSE = {
    "type": "response", "response_id": "resp-1", "prompt": "Translate 'cat'", "response": "chat",
    "model_version": "v4", "user_id": "u-9", "tags": {"app": "translate", "locale": "fr"},
}


async def test_single_event_is_accepted_and_lands_as_sent(services, topic_pair, http: TestClient):
    event = {**RESPONSE, "event_id": "evt-http-1", "occurred_at": "2025-01-02T03:04:05.678Z"}
    reply = await http.post("/v1/events", json=event)
    assert reply.status == 202
    assert await reply.json() == {"accepted": 1, "event_ids": ["evt-http-1"]}
    responses, actions = await produced(services, topic_pair)
    assert actions == []
    assert len(responses) == 1
    record = responses[0].record()
    assert record == Response(response_id="resp-1", prompt="Translate 'cat'", response="chat", model_version="v4",
                              user_id="u-9", tags={"app": "translate", "locale": "fr"}, event_id="evt-http-1",
                              occurred_at=1735787045678)
    assert responses[0].key == record.prompt_id.encode()


@pytest.mark.parametrize("shape", ["array", "envelope"])
async def test_batch_is_accepted_in_order(services, topic_pair, http: TestClient, shape: str):
    events = [
        RESPONSE,
        {"type": "action", "response_id": "resp-1", "kind": "rating", "rating": 5, "user_id": "u-9"},
        {"type": "ACTION", "response_id": "resp-1", "kind": "EDIT", "edited_text": "le chat"},
    ]
    body = events if shape == "array" else {"events": events}
    before = time.time() * 1000
    reply = await http.post("/v1/events", json=body)
    assert reply.status == 202, await reply.text()
    answer = await reply.json()
    assert answer["accepted"] == 3 and len(set(answer["event_ids"])) == 3

    responses, actions = await produced(services, topic_pair)
    assert [m.record().event_id for m in responses] == answer["event_ids"][:1]
    got = {m.record().event_id: m for m in actions}
    assert set(got) == set(answer["event_ids"][1:])
    rating = got[answer["event_ids"][1]].record()
    edit = got[answer["event_ids"][2]].record()
    assert (rating.kind, rating.rating, rating.user_id) == (ActionKind.RATING, 5, "u-9")
    assert (edit.kind, edit.edited_text) == (ActionKind.EDIT, "le chat")
    assert all(m.key == b"resp-1" for m in actions)
    assert all(isinstance(m.record(), Action) for m in actions)
    assert rating.occurred_at >= before - 1  # stamped on arrival


async def test_bad_batch_reports_every_field_and_produces_nothing(services, topic_pair, http: TestClient):
    before = [await end_offsets(services.bootstrap_servers, t) for t in topic_pair]
    body = [
        RESPONSE,  # valid, yet must not be produced: its batch is rejected
        {"type": "action", "response_id": "resp-1", "kind": "RATING", "rating": 9},
        {"type": "response", "prompt": "p", "response": 3, "model_version": "v", "colour": "red"},
        "not an object",
        {"type": "click", "response_id": "resp-1"},
        {"response_id": "resp-1"},
    ]
    reply = await http.post("/v1/events", json=body)
    assert reply.status == 400
    answer = await reply.json()
    assert answer["error"].startswith("5 of 6 event(s) are invalid")
    errors = {(e["index"], e["field"]): e["message"] for e in answer["errors"]}
    assert errors == {
        (1, "rating"): "must be between 1 and 5, got 9",
        (2, "colour"): "unknown field",
        (2, "response_id"): "is required",
        (2, "response"): "must be a string, got int",
        (3, None): "must be a JSON object, got a string",
        (4, "type"): 'must be "response" or "action", got "click"',
        (5, "type"): 'must be "response" or "action", got nothing',
    }
    after = [await end_offsets(services.bootstrap_servers, t) for t in topic_pair]
    assert after == before
    assert await produced(services, topic_pair) == ([], [])


async def test_body_over_the_limit_is_413_and_produces_nothing(services, topic_pair, http: TestClient):
    big = [{**RESPONSE, "response": "x" * 1000} for _ in range(5)]
    body = json.dumps(big).encode()
    assert len(body) > MAX_BODY
    reply = await http.post("/v1/events", data=body, headers={"Content-Type": "application/json"})
    assert reply.status == 413
    assert "larger than the collector's limit of 4096 bytes" in (await reply.json())["error"]

    async def chunks():  # no Content-Length: the limit holds for chunked bodies too
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    reply = await http.post("/v1/events", data=chunks(), headers={"Content-Type": "application/json"})
    assert reply.status == 413
    assert "4096 bytes" in (await reply.json())["error"]
    assert await produced(services, topic_pair) == ([], [])

    small = json.dumps([RESPONSE]).encode()
    reply = await http.post("/v1/events", data=small, headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 202


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"type": "response", ', "request body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b'"hello"', "body should be an event object"),
        (b'{"events": 3}', "body should be an event object"),
        (b'{"events": [], "extra": 1}', "body should be an event object"),
        (b"[]", "no events in the request"),
    ],
)
async def test_malformed_bodies_are_400(services, topic_pair, http: TestClient, body: bytes, message: str):
    reply = await http.post("/v1/events", data=body, headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert (await reply.json())["error"].startswith(message)
    assert await produced(services, topic_pair) == ([], [])


async def test_health_and_json_errors_for_other_routes(http: TestClient):
    reply = await http.get("/healthz")
    assert reply.status == 200
    assert (await reply.json())["status"] == "ok"
    reply = await http.get("/v1/events")
    assert reply.status == 405
    assert "error" in await reply.json()
    reply = await http.post("/v2/events", json=RESPONSE)
    assert reply.status == 404
    assert "error" in await reply.json()


async def test_kafka_failure_is_503_with_a_reason(services: Settings):
    missing = f"test.collector.missing.{uuid.uuid4().hex[:8]}"
    client = FeedbackClient(services, responses_topic=missing, request_timeout_ms=1500, delivery_timeout_s=5)
    http = await _serve(services, client)
    try:
        reply = await http.post("/v1/events", json=RESPONSE)
        assert reply.status == 503
        error = (await reply.json())["error"]
        assert error.startswith("events not accepted, Kafka is unavailable")
        assert missing in error
    finally:
        await http.close()
        await client.close()


async def test_python_m_prefloop_collector_serves_the_contract_topics(services: Settings):
    port = free_port()
    env = service_env(services)
    env["PREFLOOP_COLLECTOR_PORT"] = str(port)
    before = await end_offsets(services.bootstrap_servers, contract.ACTIONS)
    proc = subprocess.Popen([sys.executable, "-m", "prefloop.collector"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read().decode()
                try:
                    async with session.get(f"{url}/healthz") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "collector did not become healthy in 60 s"
                await asyncio.sleep(0.2)
            event_id = f"evt-{uuid.uuid4().hex}"
            event = {"type": "action", "event_id": event_id, "response_id": "resp-proc", "kind": "THUMBS_UP"}
            async with session.post(f"{url}/v1/events", json=event) as reply:
                assert reply.status == 202
                assert (await reply.json())["event_ids"] == [event_id]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, proc.stdout.read().decode()
    landed = await read_range(services.bootstrap_servers, contract.ACTIONS, since=before)
    ours = [m for m in landed if m.record().event_id == event_id]
    assert len(ours) == 1 and ours[0].key == b"resp-proc"
