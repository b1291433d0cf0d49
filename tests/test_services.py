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
    # The retraining trigger's progress, from the streams package (prefloop/cli.py wires it into `status`).
    assert report["trigger"]["new_pairs_threshold"] == 1000 and "pairs_since_last_training" in report["trigger"]


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


def test_init_on_running_services_creates_nothing_new(prefloop_env: Settings) -> None:
    from prefloop.services.supervisor import service_env

    result = run_cli("init", env=service_env(prefloop_env))
    assert result.returncode == 0, result.stderr
    assert "topics created: none (all exist)" in result.stdout
    assert "migrations applied: none (up to date)" in result.stdout


def isolated_settings(tmp_path) -> Settings:
    from prefloop.services import process

    return process.isolated_settings(tmp_path / "home", start_timeout_s=30)


def test_up_status_down_purge_lifecycle(tmp_path) -> None:
    from prefloop.services.supervisor import service_env

    settings = isolated_settings(tmp_path)
    env = service_env(settings)
    started = run_cli("up", "--only", "redis,analytics", env=env)
    assert started.returncode == 0, started.stderr
    assert "redis up" in started.stdout and "analytics up" in started.stdout
    pid = int((settings.home / "run" / "redis.pid").read_text())
    try:
        status = json.loads(run_cli("status", "--json", env=env).stdout)
        states = {s["name"]: (s["healthy"], s["pid"]) for s in status["services"]}
        assert states["redis"] == (True, pid)
        assert states["kafka"] == (False, None)
    finally:
        stopped = run_cli("down", "--purge", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped redis" in stopped.stdout and "stopped analytics" in stopped.stdout
    from prefloop.services.process import pid_alive

    assert not pid_alive(pid)
    assert not settings.home.exists()
    assert "nothing was running" in run_cli("down", env=env).stdout


def test_failed_start_reports_the_log_tail(tmp_path) -> None:
    import socket

    from prefloop.errors import ServiceError
    from prefloop.services.redis_server import RedisService

    settings = isolated_settings(tmp_path)
    with socket.socket() as squatter:
        # Bound but not listening: the pre-start port check passes, redis-server's own bind fails.
        squatter.bind(("127.0.0.1", settings.redis_port))
        service = RedisService(settings)
        try:
            service.start()
        except ServiceError as exc:
            message = str(exc)
        else:
            service.stop()
            raise AssertionError("redis started on a port that was taken")
    assert "Redis exited during start-up" in message
    assert "Address already in use" in message
    assert service.proc.pid() is None


def test_bad_setting_is_one_line(tmp_path) -> None:
    import os

    env = {**os.environ, "PREFLOOP_KAFKA_PORT": "ninety", "PREFLOOP_HOME": str(tmp_path)}
    result = run_cli("status", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == 'prefloop status: error: "PREFLOOP_KAFKA_PORT" should be an integer, got \'ninety\''


def test_port_held_by_another_process_is_refused_before_start(tmp_path) -> None:
    import socket

    from prefloop.errors import ServiceError
    from prefloop.services.redis_server import RedisService

    settings = isolated_settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.redis_port))
        squatter.listen()
        service = RedisService(settings)
        try:
            service.start()
        except ServiceError as exc:
            message = str(exc)
        else:
            service.stop()
            raise AssertionError("started a service whose port answers for another process")
    assert message == (
        f"port {settings.redis_port} for Redis is already in use by another process; stop it or set PREFLOOP_REDIS_PORT"
    )
    assert service.proc.pid() is None


def test_watchdog_backoff_doubles_up_to_its_cap() -> None:
    from prefloop.services.watchdog import WatchdogSettings

    ws = WatchdogSettings(restart_backoff_s=1.0, restart_backoff_max_s=10.0)
    assert [ws.backoff_s(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_dead_service_is_restarted_and_down_stops_the_watchdog_first(tmp_path) -> None:
    """`up` leaves a watchdog: a SIGKILLed service comes back, `status` shows the restart and why,
    the service's log has the reason; after `down` nothing comes back."""
    import os
    import signal
    import time

    from prefloop.services.process import pid_alive
    from prefloop.services.supervisor import service_env

    settings = isolated_settings(tmp_path)
    env = {**service_env(settings), "PREFLOOP_WATCHDOG_RESTART_BACKOFF_S": "0.5"}
    assert run_cli("up", "--only", "redis", env=env).returncode == 0
    try:
        first = int((settings.home / "run" / "redis.pid").read_text())
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = {s["name"]: s for s in json.loads(run_cli("status", "--json", env=env).stdout)["services"]}
            if rows["redis"]["healthy"] and rows["redis"]["pid"] != first:
                break
            time.sleep(0.5)
        assert rows["redis"]["restarts"] == 1 and rows["redis"]["last_exit"] == "was killed by SIGKILL"
        human = run_cli("status", env=env).stdout
        assert "watchdog: running" in human
        assert [line.split()[-5:] for line in human.splitlines() if line.startswith("redis ")] == [
            ["1", "was", "killed", "by", "SIGKILL"]]
        log = (settings.home / "logs" / "redis.log").read_text()
        assert f"watchdog: redis (pid {first}) was killed by SIGKILL; restart 1 in 0.5s" in log
        second = rows["redis"]["pid"]
    finally:
        stopped = run_cli("down", env=env)
    assert stopped.stdout.splitlines()[0] == "stopped the watchdog"
    time.sleep(1.5)  # longer than the back-off: a watchdog still running would have restarted it
    assert not pid_alive(second)
    assert not (settings.home / "run" / "redis.pid").exists() or not pid_alive(int((settings.home / "run" / "redis.pid").read_text()))
