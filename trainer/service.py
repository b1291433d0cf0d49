"""The trainer service: consume `training.requests`, run ONE job at a time, publish `training.results`.

Each request runs `python -m trainer.job` as a subprocess in its own process group, with a wall
clock limit (`job_timeout_s`). Exit 0 with a result file → the adapter is registered as a candidate
and SUCCEEDED is published with the new version and metrics. A crash, a kill (OOM killer: SIGKILL)
or a timeout → FAILED with the reason, no registry version; crashes and timeouts are retried with
exponential back-off (`job_retries`, `retry_backoff_s`), bad input (exit 2) is not. Whatever the
outcome, the trigger lock in Redis (`TRIGGER_LOCK`, set by the streams trigger when it asks for
a run) is released so the next trigger can fire.

`handle_request(req, settings, publish)` is the whole per-request logic and needs no Kafka;
`run_service(settings)` wraps it in an aiokafka consumer/producer loop. A request whose result is
already on disk (redelivery after a restart) republishes that result instead of training again.
Jobs run in their own session, so a service that is SIGKILLed leaves its job running: the restarted
service kills such an orphan (`stop_orphaned_jobs`) before anything else, so one request never has
two jobs at once; an attempt that finished (its result file is written last, atomically) is adopted
instead of trained again, and registered once even if the old service had registered it already.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import one_line
from prefloop.kafka_client import kafka_options
from prefloop.keys import TRIGGER_LOCK
from schemas import TrainingRequest, TrainingResult, TrainingStatus
from trainer.job import EXIT_BAD_INPUT
from trainer.registry import ModelRegistry
from trainer.settings import TrainerSettings, load_trainer_settings


Publish = Callable[[TrainingResult], Awaitable[None]]


@dataclass(frozen=True)
class JobOutcome:
    ok: bool
    retryable: bool
    reason: str
    result: dict[str, Any] | None = None
    seconds: float = 0.0


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:128] or "request"


def runs_root(settings: Any) -> Path:
    return Path(settings.home) / "runs"


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    meaningful = [line.strip() for line in text if line.strip()]
    return " | ".join(meaningful[-lines:])


async def run_job(
    req: TrainingRequest, attempt_dir: Path, settings: Any, trainer_settings: TrainerSettings, env: dict[str, str] | None = None
) -> JobOutcome:
    """Run one `trainer.job` subprocess for `req` in `attempt_dir`; never raises for a job failure."""
    import dataclasses

    attempt_dir.mkdir(parents=True, exist_ok=True)
    result_file = attempt_dir / "result.json"
    log_file = attempt_dir / "job.log"
    settings_file = attempt_dir / "trainer-settings.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(trainer_settings), indent=2) + "\n")
    argv = [sys.executable, "-m", "trainer.job", "--snapshot", req.snapshot_id, "--output", str(attempt_dir / "adapter"),
            "--result", str(result_file), "--home", str(settings.home), "--cache-dir", str(settings.cache_dir),
            "--trainer-settings", str(settings_file)]
    started = time.monotonic()
    with open(log_file, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    (attempt_dir / "job.pid").write_text(f"{proc.pid}\n")
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout=trainer_settings.job_timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    if timed_out:
        _kill_group(proc.pid)
        await proc.wait()
    seconds = time.monotonic() - started
    rc = proc.returncode
    if timed_out:
        return JobOutcome(False, True, f"training job exceeded job_timeout_s={trainer_settings.job_timeout_s:g}s and was killed", seconds=seconds)
    if rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return JobOutcome(False, True, f"training job was killed by {name}{hint} after {seconds:.0f}s", seconds=seconds)
    if rc != 0:
        tail = _log_tail(log_file) or "no output"
        retryable = rc != EXIT_BAD_INPUT
        return JobOutcome(False, retryable, f"training job exited with code {rc}: {tail}", seconds=seconds)
    try:
        result = json.loads(result_file.read_text())
    except (FileNotFoundError, ValueError) as exc:
        return JobOutcome(False, True, f"training job exited 0 but left no readable result ({type(exc).__name__})", seconds=seconds)
    return JobOutcome(True, False, "", result=result, seconds=seconds)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _job_of(pid: int, attempt_dir: Path) -> bool:
    """Whether `pid` is still the trainer job of `attempt_dir` (not a process that reused the PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"trainer.job" in argv and str(attempt_dir / "adapter").encode() in argv


ATTEMPT_PREFIX = "attempt-"


def attempt_path(request_dir: Path, number: int) -> Path:
    return request_dir / f"{ATTEMPT_PREFIX}{number}"


def attempts(request_dir: Path) -> list[tuple[int, Path]]:
    """The request's attempt directories with their numbers, oldest first."""
    found = [(d.name.removeprefix(ATTEMPT_PREFIX), d) for d in request_dir.glob(f"{ATTEMPT_PREFIX}*")]
    return sorted((int(n), d) for n, d in found if n.isdigit())


def stop_orphaned_jobs(request_dir: Path, wait_s: float = 30.0) -> int:
    """Kill the jobs a previous service process left running for this request (it died without reaping
    them) and return the number of the next, fresh attempt."""
    from prefloop.services.process import pid_alive

    previous = attempts(request_dir)
    for _, directory in previous:
        with contextlib.suppress(OSError, ValueError):
            pid = int((directory / "job.pid").read_text().strip())
            if _job_of(pid, directory):
                print(f"trainer: killing the job of {directory} (pid {pid}) left by a previous trainer process",
                      file=sys.stderr, flush=True)
                _kill_group(pid)
                deadline = time.monotonic() + wait_s
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
    return previous[-1][0] + 1 if previous else 1


def finished_attempt(request_dir: Path) -> dict[str, Any] | None:
    """The result of the newest attempt whose job completed (a previous service died before publishing it)."""
    for _, directory in reversed(attempts(request_dir)):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((directory / "result.json").read_text())
    return None


def release_trigger_lock(settings: Any, timeout_s: float = 1.0) -> bool:
    """Delete the trigger lock in Redis; False (with one warning line) when Redis is not reachable."""
    try:
        import redis

        client = redis.Redis.from_url(settings.redis_dsn, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            client.delete(TRIGGER_LOCK)
        finally:
            client.close()
        return True
    except Exception as exc:  # noqa: BLE001 - the result must still be published
        detail = one_line(exc, 160)
        print(f"prefloop trainer: warning: could not release {TRIGGER_LOCK} in Redis ({type(exc).__name__}: {detail})",
              file=sys.stderr)
        return False


async def handle_request(
    req: TrainingRequest,
    settings: Any,
    publish: Publish,
    *,
    trainer_settings: TrainerSettings | None = None,
    registry: ModelRegistry | None = None,
    release_lock: Callable[[], Any] | None = None,
    job_env: dict[str, str] | None = None,
) -> TrainingResult:
    """Run the job for one request (with retries), register a SUCCEEDED adapter, release the trigger
    lock, publish the result and return it."""
    trainer_settings = trainer_settings or load_trainer_settings(settings)
    if registry is None:
        from trainer.mirror import open_registry

        registry = open_registry(settings)
    request_dir = runs_root(settings) / _safe_name(req.event_id)
    done_file = request_dir / "result.json"
    try:
        if done_file.is_file():
            result = TrainingResult.from_json(json.loads(done_file.read_text()))
        else:
            result = await _train_with_retries(req, request_dir, settings, trainer_settings, registry, job_env)
            from trainer.fsutil import atomic_write_json

            atomic_write_json(done_file, _result_json(result))
    finally:
        await asyncio.to_thread(release_lock or (lambda: release_trigger_lock(settings)))
    await publish(result)
    return result


def _result_json(result: TrainingResult) -> dict[str, Any]:
    data = result.to_avro()
    data["metrics"] = {k: v for k, v in data["metrics"].items() if v == v}  # drop NaN
    return data


async def _train_with_retries(
    req: TrainingRequest, request_dir: Path, settings: Any, trainer_settings: TrainerSettings, registry: ModelRegistry,
    job_env: dict[str, str] | None,
) -> TrainingResult:
    reasons: list[str] = []
    first = await asyncio.to_thread(stop_orphaned_jobs, request_dir)
    adopted = finished_attempt(request_dir)
    if adopted is not None:
        print(f"trainer: {req.event_id}: adopting the finished attempt of a previous trainer process", file=sys.stderr, flush=True)
        return _register(req, JobOutcome(True, False, "", result=adopted), trainer_settings, registry)
    attempts = trainer_settings.job_retries + 1
    for tries, attempt in enumerate(range(first, first + attempts), start=1):
        outcome = await run_job(req, attempt_path(request_dir, attempt), settings, trainer_settings, job_env)
        if outcome.ok:
            return _register(req, outcome, trainer_settings, registry)
        reasons.append(f"attempt {attempt}: {outcome.reason}")
        if not outcome.retryable or tries == attempts:
            break
        await asyncio.sleep(trainer_settings.retry_backoff_s * 2 ** (tries - 1))
    return TrainingResult(
        request_id=req.event_id,
        status=TrainingStatus.FAILED,
        snapshot_id=req.snapshot_id,
        reason="; ".join(reasons)[:2000],
    )


def _register(req: TrainingRequest, outcome: JobOutcome, trainer_settings: TrainerSettings, registry: ModelRegistry) -> TrainingResult:
    result = outcome.result or {}
    metrics = {k: float(v) for k, v in result.get("metrics", {}).items() if v == v}
    versions = registry.versions()
    known = {v.version for v in versions}
    # Registered already by a service that died before publishing: the same adapter is the same version.
    record = next((v for v in versions if v.adapter_path == result["adapter_path"]), None) or registry.register_candidate(
        adapter_path=result["adapter_path"],
        base_model=result.get("base_model", trainer_settings.base_model),
        snapshot_id=result.get("snapshot_id", req.snapshot_id),
        metrics=metrics,
        parent_version=req.base_version if req.base_version in known else None,
    )
    return TrainingResult(
        request_id=req.event_id,
        status=TrainingStatus.SUCCEEDED,
        version=record.version,
        parent_version=record.parent_version,
        snapshot_id=record.snapshot_id,
        adapter_path=record.adapter_path,
        metrics=metrics,
    )


async def run_service(settings: Any, once: bool = False, stop: asyncio.Event | None = None) -> None:
    """Consume training.requests forever (or one request with `once`), one job at a time."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from prefloop import topics
    from prefloop.record_loop import one_at_a_time
    from schemas import encode
    from trainer.mirror import open_registry

    trainer_settings = load_trainer_settings(settings)
    registry = open_registry(settings)
    # A job may legitimately hold the consumer for job_timeout_s per attempt plus back-off.
    attempts = trainer_settings.job_retries + 1
    busy_s = trainer_settings.job_timeout_s * attempts + trainer_settings.retry_backoff_s * (2 ** attempts) + 300
    consumer = AIOKafkaConsumer(
        topics.TRAINING_REQUESTS,
        **kafka_options(settings),
        group_id=trainer_settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1,
        max_poll_interval_ms=int(busy_s * 1000),
    )
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await consumer.start()
    except BaseException:
        await producer.stop()
        raise

    async def publish(result: TrainingResult) -> None:
        await producer.send_and_wait(topics.TRAINING_RESULTS, encode(result), key=result.request_id.encode())

    print(f"prefloop trainer: consuming {topics.TRAINING_REQUESTS} at {settings.bootstrap_servers}", file=sys.stderr, flush=True)
    async def handle(req: TrainingRequest) -> None:
        print(f"prefloop trainer: request {req.event_id} (snapshot {req.snapshot_id}, {req.reason.value})",
              file=sys.stderr, flush=True)
        result = await handle_request(req, settings, publish, trainer_settings=trainer_settings, registry=registry)
        print(f"prefloop trainer: request {req.event_id} {result.status.value} {result.version or result.reason}",
              file=sys.stderr, flush=True)

    def skipped(offset: int, exc: Exception) -> None:
        print(f"prefloop trainer: skipped an undecodable request at offset {offset}: {exc}", file=sys.stderr)

    keeper = asyncio.create_task(keep_routing(settings, registry))
    try:
        await one_at_a_time(consumer, TrainingRequest, handle, skipped, once, stop)
    finally:
        keeper.cancel()
        await consumer.stop()
        await producer.stop()


ROUTING_CHECK_S = 5.0  # how often the service re-asserts the routing table's production version


async def keep_routing(settings: Any, registry: ModelRegistry) -> None:
    """The registry is the source of truth for the production version; the routing table in Redis is
    its copy, which a restarted Redis may have lost the last write to. Re-assert it, between jobs and
    during them (a job runs in a subprocess)."""
    from trainer.mirror import reconcile_routing

    while True:
        written = await asyncio.to_thread(reconcile_routing, settings, registry)
        if written:
            print(f"prefloop trainer: routing table production was not {written}; set it again", file=sys.stderr, flush=True)
        await asyncio.sleep(ROUTING_CHECK_S)
