"""The forgotten-users ledger: `<home>/privacy/forgotten.jsonl`, one line per `prefloop forget`.

A line holds a keyed digest of the user id (never the id itself: the ledger must not become a
list of who asked to be forgotten), the response ids of the user's events, and the time. Every
training snapshot made afterwards leaves out the pairs that involve one of those responses
(trainer/snapshots.py), whatever the pairs topic or table still holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable


@dataclass(frozen=True)
class ForgetEntry:
    user_digest: str
    response_ids: list[str]
    forgotten_at_ms: int


def user_digest(user_id: str) -> str:
    return hashlib.sha256(("prefloop-forget\x1f" + user_id).encode("utf-8", "surrogatepass")).hexdigest()


class ForgottenLedger:
    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "privacy" / "forgotten.jsonl"

    def add(self, user_id: str, response_ids: Iterable[str]) -> ForgetEntry:
        """Record a forget before anything is deleted: a crash half-way leaves the ledger, and running
        `prefloop forget` again finishes the deletes."""
        entry = ForgetEntry(user_digest(user_id), sorted(set(response_ids)), int(time.time() * 1000))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def entries(self) -> list[ForgetEntry]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if line.strip():
                data: dict[str, Any] = json.loads(line)
                out.append(ForgetEntry(data["user_digest"], list(data["response_ids"]), int(data["forgotten_at_ms"])))
        return out

    def response_ids(self) -> frozenset[str]:
        return frozenset(rid for entry in self.entries() for rid in entry.response_ids)

    def has_user(self, user_id: str) -> bool:
        digest = user_digest(user_id)
        return any(entry.user_digest == digest for entry in self.entries())
