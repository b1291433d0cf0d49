"""The gateway through the official `openai` client and plain HTTP: answers, streams, pins, errors,
and every answer's Response on feedback.responses and in feedback_events."""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest
import requests

from serving_helpers import ServeProcess
from prefloop import topics
from schemas import Response, decode
from streams_helpers import read_topic, wait_for

PROMPT = "Question: how do I fix the code?"


def client(gateway: ServeProcess, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60, **kw)


def events(store, ids: list[str], expected: int | None = None) -> dict[str, dict]:
    """feedback_events rows of these response ids, waiting until all (or `expected`) arrived through the worker."""
    quoted = ", ".join(f"'{i}'" for i in ids)
    sql = (f"SELECT response_id, model_version, user_id, latency_ms, error, tags, response_chars FROM feedback_events FINAL "
           f"WHERE event_type = 'response' AND response_id IN ({quoted})")
    want = len(ids) if expected is None else expected
    rows = wait_for(lambda: (r := store.query(sql).dicts()) and len(r) >= want and r, 60, what=f"{want} rows in feedback_events")
    return {r["response_id"]: r for r in rows}


def responses_on_topic(settings, ids: set[str]) -> dict[str, Response]:
    found = {}
    for record in read_topic(settings, topics.RESPONSES):
        event = decode(record.value)
        if isinstance(event, Response) and event.response_id in ids:
            found[event.response_id] = event
    return found


def test_completions_streamed_and_not_are_recorded_with_version_latency_and_user(gateway, worker, store, serving_settings):
    oa = client(gateway)
    user = f"user-{uuid.uuid4().hex[:8]}"
    raw = oa.chat.completions.with_raw_response.create(
        model="anything", messages=[{"role": "user", "content": PROMPT}], user=user, max_tokens=8, temperature=0,
        metadata={"app": "tests", "locale": "en"},
    )
    whole = raw.parse()
    assert raw.headers["x-prefloop-response-id"] == whole.id
    assert whole.model == "v1.0"  # no routing table beyond production: the base model answers
    assert whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage.completion_tokens <= 8 and whole.usage.prompt_tokens > 0
    text = whole.choices[0].message.content

    chunks = list(oa.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": PROMPT}], user=user, max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ))
    streamed_id = chunks[0].id
    assert {c.id for c in chunks} == {streamed_id} and {c.model for c in chunks} == {"v1.0"}
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the stream carries exactly the same answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    ids = [whole.id, streamed_id]
    on_topic = responses_on_topic(serving_settings, set(ids))
    assert set(on_topic) == set(ids)
    assert on_topic[whole.id].prompt == PROMPT and on_topic[whole.id].response == text
    assert on_topic[whole.id].tags == {"app": "tests", "locale": "en", "prefloop_route": "production"}
    rows = events(store, ids)
    for rid in ids:
        assert rows[rid]["model_version"] == "v1.0"
        assert rows[rid]["user_id"] == user
        assert rows[rid]["latency_ms"] is not None and int(rows[rid]["latency_ms"]) > 0
        assert rows[rid]["error"] is None
        assert rows[rid]["response_chars"] == len(text)


def test_pinned_versions_answer_as_themselves_and_unknown_or_rejected_ones_are_404(gateway):
    oa = client(gateway)
    answers = {}
    for version in ("v1.0", "v1.1"):
        got = oa.chat.completions.create(model=version, messages=[{"role": "user", "content": PROMPT}], max_tokens=12,
                                         temperature=0)
        assert got.model == version
        answers[version] = got.choices[0].message.content
    assert answers["v1.0"] != answers["v1.1"]  # the adapter was applied (and switched off again for v1.0)
    again = oa.chat.completions.create(model="v1.0", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0)
    assert again.choices[0].message.content == answers["v1.0"]

    for version, says in (("v9.9", "not in the registry"), ("v1.3", "rejected")):
        with pytest.raises(openai.NotFoundError) as info:
            oa.chat.completions.create(model=version, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert says in info.value.body["message"] and info.value.body["param"] == "model"

    listed = {m.id for m in oa.models.list()}
    assert listed == {"v1.0", "v1.1", "v1.2"}  # v1.3 was rejected


def test_seeded_sampling_repeats_and_stop_sequences_cut_the_answer(gateway):
    oa = client(gateway)
    ask = dict(model="v1.0", messages=[{"role": "user", "content": PROMPT}], max_tokens=16, temperature=1.0, top_p=0.9)
    first = oa.chat.completions.create(seed=11, **ask).choices[0].message.content
    assert oa.chat.completions.create(seed=11, **ask).choices[0].message.content == first
    greedy = oa.chat.completions.create(model="v1.0", messages=[{"role": "user", "content": PROMPT}], max_tokens=16,
                                        temperature=0).choices[0].message.content
    stop = greedy[3:5]
    cut = oa.chat.completions.create(model="v1.0", messages=[{"role": "user", "content": PROMPT}], max_tokens=16,
                                     temperature=0, stop=[stop])
    assert cut.choices[0].message.content == greedy[:greedy.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    exact = oa.chat.completions.create(model="v1.0", messages=[{"role": "user", "content": "hello"}], max_completion_tokens=20,
                                       temperature=0, extra_body={"ignore_eos": True})
    assert exact.usage.completion_tokens == 20 and exact.choices[0].finish_reason == "length"


@pytest.mark.parametrize("body, param, says", [
    ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature", "valid number"),
    ({"model": "x", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "should be"),
    ({"model": "x", "messages": []}, "messages", "at least 1"),
    ({"model": "x", "messages": [{"role": "system", "content": "be nice"}]}, "messages", "user message"),
    ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, "max_tokens", "at most"),
    ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "tools": []}, "tools", "unsupported"),
    ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "less than or equal to 1"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model", "required"),
])
def test_bad_fields_are_400_naming_the_field(gateway, body, param, says):
    answer = requests.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and says in error["message"]


def test_invalid_json_and_oversized_bodies(gateway):
    answer = requests.post(f"{gateway.url}/v1/chat/completions", data=b"{not json", timeout=30)
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]["message"]
    huge = {"model": "x", "messages": [{"role": "user", "content": "a" * 1_100_000}]}
    answer = requests.post(f"{gateway.url}/v1/chat/completions", json=huge, timeout=30)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


