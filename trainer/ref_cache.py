"""Reference log-probs on disk, keyed by (pair_id, reference revision).

With LoRA and `ref_model=None` the reference is the base model with adapters disabled, and every run
starts a fresh adapter from the same base, so a pair's reference log-probs never change while the
base, tokenizer and tokenization settings stay the same. `reference_revision()` hashes exactly those
inputs; the cache (one SQLite file under `<cache_dir>/ref-logps.sqlite`) then lets a pair seen in an
earlier run skip the reference forward pass.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")


@dataclass
class RefStats:
    """Counts of unique pairs whose reference log-probs were computed (`forward_pairs`) or read from
    the cache (`cache_hits`), per dataset name (train / eval)."""

    forward_pairs: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


def reference_revision(model_dir: Path, *, max_length: int, chat_template: bool, dtype: str, extra: dict | None = None) -> str:
    """Hash of what a reference log-prob depends on: base config, weights (name, size, mtime),
    tokenizer files, max length, prompt format, compute dtype and the TRL version (its tokenization)."""
    import trl

    model_dir = Path(model_dir)
    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for path in sorted(model_dir.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES:
            stat = path.stat()
            h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        elif path.name in _TOKENIZER_FILES:
            h.update(path.name.encode())
            h.update(path.read_bytes())
    settings = {"max_length": max_length, "chat_template": chat_template, "dtype": dtype, "trl": trl.__version__, **(extra or {})}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


class RefLogpCache:
    """(pair_id → (ref_chosen_logp, ref_rejected_logp)) for one reference revision."""

    def __init__(self, path: Path, revision: str) -> None:
        self.path = Path(path)
        self.revision = revision
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS ref_logps (revision TEXT NOT NULL, pair_id TEXT NOT NULL, "
                "chosen REAL NOT NULL, rejected REAL NOT NULL, PRIMARY KEY (revision, pair_id))"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, pair_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        ids = list(dict.fromkeys(pair_ids))
        out: dict[str, tuple[float, float]] = {}
        with closing(self._connect()) as db, db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT pair_id, chosen, rejected FROM ref_logps WHERE revision = ? AND pair_id IN ({marks})",
                    [self.revision, *chunk],
                )
                out.update({pid: (c, r) for pid, c, r in rows})
        return out

    def put_many(self, values: dict[str, tuple[float, float]]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany(
                "INSERT OR REPLACE INTO ref_logps (revision, pair_id, chosen, rejected) VALUES (?, ?, ?, ?)",
                [(self.revision, pid, float(c), float(r)) for pid, (c, r) in values.items()],
            )
