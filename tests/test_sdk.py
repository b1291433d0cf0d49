"""App SDK against the real Kafka of the test session: what the clients send is what a consumer decodes."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import uuid
from contextlib import redirect_stdout
from dataclasses import dataclass

import pytest
from aiokafka.partitioner import murmur2

from prefloop.errors import ValidationError
from prefloop.sdk import (
    ClientClosedError,
    DeliveryError,
    FeedbackClient,
    KafkaUnavailableError,
    SyncFeedbackClient,
)
from kafka_testing import create_topic, delete_topic, end_offsets, read_range
from prefloop.kafka_admin import list_topics
from prefloop.services.process import free_port
from prefloop.settings import Settings
from schemas import Action, ActionKind, PromotionDecision, PromotionEvent, Response
from schemas.records import prompt_hash

pytestmark = pytest.mark.services

PARTITIONS = 4


@dataclass
class Topics:
    responses: str
    actions: str


@pytest.fixture
async def topics(services: Settings):
    """Fresh response and action topics per test, so tests never see each other's events."""
    suffix = uuid.uuid4().hex[:10]
    names = Topics(f"test.sdk.responses.{suffix}", f"test.sdk.actions.{suffix}")
    for name in (names.responses, names.actions):
        await create_topic(services.bootstrap_servers, name, PARTITIONS)
    yield names
    for name in (names.responses, names.actions):
        await delete_topic(services.bootstrap_servers, name)


def client_for(services: Settings, topics: Topics, **options) -> FeedbackClient:
    options.setdefault("linger_ms", 2)
    return FeedbackClient(services, responses_topic=topics.responses, actions_topic=topics.actions, **options)


async def consume(services: Settings, topic: str):
    return await read_range(services.bootstrap_servers, topic, since={})


def assert_keyed(messages, key_of) -> None:
    for m in messages:
        record = m.record()
        assert m.key == key_of(record).encode()
        # Java's and aiokafka's default partitioner: murmur2 of the key; the stream join relies on it.
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % PARTITIONS


async def test_async_client_records_arrive_identical_and_keyed(services: Settings, topics: Topics):
    async with client_for(services, topics) as client:
        first = await client.response(prompt="What is DPO?", response="Direct preference optimisation.",
                                      model_version="v1", user_id="u1", tags={"app": "docs", "locale": "en"})
        regen = await client.response(prompt="  what is   DPO? ", response="A way to align models.", model_version="v2")
        explicit = await client.response(prompt="Other", response="x", model_version="v1",
                                         response_id="resp-fixed", prompt_id="group-fixed")
        actions = [
            await client.action(response_id=first.response_id, kind=ActionKind.THUMBS_UP, user_id="u1"),
            await client.action(response_id=first.response_id, kind="rating", rating=4),
            await client.action(response_id=regen.response_id, kind="EDIT", edited_text="Better text."),
            await client.action(response_id=first.response_id, kind="CHOICE", rejected_response_id=regen.response_id),
        ]
        prebuilt = await client.send(Action(response_id=explicit.response_id, kind=ActionKind.ACCEPT, event_id="evt-1"))

    # Generated ids, the default prompt group, and the explicit ones.
    assert len({first.response_id, regen.response_id, first.event_id, regen.event_id}) == 4
    assert first.prompt_id == regen.prompt_id == prompt_hash("What is DPO?")
    assert (explicit.response_id, explicit.prompt_id) == ("resp-fixed", "group-fixed")
    assert actions[1].kind is ActionKind.RATING

    responses = await consume(services, topics.responses)
    assert sorted((m.record() for m in responses), key=lambda r: r.event_id) == sorted(
        [first, regen, explicit], key=lambda r: r.event_id)
    assert all(isinstance(m.record(), Response) for m in responses)
    assert_keyed(responses, lambda r: r.prompt_id)
    # Both responses of the prompt group share a key, hence a partition.
    group = [m for m in responses if m.record().prompt_id == first.prompt_id]
    assert len(group) == 2 and group[0].partition == group[1].partition

    sent_actions = actions + [prebuilt]
    got = await consume(services, topics.actions)
    assert sorted((m.record() for m in got), key=lambda r: r.event_id) == sorted(sent_actions, key=lambda r: r.event_id)
    assert_keyed(got, lambda r: r.response_id)


async def test_sync_client_from_a_plain_thread(services: Settings, topics: Topics):
    def app() -> list:
        with SyncFeedbackClient(services, responses_topic=topics.responses, actions_topic=topics.actions) as client:
            shown = client.response(prompt="Sync prompt", response="Sync answer", model_version="v9", user_id="s")
            liked = client.action(response_id=shown.response_id, kind="THUMBS_DOWN", user_id="s")
            with pytest.raises(ValidationError) as info:
                client.action(response_id=shown.response_id, kind="RATING", rating=0)
            assert [e.field for e in info.value.errors] == ["rating"]
            client.flush()
            sent = [shown, liked]
        assert client.closed
        with pytest.raises(ClientClosedError):
            client.response(prompt="late", response="late", model_version="v9")
        client.close()  # idempotent
        return sent

    shown, liked = await asyncio.to_thread(app)
    responses = await consume(services, topics.responses)
    actions = await consume(services, topics.actions)
    assert [m.record() for m in responses] == [shown]
    assert [m.record() for m in actions] == [liked]
    assert responses[0].key == shown.prompt_id.encode()
    assert actions[0].key == shown.response_id.encode()


