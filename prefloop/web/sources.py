"""What the web app reads besides the analytics tables: the model registry, the routing table and the
retraining trigger's progress.

Each comes from the module that owns it (`trainer.registry`, `prefloop.routing`, `streams.trigger_progress`),
imported here only, so the rest of `prefloop/web` depends on plain records. A source that cannot be
read (Redis stopped, no registry yet) gives an empty answer and a one-line problem instead of
breaking the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefloop.errors import one_line
from prefloop.routing import RoutingTable, read_table
from prefloop.settings import Settings
from prefloop.web.arena import VersionInfo


@dataclass(frozen=True)
class RegistryRow:
    """One registry version with the evaluator's outcome (the `evaluation` record, empty until it ran)."""

    version: str
    status: str
    parent_version: str
    created_at: int
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    def info(self) -> VersionInfo:
        return VersionInfo(self.version, self.status, self.created_at)


@dataclass
class TriggerProgress:
    """Progress towards the next training request (`prefloop status`'s trigger block)."""

    pairs_since_last: int = 0
    pairs_needed: int = 0
    new_pairs_threshold: int = 0
    min_pairs: int = 0
    drift: float | None = None
    drift_threshold: float = 0.0
    staleness_s: float = 0.0
    staleness_threshold_s: float = 0.0
    cooldown_left_s: float = 0.0
    training_running: bool = False

    @classmethod
    def from_status(cls, raw: dict[str, Any]) -> "TriggerProgress":
        drift = raw.get("drift")
        return cls(
            pairs_since_last=int(raw.get("pairs_since_last_training", 0)), pairs_needed=int(raw.get("pairs_needed", 0)),
            new_pairs_threshold=int(raw.get("new_pairs_threshold", 0)), min_pairs=int(raw.get("min_pairs", 0)),
            drift=float(drift) if drift is not None and math.isfinite(float(drift)) else None,
            drift_threshold=float(raw.get("drift_threshold", 0.0)), staleness_s=float(raw.get("staleness_s", 0.0)),
            staleness_threshold_s=float(raw.get("staleness_threshold_s", 0.0)),
            cooldown_left_s=float(raw.get("cooldown_left_s", 0.0)), training_running=bool(raw.get("lock_holder")),
        )


class LoopSources:
    """Reads for one settings object; every method returns what it could read and appends problems."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.problems: list[str] = []

    def registry(self) -> list[RegistryRow]:
        from trainer.registry import ModelRegistry

        try:
            records = ModelRegistry(self.settings.home).versions()
        except Exception as exc:  # noqa: BLE001 - a broken registry file must not take the page down
            self.problems.append(f"registry: {type(exc).__name__}: {one_line(exc, 160)}")
            return []
        return [RegistryRow(r.version, r.status.value, r.parent_version, r.created_at, r.reason, dict(r.metrics),
                            dict(r.evaluation)) for r in records]

    def versions(self) -> list[VersionInfo]:
        return [row.info() for row in self.registry()]

    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.settings.redis_dsn, socket_connect_timeout=2, socket_timeout=2)

    def routing(self) -> RoutingTable | None:
        client = self.redis()
        try:
            return read_table(client)
        except Exception as exc:  # noqa: BLE001
            self.problems.append(f"routing table: {type(exc).__name__}: {one_line(exc, 160)}")
            return None
        finally:
            client.close()

    def trigger(self) -> TriggerProgress | None:
        try:
            from streams.trigger_progress import trigger_progress

            return TriggerProgress.from_status(trigger_progress(self.settings))
        except Exception as exc:  # noqa: BLE001
            self.problems.append(f"trigger progress: {type(exc).__name__}: {one_line(exc, 160)}")
            return None


__all__ = ["LoopSources", "RegistryRow", "TriggerProgress"]
