"""The `openai` backend against a second `prefloop serve` as its upstream (real HTTP), API keys, and
routing that survives Redis going down."""

from __future__ import annotations

import uuid

import openai
import pytest
import requests

from prefloop import routing, topics
from prefloop.routing import RoutingTable
from schemas import Response, decode
from serving_helpers import PROXY_KEY, UPSTREAM_SECRET
from streams_helpers import read_topic, wait_for


def client(proc, key: str = PROXY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proc.url}/v1", api_key=key, max_retries=0, timeout=60)


def recorded(settings, prompt: str) -> list[Response]:
    out = []
    for record in read_topic(settings, topics.RESPONSES):
        event = decode(record.value)
        if isinstance(event, Response) and event.prompt == prompt:
            out.append(event)
    return out


def test_the_proxy_answers_like_its_upstream_and_records_each_answer_once(proxy, upstream, serving_settings):
    prompt = f"Question: what is the weather today? {uuid.uuid4().hex[:6]}"
    ask = dict(messages=[{"role": "user", "content": prompt}], max_tokens=10, temperature=0)
    direct = client(upstream, key="unused").chat.completions.create(model="v1.1", **ask)
    via = client(proxy).chat.completions.create(model="v1.1", user="u-proxy", **ask)
    assert via.model == "v1.1" and via.choices[0].message.content == direct.choices[0].message.content
    assert via.usage.completion_tokens == direct.usage.completion_tokens and via.id != direct.id

    chunks = list(client(proxy).chat.completions.create(model="v1.1", stream=True, user="u-proxy", **ask))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[-1].choices[0].finish_reason in ("length", "stop")

    # The proxy recorded both answers under its ids; the upstream (capture off) recorded nothing.
    events = wait_for(lambda: (r := recorded(serving_settings, prompt)) and len(r) >= 2 and r, 30, what="two Responses")
    assert sorted(e.response_id for e in events) == sorted([via.id, chunks[0].id])
    assert all(e.model_version == "v1.1" and e.user_id == "u-proxy" and e.latency_ms is not None for e in events)


def test_upstream_failures_are_502_and_recorded(proxy, serving_settings):
    prompt = f"hello {uuid.uuid4().hex[:6]}"
    with pytest.raises(openai.APIStatusError) as info:
        client(proxy).chat.completions.create(model="v1.2", messages=[{"role": "user", "content": prompt}], max_tokens=2)
    assert info.value.status_code == 502 and "cannot load the adapter" in info.value.body["message"]
    (event,) = wait_for(lambda: recorded(serving_settings, prompt), 30, what="the failed Response")
    assert event.model_version == "v1.2" and event.error.startswith("upstream: upstream answered 500")
    assert event.response_id == info.value.response.headers["x-prefloop-response-id"]


def test_api_keys_are_required_and_never_shown(proxy):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": PROXY_KEY}):
        answer = requests.get(f"{proxy.url}/v1/models", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert answer.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(proxy, key="wrong").chat.completions.create(model="v1.0", messages=[{"role": "user", "content": "hi"}])
    assert {m.id for m in client(proxy).models.list()} == {"v1.0", "v1.1", "v1.2"}
    health = requests.get(f"{proxy.url}/health", timeout=10)  # no key needed
    assert health.status_code == 200 and health.json()["backend"]["backend"] == "openai"
    for text in (health.text, proxy.log_path.read_text(errors="replace")):
        assert PROXY_KEY not in text and UPSTREAM_SECRET not in text


def test_redis_stopped_mid_run_keeps_the_last_table_in_force(proxy, proxy_redis):
    import redis

    store = redis.Redis.from_url(proxy_redis.settings.redis_dsn)
    table = RoutingTable(production="v1.0", canary="v1.1", canary_fraction=0.5)
    routing.write_table(store, table)
    store.close()
    wait_for(lambda: requests.get(f"{proxy.url}/health", timeout=10).json()["routing"]["canary"] == "v1.1", 15, 0.2,
             what="the proxy to read the table")
    users = {version: next(f"u{i}" for i in range(1000) if table.version_for(f"u{i}") == version) for version in ("v1.0", "v1.1")}
    oa = client(proxy)

    def served(user: str) -> str:
        return oa.chat.completions.create(model="routed", user=user, messages=[{"role": "user", "content": "hi"}], max_tokens=1).model

    assert {v: served(u) for v, u in users.items()} == {"v1.0": "v1.0", "v1.1": "v1.1"}
    proxy_redis.stop()
    try:
        routing_status = wait_for(lambda: (s := requests.get(f"{proxy.url}/health", timeout=10).json()["routing"])["redis"] == "down" and s,
                                  15, 0.2, what="the proxy to notice Redis is down")
        assert routing_status["serving_last_table"] and routing_status["canary"] == "v1.1"
        for _ in range(3):  # still served, still sticky, across several refreshes without Redis
            assert {v: served(u) for v, u in users.items()} == {"v1.0": "v1.0", "v1.1": "v1.1"}
    finally:
        proxy_redis.start()
    wait_for(lambda: requests.get(f"{proxy.url}/health", timeout=10).json()["routing"]["redis"] == "ok", 15, 0.2,
             what="the proxy to read Redis again")
