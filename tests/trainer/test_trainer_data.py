"""Snapshots, the held-out split, replay and weighting: no model needed."""

from __future__ import annotations

import json

import pytest
from trainer_synthetic import polite_pairs

from schemas import PairSource, pair_hash
from prefloop.errors import ConfigError
from trainer.errors import PairsFileError, SnapshotError, TooFewPairsError
from trainer.mix import build_mix, replay_count, weight_copies
from trainer.pairs_io import pair_from_dict, read_pairs_file
from trainer.settings import TrainerSettings
from trainer.snapshots import create_snapshot, list_snapshots, load_snapshot
from trainer.split import HeldoutLedger, heldout_bucket, is_heldout


def test_snapshot_is_content_addressed_and_repeatable(tmp_path):
    home = tmp_path / "home"
    rows = polite_pairs(30, seed=1)
    first = create_snapshot(rows, home)
    pairs_bytes = (first.path / "pairs.jsonl").read_bytes()
    manifest = json.loads((first.path / "manifest.json").read_text())

    # Same pairs in another order (and a duplicate) freeze to the same snapshot, unchanged on disk.
    again = create_snapshot(list(reversed(rows)) + rows[:3], home)
    assert again.snapshot_id == first.snapshot_id
    assert (first.path / "pairs.jsonl").read_bytes() == pairs_bytes
    assert manifest["pair_count"] == 30
    assert manifest["counts_by_source"] == {"CHOICE": 30}
    assert manifest["pair_ids"] == sorted(pair_hash(r["prompt"], r["chosen"], r["rejected"]) for r in rows)

    loaded = load_snapshot(home, first.snapshot_id)
    assert [p.pair_id for p in loaded.pairs] == manifest["pair_ids"]
    assert [(p.prompt, p.chosen, p.rejected) for p in loaded.pairs] == [(p.prompt, p.chosen, p.rejected) for p in first.pairs]
    assert [i.snapshot_id for i in list_snapshots(home)] == [first.snapshot_id]


