"""Real services for the test session: Apache Kafka (KRaft), redis-server and the chDB analytics service.

They are started once, by the same code as `prefloop up`, in a temporary home on free
loopback ports, and stopped (by PID) when the session ends.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from prefloop.services.process import isolated_settings
from prefloop.services.supervisor import down, service_env, up
from prefloop.settings import Settings

__all__ = ["service_env"]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("prefloop-home")
    settings = isolated_settings(home, start_timeout_s=120)
    with open(os.devnull, "w") as quiet:
        up(settings, only=["kafka", "redis", "analytics"], out=quiet)
    try:
        yield settings
    finally:
        with open(os.devnull, "w") as quiet:
            down(settings, out=quiet)


@pytest.fixture
def prefloop_env(services: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point `load_settings()` (and so the CLI) of this process at the test services."""
    for key, value in service_env(services).items():
        if key.startswith("PREFLOOP_"):
            monkeypatch.setenv(key, value)
    return services


@pytest.fixture
def store(services: Settings):
    from prefloop.analytics.store import connect

    client = connect(services)
    yield client
    client.close()


@pytest.fixture
def redis_client(services: Settings):
    import redis

    client = redis.Redis.from_url(services.redis_dsn)
    yield client
    client.close()