def test_a_full_queue_answers_429_with_retry_after_and_the_rest_are_served(gateway):
    async def burst() -> list[object]:
        oa = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=120)
        ask = dict(model="v1.0", messages=[{"role": "user", "content": "hello"}], max_tokens=48, temperature=0,
                   extra_body={"ignore_eos": True})
        try:
            return await asyncio.gather(*(oa.chat.completions.create(**ask) for _ in range(24)), return_exceptions=True)
        finally:
            await oa.close()

    results = asyncio.run(burst())
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert limited and served and len(limited) + len(served) == 24, results
    assert limited[0].response.headers["Retry-After"] == "1"
    assert limited[0].body["code"] == "queue_full"
    assert all(r.usage.completion_tokens == 48 for r in served)
    stats = gateway.health()["backend"]
    assert stats["mean_batch_size"] > 1  # concurrent requests shared batches


def test_a_failed_generation_is_recorded_with_its_error(gateway, worker, store):
    answer = requests.post(f"{gateway.url}/v1/chat/completions", timeout=60, json={
        "model": "v1.2", "messages": [{"role": "user", "content": PROMPT}], "user": "u-error", "max_tokens": 4})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "adapter"
    rid = answer.headers["x-prefloop-response-id"]
    row = events(store, [rid])[rid]
    assert row["model_version"] == "v1.2" and row["user_id"] == "u-error"
    assert row["error"].startswith("adapter: cannot load the adapter of v1.2")
    # The gateway keeps serving the other versions.
    ok = requests.post(f"{gateway.url}/v1/chat/completions", timeout=60, json={
        "model": "v1.1", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2})
    assert ok.status_code == 200


def test_health_reports_model_routing_and_capture(gateway):
    health = gateway.health()
    assert health["status"] == "ready"
    assert health["backend"]["device"] == "cpu" and health["backend"]["dtype"] == "float32"
    assert health["routing"]["redis"] == "ok" and health["routing"]["production"] == "v1.0"
    assert health["capture"]["enabled"] and health["capture"]["failed"] == 0 and health["capture"]["recorded"] > 0
