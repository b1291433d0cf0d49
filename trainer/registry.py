"""The model registry: one JSON file on disk is the source of truth.

`<home>/registry/registry.json` lists every version: `v1.0` is the base model, each training run
registers `v1.1`, `v1.2`, … as a *candidate* with its adapter location, parent version (the
production version when it was trained), dataset snapshot and metrics. Statuses: candidate →
approved (the evaluator's gate) → canary → production, or rejected (gate) / rolled_back (rollout);
a promotion retires the previous production; a rollback marks the current production rolled_back
and restores the one before it. Every change is written
atomically (temp file + rename) under an exclusive file lock, then handed to a `RegistryMirror`
(the analytics table `model_versions` and the production pointer in Redis).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainer.errors import RegistryError
from trainer.fsutil import atomic_write_json, file_lock

FORMAT_VERSION = 1
BASE_VERSION = "v1.0"


class VersionStatus(str, enum.Enum):
    CANDIDATE = "candidate"  # trained, not yet evaluated
    APPROVED = "approved"  # the evaluator's gate passed; waits for the rollout controller
    CANARY = "canary"  # served to a fraction of users by the rollout controller
    PRODUCTION = "production"
    REJECTED = "rejected"  # the gate failed
    ROLLED_BACK = "rolled_back"  # removed from traffic by a rollback (canary or production)
    RETIRED = "retired"  # was production, replaced by a promotion


@dataclass
class ModelVersion:
    version: str
    status: VersionStatus
    base_model: str
    parent_version: str = ""
    adapter_path: str | None = None  # None for the base model itself
    snapshot_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: int = 0  # epoch ms
    updated_at: int = 0
    reason: str = ""
    # The evaluator's outcome: decision, reason, win_rate, win_rate_lower, n, report (path), …
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelVersion":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["status"] = VersionStatus(values["status"])
        return cls(**values)


class RegistryMirror(Protocol):
    """Copies a changed version somewhere else (analytics table, Redis pointer). Must not raise."""

    def mirror(self, version_record: ModelVersion) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _minor(version: str) -> int:
    try:
        major, minor = version.removeprefix("v").split(".")
        return int(minor) if major == "1" else -1
    except ValueError:
        return -1


class ModelRegistry:
    def __init__(self, home: Path, mirror: RegistryMirror | None = None) -> None:
        self.root = Path(home) / "registry"
        self.path = self.root / "registry.json"
        self.lock_path = self.root / "registry.lock"
        self.mirror = mirror

    # --- reading ---
    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format_version": FORMAT_VERSION, "production_history": [], "versions": []}
        try:
            return json.loads(self.path.read_text())
        except ValueError as exc:
            raise RegistryError(f"registry file {self.path} is not valid JSON ({exc}); restore it from a backup") from None

    def versions(self) -> list[ModelVersion]:
        return [ModelVersion.from_json(v) for v in self._read()["versions"]]

    def get(self, version: str) -> ModelVersion:
        for record in self.versions():
            if record.version == version:
                return record
        known = ", ".join(v.version for v in self.versions()) or "none"
        raise RegistryError(f"unknown model version {version!r}; known versions: {known}")

    def production(self) -> ModelVersion | None:
        history = self._read()["production_history"]
        return self.get(history[-1]) if history else None

    def production_history(self) -> list[str]:
        """Every version that was production, oldest first; the last is production now (rollback restores
        the one before it)."""
        return list(self._read()["production_history"])

    # --- writing ---
    @contextmanager
    def _transaction(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change, write atomically, all under the lock; then mirror what changed."""
        changed: list[str] = []
        with file_lock(self.lock_path):
            data = self._read()
            before = {v["version"]: dict(v) for v in data["versions"]}
            yield data
            for record in data["versions"]:
                if before.get(record["version"]) != record:
                    changed.append(record["version"])
            if changed:
                atomic_write_json(self.path, data)
        if self.mirror is not None:
            by_version = {v["version"]: v for v in data["versions"]}
            for version in changed:
                self.mirror.mirror(ModelVersion.from_json(by_version[version]))

    @staticmethod
    def _update(data: dict[str, Any], version: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        for record in data["versions"]:
            if record["version"] == version:
                change(record)
                record["updated_at"] = _now_ms()
                return record
        known = ", ".join(v["version"] for v in data["versions"]) or "none"
        raise RegistryError(f"unknown model version {version!r}; known versions: {known}")

    @staticmethod
    def _ensure_base(data: dict[str, Any], base_model: str) -> None:
        if data["versions"]:
            return
        now = _now_ms()
        base = ModelVersion(BASE_VERSION, VersionStatus.PRODUCTION, base_model=base_model, created_at=now, updated_at=now,
                            reason="base model")
        data["versions"].append(base.to_json())
        data["production_history"].append(BASE_VERSION)

    def ensure_base(self, base_model: str) -> ModelVersion:
        """Register the base model as v1.0 (production) if the registry is empty."""
        with self._transaction() as data:
            self._ensure_base(data, base_model)
        return self.get(BASE_VERSION)

    def register_candidate(
        self,
        *,
        adapter_path: Path | str,
        base_model: str,
        snapshot_id: str,
        metrics: dict[str, float],
        parent_version: str | None = None,
    ) -> ModelVersion:
        """Add the next v1.N as a candidate; its parent is the current production unless given."""
        with self._transaction() as data:
            self._ensure_base(data, base_model)
            parent = parent_version or (data["production_history"][-1] if data["production_history"] else BASE_VERSION)
            if parent not in {v["version"] for v in data["versions"]}:
                raise RegistryError(f"parent version {parent!r} is not in the registry")
            minor = max(_minor(v["version"]) for v in data["versions"]) + 1
            now = _now_ms()
            record = ModelVersion(
                version=f"v1.{minor}",
                status=VersionStatus.CANDIDATE,
                base_model=base_model,
                parent_version=parent,
                adapter_path=str(adapter_path),
                snapshot_id=snapshot_id,
                metrics={k: float(v) for k, v in metrics.items()},
                created_at=now,
                updated_at=now,
            )
            data["versions"].append(record.to_json())
        return record

    def set_status(self, version: str, status: VersionStatus | str, reason: str = "",
                   evaluation: dict[str, Any] | None = None) -> ModelVersion:
        """Mark a version that is not in production approved, rejected, canary or rolled_back (a canary
        taken out of traffic); promotion to production and its rollback have their own methods."""
        status = VersionStatus(status)
        if status in (VersionStatus.PRODUCTION, VersionStatus.RETIRED):
            raise RegistryError(f"use promote/rollback to set status {status.value}")
        with self._transaction() as data:
            def change(record: dict[str, Any]) -> None:
                if record["status"] == VersionStatus.PRODUCTION.value:
                    raise RegistryError(f"{version} is in production; roll it back instead of marking it {status.value}")
                record["status"] = status.value
                record["reason"] = reason or record.get("reason", "")
                if evaluation is not None:
                    record["evaluation"] = evaluation

            self._update(data, version, change)
        return self.get(version)

    def promote(self, version: str, reason: str = "") -> ModelVersion:
        """Make `version` production; the previous production is retired (and restorable by rollback)."""
        with self._transaction() as data:
            history = data["production_history"]
            current = history[-1] if history else None
            if current == version:
                raise RegistryError(f"{version} is already in production")

            def promote(record: dict[str, Any]) -> None:
                if record["status"] in (VersionStatus.REJECTED.value, VersionStatus.ROLLED_BACK.value):
                    raise RegistryError(f"{version} is {record['status']}; register a new version instead of promoting it")
                record["status"] = VersionStatus.PRODUCTION.value
                record["reason"] = reason

            self._update(data, version, promote)
            if current is not None:
                self._update(data, current, lambda r: r.update(status=VersionStatus.RETIRED.value))
            history.append(version)
        return self.get(version)

    def rollback(self, reason: str = "") -> ModelVersion:
        """Mark the current production rolled_back and restore the previous production; returns it."""
        with self._transaction() as data:
            history = data["production_history"]
            if len(history) < 2:
                raise RegistryError("nothing to roll back to: the production version has no predecessor")
            current = history.pop()
            previous = history[-1]
            self._update(data, current, lambda r: r.update(status=VersionStatus.ROLLED_BACK.value, reason=reason))
            self._update(data, previous, lambda r: r.update(status=VersionStatus.PRODUCTION.value, reason=f"restored from {current}"))
        return self.get(previous)
