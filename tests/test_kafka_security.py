"""Credentials and TLS: a stack of its own whose Kafka listens only with SASL_SSL (SCRAM-SHA-512,
certificates made here with openssl, users made with Kafka's own tools) and whose Redis needs a
password; every service and CLI connects through the same [kafka] settings, a wrong password is
refused with one line, and no secret appears in any log, status output, error or repr."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
import redis
import requests
from aiokafka import AIOKafkaConsumer

from prefloop import topics
from prefloop.analytics.store import connect
from prefloop.kafka_client import KafkaSecurity, kafka_options
from prefloop.sdk import FeedbackClient
from prefloop.sdk.exceptions import KafkaUnavailableError
from prefloop.services.kafka import add_scram_user
from prefloop.services.process import free_port, isolated_settings
from prefloop.services.supervisor import down, service_env, up
from prefloop.settings import Settings, load_settings
from schemas import ActionKind, decode

pytestmark = pytest.mark.services

KAFKA_SECRET = "Kafka-s3cret-for-tests"
REDIS_SECRET = "Redis-s3cret-for-tests"
ALICE_SECRET = "Alice-s3cret-for-tests"
SECRETS = (KAFKA_SECRET, REDIS_SECRET, ALICE_SECRET)
GATEWAY_KEY = "pfk_gateway-key-for-tests"
SERVICES = ["kafka", "redis", "analytics", "worker", "collector", "trainer", "evaluator", "gateway", "rollout"]


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and the broker's key and certificate (for 127.0.0.1) signed by it, as Kafka's PEM keystore."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=prefloop-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.crt", "-days", "2", "-extfile", "san.ext")
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
    keystore = directory / "broker.pem"
    keystore.write_text((directory / "broker.pk8").read_text() + (directory / "broker.crt").read_text())
    return directory / "ca.pem", keystore


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    work = tmp_path_factory.mktemp("secure")
    ca, keystore = make_certificates(work)
    config = work / "prefloop.toml"
    config.write_text(
        "[kafka]\n"
        'security_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "prefloop"\n'
        f'sasl_password = "{KAFKA_SECRET}"\nssl_cafile = "{ca}"\nbroker_keystore = "{keystore}"\n'
        "[streams]\nsession_timeout_s = 6\ncommit_interval_s = 0.5\nsink_batch_s = 0.3\n"
        '[trainer]\nbase_model = "tiny"\n[serve]\ndevice = "cpu"\ncpu_threads = 1\n'
        f'[serve_auth]\nkeys = ["tests:{hashlib.sha256(GATEWAY_KEY.encode()).hexdigest()}"]\n'
    )
    settings = isolated_settings(work / "home", start_timeout_s=180, redis_password=REDIS_SECRET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFLOOP_CONFIG", str(config))
        for key, value in service_env(settings).items():
            if key.startswith("PREFLOOP_"):
                patch.setenv(key, value)
        with open(os.devnull, "w") as quiet:
            up(settings, only=SERVICES, out=quiet)
        try:
            yield settings
        finally:
            with open(os.devnull, "w") as quiet:
                down(settings, out=quiet)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


async def _read_pairs(settings: Settings) -> list:
    consumer = AIOKafkaConsumer(topics.PAIRS, **kafka_options(settings), group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000)
        return [decode(m.value) for messages in batch.values() for m in messages]
    finally:
        await consumer.stop()


def test_every_service_and_client_works_over_sasl_ssl_and_a_password_protected_redis(secure: Settings):
    # the SDK, then the collector, then the streams worker (Faust) turning both into pairs; the trainer, the
    # evaluator and the rollout controller are up, so their consumers and producers connected over SASL_SSL too
    async def emit() -> None:
        async with FeedbackClient(secure) as client:
            r = await client.response(prompt="How do I sort a list?", response="Call sorted(items).", model_version="v1",
                                      response_id="sec-r1")
            await client.action(response_id=r.response_id, kind=ActionKind.EDIT, edited_text="Use items.sort() in place.")

    asyncio.run(emit())
    reply = requests.post(f"{secure.collector_url}/v1/events", timeout=30, json=[
        {"type": "response", "response_id": "sec-r2", "prompt": "How do I reverse a list?", "response": "Use reversed().",
         "model_version": "v1"},
        {"type": "action", "response_id": "sec-r2", "kind": "EDIT", "edited_text": "Call items.reverse() in place."},
    ])
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pairs = asyncio.run(_read_pairs(secure))
        if {p.chosen_response_id for p in pairs} >= {"sec-r1", "sec-r2"}:
            break
        time.sleep(2)
    assert {p.chosen_response_id for p in pairs} >= {"sec-r1", "sec-r2"}
    store = connect(secure)
    try:
        deadline = time.monotonic() + 60
        while store.query("SELECT count() FROM preference_pairs FINAL").rows[0][0] < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert store.query("SELECT count() FROM preference_pairs FINAL").rows[0][0] >= 2
    finally:
        store.close()

    # the gateway: its API key (the shared prefloop/auth), then its capture producing over SASL_SSL
    assert requests.get(f"{secure.serve_url}/v1/models", timeout=30).status_code == 401
    gateway = openai.OpenAI(base_url=f"{secure.serve_url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=120)
    deadline = time.monotonic() + 180
    while True:
        try:
            completion = gateway.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}],
                                                         max_tokens=4, user="sec-user")
            break
        except openai.APIStatusError as exc:  # 503 while the model loads
            if exc.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(2)

    async def captured() -> set[str]:
        consumer = AIOKafkaConsumer(topics.RESPONSES, **kafka_options(secure), group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=3000)
            return {decode(m.value).response_id for messages in batch.values() for m in messages}
        finally:
            await consumer.stop()

    deadline = time.monotonic() + 60
    while completion.id not in asyncio.run(captured()) and time.monotonic() < deadline:
        time.sleep(1)
    assert completion.id in asyncio.run(captured())

    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert {s["name"] for s in report["services"] if s["healthy"]} >= set(SERVICES)
    assert report["topic_offsets"][topics.RESPONSES] >= 2  # read over SASL_SSL
    assert report["trigger"]["pairs_total"] >= 2  # read from the password-protected Redis


def test_a_wrong_password_is_refused_with_one_clear_line(secure: Settings, tmp_path):
    refused = "prefloop init: error: Kafka at {} refused the credentials of 'prefloop' (SCRAM-SHA-512): check [kafka] sasl_username and sasl_password"
    result = cli("init", PREFLOOP_KAFKA_SASL_PASSWORD="not-the-password")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [refused.format(secure.bootstrap_servers)]
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "response", "response_id": "x", "prompt": "p", "response": "r", "model_version": "v"}\n')
    result = cli("emit", str(events), PREFLOOP_KAFKA_SASL_PASSWORD="not-the-password")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "refused the credentials of 'prefloop' (SCRAM-SHA-512)" in result.stderr
    # a client that does not speak TLS is refused too, with a line saying why rather than a hang
    result = cli("init", PREFLOOP_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_scram_users_are_made_with_kafkas_own_tool(secure: Settings, monkeypatch):
    add_scram_user(secure, "alice", ALICE_SECRET)
    monkeypatch.setenv("PREFLOOP_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("PREFLOOP_KAFKA_SASL_PASSWORD", ALICE_SECRET)

    async def as_alice(settings: Settings) -> None:
        async with FeedbackClient(settings) as client:
            await client.response(prompt="p", response="r", model_version="v1")

    asyncio.run(as_alice(load_settings()))
    monkeypatch.setenv("PREFLOOP_KAFKA_SASL_PASSWORD", KAFKA_SECRET)  # alice with another user's password
    with pytest.raises(KafkaUnavailableError, match="refused the credentials of 'alice'"):
        asyncio.run(as_alice(load_settings()))


def test_redis_refuses_a_client_without_the_password(secure: Settings):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=secure.redis_port, socket_timeout=5).ping()
    assert redis.Redis.from_url(secure.redis_dsn, socket_timeout=5).ping()
    assert (secure.home / "redis" / "redis.conf").stat().st_mode & 0o077 == 0  # the password's file: owner only


def test_no_secret_in_any_log_status_error_or_repr(secure: Settings):
    outputs = [cli("status").stdout + cli("status").stderr, cli("status", "--json").stdout,
               cli("init", PREFLOOP_KAFKA_SASL_PASSWORD="not-the-password").stderr,
               repr(load_settings()), repr(load_settings().section(KafkaSecurity)), repr(secure)]
    logs = [path for path in secure.home.rglob("*.log")] + list((secure.home / "logs").iterdir())
    assert any(p.name == "worker.log" for p in logs) and any(p.name == "kafka.log" for p in logs)
    texts = outputs + [p.read_text(errors="replace") for p in set(logs) if p.is_file()]
    assert "Authenticated as prefloop via SCRAM-SHA-512" in "".join(texts)  # the logs are the real ones
    for secret in SECRETS:
        leaks = [t[max(0, t.find(secret) - 80):t.find(secret) + 40] for t in texts if secret in t]
        assert not leaks, f"{secret!r} printed: {leaks[:2]}"


def test_redis_over_tls_with_a_rediss_url(secure: Settings, tmp_path):
    """An external Redis with TLS and a password: every client takes it from redis_url (`rediss://`)."""
    from prefloop import redis_outage

    ca = Path(os.environ["PREFLOOP_CONFIG"]).parent / "ca.pem"
    port = free_port()
    log = open(tmp_path / "redis-tls.log", "wb")
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(ca.parent / "broker.crt"), "--tls-key-file", str(ca.parent / "broker.key"),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", REDIS_SECRET],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"rediss://:{REDIS_SECRET}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(url, socket_timeout=2).ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.2)

        async def ping() -> bool:  # the streams worker's client
            client = redis_outage.connect(url, 5)
            try:
                return bool(await client.ping())
            finally:
                await client.aclose()

        assert asyncio.run(ping())
        status = cli("status", "--json", PREFLOOP_REDIS_URL=url)
        report = json.loads(status.stdout)
        assert report["trigger"] and not [p for p in report["problems"] if p.startswith("trigger")], report["problems"]
        assert REDIS_SECRET not in status.stdout + status.stderr
        refused = cli("status", "--json", PREFLOOP_REDIS_URL=url.replace(REDIS_SECRET, "Not-the-redis-pw"))
        assert "Not-the-redis-pw" not in refused.stdout + refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
