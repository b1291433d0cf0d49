"""Mirrors of the disk registry: the analytics table `model_versions` and the production version of the
routing table in Redis (prefloop/routing.py).

The disk registry is the source of truth; the mirrors are best-effort copies for analysts and for
apps. When the analytics store or Redis is not configured or not reachable, the registry still
works and `ServicesMirror` says so in one warning line, then skips that target for the rest of the
process.
"""

from __future__ import annotations

import math
import sys
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
    for the production version, the routing table's production field at `settings.redis_dsn`."""

    def __init__(self, settings: Any, warn_stream: IO[str] | None = None, redis_timeout_s: float = 1.0) -> None:
        self.settings = settings
        self.warn_stream = warn_stream or sys.stderr
        self.redis_timeout_s = redis_timeout_s
        # Targets that failed once are skipped for the rest of the process (one warning, no repeated timeouts).
        self._disabled: set[str] = set()
        self._store = None
        self._redis = None

    def mirror(self, version_record: ModelVersion) -> None:
        failures: list[str] = []
        if "analytics" not in self._disabled:
            try:
                self._mirror_analytics(version_record)
            except Exception as exc:  # noqa: BLE001 - a mirror must never break the registry
                self._disabled.add("analytics")
                failures.append(f"analytics table {MODEL_VERSIONS_TABLE}: {_one_line(exc)}")
        if version_record.status is VersionStatus.PRODUCTION and "redis" not in self._disabled:
            try:
                self._mirror_redis(version_record)
            except Exception as exc:  # noqa: BLE001
                self._disabled.add("redis")
                failures.append(f"Redis routing table {keys.ROUTING}: {_one_line(exc)}")
        if failures:
            self.warn_stream.write(
                f"prefloop: warning: registry mirror skipped ({'; '.join(failures)}); the disk registry is up to date\n"
            )
            self.warn_stream.flush()

    def _mirror_analytics(self, record: ModelVersion) -> None:
        if self._store is None:
            from prefloop.analytics.store import connect

            self._store = connect(self.settings)
        self._store.insert_rows(MODEL_VERSIONS_TABLE, MODEL_VERSIONS_COLUMNS, [model_versions_row(record)])

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


def open_registry(settings: Any, mirror: bool = True):
    """The registry under `settings.home`, mirrored to the services unless `mirror` is False."""
    from trainer.registry import ModelRegistry

    return ModelRegistry(settings.home, ServicesMirror(settings) if mirror else NullMirror())
