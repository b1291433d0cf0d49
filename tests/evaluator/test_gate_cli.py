"""`prefloop eval` on real tiny-model candidates: who is promoted, who is rejected and why; bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from gate_helpers import install_candidate
from gate_synthetic import feature_pairs, length_pairs, write_jsonl

from prefloop.cli import main as prefloop_main
from trainer.registry import ModelRegistry, VersionStatus

REQUIRED = ("decision", "reason", "candidate", "baseline", "n", "win_rate", "win_rate_lower", "p_value", "guardrails")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = prefloop_main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def eval_json(argv: list[str], capsys) -> dict:
    rc, out, err = run_cli(["eval", *argv, "--json", "--no-publish"], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON object
    doc = json.loads(lines[0])
    assert set(REQUIRED) <= set(doc)
    return doc


@pytest.mark.slow
def test_a_candidate_trained_on_true_preferences_is_promoted(gate_env, train_candidate, heldout_file, capsys):
    trained = train_candidate("true")
    doc = eval_json(["--candidate", str(trained.adapter), "--pairs", str(heldout_file)], capsys)
    assert doc["decision"] == "PROMOTE", doc["reason"]
    assert doc["baseline"] == "base model" and doc["n"] == 200
    assert doc["win_rate"] >= 0.75 and doc["win_rate_lower"] > 0.6 and doc["p_value"] < 1e-9
    assert doc["guardrails"]["candidate"]["answers"] == 16 and doc["guardrails"]["length_ratio"] is not None
    assert set(doc["sources"]) == {"EDIT", "CHOICE", "THUMBS", "RATING"} and all(s["n"] == 50 for s in doc["sources"].values())
    assert doc["event"]["decision"] == "PROMOTE" and doc["event"]["metrics"]["win_rate"] == doc["win_rate"]
    # The baseline is the base model: its scores are the trainer's cached reference log-probs where it has them.
    assert doc["scoring"]["ref_cache_hits"] + doc["scoring"]["ref_forward_pairs"] == 200
    assert not (trained.adapter / "evaluation.json").exists()  # --no-publish writes nothing


@pytest.mark.slow
def test_flipped_and_coin_flip_candidates_are_rejected(gate_env, train_candidate, heldout_file, capsys):
    flipped = eval_json(["--candidate", str(train_candidate("flipped").adapter), "--pairs", str(heldout_file)], capsys)
    assert flipped["decision"] == "REJECT" and flipped["check"] == "win"
    assert flipped["win_rate"] < 0.3 and flipped["reason"].startswith("no significant win: win rate")
    # Coin-flip labels: each feature's learned direction is chance, and 24 independent features average it out.
    coin = eval_json(["--candidate", str(train_candidate("coin").adapter), "--pairs", str(heldout_file)], capsys)
    assert coin["decision"] == "REJECT" and coin["check"] == "win"
    assert coin["win_rate_lower"] < 0.5 and coin["win_rate"] < 0.6


@pytest.mark.slow
def test_an_untrained_adapter_is_rejected_and_too_few_pairs_are_inconclusive(gate_env, train_candidate, heldout_file,
                                                                               tmp_path, capsys):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.base_models import resolve_base_model
    from trainer.dpo import build_lora_config
    from trainer.settings import load_trainer_settings
    from prefloop.settings import load_settings

    settings = load_settings()
    zero = tmp_path / "zero-adapter"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model("tiny", settings.cache_dir))
    get_peft_model(base, build_lora_config(load_trainer_settings(settings))).save_pretrained(zero)  # LoRA B = 0
    doc = eval_json(["--candidate", str(zero), "--pairs", str(heldout_file)], capsys)
    assert doc["decision"] == "REJECT" and doc["ties"] == 200
    assert doc["reason"] == "no win: all 200 held-out pairs tie (the candidate scores them like the baseline)"

    few = write_jsonl(tmp_path / "few.jsonl", feature_pairs(12, seed=5, tag="f"))
    doc = eval_json(["--candidate", str(train_candidate("true").adapter), "--pairs", str(few)], capsys)
    assert (doc["decision"], doc["reason"]) == ("REJECT", "inconclusive: 12 held-out pairs, need 50")


@pytest.mark.slow
def test_a_win_only_where_chosen_is_longer_is_rejected_naming_length(gate_env, train_candidate, tmp_path, capsys):
    # Trained on pairs whose chosen reply is always the longer one; judged where three in four are.
    length = train_candidate("length")
    mixed = write_jsonl(tmp_path / "mixed.jsonl", length_pairs(160, seed=7, longer_share=0.75, tag="m"))
    doc = eval_json(["--candidate", str(length.adapter), "--pairs", str(mixed)], capsys)
    assert doc["decision"] == "REJECT" and doc["check"] == "length", doc["reason"]
    assert doc["reason"].startswith("length: the win disappears on the")
    assert doc["win_rate"] > 0.6 and doc["length"]["upper"] < 0.5 and doc["length"]["correlation"] > 0.5


@pytest.mark.slow
def test_guardrails_reject_a_candidate_whose_answers_degenerate(gate_env, train_candidate, tmp_path, capsys):
    # The length-trained candidate wins where every chosen reply is longer (no length check applies), but its
    # greedy answers repeat themselves far more than the base model's.
    longer = write_jsonl(tmp_path / "longer.jsonl", length_pairs(80, seed=8, longer_share=1.0, tag="l"))
    doc = eval_json(["--candidate", str(train_candidate("length").adapter), "--pairs", str(longer)], capsys)
    assert doc["length"]["n"] == 0 and doc["win_rate_lower"] > 0.5
    assert doc["decision"] == "REJECT" and doc["check"] == "guardrail", doc["reason"]
    g = doc["guardrails"]
    assert doc["reason"].startswith("guardrail: repeated 3-grams")
    assert g["candidate"]["repeat_rate"] - g["baseline"]["repeat_rate"] > 0.1


@pytest.mark.slow
def test_a_registry_version_is_judged_on_its_snapshots_heldout_pairs(gate_env, train_candidate, capsys):
    trained = train_candidate("true")
    version = install_candidate(trained, gate_env.home)
    heldout_ids = json.loads((trained.adapter / "run.json").read_text())["heldout_pair_ids"]
    rc, out, err = run_cli(["eval", "--candidate", version, "--min-pairs", "30", "--no-publish"], capsys)
    assert rc == 0, err
    assert f"{version} vs v1.0: PROMOTE" in out and "PROMOTE: win rate" in out
    doc = eval_json(["--candidate", version, "--min-pairs", "30"], capsys)
    assert doc["heldout"]["origin"] == f"snapshot {trained.snapshot_id} + held-out ledger"
    assert doc["n"] == len(heldout_ids) == doc["heldout"]["snapshot_pairs"] and doc["heldout"]["earlier_pairs"] == 0
    assert doc["baseline"] == "v1.0" and doc["decision"] == "PROMOTE"
    record = ModelRegistry(gate_env.home).get(version)
    assert record.status is VersionStatus.CANDIDATE and record.evaluation == {}  # --no-publish changes nothing


def test_bad_input_is_one_line_exit_2_and_changes_nothing(gate_env, train_candidate, heldout_file, tmp_path, capsys):
    trained = train_candidate("true")
    version = install_candidate(trained, gate_env.home)
    gone = install_candidate(trained, gate_env.home, name="deleted")
    shutil.rmtree(gate_env.home / "runs" / "deleted")
    good = feature_pairs(60, seed=6, tag="b")
    bad_line = write_jsonl(tmp_path / "bad.jsonl", [*good[:2], "{oops", *good[2:]])
    missing_field = write_jsonl(tmp_path / "missing.jsonl", [*good[:3], {"prompt": "p", "chosen": "c"}])
    cases = {
        ("--candidate", "v9.9"): "candidate 'v9.9' is neither a registry version (known: v1.0, v1.1, v1.2) nor an adapter directory",
        ("--candidate", gone): f"adapter of {gone} is missing: no adapter_config.json in {gate_env.home / 'runs' / 'deleted'}",
        ("--candidate", "v1.0"): "v1.0 is the base model itself; pass a trained version as --candidate",
        ("--candidate", version, "--baseline", "v7"): "unknown model version 'v7'",
        ("--candidate", version, "--pairs", str(bad_line)): f"{bad_line}:3: not valid JSON",
        ("--candidate", version, "--pairs", str(missing_field)): f"{missing_field}:4: missing field 'rejected'",
        ("--candidate", version, "--pairs", str(tmp_path / "nope.jsonl")): "does not exist",
        ("--candidate", version, "--alpha", "0.7"): "argument --alpha: should be in (0, 0.5), got 0.7",
        ("--candidate", version, "--device", "tpu"): "argument --device: invalid choice",
        ("--pairs", str(heldout_file)): "the following arguments are required: --candidate",
        # Publishing needs Kafka, checked before the evaluation; nothing is evaluated or written.
        ("--candidate", version, "--pairs", str(heldout_file)): "cannot reach Kafka at 127.0.0.1:",
    }
    for argv, expected in cases.items():
        rc, out, err = run_cli(["eval", *argv], capsys)
        lines = err.strip().splitlines()
        assert rc == 2, (argv, out, err)
        assert len(lines) == 1 and expected in lines[0], (argv, err)
        assert lines[0].startswith("prefloop eval: error:"), lines[0]
    record = ModelRegistry(gate_env.home).get(version)
    assert record.status is VersionStatus.CANDIDATE and record.evaluation == {}
    assert not (gate_env.home / "runs" / "adapter" / "evaluation.json").exists()
    assert not (gate_env.home / "evaluator").exists()
