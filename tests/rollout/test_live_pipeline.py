"""The whole loop through its public entry points: an app sends Responses (with latency and error) and
thumbs through the SDK, routed by the routing table; a streams worker writes them to ClickHouse; the
controller, told by a PROMOTE event, reads them and takes the canary to production by itself."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from evaluator.rollout.state import RolloutStatus
from prefloop import routing
from prefloop.sdk import SyncFeedbackClient
from prefloop.services.process import worker_ready_file
from rollout_helpers import REPO, finished, publish_promote, rollout_decisions, start_controller, wait_for
from schemas.records import PromotionDecision

# As the streams tests run their workers: short timeouts, no drift or trigger work.
STREAMS_ENV = {"ORPHAN_TTL_S": "15", "SWEEP_INTERVAL_S": "0.2", "SESSION_TIMEOUT_S": "6", "COMMIT_INTERVAL_S": "0.5",
               "SINK_BATCH_S": "0.3", "DRIFT_INTERVAL_S": "3600", "TRIGGER_CHECK_S": "3600"}


@pytest.fixture
def worker(rollout_env: dict[str, str], rollout_settings, tmp_path: Path):
    env = dict(rollout_env)
    env.update({f"PREFLOOP_STREAMS_{k}": v for k, v in STREAMS_ENV.items()})
    env["PREFLOOP_STREAMS_APP_ID"] = f"rollout-test-{uuid.uuid4().hex[:6]}"  # its own group: other tests' workers untouched
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefloop.cli", "worker"], cwd=str(REPO), env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        ready = worker_ready_file(rollout_settings, proc.pid)
        wait_for(lambda: ready.exists() or proc.poll() is not None, 120, "the streams worker")
        assert proc.poll() is None, log_path.read_text(errors="replace")
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


class App:
    """An app serving users by the routing table and reporting through the SDK (both versions are good)."""

    def __init__(self, settings, redis_client, users: int = 60, tick_s: float = 0.2, max_s: float = 120) -> None:
        self.client = SyncFeedbackClient(settings)
        self.redis, self.users, self.tick_s, self.max_s = redis_client, users, tick_s, max_s
        self.rng = random.Random(3)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.sent: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for tick in range(int(self.max_s / self.tick_s)):
                if self.stop.is_set():
                    return
                table = routing.read_table(self.redis)
                for i in range(self.users):
                    user = f"user-{tick}-{i}-{uuid.uuid4().hex[:4]}"
                    version = table.version_for(user, self.rng)
                    failed = self.rng.random() < 0.01
                    shown = self.client.response(prompt=f"How do I reset my password? ({i % 7})",
                                                 response="Open Settings, then Security, then Reset.",
                                                 model_version=version, user_id=user, latency_ms=self.rng.randint(200, 900),
                                                 error="timeout: upstream" if failed else None)
                    self.client.action(response_id=shown.response_id, user_id=user,
                                       kind="THUMBS_UP" if self.rng.random() < 0.8 else "THUMBS_DOWN")
                    self.sent[version] = self.sent.get(version, 0) + 1
                self.client.flush()
                self.stop.wait(self.tick_s)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> "App":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()


def test_sdk_feedback_through_a_streams_worker_takes_the_canary_to_production(
        rollout_settings, registry, worker, controllers, redis_client):
    start_controller(controllers, redis_client)
    publish_promote(rollout_settings, "v1.1")
    with App(rollout_settings, redis_client) as app:
        state = wait_for(lambda: finished(redis_client, "v1.1"), 120, "the rollout to finish")
    assert app.error is None
    assert state.rollout.status is RolloutStatus.COMPLETED, state.last_check
    events = rollout_decisions(rollout_settings, state.rollout.rollout_id)
    assert [e.decision for e in events] == [PromotionDecision.ADVANCE] * 3 + [PromotionDecision.COMPLETE]
    complete = events[-1]
    # The figures came through the worker: latencies and thumbs of both arms, no more responses than the app sent.
    assert 0 < complete.metrics["canary_responses"] <= app.sent["v1.1"]
    assert 200 <= complete.metrics["canary_p99_latency_ms"] <= 900
    assert complete.metrics["production_thumbs_up"] > 0 and complete.metrics["canary_thumbs_up"] > 0
    assert registry.production().version == "v1.1"
    assert routing.read_table(redis_client).production == "v1.1"
