"""`prefloop bench streams`: events/s through the streams pipeline and action-to-pair latency,
next to a raw aiokafka consume->produce passthrough of the same events in the same run.

The pipeline reads and writes the contract topics, Redis keys and analytics tables, so the
bench never runs on the services `prefloop up` started (it would mix bench pairs into real
ones). It starts its own Kafka, Redis and chDB analytics service on free loopback ports in a
temporary home, by the same code as `prefloop up`, and stops them at the end.

1. Preload N mixed events (responses, then EDIT/CHOICE/THUMBS/RATING/ACCEPT actions and some
   re-deliveries) into feedback.responses / feedback.actions.
2. Passthrough: one aiokafka consumer (group, both topics) produces every event unchanged to
   a scratch topic; clock from the first record to the last ack.
3. Pipeline: start `--workers` `prefloop worker` processes; clock from the moment they are
   ready until every expected pair is on feedback.pairs and every input offset is committed.
4. Latency: a paced run at `--latency-rate` events/s; latency = the pair record's Kafka
   timestamp minus its action's produce time (`created_at`), p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from prefloop import topics
from prefloop.kafka_admin import create_topics
from prefloop.kafka_client import kafka_options
from prefloop.services.process import ManagedProcess, worker_ready_file
from prefloop.settings import Settings, TopicSpec
from schemas import AvroRecord, Response, decode, encode
from streams.settings import StreamsSettings
from streams.workload import EVENTS_PER_GROUP, Workload, mixed

PASSTHROUGH_TOPIC = "bench.passthrough"


# --- workload ------------------------------------------------------------------------------------------
def workload(events: int, tag: str) -> Workload:
    """About `events` events: prompt groups of 12 (streams/workload.py), each with one record re-delivered."""
    return mixed(tag, max(1, events // (EVENTS_PER_GROUP + 1)), duplicate_every=EVENTS_PER_GROUP)


def wire_items(records: list[AvroRecord]) -> list[tuple[str, bytes, bytes]]:
    out = []
    for r in records:
        if isinstance(r, Response):
            out.append((topics.RESPONSES, r.prompt_id.encode(), encode(r)))
        else:
            out.append((topics.ACTIONS, r.response_id.encode(), encode(r)))  # type: ignore[attr-defined]
    return out


# --- Kafka helpers ---------------------------------------------------------------------------------------
async def produce(settings: Settings, items: list[tuple[str, bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=5, acks="all",
                                max_batch_size=512 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = [await producer.send(t, value=v, key=k) for t, k, v in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def passthrough(settings: Settings, n: int, time_limit_s: float) -> tuple[int, float]:
    """Consume n events from the input topics and produce each unchanged; (events, seconds)."""
    consumer = AIOKafkaConsumer(topics.RESPONSES, topics.ACTIONS, **kafka_options(settings),
                                group_id=f"bench-passthrough-{os.getpid()}", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=2000)
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=5, acks="all",
                                max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    try:
        done, t0, pending = 0, None, []
        deadline = time.monotonic() + time_limit_s
        while done < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    pending.append(await producer.send(PASSTHROUGH_TOPIC, value=r.value, key=r.key))
                done += len(records)
            if len(pending) > 20000:
                await asyncio.gather(*pending)
                pending.clear()
            await consumer.commit()
        await asyncio.gather(*pending)
        return done, time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


class Progress:
    """The pipeline's progress as the bench polls it: pairs on feedback.pairs and uncommitted input.

    One pair of long-lived clients for the whole wait: a poll costs two requests, not a client
    start (connections, metadata) that would take CPU from the pipeline being measured.
    """

    def __init__(self, settings: Settings, group: str) -> None:
        self.offsets = AIOKafkaConsumer(**kafka_options(settings), group_id=None)
        self.commits = AIOKafkaConsumer(**kafka_options(settings), group_id=group,
                                        enable_auto_commit=False)
        self.pairs_tps = [TopicPartition(topics.PAIRS, p) for p in range(settings.pairs_partitions)]
        self.input_tps = [TopicPartition(topics.RESPONSES, p) for p in range(settings.responses_partitions)]
        self.input_tps += [TopicPartition(topics.ACTIONS, p) for p in range(settings.actions_partitions)]

    async def __aenter__(self) -> "Progress":
        await self.offsets.start()
        await self.commits.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.offsets.stop()
        await self.commits.stop()

    async def pairs(self) -> int:
        return sum((await self.offsets.end_offsets(self.pairs_tps)).values())

    async def uncommitted(self) -> int:
        """Events of the input topics not yet committed by the pipeline's consumer group."""
        ends = await self.offsets.end_offsets(self.input_tps)
        lag = 0
        for tp in self.input_tps:
            lag += ends[tp] - (await self.commits.committed(tp) or 0)
        return lag


