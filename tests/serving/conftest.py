"""Fixtures of the gateway tests: `prefloop serve` processes on the session's real Kafka, Redis and chDB.

- `registry_home`: a prefloop home whose registry holds the tiny base model (v1.0), a LoRA adapter
  (v1.1, random weights so it answers differently), a version whose adapter is missing (v1.2: its
  requests fail) and a rejected version (v1.3).
- `gateway`: `prefloop serve` with the local backend over that registry (small batches and queue,
  so a burst overflows it), recording Responses on the session's Kafka.
- `upstream` + `proxy`: a second local gateway (capture off) as the upstream of an `openai`-backend
  gateway with API keys and its own redis-server, which a test stops.
- `worker`: a streams worker (its own app id), so Responses reach `feedback_events`.

The fixtures are package-scoped (this directory has an `__init__.py` for that): the gateways and the
worker stop when the last gateway test ends, so the worker, a second pipeline of its own consumer group,
never republishes the pairs of the tests that follow.

Gateways use Redis database 1, so their routing table never meets other tests' keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serving_helpers (this directory is a package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streams"))

from prefloop.services.process import free_port  # noqa: E402
from prefloop.services.supervisor import service_env  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from serving_helpers import PROXY_KEY, UPSTREAM_SECRET, ServeProcess, make_adapter, start_serve  # noqa: E402
from streams_helpers import Worker, Workers  # noqa: E402



@pytest.fixture(scope="package")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny_model import ensure_tiny_model

    cache = tmp_path_factory.mktemp("serving-cache")
    ensure_tiny_model(cache)
    return cache


@pytest.fixture(scope="package")
def registry_home(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Path:
    from trainer.registry import ModelRegistry, VersionStatus
    from trainer.tiny_model import ensure_tiny_model

    home = tmp_path_factory.mktemp("serving-home")
    adapter = make_adapter(ensure_tiny_model(tiny_cache), home / "adapters" / "v1.1")
    registry = ModelRegistry(home)
    registry.ensure_base("tiny")
    registry.register_candidate(adapter_path=adapter, base_model="tiny", snapshot_id="s1", metrics={})  # v1.1
    registry.register_candidate(adapter_path=home / "adapters" / "missing", base_model="tiny", snapshot_id="s2", metrics={})  # v1.2
    registry.register_candidate(adapter_path=adapter, base_model="tiny", snapshot_id="s3", metrics={})  # v1.3
    registry.set_status("v1.3", VersionStatus.REJECTED, reason="test")
    return home


@pytest.fixture(scope="package")
def serving_env(services: Settings, registry_home: Path, tiny_cache: Path) -> dict[str, str]:
    env = service_env(services)
    env.update({
        "PREFLOOP_HOME": str(registry_home), "PREFLOOP_CACHE_DIR": str(tiny_cache),
        "PREFLOOP_REDIS_URL": services.redis_dsn.rsplit("/", 1)[0] + "/1",
        "PREFLOOP_TRAINER_BASE_MODEL": "tiny", "PREFLOOP_SERVE_DEVICE": "cpu", "PREFLOOP_SERVE_CPU_THREADS": "1",
    })
    return env


@pytest.fixture(scope="package")
def serving_settings(services: Settings, serving_env: dict[str, str]) -> Settings:
    """What the gateways see, for the SDK and checks in this process."""
    return dataclasses.replace(services, home=Path(serving_env["PREFLOOP_HOME"]), redis_url=serving_env["PREFLOOP_REDIS_URL"],
                               cache_dir=Path(serving_env["PREFLOOP_CACHE_DIR"]))


@pytest.fixture(scope="package")
def routing_redis(serving_settings: Settings):
    import redis

    from prefloop import keys

    client = redis.Redis.from_url(serving_settings.redis_dsn)
    client.delete(keys.ROUTING)
    yield client
    client.delete(keys.ROUTING)
    client.close()


@dataclass
class Fleet:
    gateway: ServeProcess
    upstream: ServeProcess
    worker: Worker


@pytest.fixture(scope="package")
def fleet(services: Settings, serving_env: dict[str, str], registry_home: Path, routing_redis) -> Iterator[Fleet]:
    """The two local gateways and the worker, started together (each takes seconds to import torch and load)."""
    logs = registry_home / "logs"
    worker_env = service_env(services)
    worker_env.update({"PREFLOOP_STREAMS_APP_ID": "prefloop-serving-tests", "PREFLOOP_STREAMS_SINK_BATCH_S": "0.3",
                       "PREFLOOP_STREAMS_COMMIT_INTERVAL_S": "0.5", "PREFLOOP_STREAMS_DRIFT_INTERVAL_S": "3600",
                       "PREFLOOP_STREAMS_TRIGGER_CHECK_S": "3600"})
    workers = Workers(services, worker_env)
    started: list[ServeProcess] = []
    try:
        started.append(start_serve(serving_env, logs, "gateway", base_model="tiny", max_batch_size="4", queue_size="4",
                                   batch_window_ms="20"))
        started.append(start_serve(serving_env, logs, "upstream", base_model="tiny", capture="false"))
        worker = workers.start()
        for proc in started:
            proc.wait_ready()
        worker.wait_ready(120)
        yield Fleet(started[0], started[1], worker)
    finally:
        for proc in started:
            proc.stop()
        workers.stop_all()


@pytest.fixture(scope="package")
def gateway(fleet: Fleet) -> ServeProcess:
    return fleet.gateway


@pytest.fixture(scope="package")
def upstream(fleet: Fleet) -> ServeProcess:
    return fleet.upstream


@pytest.fixture(scope="package")
def worker(fleet: Fleet) -> Worker:
    return fleet.worker


@pytest.fixture(scope="package")
def proxy_redis(tmp_path_factory: pytest.TempPathFactory):  # -> RedisService
    """A redis-server of its own, which the Redis-down test stops (and starts again)."""
    from prefloop.services.redis_server import RedisService

    settings = Settings(home=tmp_path_factory.mktemp("proxy-redis"), redis_port=free_port(), start_timeout_s=60)
    service = RedisService(settings)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="package")
def proxy(serving_env: dict[str, str], registry_home: Path, upstream: ServeProcess, proxy_redis) -> Iterator[ServeProcess]:
    env = dict(serving_env, PREFLOOP_REDIS_URL=proxy_redis.settings.redis_dsn)
    proc = start_serve(env, registry_home / "logs", "proxy", backend="openai", upstream_url=f"{upstream.url}/v1",
                       auth_keys=f"proxy:{hashlib.sha256(PROXY_KEY.encode()).hexdigest()}", upstream_api_key=UPSTREAM_SECRET)
    try:
        proc.wait_ready(60)
        yield proc
    finally:
        proc.stop()
