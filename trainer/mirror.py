"""Mirrors of the disk registry: the analytics table `model_versions` and the production version of the
routing table in Redis (prefloop/routing.py).

The disk registry is the source of truth; the mirrors are best-effort copies for analysts and for
apps. When the analytics store or Redis is not reachable, the registry still works and
`ServicesMirror` says so in one warning line, retries after a back-off, and re-copies every version
once the target answers again.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from prefloop import keys, routing
from trainer.registry import ModelVersion, VersionStatus

MODEL_VERSIONS_TABLE = "model_versions"
MODEL_VERSIONS_COLUMNS = ("version", "parent_version", "status", "adapter_path", "snapshot_id", "metrics", "created_at")


def model_versions_row(record: ModelVersion) -> list[Any]:
    from prefloop.analytics.store import ch_time

    metrics = {k: float(v) for k, v in record.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return [
        record.version,
        record.parent_version,
        record.status.value,
        record.adapter_path or "",
        record.snapshot_id,
        metrics,
        ch_time(record.created_at),
    ]


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


class NullMirror:
    def mirror(self, version_record: ModelVersion) -> None:
        return None


class ServicesMirror:
    """Writes each changed version to ClickHouse (`prefloop.analytics.store.connect(settings)`) and,
    for the production version, the routing table's production field at `settings.redis_dsn`.

    A target that fails is skipped for a back-off (5 s, doubling to 60 s) with one warning per outage,
    so a long-running service does not wait on timeouts at every change; the first write after the
    outage re-copies every version (`versions_source`), so nothing changed meanwhile stays stale."""

    def __init__(self, settings: Any, warn_stream: IO[str] | None = None, redis_timeout_s: float = 1.0,
                 versions_source: Callable[[], list[ModelVersion]] | None = None,
                 backoff_s: tuple[float, float] = (5.0, 60.0)) -> None:
        self.settings = settings
        self.backoff_s = backoff_s
        self.warn_stream = warn_stream or sys.stderr
        self.redis_timeout_s = redis_timeout_s
        self.versions_source = versions_source
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._stale: set[str] = set()  # targets that missed changes during an outage
        self._store = None
        self._redis = None

    def mirror(self, version_record: ModelVersion) -> None:
        failures: list[str] = []
        self._copy("analytics", f"analytics table {MODEL_VERSIONS_TABLE}", failures, self._mirror_analytics, version_record)
        if version_record.status is VersionStatus.PRODUCTION:
            self._copy("redis", f"Redis routing table {keys.ROUTING}", failures, self._mirror_redis, version_record)
        if failures:
            self.warn_stream.write(
                f"prefloop: warning: registry mirror skipped ({'; '.join(failures)}); the disk registry is up to date "
                "and the mirror retries later\n"
            )
            self.warn_stream.flush()

    def _copy(self, target: str, label: str, failures: list[str], write: Callable[[ModelVersion], None],
              record: ModelVersion) -> None:
        if time.monotonic() < self._retry_at.get(target, 0.0):
            self._stale.add(target)
            return
        try:
            if target in self._stale and self.versions_source is not None:
                self._resync(target, write)
            else:
                write(record)
        except Exception as exc:  # noqa: BLE001 - a mirror must never break the registry
            first = target not in self._stale
            self._stale.add(target)
            backoff = min(self.backoff_s[1], self._backoff.get(target, self.backoff_s[0] / 2) * 2)
            self._backoff[target] = backoff
            self._retry_at[target] = time.monotonic() + backoff
            self._close(target)
            if first:
                failures.append(f"{label}: {_one_line(exc)}")
            return
        self._stale.discard(target)
        self._backoff.pop(target, None)

    def _resync(self, target: str, write: Callable[[ModelVersion], None]) -> None:
        versions = self.versions_source()  # type: ignore[misc]
        if target == "analytics":
            self._store_client().insert_rows(MODEL_VERSIONS_TABLE, MODEL_VERSIONS_COLUMNS, [model_versions_row(v) for v in versions])
        else:
            for record in versions:
                if record.status is VersionStatus.PRODUCTION:
                    write(record)

    def _close(self, target: str) -> None:
        client = self._store if target == "analytics" else self._redis
        try:
            if client is not None:
                client.close()
        except Exception:  # noqa: BLE001
            pass
        if target == "analytics":
            self._store = None
        else:
            self._redis = None

    def _store_client(self):
        if self._store is None:
            from prefloop.analytics.store import connect

            self._store = connect(self.settings)
        return self._store

    def _mirror_analytics(self, record: ModelVersion) -> None:
        self._store_client().insert_rows(MODEL_VERSIONS_TABLE, MODEL_VERSIONS_COLUMNS, [model_versions_row(record)])

    def _mirror_redis(self, record: ModelVersion) -> None:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self.settings.redis_dsn, socket_connect_timeout=self.redis_timeout_s, socket_timeout=self.redis_timeout_s
            )
        routing.set_production(self._redis, record.version)

    def close(self) -> None:
        for client in (self._store, self._redis):
            try:
                if client is not None:
                    client.close()
            except Exception:  # noqa: BLE001
                pass


def reconcile_routing(settings: Any, registry: Any, timeout_s: float = 1.0) -> str | None:
    """Point the routing table's production at the registry's production version when it differs
    (a Redis restart may lose the last writes: docs/reliability.md). Returns the version written,
    None when the table was right or Redis is not reachable (tried again next time)."""
    import redis

    production = registry.production()
    if production is None:
        return None
    client = redis.Redis.from_url(settings.redis_dsn, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        table = routing.read_table(client)
        if table is not None and table.production == production.version:
            return None
        routing.set_production(client, production.version)
        return production.version
    except redis.RedisError:
        return None
    finally:
        client.close()


def open_registry(settings: Any, mirror: bool = True):
    """The registry under `settings.home`, mirrored to the services unless `mirror` is False."""
    from trainer.registry import ModelRegistry

    if not mirror:
        return ModelRegistry(settings.home, NullMirror())
    services = ServicesMirror(settings)
    registry = ModelRegistry(settings.home, services)
    services.versions_source = registry.versions
    return registry
