"""Helpers of the rollout tests: controller processes, live traffic that follows the routing table, and
reading the decisions back from models.promotions, the rollout record and the registry."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefloop import keys, routing, topics
from kafka_testing import read_range
from schemas import encode
from evaluator.rollout.state import RolloutState
from schemas.records import Action, ActionKind, PromotionDecision, PromotionEvent, Response
from prefloop.analytics.columns import COLUMNS
from streams.sinks import rows

REPO = Path(__file__).resolve().parents[2]

# Stages in seconds, checks twice a second, a lease that lapses in 3 s: with `Traffic`'s 300 responses a
# second, a rollout takes ~10 s. 50 canary responses a stage let a clearly bad canary be caught in stage 1.
FAST_ROLLOUT = {
    "STAGES": "0.05:2s,0.2:2s,0.5:2s,1.0",
    "MIN_EVENTS": "50",
    "MIN_FEEDBACK": "25",
    "CHECK_INTERVAL_S": "0.5",
    "MAX_STAGE_S": "30",
    "LEASE_TTL_S": "3",
    "POLL_S": "0.2",
    "COMMAND_TIMEOUT_S": "20",
}


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


@dataclass
class ControllerProcess:
    """A `prefloop rollout run` subprocess, stopped by PID."""

    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for(lambda: "watching models.promotions" in self.log() or self.proc.poll() is not None, timeout_s,
                 "the controller to start")
        assert self.proc.poll() is None, f"controller exited with {self.proc.returncode}:\n{self.log()}"

    def kill(self) -> None:
        """SIGKILL: no clean-up, the lease stays until it lapses."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode


@dataclass
class Controllers:
    env: dict[str, str]
    log_dir: Path
    started: list[ControllerProcess] = field(default_factory=list)

    def start(self, **rollout_overrides: Any) -> ControllerProcess:
        env = dict(self.env)
        for name, value in rollout_overrides.items():
            env[f"PREFLOOP_ROLLOUT_{name.upper()}"] = str(value)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"controller-{len(self.started)}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "prefloop.cli", "rollout", "run"], cwd=str(REPO), env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        controller = ControllerProcess(proc, log_path)
        self.started.append(controller)
        return controller

    def stop_all(self) -> None:
        for controller in self.started:
            controller.stop()


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=timeout)


def publish_promote(settings: Any, candidate: str, baseline: str = "v1.0") -> PromotionEvent:
    """What the evaluator publishes when a candidate passes its gate."""
    from aiokafka import AIOKafkaProducer

    event = PromotionEvent(candidate_version=candidate, baseline_version=baseline, decision=PromotionDecision.PROMOTE,
                           metrics={"win_rate": 0.61}, reason="held-out win rate above the gate")

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topics.PROMOTIONS, encode(event), key=candidate.encode())
        finally:
            await producer.stop()

    asyncio.run(send())
    return event


def promotion_events(settings: Any) -> list[PromotionEvent]:
    """Every event on models.promotions, in order."""

    consumed = asyncio.run(read_range(settings.bootstrap_servers, topics.PROMOTIONS, {}))
    return [c.record() for c in consumed]  # type: ignore[misc]


def rollout_decisions(settings: Any, rollout_id: str) -> list[PromotionEvent]:
    """The controller's events of one rollout, in publishing order (duplicates kept)."""
    return [e for e in promotion_events(settings) if e.event_id.startswith(f"rollout-{rollout_id}-")]


def reset_rollout_keys(redis_client: Any) -> None:
    redis_client.delete(keys.ROLLOUT_STATE, keys.ROLLOUT_LEASE, keys.ROLLOUT_PAUSED, keys.ROLLOUT_COMMANDS,
                        keys.ROUTING)


@dataclass(frozen=True)
class Profile:
    """How users experience one version."""

    thumbs_up_rate: float = 0.8
    error_rate: float = 0.01
    crash_rate: float = 0.0
    latency_ms: int = 300


GOOD = Profile(thumbs_up_rate=0.8, error_rate=0.01)


def state_of(redis_client: Any) -> RolloutState:
    return RolloutState.from_json(redis_client.get(keys.ROLLOUT_STATE))


def finished(redis_client: Any, candidate: str) -> RolloutState | None:
    """The record once `candidate`'s rollout is over and its last decision carried out, else None."""
    state = state_of(redis_client)
    r = state.rollout
    if r is not None and r.candidate == candidate and not r.running and state.pending is None:
        return state
    return None


def start_controller(controllers: Controllers, redis_client: Any, **overrides: Any) -> ControllerProcess:
    controller = controllers.start(**overrides)
    controller.wait_ready()
    # Positioned on models.promotions once the record holds its offsets: a PROMOTE sent now is seen.
    wait_for(lambda: state_of(redis_client).offsets, 30, "the controller to take the lease and its offsets")
    return controller


class Traffic:
    """Live traffic written straight into the analytics tables, routed by the Redis routing table.

    Every `tick_s`, `users` new users are each routed to their version (`RoutingTable.version_for`, the
    gateway's rule), get a response with the version's error and latency profile, and judge it with a
    thumb. Rows are what a streams worker writes for those events (`streams.sinks.rows`). Bounded by
    `max_s`; stopped by the test.
    """

    def __init__(self, store: Any, redis_client: Any, profiles: dict[str, Profile], users: int = 60,
                 tick_s: float = 0.2, max_s: float = 120, seed: int = 0) -> None:
        self.store, self.redis = store, redis_client
        self.profiles = profiles
        self.users, self.tick_s, self.max_s = users, tick_s, max_s
        self.rng = random.Random(seed)
        self.tag = uuid.uuid4().hex[:8]
        self.sent: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        tick = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._tick(tick)
                tick += 1
                self._stop.wait(self.tick_s)
        except BaseException as exc:  # surfaced by the test through `error`
            self.error = exc

    def _tick(self, tick: int) -> None:
        table = routing.read_table(self.redis)
        if table is None:
            return
        responses, facts = [], []
        for i in range(self.users):
            user = f"{self.tag}-{tick}-{i}"
            version = table.version_for(user, self.rng)
            profile = self.profiles.get(version, Profile())
            roll = self.rng.random()
            error = ("crash: worker died" if roll < profile.crash_rate else
                     "timeout: upstream" if roll < profile.crash_rate + profile.error_rate else None)
            resp = Response(response_id=f"r-{user}", prompt=f"question {i}", response="an answer",
                            model_version=version, user_id=user, latency_ms=profile.latency_ms, error=error)
            responses.append(rows.response_event(resp, 0, 0))
            kind = ActionKind.THUMBS_UP if self.rng.random() < profile.thumbs_up_rate else ActionKind.THUMBS_DOWN
            action = Action(response_id=resp.response_id, kind=kind, user_id=user)
            facts.append(rows.action_fact(action, resp.prompt_id, version, "", None, len(resp.prompt),
                                          len(resp.response)))
            self.sent[version] = self.sent.get(version, 0) + 1
        self.store.insert_json("feedback_events", COLUMNS["feedback_events"],
                               b"".join(rows.row_json(r) + b"\n" for r in responses), fmt="JSONCompactEachRow")
        self.store.insert_json("action_facts", COLUMNS["action_facts"],
                               b"".join(rows.row_json(r) + b"\n" for r in facts), fmt="JSONCompactEachRow")
