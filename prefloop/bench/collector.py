"""`prefloop bench collector`: events/s through the HTTP collector, measured with wrk, next to the SDK.

One run, against the running Kafka (`load_settings().bootstrap_servers`), into two topics of
its own (`bench.collector.<pid>.responses|actions`, created with the contract's partition
counts and deleted at the end):

- collector: a collector process (`python -m prefloop.collector`, what `prefloop up` runs)
  serving those topics on a free loopback port with one API key of the bench's (checked on
  every request, as in production), loaded by Debian's `wrk` (installed on first use) with
  POST /v1/events bodies of `--batch` events on `--connections` connections. Every
  answer is a 202 only after Kafka acknowledged the whole batch; the bench checks afterwards
  that the topics hold every event the collector accepted.
- SDK: `FeedbackClient.response()/action()` in this process, the same event mix, then flush.

The two sides alternate for `--rounds` rounds (each side's median round is reported), since the
machine's other load changes from minute to minute; each round is bounded by `--duration`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from prefloop.arguments import positive_float, positive_int
from prefloop.auth import generate_key, hash_key
from prefloop.bench.ingest import BenchError, Phase, make_inputs, run_sdk
from prefloop.kafka_admin import create_topics, delete_topics
from prefloop.sdk.client import FeedbackClient
from prefloop.services.kafka import end_offsets
from prefloop.services.process import ensure_debian_tool, free_port, pid_alive, terminate
from prefloop.services.supervisor import service_env
from prefloop.settings import Settings, TopicSpec, load_settings, read_config_file

# wrk's Lua hooks: the same body on every request; at the end one JSON line the bench parses.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  io.write(string.format('WRK_RESULT {{"requests": %d, "duration_us": %d, "non_2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class HttpRound:
    """One wrk run: every request carried `batch` events."""

    requests: int
    seconds: float
    batch: int
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float = 0.0  # CPU time the collector process used during the round

    @property
    def accepted(self) -> int:
        return (self.requests - self.non_2xx) * self.batch

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.accepted if self.accepted else 0.0


@dataclass
class SdkRound:
    phase: Phase
    cpu_s: float  # CPU time of this process during the round (the SDK's work and aiokafka's)

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.phase.events if self.phase.events else 0.0


@dataclass
class CollectorResult:
    batch: int
    connections: int
    http_rounds: list[HttpRound]
    sdk_rounds: list[SdkRound]
    accepted: int  # events the collector answered 202 for, warm-up included
    in_kafka: int  # events the bench topics hold at the end (the SDK's included)
    sdk_sent: int

    @property
    def http(self) -> HttpRound:
        return sorted(self.http_rounds, key=lambda r: r.rate)[(len(self.http_rounds) - 1) // 2]

    @property
    def sdk(self) -> SdkRound:
        return sorted(self.sdk_rounds, key=lambda r: r.phase.rate)[(len(self.sdk_rounds) - 1) // 2]

    @property
    def ratio(self) -> float:
        return self.http.rate / self.sdk.phase.rate if self.sdk.phase.rate else 0.0


def ensure_wrk() -> str:
    """The path of `wrk`, installing Debian's package once when it is missing (idempotent)."""
    return ensure_debian_tool("wrk")


def batch_body(batch: int) -> bytes:
    """`batch` JSON events of the ingest bench's mix, without event_id: the collector stamps one each."""
    events = [{"type": kind, **{k: v for k, v in fields.items() if v is not None}} for kind, fields in make_inputs(batch)]
    return json.dumps(events).encode()


def parse_wrk(output: str, batch: int) -> HttpRound:
    for line in output.splitlines():
        if line.startswith("WRK_RESULT "):
            r = json.loads(line.split(" ", 1)[1])
            return HttpRound(r["requests"], r["duration_us"] / 1e6, batch, r["non_2xx"], r["errors"],
                             r["p50_us"] / 1000, r["p99_us"] / 1000)
    raise BenchError(f"wrk printed no result: {output.strip()[-300:]}")


