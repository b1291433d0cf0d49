"""Where a `prefloop bench NAME` run keeps its work and its results: `<home>/bench/NAME-<time>-*/` and
`<home>/bench/NAME-<time>.json` (plus `--json FILE` when given)."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchRun:
    root: Path
    name: str
    stamp: str

    @classmethod
    def start(cls, home: Path, name: str) -> "BenchRun":
        root = home / "bench"
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, name, time.strftime("%Y%m%dT%H%M%S"))

    def work_dir(self) -> Path:
        """A fresh directory for this run's logs, models and caches."""
        return Path(tempfile.mkdtemp(prefix=f"{self.name}-{self.stamp}-", dir=self.root))

    def save(self, summary: dict[str, Any], also: Path | None = None) -> Path:
        """Write the run's results (and a copy to `also`); print where they are."""
        text = json.dumps(summary, indent=2) + "\n"
        record = self.root / f"{self.name}-{self.stamp}.json"
        record.write_text(text)
        if also:
            also.write_text(text)
        print(f"results: {record}")
        return record
