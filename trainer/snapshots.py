"""Versioned, immutable dataset snapshots: the exact pairs a training run saw.

Layout: `<home>/snapshots/<snapshot_id>/pairs.jsonl` (one canonical JSON pair per line, sorted by
pair_id) and `manifest.json` (pair ids, counts by source, content hash, creation time). A snapshot
is written to a temporary directory and renamed into place, so readers never see half of one; its
content hash is checked on every load. Re-running a snapshot with the same settings repeats the run
exactly (same split, same replay sample, same order, same seed).

Public API (the streams trigger is given `freeze_pairs` to call before publishing a TrainingRequest):
    create_snapshot(pairs, home, snapshot_id=None) -> Snapshot
    freeze_pairs(pairs, home) -> snapshot id
    load_snapshot(home, snapshot_id) -> Snapshot
    list_snapshots(home) -> list[SnapshotInfo]
    preview_snapshot(pairs, home, snapshot_id=None) -> Snapshot   (same, without writing)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefloop.privacy.ledger import ForgottenLedger
from schemas import PreferencePair
from trainer.errors import SnapshotError
from trainer.pairs_io import coerce_pairs, pair_to_json

FORMAT_VERSION = 1
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def snapshots_root(home: Path) -> Path:
    return Path(home) / "snapshots"


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot's manifest says, without its pairs."""

    snapshot_id: str
    created_at: int  # epoch ms
    content_hash: str
    pair_count: int
    counts_by_source: dict[str, int]
    pair_ids: tuple[str, ...]
    path: Path

    @property
    def order_key(self) -> tuple[int, str]:
        """Snapshots are ordered by creation time, then id."""
        return (self.created_at, self.snapshot_id)


@dataclass(frozen=True)
class Snapshot:
    info: SnapshotInfo
    pairs: list[PreferencePair] = field(repr=False)

    @property
    def snapshot_id(self) -> str:
        return self.info.snapshot_id

    @property
    def path(self) -> Path:
        return self.info.path