async def wait_for(settings: Settings, group: str, pairs: int, complete: bool, time_limit_s: float) -> tuple[int, int]:
    """Poll until `pairs` pairs are published (and, when `complete`, all input is committed) or
    the time limit passes; returns (pairs published, uncommitted input events; -1 if not polled)."""
    deadline = time.monotonic() + time_limit_s
    published = lag = -1
    async with Progress(settings, group) as progress:
        while time.monotonic() < deadline:
            published = await progress.pairs()
            if published >= pairs:
                if not complete:
                    break
                lag = await progress.uncommitted()
                if lag == 0:
                    break
            await asyncio.sleep(0.1)
    return published, lag


async def pair_latencies(settings: Settings, tag: str) -> list[float]:
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topics.PAIRS, p) for p in range(settings.pairs_partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out = []
        while await _any_behind(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batch.values():
                for r in records:
                    pair = decode(r.value)
                    if tag in pair.prompt:  # type: ignore[attr-defined]
                        out.append(r.timestamp - pair.created_at)  # type: ignore[attr-defined]
        return out
    finally:
        await consumer.stop()


async def _any_behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


# --- workers ---------------------------------------------------------------------------------------------
def start_workers(settings: Settings, count: int, env_extra: dict[str, str]) -> list[subprocess.Popen]:
    from prefloop.services.supervisor import service_env

    env = service_env(settings)
    env.update(env_extra)
    logs = settings.log_dir
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(count):
        with open(logs / f"bench-worker-{i}.log", "wb") as out:
            # PREFLOOP_BENCH_PROFILE=DIR profiles each worker with cProfile (DIR/worker-N.prof).
            profile = os.environ.get("PREFLOOP_BENCH_PROFILE")
            cmd = [sys.executable, "-m", "prefloop.cli", "worker"]
            if profile:
                cmd = [sys.executable, "-m", "cProfile", "-o", str(Path(profile) / f"worker-{i}.prof"), "-m", "prefloop.cli",
                       "worker"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    return procs


def wait_ready(settings: Settings, procs: list[subprocess.Popen], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        ready = worker_ready_file(settings, proc.pid)
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streams worker {proc.pid} did not start; see {settings.log_dir}")
            time.sleep(0.05)


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def service_pids(settings: Settings) -> dict[str, int]:
    pids = {}
    for name in ("kafka", "redis", "analytics"):
        pid = ManagedProcess.of(settings, name).pid()
        if pid is not None:
            pids[name] = pid
    return pids


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- the bench ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    from prefloop.services.process import isolated_settings
    from prefloop.services.supervisor import down, up

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="prefloop-bench-streams-"))
    settings = isolated_settings(home, start_timeout_s=120)
    ss = StreamsSettings()
    say = print if not args.quiet else (lambda *a, **k: None)
    say(f"starting Kafka, Redis and the analytics service in {home} ...")
    with open(os.devnull, "w") as quiet:
        up(settings, only=["kafka", "redis", "analytics"], out=quiet)
    procs: list[subprocess.Popen] = []
    result: dict[str, Any] = {"events": 0, "workers": args.workers}
    try:
        w = workload(args.events, "bench")
        expected = len(w.expected_pairs(ss))
        items = wire_items(w.records())
        n = len(items)
        result["events"] = n
        result["expected_pairs"] = expected
        asyncio.run(create_topics(settings, [TopicSpec(PASSTHROUGH_TOPIC, settings.pairs_partitions)]))
        secs = asyncio.run(produce(settings, items))
        say(f"preloaded {n} events ({expected} pairs expected) in {secs:.1f}s")

        done, secs = asyncio.run(passthrough(settings, n, args.time_limit))
        result["passthrough_eps"] = done / secs if secs else float("nan")
        say(f"passthrough: {done} events in {secs:.2f}s = {result['passthrough_eps']:,.0f} events/s")

        env = {"PREFLOOP_STREAMS_STATS_INTERVAL_S": "5", "PREFLOOP_STREAMS_TRIGGER_CHECK_S": "3600",
               "PREFLOOP_STREAMS_DRIFT_INTERVAL_S": "3600"}
        procs = start_workers(settings, args.workers, env)
        wait_ready(settings, procs, 120)
        watched = {**service_pids(settings), **{f"worker{i}": p.pid for i, p in enumerate(procs)}}
        cpu0 = {name: cpu_seconds(pid) for name, pid in watched.items()}
        t0 = time.perf_counter()
        pairs, lag = asyncio.run(wait_for(settings, ss.app_id, expected, True, args.time_limit))
        secs = time.perf_counter() - t0
        result["cpu_share"] = {name: round((cpu_seconds(pid) - cpu0[name]) / secs, 2) for name, pid in watched.items()}
        result["pipeline_eps"] = n / secs
        result["pairs"] = pairs
        result["complete"] = pairs == expected and lag == 0
        say(f"pipeline: {n} events in {secs:.2f}s = {result['pipeline_eps']:,.0f} events/s "
            f"({pairs} pairs{'' if result['complete'] else ', INCOMPLETE'})")
        say("  CPU cores busy during the run: " + ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_share"].items()))

        # Paced run for latency.
        lw = workload(int(args.latency_rate * args.latency_seconds), "lat")
        litems = wire_items(lw.records())
        asyncio.run(paced(settings, litems, args.latency_rate))
        target = expected + len(lw.expected_pairs(ss))
        asyncio.run(wait_for(settings, ss.app_id, target, False, args.time_limit))
        latencies = asyncio.run(pair_latencies(settings, "[lat]"))
        result["latency_p50_ms"] = percentile(latencies, 0.50)
        result["latency_p99_ms"] = percentile(latencies, 0.99)
        result["latency_pairs"] = len(latencies)
        say(f"latency at {args.latency_rate:,.0f} events/s: action->pair p50 {result['latency_p50_ms']:.0f} ms, "
            f"p99 {result['latency_p99_ms']:.0f} ms over {len(latencies)} pairs")
        result["ratio"] = result["pipeline_eps"] / result["passthrough_eps"]
        say(f"ratio pipeline/passthrough: {result['ratio']:.2f} (target >= 0.5; and >= 10,000 events/s per worker: "
            f"{result['pipeline_eps'] / args.workers:,.0f})")
        return result
    finally:
        stop_workers(procs)
        with open(os.devnull, "w") as quiet:
            down(settings, out=quiet)
        if not args.keep and not args.home:
            shutil.rmtree(home, ignore_errors=True)


async def paced(settings: Settings, items: list[tuple[str, bytes, bytes]], rate: float) -> None:
    """Produce at `rate` events/s; each action's occurred_at (the pair's created_at) is its send time."""
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=1, acks="all")
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = []
        for i, (topic, key, value) in enumerate(items):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if topic == topics.ACTIONS:
                action = decode(value)
                action.occurred_at = int(time.time() * 1000)  # type: ignore[attr-defined]
                value = encode(action)
            futures.append(await producer.send(topic, value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def handle(args: argparse.Namespace) -> int:
    # A SIGTERM (e.g. from `timeout`) unwinds through run()'s cleanup: workers and services stop.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if result.get("complete") else 1


def add_bench_command(bench_subparsers: Any) -> argparse.ArgumentParser:
    parser = bench_subparsers.add_parser(
        "streams", help="events/s and action-to-pair latency of the streams pipeline vs a raw Kafka passthrough",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="mixed events to push (default 100000)")
    parser.add_argument("--workers", type=int, default=1, help="streams worker processes (default 1)")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="events/s of the latency run (default 1000)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency run (default 10)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="give up a phase after this many seconds")
    parser.add_argument("--home", default="", help="keep the bench's services and data here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="do not delete the temporary home")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(handler=handle)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefloop bench")
    add_bench_command(parser.add_subparsers(dest="bench"))
    args = parser.parse_args(["streams", *(argv if argv is not None else sys.argv[1:])])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
