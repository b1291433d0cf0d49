"""`prefloop serve` from the command line: one-line errors with exit 2, and 503 while no model is loaded."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from serving_helpers import start_serve
from streams_helpers import wait_for


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", "serve", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("args, extra_env, says", [
    (["--host", "0.0.0.0"], {}, "refusing to serve the gateway on 0.0.0.0 without API keys"),
    (["--max-batch-size", "0"], {}, "argument --max-batch-size: should be in [1, 512], got 0"),
    (["--backend", "openai"], {}, '"upstream_url" is required with backend openai'),
    ([], {"PREFLOOP_SERVE_AUTH_KEYS": "not-a-hash"}, '"keys" entry 1 should be NAME:SHA256'),
])
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, serving_env, args, extra_env, says):
    result = serve(tmp_path, {**serving_env, **extra_env}, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "not-a-hash" not in result.stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path, serving_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve(tmp_path, {**serving_env, "PREFLOOP_SERVE_PORT": str(taken.getsockname()[1]), "PREFLOOP_SERVE_BASE_MODEL": "tiny"})
    assert result.returncode == 2
    assert "already in use" in result.stderr.strip().splitlines()[-1]


def test_no_model_loaded_is_503_and_health_says_why(tmp_path, serving_env):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    proc = start_serve(serving_env, tmp_path, "broken", base_model=str(broken))
    try:
        def failed() -> dict | None:
            try:
                answer = requests.get(f"{proc.url}/health", timeout=5)
            except requests.ConnectionError:
                return None  # not listening yet
            return answer.json() if answer.status_code == 503 else None

        health = wait_for(failed, 120, what="the model load to fail")
        assert health["status"] == "failed" and health["backend"]["problem"]
        answer = requests.post(f"{proc.url}/v1/chat/completions", timeout=30,
                               json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 503
        assert answer.json()["error"]["type"] == "service_unavailable" and "failed to load" in answer.json()["error"]["message"]
    finally:
        proc.stop()


def test_bench_serve_prints_every_arm_against_the_baseline(tmp_path, tiny_cache):
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_")}
    env.update({"PREFLOOP_HOME": str(tmp_path / "home"), "PREFLOOP_CACHE_DIR": str(tiny_cache), "PYTHONUNBUFFERED": "1"})
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "prefloop.cli", "bench", "serve", "--model", "tiny", "--device", "cpu",
                             "--requests", "4", "--concurrency", "1,2", "--max-tokens", "4", "--overhead-requests", "5",
                             "--time-limit", "240", "--json", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("sequential model.generate", "gateway, concurrency 1", "gateway, concurrency 2", "openai backend overhead"):
        assert line in result.stdout
    figures = json.loads(out.read_text())
    assert [lvl["concurrency"] for lvl in figures["levels"]] == [1, 2]
    assert all(lvl["requests"] == 4 and lvl["requests_per_s"] > 0 for lvl in figures["levels"])
    assert figures["baseline"]["requests"] == 4 and figures["openai_overhead"]["requests"] == 5


def test_bench_serve_rejects_bad_levels_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "prefloop.cli", "bench", "serve", "--concurrency", "0,8"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--concurrency" in result.stderr
