"""The fault tests' own stack: Kafka, Redis, the analytics service and a streams worker, started by
`prefloop up` (so the watchdog restarts whatever a test kills) in a home and on ports of their own.

Not the session's `services`: these tests kill, restart and pause the services, while the
streams tests' workers may still run on the session's ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "streams"))  # streams_helpers
sys.path.insert(0, str(TESTS / "trainer"))  # trainer_synthetic

from prefloop.services.process import isolated_settings, pid_alive  # noqa: E402
from prefloop.services.supervisor import down, service_env, up  # noqa: E402
from prefloop.settings import Settings  # noqa: E402
from streams_helpers import Workers, wait_for  # noqa: E402

# Short timeouts so that rebalances and restarts resolve within a test (as in tests/streams), and
# the watchdog's first restart 3 s after a death: the Redis blip.
FAULT_ENV = {
    "PREFLOOP_STREAMS_ORPHAN_TTL_S": "30",
    "PREFLOOP_STREAMS_SWEEP_INTERVAL_S": "0.2",
    "PREFLOOP_STREAMS_SESSION_TIMEOUT_S": "6",
    "PREFLOOP_STREAMS_COMMIT_INTERVAL_S": "0.5",
    "PREFLOOP_STREAMS_SINK_BATCH_S": "0.3",
    "PREFLOOP_STREAMS_DRIFT_INTERVAL_S": "3600",
    "PREFLOOP_STREAMS_TRIGGER_CHECK_S": "3600",
    "PREFLOOP_STREAMS_STATS_INTERVAL_S": "5",
    "PREFLOOP_STREAMS_PRODUCER_BATCH_BYTES": "2048",
    "PREFLOOP_WATCHDOG_RESTART_BACKOFF_S": "3",
    "PREFLOOP_WATCHDOG_STABLE_S": "5",
    "PREFLOOP_WATCHDOG_CHECK_INTERVAL_S": "0.2",
    # The trainer (started by the training-job test only): the tiny model, seconds per run.
    "PREFLOOP_TRAINER_BASE_MODEL": "tiny", "PREFLOOP_TRAINER_MAX_LENGTH": "48", "PREFLOOP_TRAINER_BATCH_SIZE": "8",
    "PREFLOOP_TRAINER_MAX_STEPS": "40", "PREFLOOP_TRAINER_LEARNING_RATE": "5e-3", "PREFLOOP_TRAINER_HELDOUT_FRACTION": "0.25",
    "PREFLOOP_TRAINER_PROGRESS": "true", "PREFLOOP_TRAINER_CPU_THREADS": "1", "PREFLOOP_TRAINER_REF_BATCH_SIZE": "32",
    "PREFLOOP_TRAINER_DEVICE": "cpu", "PREFLOOP_TRAINER_JOB_RETRIES": "1", "PREFLOOP_TRAINER_RETRY_BACKOFF_S": "1",
    "PREFLOOP_TRAINER_JOB_TIMEOUT_S": "600",
}


@dataclass
class Stack:
    settings: Settings

    @property
    def env(self) -> dict[str, str]:
        return service_env(self.settings)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.settings.home / "run" / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def status(self) -> dict[str, dict[str, Any]]:
        """`prefloop status --json`, by service name."""
        result = self.cli("status", "--json")
        return {s["name"]: s for s in json.loads(result.stdout)["services"]}

    def wait_healthy(self, name: str, timeout_s: float = 120.0, other_than: int | None = None) -> int:
        """Wait until `name` is healthy again (under another PID than `other_than`); returns its PID."""
        def healthy() -> int | None:
            row = self.status()[name]
            return row["pid"] if row["healthy"] and row["pid"] != other_than else None

        return wait_for(healthy, timeout_s, interval_s=1.0, what=f"{name} healthy again")

    def log(self, name: str) -> str:
        return (self.settings.home / "logs" / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("faults-home")
    # A cache of its own (the trainer test builds the tiny model there) sharing the Kafka jars.
    cache = home / "cache"
    cache.mkdir()
    jars = Settings().cache_dir / f"kafka-{Settings().kafka_version}"
    if jars.is_dir():
        (cache / jars.name).symlink_to(jars, target_is_directory=True)
    settings = isolated_settings(home, cache_dir=cache, start_timeout_s=120)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAULT_ENV.items():  # the watchdog, and so every service it starts, inherits them
            mp.setenv(key, value)
        with open(os.devnull, "w") as quiet:
            up(settings, only=["kafka", "redis", "analytics", "worker"], out=quiet)
        try:
            yield Stack(settings)
        finally:
            with open(os.devnull, "w") as quiet:
                down(settings, out=quiet)


@pytest.fixture
def extra_workers(stack: Stack) -> Iterator[Workers]:
    """Streams workers beyond the supervised one (processes this test starts and stops by PID)."""
    workers = Workers(stack.settings, stack.env)
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.fixture
def tag() -> str:
    return f"f{time.time_ns() % 10**12}"
