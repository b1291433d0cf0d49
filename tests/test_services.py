"""The local services as `prefloop up` starts them: real Kafka, Redis and chDB."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from prefloop import topics
from prefloop.settings import Settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_contract_topics_exist_with_their_partition_counts(services: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=services.bootstrap_servers)
        await admin.start()
        try:
            meta = await admin.describe_topics(list(topics.ALL))
            return {t["topic"]: len(t["partitions"]) for t in meta}
        finally:
            await admin.close()

    found = asyncio.run(describe())
    assert found == {t.name: t.partitions for t in services.topics()}


def test_broker_refuses_to_auto_create_topics(services: Settings) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=services.bootstrap_servers, request_timeout_ms=3000)
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait("feedback.typo", b"x"), timeout=8)
        finally:
            await producer.stop()

    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=services.bootstrap_servers)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    try:
        asyncio.run(send())
    except (KafkaError, asyncio.TimeoutError):
        pass
    else:
        raise AssertionError("the broker accepted a record for a topic nobody created")
    assert "feedback.typo" not in asyncio.run(listed())


def test_migrations_created_the_contract_tables(store) -> None:
    names = {row[0] for row in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows}
    assert {"feedback_events", "preference_pairs", "model_versions", "promotions", "schema_migrations"} <= names


def test_migrations_are_applied_once(store) -> None:
    from prefloop.analytics.migrations import discover, migrate

    assert migrate(store) == []
    versions = [r[0] for r in store.query("SELECT version FROM schema_migrations FINAL ORDER BY version").rows]
    assert versions == [m.version for m in discover()]


def test_second_up_says_already_up(prefloop_env: Settings) -> None:
    from prefloop.services.supervisor import service_env

    result = run_cli("up", "--only", "kafka,redis,analytics", env=service_env(prefloop_env))
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout


def test_status_reports_health_offsets_and_rows(prefloop_env: Settings) -> None:
    from prefloop.services.supervisor import service_env

    result = run_cli("status", "--json", env=service_env(prefloop_env))
    report = json.loads(result.stdout)
    health = {s["name"]: s["healthy"] for s in report["services"]}
    assert health["kafka"] and health["redis"] and health["analytics"]
    assert set(report["topic_offsets"]) == set(topics.ALL)
    assert "preference_pairs" in report["table_rows"]


def test_sql_through_the_running_owner_in_every_format(prefloop_env: Settings, store) -> None:
    from prefloop.services.supervisor import service_env

    store.insert_rows(
        "promotions",
        ["event_id", "occurred_at", "candidate_version", "baseline_version", "decision", "traffic_fraction", "metrics", "reason"],
        [["sql-test-1", "2026-01-02 03:04:05.678", "v1.1", "v1.0", "PROMOTE", 0.05, {"acc": 0.7}, "test"]],
    )
    env = service_env(prefloop_env)
    query = "SELECT candidate_version, traffic_fraction FROM promotions WHERE event_id = 'sql-test-1'"
    as_json = run_cli("sql", query, "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"candidate_version": "v1.1", "traffic_fraction": 0.05}
    as_csv = run_cli("sql", query, "--format", "csv", env=env)
    assert as_csv.stdout.splitlines() == ['"candidate_version","traffic_fraction"', '"v1.1",0.05']
    as_table = run_cli("sql", query, env=env)
    assert "v1.1" in as_table.stdout and "candidate_version" in as_table.stdout


def test_sql_error_is_one_line(prefloop_env: Settings) -> None:
    from prefloop.services.supervisor import service_env

    result = run_cli("sql", "SELEC 1", env=service_env(prefloop_env))
    assert result.returncode == 2
    assert result.stderr.startswith("prefloop sql: error:") and "Syntax error" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
