"""Fixtures of the web tests: the session's real Kafka, Redis and chDB, a streams worker of the same
pipeline (consumer group) as the streams tests, and a home of each test's own (its own registry)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # web_helpers
sys.path.insert(0, str(Path(__file__).parents[1] / "streams"))  # streams_helpers
sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))  # serving_helpers

from prefloop.services.supervisor import service_env  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from streams_helpers import Workers  # noqa: E402

# Quick commits and sink flushes so a vote's pair reaches ClickHouse within seconds; no drift or trigger jobs.
WEB_STREAMS_ENV = {
    "SESSION_TIMEOUT_S": "6", "COMMIT_INTERVAL_S": "0.5", "SINK_BATCH_S": "0.3", "DRIFT_INTERVAL_S": "3600",
    "TRIGGER_CHECK_S": "3600", "STATS_INTERVAL_S": "30",
}


@pytest.fixture(scope="module")
def web_pipeline(services: Settings) -> Iterator[Workers]:
    """One streams worker for this module's tests; it joins the streams tests' consumer group, so the
    session's pipeline stays one pipeline (each pair published once) whoever else runs."""
    env = service_env(services)
    for name, value in WEB_STREAMS_ENV.items():
        env[f"PREFLOOP_STREAMS_{name}"] = value
    workers = Workers(services, env)
    workers.start().wait_ready(120)
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.fixture
def web_settings(services: Settings, tmp_path: Path) -> Settings:
    """The session's services with a home of this test's own."""
    return Settings(home=tmp_path / "home", kafka_port=services.kafka_port,
                    kafka_controller_port=services.kafka_controller_port, redis_port=services.redis_port,
                    analytics_port=services.analytics_port, collector_port=services.collector_port,
                    cache_dir=services.cache_dir)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]
