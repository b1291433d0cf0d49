"""`prefloop bench eval` runs every arm on the same pairs and reports pairs/s and the ratios."""

from __future__ import annotations

import json

import pytest

from prefloop.cli import main as prefloop_main


@pytest.mark.slow
def test_bench_eval_scores_the_same_pairs_in_every_arm(gate_env, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = prefloop_main(["bench", "eval", "--model", "tiny", "--pairs", "16", "--batch-size", "8", "--device", "cpu",
                        "--json", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    summary = json.loads(out.read_text())
    arms = summary["arms"]
    assert set(arms) == {"trl-evaluate", "prefloop-cold", "prefloop-warm"}
    for arm in arms.values():
        assert arm["pairs"] == 16 and arm["seconds"] > 0 and arm["pairs_per_second"] > 0
    # Both score the same thing: the adapter's implicit-reward accuracy against the base model.
    assert arms["prefloop-cold"]["win_rate_vs_base"] == pytest.approx(arms["trl-evaluate"]["win_rate_vs_base"])
    assert arms["prefloop-warm"]["win_rate_vs_base"] == arms["prefloop-cold"]["win_rate_vs_base"]
    assert (arms["prefloop-cold"]["ref_forward_pairs"], arms["prefloop-cold"]["ref_cache_hits"]) == (16, 0)
    assert (arms["prefloop-warm"]["ref_forward_pairs"], arms["prefloop-warm"]["ref_cache_hits"]) == (0, 16)
    assert set(summary["ratios"]) == {"prefloop-cold", "prefloop-warm"}
    assert "ratio prefloop-warm vs trl-evaluate:" in stdout