def bench_config(work: Path, api_key: str) -> Path:
    """The settings file the bench's collector reads: the user's, with [collector_auth] replaced by
    one key for the bench (no rate limit), so the measured path checks a key as production does."""
    config = {name: value for name, value in read_config_file().items() if name != "collector_auth"}
    config["collector_auth"] = {"keys": [f"bench:{hash_key(api_key)}"]}
    path = work / "prefloop.toml"
    path.write_text(tomlkit.dumps(config))
    return path


class CollectorProcess:
    """A collector subprocess on a free loopback port, producing to the bench's topics; stopped by PID."""

    def __init__(self, settings: Settings, responses: str, actions: str, log: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "prefloop.collector", "--host", "127.0.0.1", "--port", str(self.port),
                "--responses-topic", responses, "--actions-topic", actions]
        self.log = log
        env = {k: v for k, v in service_env(settings).items() if not k.startswith("PREFLOOP_COLLECTOR_AUTH_")}
        env["PREFLOOP_CONFIG"] = str(config)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the collector exited with code {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as reply:
                    if reply.status == 200 and json.loads(reply.read()).get("connected"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"the collector did not answer /healthz within {timeout_s:g}s")

    def cpu_s(self) -> float:
        """User + system CPU seconds the collector process has used (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if pid_alive(self.proc.pid):
            terminate(self.proc.pid, 20)
        self.proc.wait()


def run_wrk(wrk: str, url: str, script: Path, connections: int, duration_s: float, batch: int) -> HttpRound:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "30s", "-s", str(script), url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-300:]}")
    return parse_wrk(result.stdout, batch)


async def _sdk_round(settings: Settings, responses: str, actions: str, inputs: list, time_limit_s: float) -> SdkRound:
    async with FeedbackClient(settings, responses_topic=responses, actions_topic=actions) as client:
        await client.flush()  # connected, metadata known: the clock measures sending only
        cpu = time.process_time()
        phase = await run_sdk(client, inputs, time_limit_s)
        return SdkRound(phase, time.process_time() - cpu)


def run_collector_bench(
    settings: Settings,
    batch: int = 100,
    connections: int = 32,
    duration_s: float = 10.0,
    rounds: int = 3,
    sdk_events: int = 100_000,
) -> CollectorResult:
    for name, value, low in (("batch", batch, 1), ("connections", connections, 1), ("rounds", rounds, 1), ("sdk_events", sdk_events, 2)):
        if value < low:
            raise BenchError(f'"{name}" should be at least {low}, got {value}')
    if duration_s <= 0:
        raise BenchError(f'"duration" should be greater than zero, got {duration_s}')
    wrk = ensure_wrk()
    prefix = f"bench.collector.{os.getpid()}"
    responses, actions = f"{prefix}.responses", f"{prefix}.actions"
    inputs = make_inputs(sdk_events)
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-collector-") as tmp:
        work = Path(tmp)
        (work / "body.json").write_bytes(batch_body(batch))
        api_key = generate_key()
        auth = f'wrk.headers["Authorization"] = "Bearer {api_key}"'
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=work / "body.json", auth=auth))
        bootstrap = settings.bootstrap_servers
        try:
            try:
                asyncio.run(create_topics(settings, [TopicSpec(responses, settings.responses_partitions),
                                                     TopicSpec(actions, settings.actions_partitions)]))
            except Exception as exc:
                raise BenchError(f"cannot create the bench topics on Kafka at {bootstrap} ({exc}); start it with `prefloop up`") from exc
            collector = CollectorProcess(settings, responses, actions, work / "collector.log", bench_config(work, api_key))
            try:
                collector.wait_ready(settings.start_timeout_s)
                url = collector.url + "/v1/events"
                warm = run_wrk(wrk, url, script, connections, 2, batch)  # connections, metadata, the broker's segments
                accepted = warm.accepted
                http_rounds: list[HttpRound] = []
                sdk_rounds: list[SdkRound] = []

                def http_round() -> None:
                    cpu = collector.cpu_s()
                    http_rounds.append(run_wrk(wrk, url, script, connections, duration_s, batch))
                    http_rounds[-1].cpu_s = collector.cpu_s() - cpu

                def sdk_round() -> None:
                    sdk_rounds.append(asyncio.run(_sdk_round(settings, responses, actions, inputs, duration_s)))

                for index in range(rounds):  # the order alternates, so neither side always runs on a warmer machine
                    for side in ((sdk_round, http_round) if index % 2 == 0 else (http_round, sdk_round)):
                        side()
                accepted += sum(r.accepted for r in http_rounds)
            finally:
                collector.stop()
            totals = asyncio.run(end_offsets(settings, [responses, actions]))
        finally:
            for topic in (responses, actions):
                try:
                    asyncio.run(delete_topics(settings, [topic]))
                except Exception:  # never created, or Kafka gone: nothing to clean
                    pass
    sdk_sent = sum(r.phase.events for r in sdk_rounds)
    return CollectorResult(batch, connections, http_rounds, sdk_rounds, accepted, sum(totals.values()), sdk_sent)


def format_result(result: CollectorResult) -> str:
    http, sdk = result.http, result.sdk
    lines = [
        f"collector bench: POST /v1/events, {result.batch} events per request, {result.connections} connections (wrk), "
        f"one collector process; SDK path in this process; acks=all, idempotent",
        f"  {'collector':<10} {http.rate:>10,.0f} events/s  median of {len(result.http_rounds)} round(s) "
        f"[{', '.join(f'{r.rate:,.0f}' for r in result.http_rounds)}]; {http.requests / http.seconds:,.0f} requests/s, "
        f"p50 {http.p50_ms:.1f} ms, p99 {http.p99_ms:.1f} ms, non-2xx {sum(r.non_2xx for r in result.http_rounds)}, "
        f"socket errors {sum(r.errors for r in result.http_rounds)}",
        f"  {'SDK':<10} {sdk.phase.rate:>10,.0f} events/s  median of {len(result.sdk_rounds)} round(s) "
        f"[{', '.join(f'{r.phase.rate:,.0f}' for r in result.sdk_rounds)}]",
        f"  {'collector / SDK':<10} {result.ratio:>5.2f}",
        # CPU time per event does not depend on what else the machine runs: 1e6 / it is the rate one idle core gives.
        f"  CPU per event: collector {http.cpu_us_per_event:.1f} µs (≈ {_per_core(http.cpu_us_per_event)} events/s per idle core), "
        f"SDK {sdk.cpu_us_per_event:.1f} µs (≈ {_per_core(sdk.cpu_us_per_event)})",
        f"  Kafka holds {result.in_kafka:,} events: {result.accepted:,} accepted by the collector (202) + "
        f"{result.sdk_sent:,} from the SDK" + ("" if result.in_kafka >= result.accepted + result.sdk_sent else "  ← EVENTS MISSING"),
    ]
    return "\n".join(lines)


def _per_core(us: float) -> str:
    return f"{1e6 / us:,.0f}" if us > 0 else "?"


def add_bench_command(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add `collector` under `prefloop bench`."""
    parser = bench_subparsers.add_parser(
        "collector", help="events/s through the HTTP collector (wrk) next to the SDK path",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=positive_int, default=100, help="events per request (default: 100)")
    parser.add_argument("--connections", type=positive_int, default=32, help="wrk connections (default: 32)")
    parser.add_argument("--duration", type=positive_float, default=10.0, metavar="SECONDS",
                        help="each side's run in each round (default: 10)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds; medians are reported (default: 3)")
    parser.add_argument("--sdk-events", type=positive_int, default=200_000, help="events per SDK round, at most (default: 200000)")
    parser.set_defaults(handler=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    result = run_collector_bench(load_settings(), batch=args.batch, connections=args.connections,
                                 duration_s=args.duration, rounds=args.rounds, sdk_events=args.sdk_events)
    print(format_result(result))
    return 0


__all__ = ["CollectorResult", "HttpRound", "add_bench_command", "ensure_wrk", "format_result", "parse_wrk", "run_collector_bench"]
