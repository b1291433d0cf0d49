"""`prefloop demo`, shortened (tiny model, one canary stage of seconds, small thresholds), end to end
against real services it starts itself: every step happens in order, summary.json holds the figures,
the promoted version is production in the registry, the routing table and model_versions, and the
report exists. Takes a few minutes on 2 cores."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import redis

from prefloop import routing
from prefloop.services.process import isolated_settings
from prefloop.services.supervisor import service_env

STEPS = ["services", "collect", "train", "evaluate", "rollout", "compare", "summary"]
# The tiny model learns the EDIT pattern at a gentle rate; a faster one (or the demo's extra NLL term)
# makes its greedy answers repetitive and the gate's guardrails rightly reject it. Even so, a random tiny
# Llama's greedy answers repeat themselves more or less from run to run, so this test relaxes the
# repetition and length guardrails (tests/evaluator checks them); the gate's statistics stay as they are.
SHORT_DEMO = {
    "PREFLOOP_SERVE_BASE_MODEL": "tiny", "PREFLOOP_TRAINER_BASE_MODEL": "tiny", "PREFLOOP_TRAINER_MAX_LENGTH": "64",
    "PREFLOOP_TRAINER_MAX_STEPS": "30", "PREFLOOP_TRAINER_LEARNING_RATE": "3e-4", "PREFLOOP_TRAINER_LOSS_TYPE": "sigmoid",
    "PREFLOOP_TRAINER_CPU_THREADS": "1", "PREFLOOP_EVALUATOR_CPU_THREADS": "1", "PREFLOOP_SERVE_CPU_THREADS": "1",
    "PREFLOOP_ROLLOUT_ALPHA": "0.001", "PREFLOOP_DEMO_GATE_MIN_PAIRS": "10", "PREFLOOP_DEMO_EDIT_SHARE": "0.35",
    "PREFLOOP_DEMO_CHOICE_SHARE": "0", "PREFLOOP_EVALUATOR_REPEAT_MARGIN": "1.0",
    "PREFLOOP_EVALUATOR_MIN_LENGTH_RATIO": "0.05", "PREFLOOP_EVALUATOR_MAX_LENGTH_RATIO": "20",
}


def test_shortened_demo_closes_the_loop(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "home", start_timeout_s=180)
    env = {**service_env(settings), **SHORT_DEMO}
    cli = [sys.executable, "-m", "prefloop.cli"]
    try:
        done = subprocess.run([*cli, "demo", "--users", "10", "--rate", "8", "--trigger-pairs", "80", "--stages", "0.5:8s,1.0",
                               "--compare-s", "15"], capture_output=True, text=True, env=env, timeout=1500)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        firsts: list[str] = []
        for match in re.finditer(r"^\[\s*\d+:\d\d\] (\w+)", done.stdout, flags=re.M):
            if match.group(1) not in firsts:
                firsts.append(match.group(1))
        assert firsts == STEPS, done.stdout

        summary = json.loads((settings.home / "demo" / "summary.json").read_text())
        assert summary["outcome"].startswith("promoted") and summary["trigger_reason"] == "NEW_PAIRS"
        assert summary["pairs_by_source"]["EDIT"] > 0 and summary["candidate_version"] == "v1.1"
        assert summary["evaluation"]["decision"] == "PROMOTE" and summary["evaluation"]["win_rate_lower"] > 0.5
        assert summary["rollout"]["final"] == "COMPLETE"
        assert [d["decision"] for d in summary["rollout"]["decisions"]][-1] == "COMPLETE"
        win = summary["live"]["new_win_rate"]
        assert win["n"] > 0 and win["lower"] <= win["value"] <= win["upper"]
        assert summary["seconds"] > 0 and [s["name"] for s in summary["steps"]] == STEPS
        assert Path(summary["report_path"]).is_file() and Path(summary["report_path"]).stat().st_size > 100_000

        models = json.loads(subprocess.run([*cli, "models", "list", "--json"], capture_output=True, text=True, env=env,
                                           timeout=120).stdout)
        assert {m["version"]: m["status"] for m in models} == {"v1.0": "retired", "v1.1": "production"}
        client = redis.Redis.from_url(settings.redis_dsn)
        assert routing.read_table(client).production == "v1.1"
        client.close()
        rows = subprocess.run([*cli, "sql", "SELECT version, status FROM model_versions FINAL ORDER BY version",
                               "--format", "json"], capture_output=True, text=True, env=env, timeout=120).stdout
        assert [json.loads(r) for r in rows.splitlines()] == [{"version": "v1.0", "status": "retired"},
                                                              {"version": "v1.1", "status": "production"}]
    finally:
        subprocess.run([*cli, "down"], capture_output=True, env=env, timeout=300)
