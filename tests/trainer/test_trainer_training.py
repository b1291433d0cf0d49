"""Real DPO runs on the tiny Llama: learning a preference rule, chance on shuffled labels, the
reference cache, exact repeatability, and the `prefloop train` CLI (good and bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainer_synthetic import polite_pairs, write_jsonl

from prefloop.cli import main as prefloop_main
from trainer.pairs_io import pair_from_dict
from trainer.registry import ModelRegistry, VersionStatus
from trainer.snapshots import create_snapshot
from trainer.train import run_training

REQUIRED_METRICS = ("heldout_reward_accuracy", "heldout_reward_margin", "train_pairs", "heldout_pairs", "seconds", "device")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = prefloop_main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_train_learns_a_preference_rule_and_registers_a_candidate(settings, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", polite_pairs(160, seed=0))
    out_dir = tmp_path / "adapter"
    rc, out, err = run_cli(["train", "--pairs", str(pairs), "--base-model", "tiny", "--output", str(out_dir)], capsys)
    assert rc == 0, err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(REQUIRED_METRICS) <= set(metrics)
    assert (out_dir / "adapter_config.json").is_file() and (out_dir / "adapter_model.safetensors").is_file()
    assert metrics["device"] == "cpu" and metrics["dtype"] == "float32"
    assert metrics["heldout_pairs"] >= 25 and metrics["train_pairs"] + metrics["heldout_pairs"] == 160
    # Chosen replies are always the polite variant: held-out pairs (never trained on) must be ranked right.
    assert metrics["heldout_reward_accuracy"] >= 0.9
    assert metrics["heldout_reward_margin"] > 0.2
    assert metrics["ref_forward_pairs"] == 160 and metrics["ref_cache_hits"] == 0

    registry = ModelRegistry(settings.home)
    versions = {v.version: v for v in registry.versions()}
    assert set(versions) == {"v1.0", "v1.1"}
    assert versions["v1.0"].status is VersionStatus.PRODUCTION and versions["v1.0"].adapter_path is None
    cand = versions["v1.1"]
    assert cand.status is VersionStatus.CANDIDATE and cand.parent_version == "v1.0"
    assert Path(cand.adapter_path) == out_dir.resolve()
    assert cand.metrics["heldout_reward_accuracy"] == metrics["heldout_reward_accuracy"]
    assert "registered v1.1" in out
    # Services are not running: one warning line, and the disk registry is still the truth.
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "disk registry is up to date" in warnings[0]

    rc, out, _ = run_cli(["models", "list"], capsys)
    assert rc == 0 and "v1.1" in out and "candidate" in out


def test_shuffled_labels_stay_near_chance(settings, tiny_settings):
    snap = create_snapshot(polite_pairs(160, seed=0, shuffle_labels=True), settings.home)
    run = run_training(tiny_settings, snapshot=snap, output_dir=settings.home / "out", home=settings.home,
                       cache_dir=settings.cache_dir)
    m = run.metrics
    assert m["heldout_pairs"] >= 25
    # ~40 held-out pairs: chance is 0.5 with sd ~0.08; [0.25, 0.75] is a +-3 sd band.
    assert 0.25 <= m["heldout_reward_accuracy"] <= 0.75
    assert abs(m["heldout_reward_margin"]) < 0.1


def test_reference_cache_skips_pairs_seen_before_and_reruns_repeat_exactly(settings, tiny_settings):
    home, cache = settings.home, settings.cache_dir
    first_rows = polite_pairs(60, seed=1)
    first = create_snapshot(first_rows, home, snapshot_id="first")
    run1 = run_training(tiny_settings, snapshot=first, output_dir=home / "r1", home=home, cache_dir=cache)
    assert run1.metrics["ref_forward_pairs"] == 60 and run1.metrics["ref_cache_hits"] == 0

    # Same snapshot again: no reference forward at all, and the very same adapter.
    run2 = run_training(tiny_settings, snapshot=first, output_dir=home / "r2", home=home, cache_dir=cache)
    assert run2.metrics["ref_forward_pairs"] == 0 and run2.metrics["ref_cache_hits"] == 60
    assert (home / "r1" / "adapter_model.safetensors").read_bytes() == (home / "r2" / "adapter_model.safetensors").read_bytes()
    for key in ("heldout_reward_accuracy", "heldout_reward_margin", "train_loss"):
        assert run1.metrics[key] == run2.metrics[key]
    assert json.loads((home / "r1" / "run.json").read_text())["new_pair_ids"] == json.loads((home / "r2" / "run.json").read_text())["new_pair_ids"]

    # Overlapping pairs: 30 old + 25 new, plus replayed pairs from "first" (all seen before).
    new_rows = polite_pairs(25, seed=2, tag="n")
    second = create_snapshot([pair_from_dict(r) for r in first_rows[:30] + new_rows], home, snapshot_id="second")
    settings3 = tiny_settings.replace(replay_fraction=0.3)
    run3 = run_training(settings3, snapshot=second, output_dir=home / "r3", home=home, cache_dir=cache)
    m = run3.metrics
    assert m["replay_pairs"] > 0
    assert m["ref_forward_pairs"] == 25  # only the new pairs paid for a reference forward pass
    assert m["ref_cache_hits"] == 30 + m["replay_pairs"]


def test_cli_bad_input_fails_in_one_line_and_writes_nothing(settings, tmp_path, capsys):
    good = polite_pairs(40, seed=4)
    cases = {
        "malformed": write_jsonl(tmp_path / "malformed.jsonl", [*good[:5], "{oops", *good[5:]]),
        "missing": write_jsonl(tmp_path / "missing.jsonl", [*good[:3], {"prompt": "p", "chosen": "c"}]),
        "empty": write_jsonl(tmp_path / "empty.jsonl", []),
        "few": write_jsonl(tmp_path / "few.jsonl", good[:4]),
    }
    expected = {
        "malformed": "malformed.jsonl:6: not valid JSON",
        "missing": "missing.jsonl:4: missing field 'rejected'",
        "empty": "has no pairs",
        "few": "fewer than the minimum 8",
    }
    for name, path in cases.items():
        rc, out, err = run_cli(["train", "--pairs", str(path), "--base-model", "tiny"], capsys)
        assert rc == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected[name] in lines[0], (name, err)
        assert lines[0].startswith("prefloop train: error:")
    bad_args = [
        ["train", "--pairs", str(cases["few"]), "--batch-size", "0"],
        ["train", "--pairs", str(cases["few"]), "--heldout-fraction", "1.5"],
        ["train", "--base-model", "tiny"],
        ["train", "--pairs", str(tmp_path / "nope.jsonl"), "--base-model", "tiny"],
        ["train", "--snapshot", "no-such-snapshot", "--base-model", "tiny"],
        ["train", "--pairs", str(write_jsonl(tmp_path / "ok.jsonl", good)), "--base-model", str(tmp_path / "no-model")],
    ]
    for argv in bad_args:
        rc, out, err = run_cli(argv, capsys)
        assert rc == 2, argv
        assert len(err.strip().splitlines()) == 1 and "error" in err, (argv, err)
    home = settings.home
    assert not (home / "registry").exists()
    assert not (home / "snapshots").exists()
    assert not (home / "runs").exists()


def test_installed_console_script_reports_a_bad_line(settings, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [*polite_pairs(10), {"prompt": "p", "chosen": 1, "rejected": "r"}])
    exe = Path(sys.executable).with_name("prefloop")
    proc = subprocess.run([str(exe), "train", "--pairs", str(bad), "--base-model", "tiny"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"prefloop train: error: {bad}:11: field 'chosen' should be a string, got int"
    ]
    assert not (settings.home / "registry").exists()


def test_tiny_model_is_deterministic(tmp_path):
    from trainer.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "a")
    build_tiny_model(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert tok.pad_token is not None and tok.eos_token is not None
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "a").config.num_hidden_layers == 2


def test_bench_trainer_measures_alternating_arms_with_their_spread(settings, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc, stdout, err = run_cli(["bench", "trainer", "--model", "tiny", "--pairs", "16", "--steps", "2", "--batch-size", "4",
                               "--arms", "trl-default,prefloop,prefloop-ckpt", "--repeat", "2", "--json", str(out)], capsys)
    assert rc == 0, stdout + err
    summary = json.loads(out.read_text())
    assert len(summary["rounds"]) == 2
    for round_ in summary["rounds"]:
        arms = round_["arms"]
        assert set(arms) == {"trl-default", "prefloop", "prefloop-ckpt"}
        for arm in arms.values():
            assert arm["steps"] == 2 and arm["pairs_trained"] == 8 and arm["peak_memory_mb"] > 100 and arm["seconds"] > 0
        # TRL checkpoints every layer; prefloop's auto rule finds the tiny model fits without it.
        assert arms["trl-default"]["gradient_checkpointing"] is True
        assert arms["prefloop"]["gradient_checkpointing"] == "0 layers (auto)"
        assert arms["prefloop-ckpt"]["gradient_checkpointing"] == "2 layers (on)"
        assert arms["prefloop"]["ref_forward_pairs"] == 16  # each round starts cold
        assert round_["ratios"]["prefloop/pairs_per_s"] > 0
    assert set(summary["spread"]["prefloop/pairs_per_s"]) == {"median", "min", "max"}
    assert "ratio prefloop/pairs_per_s vs trl-default" in stdout and "over 2 rounds (median, min-max)" in stdout
    # the order alternates: round 2 ran the arms in reverse
    logs = sorted((settings.home / "bench").glob("trainer-*/*-1.log"), key=lambda p: p.stat().st_mtime)
    assert [p.name for p in logs] == ["prefloop-ckpt-1.log", "prefloop-1.log", "trl-default-1.log"]


def test_training_skips_trls_weight_hash_and_leaves_cudnn_attention_out(settings, tiny_settings, monkeypatch):
    """TRL's whole-model hash keys a precompute cache we replace, so it must never run; cuDNN attention
    is excluded while training unless `cudnn_attention` is set, and the process's flags come back after."""
    import torch
    import trl.trainer.dpo_trainer as trl_dpo_trainer

    import trainer.heldout

    hashed: list[object] = []
    monkeypatch.setattr(trl_dpo_trainer, "hash_module", lambda module: hashed.append(module) or "spy")
    cudnn_during: list[bool] = []
    real_evaluate = trainer.heldout.evaluate_heldout

    def evaluate_and_record(trainer_, dataset):
        cudnn_during.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real_evaluate(trainer_, dataset)

    monkeypatch.setattr(trainer.heldout, "evaluate_heldout", evaluate_and_record)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    snap = create_snapshot(polite_pairs(40, seed=3), settings.home)
    for n, cudnn in enumerate((False, True)):
        run = run_training(tiny_settings.replace(max_steps=2, cudnn_attention=cudnn), snapshot=snap,
                           output_dir=settings.home / f"out{n}", home=settings.home, cache_dir=settings.cache_dir)
        assert run.metrics["steps"] == 2
        assert torch.backends.cuda.cudnn_sdp_enabled()
    assert hashed == []
    assert trl_dpo_trainer.hash_module(None) == "spy"  # restored after each run
    assert cudnn_during == [False, True]


def test_random_checkpoint_copies_the_shape_and_tokenizer_with_new_weights(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    like = next(tiny_models.glob("tiny-llama-*"))
    out = tmp_path / "random"
    cmd = [sys.executable, "-m", "trainer.random_checkpoint", "--like", str(like), "--out", str(out), "--seed", "7"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "random weights (seed 7)" in done.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(like)
    assert model.config.hidden_size == original.config.hidden_size
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in original.parameters())
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not weights[name].float().equal(load_file(like / "model.safetensors")[name].float())
    assert AutoTokenizer.from_pretrained(out)("hello").input_ids == AutoTokenizer.from_pretrained(like)("hello").input_ids

    bad = subprocess.run([sys.executable, "-m", "trainer.random_checkpoint", "--like", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "has no config.json" in bad.stderr