async def test_sync_client_close_flushes_buffered_events(services: Settings, topics: Topics):
    def app() -> list:
        # A long linger keeps events in the producer's buffer until close() flushes them.
        client = SyncFeedbackClient(services, responses_topic=topics.responses, actions_topic=topics.actions, linger_ms=10_000)
        sent = [client.response(prompt=f"p{i}", response="a", model_version="v") for i in range(50)]
        started = time.monotonic()
        client.close()
        # Flushing sends lingering batches at once, as Java's flush() does, rather than waiting out the linger.
        assert time.monotonic() - started < 5
        return sent

    sent = await asyncio.to_thread(app)
    got = await consume(services, topics.responses)
    assert sorted(m.record().event_id for m in got) == sorted(r.event_id for r in sent)


async def test_invalid_events_raise_naming_the_field_and_send_nothing(services: Settings, topics: Topics):
    async with client_for(services, topics) as client:
        cases = [
            (client.action(response_id="r", kind="RATING", rating=9), "rating", "must be between 1 and 5, got 9"),
            (client.action(response_id="r", kind="LIKE"), "kind", "must be one of"),
            (client.action(response_id="", kind="ACCEPT"), "response_id", "must not be empty"),
            (client.action(response_id="r", kind="CHOICE"), "rejected_response_id", "is required for kind CHOICE"),
            (client.response(prompt="p", response="a", model_version=" "), "model_version", "must not be empty"),
            (client.response(prompt="p", response="a", model_version="v", response_id=""), "response_id", "must not be empty"),
            (client.response(prompt="p", response=None, model_version="v"), "response", "must not be null"),
            (client.response(prompt="p", response="a", model_version="v", tags={"n": 1}), "tags.n", "must be str"),
            (client.response(prompt="p", response="a", model_version="v", tags=["x"]), "tags", "must be a map"),
        ]
        for call, field, message in cases:
            with pytest.raises(ValidationError) as info:
                await call
            errors = {e.field: e.message for e in info.value.errors}
            assert field in errors and message in errors[field], info.value
        with pytest.raises(TypeError, match="sends Response and Action records, got PromotionEvent"):
            await client.send(PromotionEvent(candidate_version="v2", baseline_version="v1", decision=PromotionDecision.PROMOTE))
        # One bad record in a batch: nothing of the batch is sent.
        good = Response(response_id="ok", prompt="p", response="a", model_version="v")
        with pytest.raises(ValidationError):
            await client.send_many([good, Action(response_id="ok", kind=ActionKind.RATING, rating=6)])
        await client.flush()
    assert await consume(services, topics.responses) == []
    assert await consume(services, topics.actions) == []


async def test_send_many_waits_for_acknowledgement(services: Settings, topics: Topics):
    # A 300 ms linger: had send_many returned before the acknowledgements, the events would not be there yet.
    async with client_for(services, topics, linger_ms=300) as client:
        records = [Response(response_id=f"r{i}", prompt=f"p{i % 3}", response="a", model_version="v") for i in range(9)]
        metadata = await asyncio.wait_for(client.send_many(records), timeout=20)
        after = await end_offsets(services.bootstrap_servers, topics.responses)
        assert sum(after.values()) == 9
        assert [m.topic for m in metadata] == [topics.responses] * 9
        assert sorted((m.partition, m.offset) for m in metadata) == sorted(
            (p, o) for p, end in after.items() for o in range(end))


async def test_closed_client_refuses_to_send(services: Settings, topics: Topics):
    client = client_for(services, topics)
    await client.response(prompt="p", response="a", model_version="v")  # starts the client lazily
    assert client.started
    await client.close()
    await client.close()
    with pytest.raises(ClientClosedError):
        await client.action(response_id="r", kind="ACCEPT")
    assert len(await consume(services, topics.responses)) == 1


async def test_unreachable_kafka_is_a_one_line_error():
    settings = Settings(kafka_port=free_port())
    client = FeedbackClient(settings, request_timeout_ms=2000)
    with pytest.raises(KafkaUnavailableError, match=rf"cannot connect to Kafka at 127\.0\.0\.1:{settings.kafka_port}"):
        await client.response(prompt="p", response="a", model_version="v")
    await client.close()


async def test_unknown_topic_is_a_delivery_error(services: Settings):
    missing = f"test.sdk.missing.{uuid.uuid4().hex[:8]}"
    async with FeedbackClient(services, responses_topic=missing, request_timeout_ms=1500) as client:
        with pytest.raises(DeliveryError, match=f"cannot send to topic '{missing}'"):
            await client.response(prompt="p", response="a", model_version="v")
        with pytest.raises(DeliveryError):
            await client.send_many([Response(response_id="r", prompt="p", response="a", model_version="v")])
    assert missing not in await list_topics(services.bootstrap_servers)


async def test_ingest_bench_command_runs_and_removes_its_topic(prefloop_env: Settings):
    from prefloop.bench.ingest import add_bench_command

    parser = argparse.ArgumentParser(prog="prefloop bench")
    add_bench_command(parser.add_subparsers())
    args = parser.parse_args(["ingest", "--events", "3000", "--rounds", "1", "--time-limit", "20", "--partitions", "3"])
    out = io.StringIO()

    def run() -> int:
        with redirect_stdout(out):
            return args.handler(args)

    assert await asyncio.to_thread(run) == 0
    text = out.getvalue()
    assert "raw aiokafka" in text and "prefloop SDK" in text and "SDK / raw" in text
    assert "3,000 events" in text
    topic = text.split("→ ")[1].split(" ")[0]
    assert topic.startswith("bench.ingest.")
    assert topic not in await list_topics(prefloop_env.bootstrap_servers)
