"""Fixtures for trainer tests: an isolated home and cache per test, one tiny model per session.

Nothing here starts Kafka or Redis: the mirror targets point at free loopback ports nobody listens
on, so the disk registry is exercised exactly as it runs without services.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for trainer_synthetic

from prefloop.services.process import free_port  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from trainer.settings import TrainerSettings  # noqa: E402
from trainer_synthetic import TINY  # noqa: E402



@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models cache holding the tiny Llama, built once per session."""
    from trainer.tiny_model import ensure_tiny_model

    cache = tmp_path_factory.mktemp("models-cache")
    ensure_tiny_model(cache)
    return cache / "models"


@pytest.fixture
def cache_dir(tmp_path: Path, tiny_models: Path) -> Path:
    """A fresh cache dir (so an empty reference cache) sharing the session's built models."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(tiny_models, target_is_directory=True)
    return cache


@pytest.fixture
def settings(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """prefloop settings for this test, also exported so `load_settings()` (the CLI, jobs) sees them."""
    dead_redis, dead_analytics = free_port(), free_port()
    values = {
        "HOME": str(tmp_path / "home"),
        "CACHE_DIR": str(cache_dir),
        "REDIS_PORT": str(dead_redis),
        "REDIS_URL": "",
        "ANALYTICS_PORT": str(dead_analytics),
        "CLICKHOUSE_URL": "",
    }
    monkeypatch.delenv("PREFLOOP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray prefloop.toml
    for key, value in values.items():
        monkeypatch.setenv(f"PREFLOOP_{key}", value)
    for key, value in TINY.items():
        monkeypatch.setenv(f"PREFLOOP_TRAINER_{key.upper()}", str(value))
    yield Settings(home=tmp_path / "home", cache_dir=cache_dir, redis_port=dead_redis, analytics_port=dead_analytics)


@pytest.fixture
def tiny_settings() -> TrainerSettings:
    return TrainerSettings(**TINY)
