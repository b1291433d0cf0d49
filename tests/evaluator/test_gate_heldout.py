"""The default held-out set: the snapshot's own held-out pairs first, then the ledger's, newest first."""

from __future__ import annotations

import pytest
from gate_synthetic import feature_pairs

from evaluator.gate.errors import HeldoutError
from evaluator.gate.heldout import CandidateRun, for_candidate
from trainer.pairs_io import pair_from_dict
from trainer.snapshots import create_snapshot
from trainer.split import HeldoutLedger


def pairs(n: int, tag: str, start_ms: int) -> list:
    seed = sum(map(ord, tag))
    out = []
    for i, row in enumerate(feature_pairs(n, seed=seed, tag=tag, pairs_per_prompt=1)):
        out.append(pair_from_dict({**row, "created_at": start_ms + i}))
    return out


def test_own_heldout_pairs_come_first_then_earlier_ledger_pairs_newest_first(tmp_path):
    home = tmp_path / "home"
    old = pairs(10, "old", 1_000)
    mid = pairs(10, "mid", 2_000)
    new = pairs(10, "new", 3_000)
    create_snapshot(old, home, snapshot_id="s1")
    create_snapshot(mid, home, snapshot_id="s2")
    create_snapshot(new, home, snapshot_id="s3")
    ledger_old, ledger_mid = [p.pair_id for p in old[:4]], [p.pair_id for p in mid[:3]]
    own = [p.pair_id for p in new[:5]]
    HeldoutLedger(home).add(ledger_old + ledger_mid + own)
    trained = frozenset(p.pair_id for p in new[5:]) | {ledger_old[0]}  # a ledger pair this run trained on stays out

    run = CandidateRun(snapshot_id="s3", heldout_pair_ids=tuple(own), trained_pair_ids=trained)
    got = for_candidate(home, run, max_pairs=100, heldout_fraction=0.0)
    ids = [p.pair_id for p in got.pairs]
    assert ids[:5] == [p.pair_id for p in sorted(new[:5], key=lambda p: -p.created_at)]
    assert ids[5:] == [p.pair_id for p in sorted(mid[:3], key=lambda p: -p.created_at)] + \
        [p.pair_id for p in sorted(old[1:4], key=lambda p: -p.created_at)]
    assert (got.snapshot_pairs, got.earlier_pairs) == (5, 6)
    assert got.origin == "snapshot s3 + held-out ledger"

    capped = for_candidate(home, run, max_pairs=7, heldout_fraction=0.0)
    assert [p.pair_id for p in capped.pairs] == ids[:7] and (capped.snapshot_pairs, capped.earlier_pairs) == (5, 2)


def test_a_run_without_a_recorded_split_uses_the_hash_split_and_no_pairs_is_an_error(tmp_path):
    home = tmp_path / "home"
    snap = create_snapshot(pairs(40, "x", 0), home, snapshot_id="s1")
    run = CandidateRun(snapshot_id="s1", heldout_pair_ids=None, trained_pair_ids=frozenset())
    got = for_candidate(home, run, max_pairs=100, heldout_fraction=0.5)
    from trainer.split import heldout_bucket

    assert {p.pair_id for p in got.pairs} == {p.pair_id for p in snap.pairs if heldout_bucket(p.pair_id) < 0.5}
    with pytest.raises(HeldoutError, match="no held-out pairs for snapshot s1"):
        for_candidate(home, run, max_pairs=100, heldout_fraction=0.0)
