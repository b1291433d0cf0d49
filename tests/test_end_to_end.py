"""The README's main job, through the CLI: `up` everything, emit the examples, read pairs back, `down`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from prefloop.services.process import isolated_settings, pid_alive
from prefloop.services.supervisor import service_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "feedback.jsonl"


def cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def sql_rows(env: dict[str, str], query: str) -> list[dict]:
    result = cli(env, "sql", query, "--format", "json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_up_emit_collect_pairs_down(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "home", start_timeout_s=120)
    env = service_env(settings)
    env["PREFLOOP_SERVE_BASE_MODEL"] = "tiny"  # the gateway's model; tests/serving covers serving itself
    up = cli(env, "up")
    pids = {p.stem: int(p.read_text()) for p in (settings.home / "run").glob("*.pid")}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(pids) == {"watchdog", "kafka", "redis", "analytics", "worker", "collector", "trainer", "evaluator",
                             "gateway", "rollout", "web"}

        emitted = cli(env, "emit", str(EXAMPLES))
        assert emitted.returncode == 0, emitted.stderr
        posted = requests.post(
            f"{settings.collector_url}/v1/events",
            json=[
                {"type": "response", "response_id": "e2e-a", "prompt": "Which plan includes priority support?",
                 "response": "The Business plan includes 24/7 priority support by phone and chat.", "model_version": "v1.0"},
                {"type": "response", "response_id": "e2e-b", "prompt": "Which plan includes priority support?",
                 "response": "No idea, check the website.", "model_version": "v1.0"},
                {"type": "action", "response_id": "e2e-a", "kind": "CHOICE", "rejected_response_id": "e2e-b"},
            ],
            timeout=30,
        )
        assert posted.status_code == 202, posted.text

        want_events = sum(1 for _ in EXAMPLES.open()) + 3
        deadline = time.monotonic() + 90
        pairs: list[dict] = []
        while time.monotonic() < deadline:
            events = sql_rows(env, "SELECT count() AS n FROM feedback_events FINAL")[0]["n"]
            pairs = sql_rows(env, "SELECT source, chosen_response_id, rejected_response_id FROM preference_pairs FINAL ORDER BY chosen_response_id")
            if events >= want_events and len(pairs) >= 5:
                break
            time.sleep(1)
        assert events == want_events
        assert pairs == [
            {"source": "CHOICE", "chosen_response_id": "e2e-a", "rejected_response_id": "e2e-b"},
            {"source": "CHOICE", "chosen_response_id": "r-1a", "rejected_response_id": "r-1b"},
            {"source": "EDIT", "chosen_response_id": "r-2a", "rejected_response_id": None},
            {"source": "THUMBS", "chosen_response_id": "r-3a", "rejected_response_id": "r-3b"},
            {"source": "RATING", "chosen_response_id": "r-4a", "rejected_response_id": "r-4b"},
        ]
        status = json.loads(cli(env, "status", "--json").stdout)
        assert all(s["healthy"] for s in status["services"]), status["services"]
        assert status["topic_offsets"]["feedback.pairs"] == 5
    finally:
        down = cli(env, "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
