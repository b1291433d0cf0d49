"""`prefloop bench serve`: the gateway's requests/s and latency against sequential `model.generate`, and
its own overhead in `openai` mode, in one run.

1. Baseline: this process loads the model (same device and dtype as the gateway) and calls
   `model.generate` once per prompt, one after another: greedy, exactly `--max-tokens` new tokens
   (`min_new_tokens`), the prompts rendered as the gateway renders them. It runs before and after
   the gateway phase; the faster run is the baseline.
2. Gateway, local backend: a `prefloop serve` subprocess on the same model; at each concurrency
   (`--concurrency 1,8,32`) that many clients send the same prompts (greedy, `ignore_eos`, so the
   same lengths) until `--requests` are answered. Reported: requests/s, p50/p99 latency, the ratio
   to the baseline's requests/s, and the mean batch the gateway formed.
3. Overhead, openai backend: a stub OpenAI upstream in this process answers at once; p50 latency of
   calling it directly against calling it through a `prefloop serve --backend openai` subprocess,
   alternating, `--overhead-requests` each. The difference is what the gateway adds (parse,
   route, forward, answer).

Both gateways run with capture off and dead Redis/analytics ports in a temporary home, so a bench
never writes into a running prefloop's topics, routing table or tables; recording an answer is one
buffered Kafka send (`prefloop bench ingest` measures it). Every phase is bounded by `--time-limit`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from prefloop.bench.records import BenchRun
from prefloop.errors import PrefloopError
from prefloop.services.process import free_port, terminate
from prefloop.settings import Settings, load_settings


class ServeBenchError(PrefloopError):
    """The serving benchmark could not run (a gateway did not start, a phase ran past its time limit)."""


@dataclass
class Level:
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    mean_batch: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, float]:
        return {"concurrency": self.concurrency, "requests": self.requests, "requests_per_s": self.rate,
                "p50_ms": percentile(self.latencies_ms, 50), "p99_ms": percentile(self.latencies_ms, 99),
                "mean_batch": self.mean_batch}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def prompts(n: int) -> list[str]:
    from trainer.bench import synthetic_pairs

    return [p["prompt"].strip() for p in synthetic_pairs(n, seed=1)]


# --- baseline ---------------------------------------------------------------------------------


class Baseline:
    """Sequential `model.generate`, one prompt at a time, exactly `max_tokens` new tokens each. Loaded once
    and run twice, before and after the gateway phase, so a burst of load on a shared machine shows."""

    def __init__(self, model_dir: Path, texts: list[str], max_tokens: int, device: str, chat_template: bool,
                 cpu_threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)

        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
        self.device = device
        self.max_tokens = max_tokens
        conversational = chat_template and bool(tokenizer.chat_template)

        def encode(text: str) -> Any:
            if conversational:
                rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                         tokenize=False)
                ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
            else:
                ids = tokenizer(text)["input_ids"]
            return torch.tensor([ids], device=device)

        self.inputs = [encode(text) for text in texts]  # tokenized outside the clock: the baseline's best case
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.options = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)

    def run(self, limit_s: float) -> Level:
        import torch

        with torch.inference_mode():
            self.model.generate(self.inputs[0], **self.options)  # warm-up, outside the clock
            latencies = []
            started = time.perf_counter()
            for ids in self.inputs:
                t0 = time.perf_counter()
                out = self.model.generate(ids, **self.options)
                if self.device == "cuda":
                    torch.cuda.synchronize()
                latencies.append((time.perf_counter() - t0) * 1000)
                if out.shape[1] - ids.shape[1] != self.max_tokens:
                    raise ServeBenchError(f"baseline generated {out.shape[1] - ids.shape[1]} tokens instead of {self.max_tokens}")
                if time.perf_counter() - started > limit_s:
                    raise ServeBenchError(f"baseline ran past --time-limit {limit_s:g}s after {len(latencies)} prompts")
            seconds = time.perf_counter() - started
        return Level(1, len(self.inputs), seconds, latencies)


# --- gateways ---------------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            terminate(self.proc.pid, 30)  # SIGTERM, then SIGKILL after 30 s
        self.proc.wait(timeout=10)


def start_gateway(settings: Settings, home: Path, name: str, limit_s: float, **serve: str) -> GatewayProcess:
    """`prefloop serve` in `home`, with Redis and analytics pointed at ports nobody listens on."""
    from prefloop.services.supervisor import service_env

    port = free_port()
    env = service_env(settings)
    env.update({"PREFLOOP_HOME": str(home), "PREFLOOP_SERVE_PORT": str(port), "PREFLOOP_SERVE_CAPTURE": "false",
                "PREFLOOP_REDIS_URL": "", "PREFLOOP_REDIS_PORT": str(free_port()), "PREFLOOP_CLICKHOUSE_URL": "",
                "PREFLOOP_ANALYTICS_PORT": str(free_port())})
    env.update({f"PREFLOOP_SERVE_{k.upper()}": v for k, v in serve.items()})
    log = home / f"{name}.log"
    with open(log, "wb") as out:
        # Its own session, so `terminate` can signal its process group.
        proc = subprocess.Popen([sys.executable, "-m", "prefloop.cli", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    gateway = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeBenchError(f"the {name} gateway exited with {proc.returncode}; log: {log}")
        state = _health(gateway.url).get("status")
        if state == "ready":
            return gateway
        if state == "failed":
            gateway.stop()
            raise ServeBenchError(f"the {name} gateway could not load its model; log: {log}")
        time.sleep(0.3)
    gateway.stop()
    raise ServeBenchError(f"the {name} gateway was not ready within {limit_s:g}s; log: {log}")


def _health(url: str) -> dict[str, Any]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return {}


async def drive(url: str, texts: list[str], concurrency: int, requests: int, max_tokens: int, limit_s: float) -> Level:
    """`concurrency` clients send requests (cycling through `texts`) until `requests` are answered."""
    body = {"model": "v1.0", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    latencies: list[float] = []
    next_index = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < requests:
            text = texts[next_index % len(texts)]
            next_index += 1
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": text}]}) as r:
                answer = await r.json()
                if r.status != 200:
                    raise ServeBenchError(f"gateway answered {r.status}: {answer}")
            latencies.append((time.perf_counter() - t0) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.gather(*(client(session) for _ in range(concurrency)))
        except TimeoutError:
            raise ServeBenchError(f"concurrency {concurrency} ran past --time-limit {limit_s:g}s") from None
        seconds = time.perf_counter() - started
    return Level(concurrency, len(latencies), seconds, latencies)


# --- openai-mode overhead ------------------------------------------------------------------------


STUB_ANSWER = {
    "id": "stub", "object": "chat.completion", "created": 0, "model": "v1.0",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "An answer from the stub upstream."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15},
}


async def overhead(settings: Settings, home: Path, n: int, limit_s: float) -> dict[str, float]:
    """p50/p99 latency direct to a stub upstream and through an openai-backend gateway, alternating."""
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(STUB_ANSWER)

    stub = web.Application()
    stub.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(stub, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gateway = await asyncio.to_thread(start_gateway, settings, home, "openai-gateway", limit_s, backend="openai",
                                      upstream_url=f"http://127.0.0.1:{port}/v1")
    body = {"model": "v1.0", "messages": [{"role": "user", "content": "How do I reset my password?"}], "max_tokens": 16}
    direct: list[float] = []
    via: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def timed(url: str) -> float:
                t0 = time.perf_counter()
                async with session.post(f"{url}/v1/chat/completions", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise ServeBenchError(f"{url} answered {r.status}")
                return (time.perf_counter() - t0) * 1000

            async with asyncio.timeout(limit_s):
                for _ in range(20):  # warm both paths (connections, first-call costs)
                    await timed(f"http://127.0.0.1:{port}")
                    await timed(gateway.url)
                for _ in range(n):
                    direct.append(await timed(f"http://127.0.0.1:{port}"))
                    via.append(await timed(gateway.url))
    finally:
        await asyncio.to_thread(gateway.stop)
        await runner.cleanup()
    return {"requests": n, "direct_p50_ms": percentile(direct, 50), "gateway_p50_ms": percentile(via, 50),
            "added_p50_ms": percentile(via, 50) - percentile(direct, 50),
            "added_p99_ms": percentile(via, 99) - percentile(direct, 99)}


# --- command ----------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"should be integers of at least 1, got {text!r}")
    return values


def add_bench_command(bench_sub: argparse._SubParsersAction) -> None:
    from prefloop.arguments import one_line_errors, positive_float, positive_int

    p = one_line_errors(bench_sub.add_parser(
        "serve", help="gateway requests/s and p50/p99 latency vs sequential model.generate; openai-mode overhead",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    p.add_argument("--model", default="smollm2", metavar="tiny|smollm2|PATH", help="base model (default smollm2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default auto (CUDA when available)")
    p.add_argument("--concurrency", type=_levels, default=[1, 8, 32], metavar="LIST", help="client counts (default 1,8,32)")
    p.add_argument("--requests", type=positive_int, default=32, help="requests per concurrency level and baseline prompts (default 32)")
    p.add_argument("--max-tokens", type=positive_int, default=32, help="tokens generated per answer (default 32)")
    p.add_argument("--overhead-requests", type=positive_int, default=300, help="requests per side of the overhead phase (default 300)")
    p.add_argument("--cpu-threads", type=int, default=0, metavar="N",
                   help="torch threads of the baseline and the gateway on CPU (default 0: torch's default). On a machine "
                        "shared with other loads, 1 keeps both arms from stalling on oversubscribed cores")
    p.add_argument("--time-limit", type=positive_float, default=900.0, help="seconds each phase may take (default 900)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    p.set_defaults(handler=cmd_bench_serve)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from trainer.base_models import resolve_base_model
    from trainer.settings import TrainerSettings

    settings = load_settings()
    model_dir = resolve_base_model(args.model, settings.cache_dir)
    from trainer.devices import resolve_device

    device = resolve_device(args.device)
    chat_template = settings.section(TrainerSettings).chat_template
    bench = BenchRun.start(settings.home, "serve")
    work = bench.work_dir()
    texts = prompts(args.requests)
    print(f"bench serve: model {args.model} ({model_dir}) on {device}, {args.max_tokens} tokens per answer, "
          f"{args.requests} requests per level; gateways log to {work}", flush=True)

    print("  baseline: sequential model.generate …", flush=True)
    sequential = Baseline(model_dir, texts, args.max_tokens, device, chat_template, args.cpu_threads)
    runs = [sequential.run(args.time_limit)]
    print(f"  gateway (local backend) at concurrency {','.join(map(str, args.concurrency))} …", flush=True)
    gateway = start_gateway(settings, work, "local-gateway", args.time_limit, base_model=str(model_dir), device=device,
                            request_timeout_s=str(args.time_limit), cpu_threads=str(args.cpu_threads),
                            max_batch_size=str(max(args.concurrency)), queue_size=str(4 * max(args.concurrency)),
                            max_tokens=str(max(args.max_tokens, 1)), default_max_tokens=str(max(args.max_tokens, 1)))
    levels = []
    try:
        asyncio.run(drive(gateway.url, texts, max(args.concurrency), max(args.concurrency), args.max_tokens, args.time_limit))  # warm-up
        for concurrency in args.concurrency:
            before = _health(gateway.url).get("backend", {})
            level = asyncio.run(drive(gateway.url, texts, concurrency, max(args.requests, concurrency), args.max_tokens, args.time_limit))
            after = _health(gateway.url).get("backend", {})
            batches = after.get("batches", 0) - before.get("batches", 0)
            level.mean_batch = (after.get("batched_requests", 0) - before.get("batched_requests", 0)) / batches if batches else 0.0
            levels.append(level)
            print(f"    concurrency {concurrency}: {level.rate:.2f} req/s, p50 {percentile(level.latencies_ms, 50):.0f} ms", flush=True)
    finally:
        gateway.stop()
    print("  baseline again …", flush=True)
    runs.append(sequential.run(args.time_limit))
    del sequential
    # The faster baseline run is the one compared against: a load burst during one run cannot inflate the ratio.
    base = max(runs, key=lambda run: run.rate)
    print("  overhead: openai backend vs calling the upstream directly …", flush=True)
    over = asyncio.run(overhead(settings, work, args.overhead_requests, args.time_limit))

    result = {
        "model": args.model, "model_dir": str(model_dir), "device": device, "max_tokens": args.max_tokens,
        "baseline": base.summary(), "baseline_runs": [run.summary() for run in runs], "levels": [lvl.summary() | {"vs_baseline": lvl.rate / base.rate} for lvl in levels],
        "openai_overhead": over, "cpu_count": os.cpu_count(), "cpu_threads": args.cpu_threads,
    }
    print(format_result(result))
    bench.save(result, args.json)
    return 0


def format_result(result: dict[str, Any]) -> str:
    base = result["baseline"]
    rates = ", ".join(f"{run['requests_per_s']:.2f}" for run in result["baseline_runs"])
    lines = [f"  {'arm':<28}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'vs baseline':>13}{'mean batch':>12}",
             f"  {'sequential model.generate':<28}{base['requests_per_s']:>9.2f}{base['p50_ms']:>10.1f}{base['p99_ms']:>10.1f}"
             f"{1.0:>13.2f}{1:>12}   (faster of the runs before and after: {rates} req/s)"]
    for lvl in result["levels"]:
        lines.append(f"  {'gateway, concurrency ' + str(lvl['concurrency']):<28}{lvl['requests_per_s']:>9.2f}{lvl['p50_ms']:>10.1f}"
                     f"{lvl['p99_ms']:>10.1f}{lvl['vs_baseline']:>13.2f}{lvl['mean_batch']:>12.1f}")
    over = result["openai_overhead"]
    lines.append(f"  openai backend overhead: p50 {over['direct_p50_ms']:.2f} ms direct, {over['gateway_p50_ms']:.2f} ms through "
                 f"the gateway: {over['added_p50_ms']:.2f} ms added at p50, {over['added_p99_ms']:.2f} ms at p99 "
                 f"({over['requests']} requests each, alternating)")
    return "\n".join(lines)


__all__ = ["add_bench_command", "format_result"]
