"""API keys, rate limits and CORS on the collector (prefloop/auth/), through its HTTP API and the CLI,
against the real Kafka of the test session."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tomllib
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from prefloop.auth import AuthSettings, CollectorAuthSettings, check_bind
from prefloop.auth.ratelimit import RateLimiter
from prefloop.collector import create_app
from prefloop.errors import ConfigError
from prefloop.sdk import FeedbackClient
from kafka_testing import create_topic, delete_topic, read_range
from prefloop.services.supervisor import service_env
from prefloop.settings import Settings

pytestmark = pytest.mark.services

EVENT = {"type": "action", "response_id": "resp-1", "kind": "THUMBS_UP"}
GOOD, OLD = "pfk_good-key-for-tests", "pfk_old-key-for-tests"


def entry(name: str, key: str) -> str:
    return f"{name}:{hashlib.sha256(key.encode()).hexdigest()}"


@pytest.fixture
async def topics(services: Settings):
    names = tuple(f"test.auth.{kind}.{uuid.uuid4().hex[:8]}" for kind in ("responses", "actions"))
    for name in names:
        await create_topic(services.bootstrap_servers, name, 2)
    yield names
    for name in names:
        await delete_topic(services.bootstrap_servers, name)


@pytest.fixture
async def serve(services: Settings, topics):
    """serve(auth) -> a test client of a collector with that AuthSettings."""
    opened = []

    async def start(auth: AuthSettings) -> TestClient:
        client = FeedbackClient(services, responses_topic=topics[0], actions_topic=topics[1], linger_ms=1)
        http = TestClient(TestServer(create_app(services, client, auth)))
        await http.start_server()
        opened.append((http, client))
        return http

    yield start
    for http, client in opened:
        await http.close()
        await client.close()


async def test_keys_401_without_or_unknown_403_revoked_202_valid(services, topics, serve):
    http = await serve(AuthSettings(keys=[entry("app", GOOD), entry("old", OLD)], revoked=["old"]))
    cases = [
        ({}, 401, "missing API key"),
        ({"Authorization": "Basic abc"}, 401, "missing API key"),
        ({"Authorization": "Bearer pfk_not-a-key"}, 401, "invalid API key"),
        ({"Authorization": f"Bearer {OLD}"}, 403, "API key 'old' was revoked"),
    ]
    for headers, status, message in cases:
        reply = await http.post("/v1/events", json=EVENT, headers=headers)
        assert reply.status == status
        assert message in (await reply.json())["error"]
    assert await read_range(services.bootstrap_servers, topics[1], since={}) == []  # nothing refused got through

    reply = await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {GOOD}"})
    assert reply.status == 202, await reply.text()
    assert len(await read_range(services.bootstrap_servers, topics[1], since={})) == 1
    assert (await http.get("/healthz")).status == 200  # health checks need no key


async def test_rate_limit_is_per_key_and_answers_429_with_retry_after(serve):
    other = "pfk_other-key-for-tests"
    http = await serve(AuthSettings(keys=[entry("app", GOOD), entry("other", other)], rate_limit_per_s=0.5, rate_limit_burst=3))
    statuses = []
    for _ in range(5):
        reply = await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {GOOD}"})
        statuses.append(reply.status)
        if reply.status == 429:
            assert int(reply.headers["Retry-After"]) >= 1
            assert "rate limit of 0.5 requests/s exceeded" in (await reply.json())["error"]
    assert statuses == [202, 202, 202, 429, 429]
    # another key has its own bucket
    assert (await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {other}"})).status == 202


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.retry_after("k") for _ in range(3)] == [None, None, 1]
    now[0] = 0.5  # one token back
    assert limiter.retry_after("k") is None and limiter.retry_after("k") == 1
    assert RateLimiter(0.0, 1).retry_after("k") is None  # 0 = no limit


async def test_cors_allow_list(serve):
    origin = "https://app.example.com"
    http = await serve(AuthSettings(keys=[entry("app", GOOD)], cors_origins=[origin]))
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    reply = await http.options("/v1/events", headers=preflight)
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    assert "AUTHORIZATION" in reply.headers["Access-Control-Allow-Headers"].upper()

    reply = await http.options("/v1/events", headers={**preflight, "Origin": "https://evil.example"})
    assert reply.status == 403
    assert "origin" in (await reply.json())["error"].lower()

    # refusals carry the header too, so the browser app can read why
    reply = await http.post("/v1/events", json=EVENT, headers={"Origin": origin})
    assert reply.status == 401 and reply.headers["Access-Control-Allow-Origin"] == origin
    reply = await http.post("/v1/events", json=EVENT, headers={"Origin": origin, "Authorization": f"Bearer {GOOD}"})
    assert reply.status == 202 and reply.headers["Access-Control-Allow-Origin"] == origin
    reply = await http.post("/v1/events", json=EVENT, headers={"Origin": "https://evil.example", "Authorization": f"Bearer {GOOD}"})
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_settings_refuse_a_key_in_place_of_its_digest_without_showing_it():
    with pytest.raises(ConfigError) as caught:
        AuthSettings(keys=[f"app:{GOOD}"])
    assert GOOD not in str(caught.value) and "NAME:SHA256" in str(caught.value)
    with pytest.raises(ConfigError, match="not in \"keys\""):
        AuthSettings(keys=[entry("app", GOOD)], revoked=["ghost"])
    assert "keys" not in repr(AuthSettings(keys=[entry("app", GOOD)])).split("(", 1)[1].split("revoked")[0]


def test_non_loopback_bind_needs_keys_or_insecure():
    check_bind("127.0.0.1", AuthSettings(), "collector")
    check_bind("::1", AuthSettings(), "collector")
    check_bind("0.0.0.0", AuthSettings(keys=[entry("app", GOOD)]), "collector")
    check_bind("0.0.0.0", AuthSettings(), "collector", insecure=True)
    check_bind("0.0.0.0", AuthSettings(insecure=True), "collector")
    with pytest.raises(ConfigError, match="refusing to serve the collector on 0.0.0.0 without API keys"):
        check_bind("0.0.0.0", AuthSettings(), "collector")


def _cli(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


async def test_keys_cli_stores_digests_and_the_collector_obeys_them(services: Settings, topics, tmp_path, serve):
    config = tmp_path / "prefloop.toml"
    config.write_text("# my settings\n[sdk]\nlinger_ms = 2\n")
    env = {**service_env(services), "PREFLOOP_CONFIG": str(config), "PYTHONPATH": os.getcwd()}
    made = _cli(["keys", "create", "mobile"], env, tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("pfk_") and len(key) > 40
    text = config.read_text()
    assert key not in text and hashlib.sha256(key.encode()).hexdigest() in text
    assert "# my settings" in text and oct(config.stat().st_mode & 0o777) == "0o600"
    assert _cli(["keys", "create", "mobile"], env, tmp_path).returncode == 2  # one line: the name is taken

    table = tomllib.loads(text)["collector_auth"]
    http = await serve(AuthSettings(**table))
    assert (await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})).status == 202

    revoked = _cli(["keys", "revoke", "mobile"], env, tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    listed = _cli(["keys", "list"], env, tmp_path)
    assert "mobile" in listed.stdout and "revoked" in listed.stdout and key not in listed.stdout
    http = await serve(AuthSettings(**tomllib.loads(config.read_text())["collector_auth"]))
    assert (await http.post("/v1/events", json=EVENT, headers={"Authorization": f"Bearer {key}"})).status == 403

    bad = _cli(["keys", "revoke", "nobody"], env, tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_collector_refuses_a_public_address_without_keys(services: Settings, tmp_path):
    env = {**service_env(services), "PREFLOOP_COLLECTOR_HOST": "0.0.0.0", "PREFLOOP_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    proc = subprocess.run([sys.executable, "-m", "prefloop.collector"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "prefloop collector: error: refusing to serve the collector on 0.0.0.0 without API keys: add one with "
        "`prefloop keys create NAME --service collector` ([collector_auth] keys), bind 127.0.0.1, or pass --insecure"
    ]


def test_auth_settings_come_from_their_section(services: Settings, tmp_path, monkeypatch):
    config = tmp_path / "prefloop.toml"
    config.write_text(f'[collector_auth]\nkeys = ["{entry("a", GOOD)}"]\nrate_limit_per_s = 5\n')
    monkeypatch.setenv("PREFLOOP_CONFIG", str(config))
    monkeypatch.setenv("PREFLOOP_COLLECTOR_AUTH_CORS_ORIGINS", "https://a.example,https://b.example")
    auth = dataclasses.replace(services).section(CollectorAuthSettings)
    assert auth.rate_limit_per_s == 5 and auth.cors_origins == ["https://a.example", "https://b.example"]
