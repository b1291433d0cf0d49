"""Held-out split by a stable hash of pair_id: a held-out pair is never trained on, in any run.

`is_heldout(pair_id, f)` puts a pair in the held-out set when its sha256 bucket (a number in [0, 1)
fixed by the pair_id alone) is below `f`. The same pair therefore lands on the same side in every
run and every snapshot. Lowering `heldout_fraction` later would move some held-out pairs into
training, so every pair ever held out is also recorded in a ledger
(`<home>/snapshots/heldout-ledger.txt`) and stays held out whatever the fraction becomes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from schemas import PreferencePair
from trainer.fsutil import file_lock

_SALT = b"prefloop-heldout-v1:"


def heldout_bucket(pair_id: str) -> float:
    """A number in [0, 1) fixed by `pair_id` alone."""
    digest = hashlib.sha256(_SALT + pair_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(pair_id: str, fraction: float, ledger: frozenset[str] | set[str] = frozenset()) -> bool:
    return pair_id in ledger or heldout_bucket(pair_id) < fraction


def split_pairs(
    pairs: Iterable[PreferencePair], fraction: float, ledger: frozenset[str] | set[str] = frozenset()
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, heldout), each in input order."""
    train: list[PreferencePair] = []
    heldout: list[PreferencePair] = []
    for pair in pairs:
        (heldout if is_heldout(pair.pair_id, fraction, ledger) else train).append(pair)
    return train, heldout


class HeldoutLedger:
    """Append-only set of pair ids that were ever held out under `home`."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "snapshots" / "heldout-ledger.txt"

    def load(self) -> frozenset[str]:
        if not self.path.is_file():
            return frozenset()
        return frozenset(line.strip() for line in self.path.read_text().splitlines() if line.strip())

    def add(self, pair_ids: Iterable[str]) -> None:
        with file_lock(self.path.with_suffix(".lock")):
            known = self.load()
            new = sorted(set(pair_ids) - known)
            if new:
                with open(self.path, "a") as handle:
                    handle.write("".join(f"{pid}\n" for pid in new))
