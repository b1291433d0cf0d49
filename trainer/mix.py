"""The training mix of one run: new pairs, replayed earlier pairs, and per-source weighting.

Replay: a `replay_fraction` share of the training mix is drawn from pairs of snapshots frozen
before this one (never held-out ones, never pairs already in this snapshot), with a random generator
seeded by the run seed and the snapshot id. Only earlier snapshots count, so re-running an old
snapshot later draws the same replay sample.

Weights: TRL's DPO loss has no per-example weight, so a pair's weight becomes a number of copies in
the training set: w = source_weights[source] × pair.weight; copies = floor(w) plus one more when a
hash of the pair_id falls below frac(w), never fewer than one. With the defaults an EDIT or CHOICE
pair is seen twice per epoch and a THUMBS pair once. Copies share one reference log-prob entry.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from schemas import PreferencePair
from trainer.settings import TrainerSettings
from trainer.snapshots import Snapshot, list_snapshots, load_snapshot
from trainer.split import split_pairs


@dataclass(frozen=True)
class TrainingMix:
    new: list[PreferencePair]  # this snapshot's training pairs
    replay: list[PreferencePair]  # earlier snapshots' training pairs mixed in
    heldout: list[PreferencePair]  # this snapshot's held-out pairs, evaluated after training
    rows: list[PreferencePair]  # new + replay with weight copies, sorted by pair_id (the sampler shuffles)

    @property
    def unique_train(self) -> list[PreferencePair]:
        return self.new + self.replay


def _unit(pair_id: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{pair_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def weight_copies(pair: PreferencePair, source_weights: dict[str, float], seed: int = 0) -> int:
    weight = source_weights.get(pair.source.value, 1.0) * (pair.weight if pair.weight and pair.weight > 0 else 1.0)
    whole = math.floor(weight)
    extra = 1 if _unit(pair.pair_id, f"copies-{seed}") < weight - whole else 0
    return max(1, whole + extra)


def replay_count(new_count: int, replay_fraction: float) -> int:
    """Replayed pairs so that they make up `replay_fraction` of the mix."""
    if replay_fraction <= 0 or new_count <= 0:
        return 0
    return round(new_count * replay_fraction / (1.0 - replay_fraction))


def earlier_pairs(snapshot: Snapshot, home) -> list[PreferencePair]:
    """Pairs of snapshots frozen before `snapshot`, deduplicated, sorted by pair_id."""
    seen = set(snapshot.info.pair_ids)
    out: dict[str, PreferencePair] = {}
    for info in list_snapshots(home):
        if info.order_key >= snapshot.info.order_key:
            continue
        for pair in load_snapshot(home, info.snapshot_id).pairs:
            if pair.pair_id not in seen and pair.pair_id not in out:
                out[pair.pair_id] = pair
    return [out[k] for k in sorted(out)]


def build_mix(snapshot: Snapshot, home, settings: TrainerSettings, ledger: frozenset[str] = frozenset()) -> TrainingMix:
    new, heldout = split_pairs(snapshot.pairs, settings.heldout_fraction, ledger)
    replay: list[PreferencePair] = []
    want = replay_count(len(new), settings.replay_fraction)
    if want:
        candidates, _ = split_pairs(earlier_pairs(snapshot, home), settings.heldout_fraction, ledger)
        rng = random.Random(f"replay:{settings.seed}:{snapshot.snapshot_id}")
        replay = sorted(rng.sample(candidates, min(want, len(candidates))), key=lambda p: p.pair_id)
    rows = []
    for pair in sorted(new + replay, key=lambda p: p.pair_id):
        rows.extend([pair] * weight_copies(pair, settings.source_weights, settings.seed))
    return TrainingMix(new=new, replay=replay, heldout=heldout, rows=rows)
