"""Fixtures of the streams tests: workers of one pipeline over the session's real Kafka, Redis and chDB.

Every test tags its prompts and ids with a unique string and only looks at its own events,
so tests share one pipeline (one consumer group) and its warm state.
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

import pytest

from prefloop.settings import Settings
from prefloop.services.supervisor import service_env
from streams_helpers import Workers

# Short timeouts so orphans, crashes and rebalances resolve within a test.
TEST_STREAMS_ENV = {
    "ORPHAN_TTL_S": "15",
    "SWEEP_INTERVAL_S": "0.2",
    "SESSION_TIMEOUT_S": "6",
    "COMMIT_INTERVAL_S": "0.5",
    "SINK_BATCH_S": "0.3",
    "DRIFT_INTERVAL_S": "3600",
    "TRIGGER_CHECK_S": "3600",
    "STATS_INTERVAL_S": "5",
    # Small producer batches: the pairs and changelog values of one stage batch span several.
    "PRODUCER_BATCH_BYTES": "2048",
}


@pytest.fixture(scope="session")
def pipeline(services: Settings) -> Iterator[Workers]:
    env = service_env(services)
    for name, value in TEST_STREAMS_ENV.items():
        env[f"PREFLOOP_STREAMS_{name}"] = value
    workers = Workers(services, env)
    worker = workers.start()
    worker.wait_ready(120)
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:10] + str(time.time_ns() % 1000)
