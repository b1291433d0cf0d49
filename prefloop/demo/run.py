"""`prefloop demo`: the whole loop in one command, on the embedded default.

Steps, each printed with the time since the start (a failing step is named, with why, and the
services are left for `prefloop down`):

1. services  – `prefloop up` with the demo's settings overlay (demo/settings.py): Kafka, Redis, chDB,
               a streams worker, the collector, trainer, evaluator, gateway, rollout controller, web app.
2. collect   – simulated users ask through the gateway and give feedback until the trigger fires.
3. train     – the trainer's DPO micro-batch on the new pairs (traffic pauses: two CPU cores train).
4. evaluate  – the evaluator's PROMOTE or REJECT on held-out pairs.
5. rollout   – traffic again; the controller's canary stages until COMPLETE (or ROLLBACK).
6. compare   – A/B traffic between the old and the new version.
7. summary   – live figures next to the simulator's ground truth, summary.json and the HTML report.

The demo reacts to the system's own events on the contract topics (demo/watch.py) and reads the
figures from the analytics tables, as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from prefloop.demo.settings import DemoSettings, service_overlay
from prefloop.demo.summary import DemoSummary, StepRecord, live_figures, print_summary, truth_figures
from prefloop.demo.watch import ContractWatcher, StepFailed
from prefloop.errors import PrefloopError
from prefloop.settings import Settings, load_settings
from prefloop.simulator.ground_truth import GroundTruth
from schemas import PromotionDecision, PromotionEvent, TrainingRequest, TrainingResult, TrainingStatus


class DemoError(PrefloopError):
    """A step of the demo failed; the message names it."""


class Clock:
    def __init__(self, out: IO[str]) -> None:
        self.t0 = time.monotonic()
        self.out = out

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, step: str, text: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        self.out.write(f"[{minutes:2d}:{seconds:02d}] {step:<9} {text}\n")
        self.out.flush()


def apply_overlay(ds: DemoSettings) -> dict[str, str]:
    """Put the demo's service settings into this process's environment (what `prefloop up` hands the
    services); a PREFLOOP_* variable the user set wins. Returns what was applied."""
    applied = {}
    for key, value in service_overlay(ds).items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied


def check_fresh_home(settings: Settings) -> None:
    from trainer.registry import ModelRegistry

    trained = [v.version for v in ModelRegistry(settings.home).versions() if v.adapter_path]
    if trained:
        raise DemoError(f"the home {settings.home} already holds trained versions ({', '.join(trained)}): the demo tells "
                        "its story from a fresh start; run `prefloop down --purge` first, or set PREFLOOP_HOME to a new directory")


class Traffic:
    """The simulated users, started and stopped around the steps; one ground truth across all of them."""

    def __init__(self, settings: Settings, ds: DemoSettings, feedback) -> None:
        from prefloop.simulator.traffic import GatewayBackend

        self.settings = settings
        self.ds = ds
        self.feedback = feedback
        self.backend = GatewayBackend(settings.serve_url, max_tokens=ds.max_tokens)
        self.truth = GroundTruth()
        self.answers = 0
        self.failed = 0
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._runs = 0

    def start(self, ab_versions: tuple[str, str] | None = None, duration_s: float = 24 * 3600.0) -> None:
        from prefloop.simulator.traffic import FeedbackMix, Simulation, SimulationConfig

        self._runs += 1
        # Comparing two pinned versions: every request is an A/B choice between them.
        mix = FeedbackMix(thumbs=0.85 - self.ds.edit_share, rating=0.1, edit=self.ds.edit_share, accept=0.05,
                          ab_choice=1.0 if ab_versions else self.ds.choice_share)
        config = SimulationConfig(users=self.ds.users, rate=self.ds.rate, duration_s=duration_s,
                                  seed=self.ds.seed * 1000 + self._runs, concurrency=self.ds.concurrency,
                                  mix=mix, ab_versions=ab_versions)
        self._stop = asyncio.Event()
        self._simulation = Simulation(config, self.backend, self.feedback, truth=self.truth)
        self._task = asyncio.create_task(self._simulation.run(self._stop))

    @property
    def report(self):
        return self._simulation.report

    async def finish(self) -> None:
        """Wait for a run started with a duration to end by itself."""
        if self._task is not None:
            await asyncio.shield(self._task)
        await self.stop()

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        report = await self._task
        self.answers += report.answers
        self.failed += report.failed
        self._task = None

    async def close(self) -> None:
        await self.stop()
        await self.backend.close()


def pairs_so_far(settings: Settings) -> int:
    import redis

    from prefloop import keys

    client = redis.Redis.from_url(settings.redis_dsn, socket_timeout=2)
    try:
        return int(client.get(keys.PAIRS_TOTAL) or 0)
    finally:
        client.close()


def training_progress(settings: Settings, request_id: str) -> str:
    """The last progress line of the training job's log, if it wrote one yet."""
    from trainer.service import runs_root

    logs = sorted(runs_root(settings).glob(f"*/attempt-*/job.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    lines = [line.strip() for line in logs[-1].read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


async def run_demo(settings: Settings, ds: DemoSettings, out: IO[str] = sys.stdout,
                   summary: DemoSummary | None = None) -> DemoSummary:
    """Run every step, filling `summary` as they finish (a caller keeps what was done when one fails)."""
    from prefloop.analytics.store import connect
    from prefloop.sdk import FeedbackClient
    from prefloop.services.supervisor import down, up

    clock = Clock(out)
    summary = summary if summary is not None else DemoSummary()
    step_started = 0.0

    def record(name: str, detail: str) -> None:
        nonlocal step_started
        summary.steps.append(StepRecord(name, step_started, clock.elapsed() - step_started, detail))
        clock.say(name, detail)
        step_started = clock.elapsed()

    # 1. services
    try:
        check_fresh_home(settings)
    except DemoError as exc:
        raise DemoError(f"services: {exc}") from None
    applied = apply_overlay(ds)
    clock.say("services", f"starting prefloop in {settings.home} with the demo's settings ({len(applied)} overlaid; "
                          "docs/demo.md lists them)")
    with open(os.devnull, "w") as quiet:
        await asyncio.to_thread(down, settings, False, quiet)  # running services restart with the demo's settings
    try:
        await asyncio.to_thread(up, settings, None, out)
        await wait_gateway_ready(settings, clock)
    except PrefloopError as exc:
        raise DemoError(f"services: {exc}") from None
    record("services", "up: " + settings.serve_url + " (gateway), http://" + f"{settings.web_host}:{settings.web_port}" + " (web app)")

    watcher = ContractWatcher(settings)
    await watcher.start()
    store = connect(settings)
    async with FeedbackClient(settings) as feedback:
        traffic = Traffic(settings, ds, feedback)
        try:
            await _loop(settings, ds, clock, summary, record, watcher, traffic, store)
        finally:
            await traffic.close()
            await watcher.stop()
            summary.ground_truth = truth_figures(traffic.truth, summary.baseline_version or "v1.0",
                                                 summary.candidate_version or "v1.1")
    summary.seconds = clock.elapsed()
    store.close()
    return summary


async def wait_gateway_ready(settings: Settings, clock: Clock, timeout_s: float = 900.0) -> None:
    """The gateway answers 503 until its model is loaded (a first SmolLM2 conversion takes a minute or two)."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    last_note = 0.0
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{settings.serve_url}/v1/models", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                    if answer.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the gateway at {settings.serve_url} did not load its model within {timeout_s:.0f}s; "
                                "see .prefloop/logs/gateway.log")
            if time.monotonic() - last_note > 20:
                last_note = time.monotonic()
                clock.say("services", "waiting for the gateway to load its model…")
            await asyncio.sleep(1)


async def _loop(settings, ds, clock, summary, record, watcher, traffic, store) -> None:
    try:
        await _steps(settings, ds, clock, summary, record, watcher, traffic, store)
    except StepFailed as exc:
        raise DemoError(f"{_current(summary)}: {exc}") from None


def _current(summary: DemoSummary) -> str:
    """The step under way: the one after the last finished."""
    order = ["services", "collect", "train", "evaluate", "rollout", "compare", "summary"]
    done = [s.name for s in summary.steps]
    return next((name for name in order if name not in done), "summary")


async def _steps(settings, ds, clock, summary, record, watcher, traffic, store) -> None:
    # 2. collect
    traffic.start()
    base = pairs_so_far(settings)

    def collect_tick(elapsed: float) -> None:
        if int(elapsed) % 15 < 5:
            rep = traffic.report
            clock.say("collect", f"{pairs_so_far(settings) - base}/{ds.trigger_pairs} new pairs, {rep.answers} answers, "
                                 f"{sum(rep.actions.values())} actions, {rep.failed} failed requests")

    request: TrainingRequest = await watcher.wait_for(
        lambda r: r if isinstance(r, TrainingRequest) else None, ds.collect_timeout_s, "training request", collect_tick)
    summary.trigger_reason = request.reason.value
    summary.trigger_pairs = int(request.pair_count)
    await traffic.stop()
    record("collect", f"trigger fired: {request.reason.value} with {request.pair_count} new pairs "
                      f"(snapshot {request.snapshot_id}); traffic paused while two CPU cores train")

    # 3. train
    def train_tick(elapsed: float) -> None:
        if int(elapsed) % 20 < 5:
            clock.say("train", training_progress(settings, request.event_id) or "loading the base model…")

    result: TrainingResult = await watcher.wait_for(
        lambda r: r if isinstance(r, TrainingResult) and r.request_id == request.event_id else None,
        ds.train_timeout_s, "training result", train_tick)
    if result.status is not TrainingStatus.SUCCEEDED:
        raise StepFailed(f"the training job failed: {result.reason}")
    summary.candidate_version, summary.baseline_version = result.version or "", result.parent_version or "v1.0"
    summary.training = dict(result.metrics)
    record("train", f"{result.version} trained in {result.metrics.get('seconds', 0):.0f}s, held-out reward accuracy "
                    f"{result.metrics.get('heldout_reward_accuracy', float('nan')):.2f}")

    # 4. evaluate
    verdict: PromotionEvent = await watcher.wait_for(
        lambda r: r if isinstance(r, PromotionEvent) and r.candidate_version == result.version
        and r.decision in (PromotionDecision.PROMOTE, PromotionDecision.REJECT) else None,
        ds.evaluate_timeout_s, "evaluator decision", lambda e: clock.say("evaluate", "scoring held-out pairs…") if int(e) % 30 < 5 else None)
    summary.evaluation = {"decision": verdict.decision.value, "reason": verdict.reason, **dict(verdict.metrics)}
    record("evaluate", f"{verdict.decision.value}: {verdict.reason}")
    old, new = summary.baseline_version, summary.candidate_version
    if verdict.decision is PromotionDecision.REJECT:
        summary.outcome = "rejected by the gate"
    else:
        # 5. rollout
        traffic.start()

        def on_rollout(r: Any) -> PromotionEvent | None:
            if isinstance(r, PromotionEvent) and r.candidate_version == new and r.decision in (
                    PromotionDecision.ADVANCE, PromotionDecision.ROLLBACK, PromotionDecision.COMPLETE):
                decision = {"decision": r.decision.value, "traffic_fraction": r.traffic_fraction, "reason": r.reason}
                if decision not in summary.rollout["decisions"]:
                    summary.rollout["decisions"].append(decision)
                    if r.decision is PromotionDecision.ADVANCE:  # the final decision is the step's own line
                        clock.say("rollout", f"ADVANCE → {r.traffic_fraction:.0%} of users: {r.reason[:100]}")
                return r if r.decision is not PromotionDecision.ADVANCE else None
            return None

        final: PromotionEvent = await watcher.wait_for(on_rollout, ds.rollout_timeout_s, "rollout COMPLETE or ROLLBACK",
                                                       lambda e: None)
        await traffic.stop()
        summary.rollout["final"] = final.decision.value
        summary.outcome = "promoted: the new version is production" if final.decision is PromotionDecision.COMPLETE \
            else "rolled back: production unchanged"
        record("rollout", f"{final.decision.value}: {final.reason[:120]}")

    # 6. compare (a rejected version is not served, pinned or not)
    if verdict.decision is PromotionDecision.PROMOTE:
        traffic.start(ab_versions=(old, new), duration_s=ds.compare_s)
        await traffic.finish()
        record("compare", f"{ds.compare_s:.0f}s of A/B choices between {old} and {new}")

    # 7. summary (give the sink a moment to write the last actions)
    await asyncio.sleep(3)
    summary.pairs_by_source = {source: int(n) for source, n in store.query(
        "SELECT source, count() FROM preference_pairs FINAL GROUP BY source ORDER BY source").rows}
    summary.live = live_figures(store, old, new)
    summary.report_path = str(await asyncio.to_thread(write_report, settings))
    record("summary", f"report written: {summary.report_path}")


def write_report(settings: Settings) -> Path:
    from prefloop.web.report import write_report as write_html
    from prefloop.web.settings import WebSettings

    return write_html(settings, settings.section(WebSettings), 24 * 3600.0, settings.home / "demo" / "report.html")


def main(settings: Settings | None = None, ds: DemoSettings | None = None, out: IO[str] = sys.stdout) -> int:
    settings = settings or load_settings()
    ds = ds or settings.section(DemoSettings)
    summary_path = settings.home / "demo" / "summary.json"
    summary = DemoSummary()
    try:
        asyncio.run(run_demo(settings, ds, out, summary))
    except KeyboardInterrupt:
        out.write(f"prefloop demo: interrupted during {_current(summary)}; the services keep running "
                  "(`prefloop down` stops them)\n")
        return 130
    except PrefloopError as exc:
        summary.outcome = f"failed at {_current(summary)}"
        summary.write(summary_path)
        out.write(f"prefloop demo: step {exc}\n  the services keep running (`prefloop status`; `prefloop down` "
                  f"stops them); partial summary: {summary_path}\n")
        return 1
    summary.write(summary_path)
    print_summary(summary, out)
    out.write(f"  summary.json   {summary_path}\n")
    return 0
