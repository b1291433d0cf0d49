"""The model registry as the gateway reads it: which versions exist, which may be served, where adapters are.

The registry file is re-read only when it changes (its mtime), so a version the trainer registers
or the evaluator approves is servable on the next request without a restart.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefloop.serving.generation import Target
from trainer.registry import ModelRegistry, ModelVersion, VersionStatus

# A `model` of this shape names a registry version; any other value is routed by the routing table.
VERSION_NAME = re.compile(r"v\d+(\.\d+)+")
NOT_SERVED = (VersionStatus.REJECTED, VersionStatus.ROLLED_BACK)


class RegistryView:
    def __init__(self, home: Path) -> None:
        self.registry = ModelRegistry(home)  # read only: no mirror
        self._stamp: tuple[int, int] | None = None
        self._versions: dict[str, ModelVersion] = {}
        self._production: str | None = None

    def _refresh(self) -> None:
        try:
            stat = self.registry.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._versions = {v.version: v for v in self.registry.versions()}
            production = self.registry.production()
            self._production = production.version if production else None
            self._stamp = stamp

    def get(self, version: str) -> ModelVersion | None:
        self._refresh()
        return self._versions.get(version)

    def production(self) -> str | None:
        self._refresh()
        return self._production

    def servable(self) -> list[ModelVersion]:
        self._refresh()
        return [v for v in self._versions.values() if v.status not in NOT_SERVED]

    @staticmethod
    def target(record: ModelVersion) -> Target:
        return Target(record.version, record.adapter_path)