def content_hash(pairs: Iterable[PreferencePair]) -> str:
    """Hash of what training reads from each pair (ids, texts, source, weight), in pair_id order."""
    h = hashlib.sha256()
    for pair in sorted(pairs, key=lambda p: p.pair_id):
        core = [pair.pair_id, pair.prompt, pair.chosen, pair.rejected, pair.source.value, float(pair.weight)]
        h.update(json.dumps(core, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def preview_snapshot(
    pairs: Iterable[PreferencePair] | list[dict[str, Any]],
    home: Path,
    snapshot_id: str | None = None,
) -> Snapshot:
    """The snapshot `create_snapshot` would write, without writing it (to validate a run first)."""
    # Users forgotten with `prefloop forget`: no pair built on one of their responses is trained on.
    forgotten = ForgottenLedger(home).response_ids()
    typed = sorted((p for p in coerce_pairs(pairs) if not _forgotten(p, forgotten)), key=lambda p: p.pair_id)
    if not typed:
        raise SnapshotError("cannot create a snapshot of zero pairs; collect some pairs first")
    digest = content_hash(typed)
    snapshot_id = snapshot_id or f"snap-{digest[:16]}"
    if not _ID_RE.match(snapshot_id):
        raise SnapshotError(f"snapshot id should be 1-128 letters, digits, '.', '_' or '-', got {snapshot_id!r}")
    target = snapshots_root(home) / snapshot_id
    if target.exists():
        existing = load_snapshot(home, snapshot_id)
        if existing.info.content_hash != digest:
            raise SnapshotError(f"snapshot {snapshot_id} already exists with different pairs; snapshots are immutable, pick a new id")
        return existing
    info = SnapshotInfo(
        snapshot_id=snapshot_id,
        created_at=int(time.time() * 1000),
        content_hash=digest,
        pair_count=len(typed),
        counts_by_source=dict(sorted(Counter(p.source.value for p in typed).items())),
        pair_ids=tuple(p.pair_id for p in typed),
        path=target,
    )
    return Snapshot(info=info, pairs=typed)


def _forgotten(pair: PreferencePair, response_ids: frozenset[str]) -> bool:
    return bool(response_ids) and (pair.chosen_response_id in response_ids or pair.rejected_response_id in response_ids)


def freeze_pairs(pairs: list[PreferencePair], home: Path) -> str:
    """The id of the snapshot of `pairs` (created unless the same pairs were frozen before)."""
    return create_snapshot(pairs, home).snapshot_id


def create_snapshot(
    pairs: Iterable[PreferencePair] | list[dict[str, Any]],
    home: Path,
    snapshot_id: str | None = None,
) -> Snapshot:
    """Freeze `pairs` (typed records or TRL-style dicts; duplicates dropped) as a snapshot under `home`.

    Without `snapshot_id` the id is derived from the content (`snap-<hash>`), so freezing the same
    pairs twice returns the same snapshot. An existing id with the same content is returned as is; an
    existing id with different content is an error (snapshots never change).
    """
    preview = preview_snapshot(pairs, home, snapshot_id)
    if preview.path.exists():
        return preview
    return write_snapshot(preview, home)


def write_snapshot(preview: Snapshot, home: Path) -> Snapshot:
    """Write a previewed snapshot to disk (atomically) and return it as loaded back."""
    typed, info = preview.pairs, preview.info
    snapshot_id, digest = info.snapshot_id, info.content_hash
    root = snapshots_root(home)
    target = root / snapshot_id
    if target.exists():
        return preview_snapshot(typed, home, snapshot_id)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{snapshot_id}."))
    try:
        with open(tmp / "pairs.jsonl", "w", encoding="utf-8") as handle:
            for pair in typed:
                handle.write(pair_to_json(pair) + "\n")
        manifest = {
            "format_version": FORMAT_VERSION,
            "snapshot_id": snapshot_id,
            "created_at": info.created_at,
            "content_hash": digest,
            "pair_count": info.pair_count,
            "counts_by_source": info.counts_by_source,
            "pair_ids": list(info.pair_ids),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            tmp.rename(target)
        except OSError:
            # Another writer won the race; theirs is valid only if it holds the same pairs.
            shutil.rmtree(tmp, ignore_errors=True)
            existing = load_snapshot(home, snapshot_id)
            if existing.info.content_hash != digest:
                raise SnapshotError(f"snapshot {snapshot_id} was created concurrently with different pairs") from None
            return existing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_snapshot(home, snapshot_id)


def _read_info(path: Path) -> SnapshotInfo:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return SnapshotInfo(
            snapshot_id=manifest["snapshot_id"],
            created_at=int(manifest["created_at"]),
            content_hash=manifest["content_hash"],
            pair_count=int(manifest["pair_count"]),
            counts_by_source=dict(manifest["counts_by_source"]),
            pair_ids=tuple(manifest["pair_ids"]),
            path=path,
        )
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path.name} has no manifest.json under {path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"snapshot {path.name} has a corrupt manifest.json ({exc})") from None


def load_snapshot(home: Path, snapshot_id: str) -> Snapshot:
    """The pairs and manifest of a snapshot; checks the pairs still match the manifest's hash."""
    if not _ID_RE.match(snapshot_id or ""):
        raise SnapshotError(f"snapshot id should be 1-128 letters, digits, '.', '_' or '-', got {snapshot_id!r}")
    path = snapshots_root(home) / snapshot_id
    if not path.is_dir():
        raise SnapshotError(f"snapshot {snapshot_id} not found under {snapshots_root(home)}; list them with `ls {snapshots_root(home)}`")
    info = _read_info(path)
    pairs = []
    try:
        with open(path / "pairs.jsonl", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    pairs.append(PreferencePair.from_json(json.loads(line)))
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {snapshot_id} has no pairs.jsonl under {path}") from None
    except ValueError as exc:
        raise SnapshotError(f"snapshot {snapshot_id}: pairs.jsonl line {lineno} is corrupt ({exc})") from None
    if content_hash(pairs) != info.content_hash or [p.pair_id for p in pairs] != list(info.pair_ids):
        raise SnapshotError(f"snapshot {snapshot_id} does not match its manifest's content hash; it was modified after it was frozen")
    return Snapshot(info=info, pairs=pairs)


def list_snapshots(home: Path) -> list[SnapshotInfo]:
    """Every snapshot's manifest, oldest first."""
    root = snapshots_root(home)
    if not root.is_dir():
        return []
    infos = [_read_info(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(infos, key=lambda i: i.order_key)