def test_snapshot_id_is_immutable_and_tampering_is_detected(tmp_path):
    home = tmp_path / "home"
    snap = create_snapshot(polite_pairs(10, seed=1), home, snapshot_id="run-1")
    with pytest.raises(SnapshotError, match="already exists with different pairs"):
        create_snapshot(polite_pairs(10, seed=2), home, snapshot_id="run-1")
    lines = (snap.path / "pairs.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["chosen"] = row["chosen"] + " (edited later)"
    (snap.path / "pairs.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(SnapshotError, match="content hash"):
        load_snapshot(home, "run-1")
    with pytest.raises(SnapshotError, match="not found"):
        load_snapshot(home, "no-such-snapshot")


def test_heldout_split_is_stable_nested_and_near_the_fraction():
    ids = [pair_hash(f"p{i}", "a", "b") for i in range(4000)]
    assert [heldout_bucket(i) for i in ids[:50]] == [heldout_bucket(i) for i in ids[:50]]
    small = {i for i in ids if is_heldout(i, 0.1)}
    large = {i for i in ids if is_heldout(i, 0.2)}
    assert small < large  # raising the fraction only adds held-out pairs
    # Binomial(4000, 0.1): sd ~19, so +-100 is a > 5 sd bound.
    assert abs(len(small) - 400) < 100
    assert abs(len(large) - 800) < 130


def test_heldout_pairs_are_never_trained_on_in_later_runs(tmp_path):
    home = tmp_path / "home"
    first = create_snapshot(polite_pairs(80, seed=1), home, snapshot_id="a")
    settings = TrainerSettings(heldout_fraction=0.25, replay_fraction=0.5)
    mix1 = build_mix(first, home, settings)
    heldout_ids = {p.pair_id for p in mix1.heldout}
    assert heldout_ids and not heldout_ids & {p.pair_id for p in mix1.rows}
    HeldoutLedger(home).add(heldout_ids)

    # A later run over overlapping pairs, replaying earlier ones, with a LOWER held-out fraction:
    # the ledger still keeps every pair held out before out of training.
    overlapping = [p for p in first.pairs[:40]] + [pair_from_dict(r) for r in polite_pairs(40, seed=2, tag="b")]
    second = create_snapshot(overlapping, home, snapshot_id="b")
    lowered = TrainerSettings(heldout_fraction=0.0, replay_fraction=0.5)
    mix2 = build_mix(second, home, lowered, HeldoutLedger(home).load())
    trained = {p.pair_id for p in mix2.rows}
    assert not heldout_ids & trained
    assert mix2.replay, "earlier snapshot pairs should be replayed"
    assert {p.pair_id for p in mix2.replay} <= set(first.info.pair_ids) - set(second.info.pair_ids) - heldout_ids


def test_replay_share_and_rerun_of_an_old_snapshot_is_repeatable(tmp_path):
    home = tmp_path / "home"
    create_snapshot(polite_pairs(100, seed=1, tag="a"), home, snapshot_id="a")
    second = create_snapshot(polite_pairs(40, seed=2, tag="b"), home, snapshot_id="b")
    settings = TrainerSettings(heldout_fraction=0.1, replay_fraction=0.2, seed=7)
    before = build_mix(second, home, settings)
    assert len(before.replay) == replay_count(len(before.new), 0.2) == round(len(before.new) / 4)
    # A newer snapshot must not change what re-running "b" replays.
    create_snapshot(polite_pairs(50, seed=3, tag="c"), home, snapshot_id="c")
    after = build_mix(load_snapshot(home, "b"), home, settings)
    assert [p.pair_id for p in after.rows] == [p.pair_id for p in before.rows]
    assert [p.pair_id for p in after.heldout] == [p.pair_id for p in before.heldout]
    # The first snapshot has nothing earlier to replay.
    assert build_mix(load_snapshot(home, "a"), home, settings).replay == []


def test_source_weights_duplicate_strong_signals():
    weights = TrainerSettings().source_weights
    base = polite_pairs(1)[0]
    edit = pair_from_dict({**base, "source": "EDIT"})
    thumbs = pair_from_dict({**base, "source": "THUMBS"})
    heavy = pair_from_dict({**base, "source": "THUMBS", "weight": 3.0})
    assert edit.source is PairSource.EDIT
    assert weight_copies(edit, weights) == 2
    assert weight_copies(thumbs, weights) == 1
    assert weight_copies(heavy, weights) == 3
    # Fractional weights: floor plus a pair_id-seeded extra copy, about frac(w) of the time.
    halves = [weight_copies(pair_from_dict({**r, "source": "THUMBS"}), {"THUMBS": 1.5}) for r in polite_pairs(400, seed=5)]
    assert set(halves) == {1, 2}
    assert 150 < halves.count(2) < 250


def test_pairs_file_errors_name_the_line(tmp_path):
    good = json.dumps(polite_pairs(1)[0])
    cases = {
        "malformed": ([good, "{not json"], "malformed.jsonl:2: not valid JSON"),
        "missing": ([good, good.replace('"rejected"', '"other"')], "missing.jsonl:2: missing field 'rejected'"),
        "type": ([json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"})], "type.jsonl:1: field 'chosen' should be a string"),
        "same": ([json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"})], "same.jsonl:1: chosen and rejected are identical"),
        "source": ([json.dumps({**polite_pairs(1)[0], "source": "VIBES"})], "source.jsonl:1: source"),
    }
    for name, (lines, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(PairsFileError) as err:
            read_pairs_file(path)
        assert message in str(err.value)
        assert "\n" not in str(err.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(PairsFileError, match="has no pairs"):
        read_pairs_file(empty)
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(r) + "\n" for r in polite_pairs(3)))
    with pytest.raises(TooFewPairsError, match="3 distinct pairs, fewer than the minimum 8"):
        read_pairs_file(few, min_pairs=8)


def test_pairs_file_defaults_and_extra_fields(tmp_path):
    row = {**polite_pairs(1)[0], "score": 0.9, "source": "edit", "weight": 2}
    pair = pair_from_dict(row)
    assert pair.pair_id == pair_hash(row["prompt"], row["chosen"], row["rejected"])
    assert pair.source is PairSource.EDIT and pair.weight == 2.0
    assert pair_from_dict(polite_pairs(1)[0]).source is PairSource.CHOICE
    assert pair_from_dict({**row, "pair_id": "given"}).pair_id == "given"


def test_loss_types_reach_trls_config_and_bad_ones_are_refused(tmp_path):
    from trainer.dpo import build_dpo_config

    settings = TrainerSettings(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    config = build_dpo_config(settings, tmp_path, "cpu", False)
    assert config.loss_type == ["sigmoid", "sft"] and config.loss_weights == [1.0, 0.5]
    assert build_dpo_config(TrainerSettings(), tmp_path, "cpu", False).loss_weights is None
    with pytest.raises(ConfigError, match='"loss_type" should name TRL loss types'):
        TrainerSettings(loss_type=["dpo"])
    with pytest.raises(ConfigError, match='"loss_weights" should have one weight per loss type'):
        TrainerSettings(loss_type=["sigmoid", "sft"], loss_weights=[1.0])
