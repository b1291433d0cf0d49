"""The held-out set a candidate is judged on.

By default: the candidate's snapshot's own held-out pairs (its `run.json` lists them), then every
earlier held-out pair — the trainer's held-out ledger (`trainer/split.py`) records each pair ever
held out and guarantees no training run saw it — newest first (by the pair's `created_at`), up to
`max_pairs`. Pairs the candidate's run trained on are left out even if the ledger lists them (a
pair trained on before a later run raised `heldout_fraction`). `--pairs FILE` replaces the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluator.gate.errors import HeldoutError
from schemas import PreferencePair
from trainer.pairs_io import dedupe, read_pairs_file
from trainer.snapshots import list_snapshots, load_snapshot
from trainer.split import HeldoutLedger, split_pairs


@dataclass(frozen=True)
class HeldoutSet:
    pairs: list[PreferencePair]
    origin: str  # "snapshot <id> + ledger" or the pairs file
    snapshot_pairs: int  # how many come from the candidate's own snapshot
    earlier_pairs: int  # how many come from the ledger (earlier snapshots)


@dataclass(frozen=True)
class CandidateRun:
    """What the candidate's training run recorded about its data (its `run.json`)."""

    snapshot_id: str
    heldout_pair_ids: tuple[str, ...] | None  # None when run.json does not list them
    trained_pair_ids: frozenset[str]


def newest_first(pairs: list[PreferencePair]) -> list[PreferencePair]:
    return sorted(pairs, key=lambda p: (-p.created_at, p.pair_id))


def from_file(path: Path, max_pairs: int) -> HeldoutSet:
    """The pairs of a JSON-lines file (the trainer's format), in file order, up to `max_pairs`."""
    pairs = read_pairs_file(path)[:max_pairs]
    return HeldoutSet(pairs=pairs, origin=str(path), snapshot_pairs=0, earlier_pairs=0)


def for_candidate(home: Path, run: CandidateRun, max_pairs: int, heldout_fraction: float) -> HeldoutSet:
    """The snapshot's held-out pairs, then the ledger's other pairs, newest first, up to `max_pairs`."""
    ledger = HeldoutLedger(home).load()
    own: list[PreferencePair] = []
    if run.snapshot_id:
        snapshot = load_snapshot(home, run.snapshot_id)
        if run.heldout_pair_ids is not None:
            wanted = set(run.heldout_pair_ids)
            own = [p for p in snapshot.pairs if p.pair_id in wanted]
        else:
            _, own = split_pairs(snapshot.pairs, heldout_fraction, ledger)
    own = [p for p in newest_first(own) if p.pair_id not in run.trained_pair_ids]
    taken = {p.pair_id for p in own}
    earlier: dict[str, PreferencePair] = {}
    if len(own) < max_pairs:
        for info in reversed(list_snapshots(home)):  # newest snapshot first
            if not ledger.intersection(info.pair_ids).difference(taken, earlier, run.trained_pair_ids):
                continue
            for pair in load_snapshot(home, info.snapshot_id).pairs:
                pid = pair.pair_id
                if pid in ledger and pid not in taken and pid not in run.trained_pair_ids:
                    earlier.setdefault(pid, pair)
    rest = newest_first(list(earlier.values()))
    pairs = dedupe(own + rest)[:max_pairs]
    if not pairs:
        raise HeldoutError(
            f"no held-out pairs for snapshot {run.snapshot_id or '(none)'} under {home}; "
            "train with heldout_fraction > 0 or pass --pairs FILE.jsonl"
        )
    from_own = min(len(own), len(pairs))
    return HeldoutSet(pairs=pairs, origin=f"snapshot {run.snapshot_id} + held-out ledger", snapshot_pairs=from_own,
                      earlier_pairs=len(pairs) - from_own)
