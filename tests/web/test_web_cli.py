"""`prefloop web` and `prefloop report` as a person runs them: one-line errors with exit status 2, the
login the app asks for, and the web service `prefloop up` checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from prefloop.services.process import free_port, isolated_settings
from prefloop.services.supervisor import WebService, service_env
from prefloop.settings import Settings
from web_helpers import WebProcess


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def one_error_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def quiet_env(tmp_path: Path) -> dict[str, str]:
    """Settings whose services nobody runs: every port free and unused."""
    settings = isolated_settings(tmp_path / "home")
    env = service_env(settings)
    env.pop("PREFLOOP_CONFIG", None)
    return env


def test_bad_arguments_and_settings_are_one_line_with_status_2(quiet_env: dict[str, str]) -> None:
    one_error_line(cli(quiet_env, "report", "--since", "7x"), "--since", "7d, 24h or 2w", "'7x'")
    one_error_line(cli(quiet_env, "report", "--since", "0d"), "--since")
    one_error_line(cli(quiet_env, "web", "--port", "70000"), "--port", "should be in [1, 65535]")
    one_error_line(cli({**quiet_env, "PREFLOOP_WEB_CONFIDENCE": "2"}, "report"), '"confidence"', "got 2")
    # Off loopback without a login the app refuses to start (before it binds anything).
    one_error_line(cli(quiet_env, "web", "--host", "0.0.0.0"), "not a loopback address",
                   "PREFLOOP_WEB_USERNAME / PREFLOOP_WEB_PASSWORD")
    one_error_line(cli({**quiet_env, "PREFLOOP_WEB_USERNAME": "ops"}, "web"), "go together")


def test_report_without_the_analytics_store_says_how_to_start_it(quiet_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    one_error_line(cli(quiet_env, "report", "--out", str(out)), "not reachable", "prefloop up")
    assert not out.exists()


@pytest.mark.services
def test_with_a_login_set_the_app_asks_for_it(services: Settings, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", kafka_port=services.kafka_port, redis_port=services.redis_port,
                        analytics_port=services.analytics_port, web_port=free_port(), start_timeout_s=5)
    env = {**service_env(settings), "PREFLOOP_WEB_USERNAME": "ops", "PREFLOOP_WEB_PASSWORD": "s3cret-pw"}
    web = WebProcess(env, tmp_path / "web.log")
    try:
        web.wait_ready()
        assert WebService(settings).healthy()  # what `prefloop up` waits for: the login page answers
        base = settings.web_url
        assert requests.get(f"{base}/config", timeout=10).status_code == 401
        assert requests.post(f"{base}/login", data={"username": "ops", "password": "wrong"}, timeout=10).status_code == 400
        session = requests.Session()
        assert session.post(f"{base}/login", data={"username": "ops", "password": "s3cret-pw"}, timeout=10).json() == \
            {"success": True}
        assert session.get(f"{base}/config", timeout=10).status_code == 200
    finally:
        web.stop()
    assert "s3cret-pw" not in web.log()


def test_bench_ratings_prints_both_arms_and_they_agree(quiet_env: dict[str, str]) -> None:
    done = cli(quiet_env, "bench", "ratings", "--versions", "3", "--battles", "300", "--rounds", "20", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "3 versions, 300 battles, 20 bootstrap rounds (best of 1)"
    assert "scipy L-BFGS-B per round (baseline)" in lines[1] and "batched Newton (prefloop)" in lines[2]
    gap = float(lines[3].rsplit(":", 1)[1].split()[0])
    assert gap < 0.1  # the same resamples give the same ratings, whichever solver fits them
    one_error_line(cli(quiet_env, "bench", "ratings", "--versions", "1"), "--versions should be at least 2")
    one_error_line(cli(quiet_env, "bench", "ratings", "--rounds", "0"), "--rounds", "greater than zero")
