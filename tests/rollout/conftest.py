"""Fixtures of the rollout tests: a fresh registry (v1.0 production, v1.1 and v1.2 approved) in a home of
its own, the session's real Kafka, Redis and chDB, and controller processes stopped by PID."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # rollout_helpers, simulation

from prefloop.services.supervisor import service_env  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from rollout_helpers import FAST_ROLLOUT, Controllers, reset_rollout_keys  # noqa: E402


@pytest.fixture
def rollout_settings(services: Settings, tmp_path: Path, redis_client) -> Settings:
    """The session's services with a home of this test's own (its own registry); rollout keys cleared."""
    reset_rollout_keys(redis_client)
    return Settings(home=tmp_path / "home", kafka_port=services.kafka_port, kafka_controller_port=services.kafka_controller_port,
                    redis_port=services.redis_port, analytics_port=services.analytics_port,
                    collector_port=services.collector_port, cache_dir=services.cache_dir)


@pytest.fixture
def rollout_env(rollout_settings: Settings) -> dict[str, str]:
    env = service_env(rollout_settings)
    for name, value in FAST_ROLLOUT.items():
        env[f"PREFLOOP_ROLLOUT_{name}"] = value
    env.pop("PREFLOOP_CONFIG", None)
    return env


@pytest.fixture
def registry(rollout_settings: Settings):
    """v1.0 (base) production, v1.1 and v1.2 approved by the evaluator, mirrored to model_versions and Redis."""
    from trainer.mirror import open_registry
    from trainer.registry import VersionStatus

    reg = open_registry(rollout_settings)
    reg.ensure_base("tiny")
    for _ in range(2):
        record = reg.register_candidate(adapter_path="/nonexistent/adapter", base_model="tiny", snapshot_id="s",
                                        metrics={})
        reg.set_status(record.version, VersionStatus.APPROVED, reason="gate passed")
    return reg


@pytest.fixture
def controllers(rollout_env: dict[str, str], tmp_path: Path) -> Iterator[Controllers]:
    group = Controllers(rollout_env, tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
