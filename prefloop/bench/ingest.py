"""`prefloop bench ingest`: events/s the SDK sustains into Kafka, against a raw aiokafka producer.

Both sides run in the same process and run, against the running Kafka
(`load_settings().bootstrap_servers`), with the same producer configuration, the
same keys and the same event mix, into a dedicated topic `bench.ingest.<pid>` that
the bench creates with explicit partitions and deletes at the end:

- SDK: build the typed record, validate, encode (Avro single-object), send; flush.
- raw: send bytes encoded beforehand (outside the clock); flush.

The ratio SDK / raw is the share of producer throughput the SDK's per-event work
leaves. Each phase is bounded by `--events` and by `--time-limit` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaProducer

from prefloop.arguments import positive_int
from prefloop.errors import PrefloopError
from prefloop.kafka_admin import create_topics, delete_topics
from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.config import ClientSettings
from prefloop.settings import Settings, TopicSpec, load_settings
from schemas import encode
from schemas.records import Action, ActionKind, Response

CHECK_EVERY = 1000  # events between time-limit checks
WORDS = (
    "model answer prompt user feedback latency token context summary detail reason example "
    "policy review draft reply code error fix test data query result table chart plan step"
).split()


class BenchError(PrefloopError):
    """The benchmark could not run (Kafka unreachable, topic not created)."""


@dataclass
class Phase:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class IngestResult:
    topic: str
    partitions: int
    producer: dict[str, Any]
    sdk_rounds: list[Phase]
    raw_rounds: list[Phase]

    @property
    def sdk(self) -> Phase:
        return _median(self.sdk_rounds)

    @property
    def raw(self) -> Phase:
        return _median(self.raw_rounds)

    @property
    def ratio(self) -> float:
        return self.sdk.rate / self.raw.rate if self.raw.rate else 0.0


def _median(phases: list[Phase]) -> Phase:
    return sorted(phases, key=lambda p: p.rate)[(len(phases) - 1) // 2]


def make_inputs(count: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """Deterministic event mix: each response is followed by one action on it (kinds rotate).
    Texts come from a pool, so the inputs cost little memory; sizes are those of chat turns."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    prompts = [text(8, 30) for _ in range(500)]
    answers = [text(30, 100) for _ in range(500)]
    kinds = list(ActionKind)
    inputs: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        response_id = f"bench-{seed}-{i // 2}"
        if i % 2 == 0:
            inputs.append(("response", {
                "prompt": prompts[i % len(prompts)],
                "response": answers[(i * 7) % len(answers)],
                "model_version": "bench-v1",
                "response_id": response_id,
                "user_id": f"user-{i % 997}",
                "tags": {"app": "bench", "category": WORDS[i % len(WORDS)]},
            }))
        else:
            kind = kinds[(i // 2) % len(kinds)]
            inputs.append(("action", {
                "response_id": response_id,
                "kind": kind.value,
                "rating": 4 if kind is ActionKind.RATING else None,
                "edited_text": answers[i % len(answers)] + " edited" if kind is ActionKind.EDIT else None,
                "rejected_response_id": response_id + "-b" if kind is ActionKind.CHOICE else None,
                "user_id": f"user-{i % 997}",
            }))
    return inputs


def pre_encode(inputs: list[tuple[str, dict[str, Any]]]) -> list[tuple[bytes, bytes]]:
    """(key, value) per input, as the SDK would produce them: responses keyed by prompt_id, actions by response_id."""
    out = []
    for kind, kw in inputs:
        if kind == "response":
            record: Response | Action = Response(**kw)
            key = record.prompt_id
        else:
            record = Action(**kw)
            key = record.response_id
        out.append((key.encode(), encode(record.validate())))
    return out


async def _timed(name: str, count: int, time_limit_s: float, step: Callable[[int], Awaitable[Any]], finish: Callable[[], Awaitable[Any]]) -> Phase:
    start = time.perf_counter()
    deadline = start + time_limit_s
    sent = 0
    for i in range(count):
        await step(i)
        sent += 1
        if sent % CHECK_EVERY == 0 and time.perf_counter() > deadline:
            break
    await finish()
    return Phase(name, sent, time.perf_counter() - start)


async def run_sdk(client: FeedbackClient, inputs: list[tuple[str, dict[str, Any]]], time_limit_s: float) -> Phase:
    response, action = client.response, client.action

    async def step(i: int) -> None:
        kind, kw = inputs[i]
        await (response(**kw) if kind == "response" else action(**kw))

    return await _timed("prefloop SDK", len(inputs), time_limit_s, step, client.flush)


async def run_raw(producer: AIOKafkaProducer, topic: str, encoded: list[tuple[bytes, bytes]], time_limit_s: float) -> Phase:
    send = producer.send

    async def step(i: int) -> None:
        key, value = encoded[i]
        await send(topic, value, key=key)

    return await _timed("raw aiokafka", len(encoded), time_limit_s, step, producer.flush)


async def run_ingest_bench(
    settings: Settings,
    events: int = 200_000,
    partitions: int | None = None,
    time_limit_s: float = 60.0,
    rounds: int = 3,
    warmup: int = 2_000,
    **client_options: Any,
) -> IngestResult:
    """Measure both sides in one run, alternating them for `rounds` rounds (the median round of
    each side is reported, which tames a shared 2-core machine's noise); the topic is created
    first and always deleted."""
    if events < 2:
        raise BenchError(f'"events" should be at least 2, got {events}')
    if rounds < 1:
        raise BenchError(f'"rounds" should be at least 1, got {rounds}')
    if time_limit_s <= 0:
        raise BenchError(f'"time_limit" should be greater than zero, got {time_limit_s}')
    partitions = partitions or settings.responses_partitions
    topic = f"bench.ingest.{os.getpid()}"
    inputs = make_inputs(events)
    encoded = pre_encode(inputs)
    warm = make_inputs(warmup, seed=8) if warmup else []

    from aiokafka.errors import KafkaError

    try:
        await create_topics(settings, [TopicSpec(topic, partitions)])
    except (KafkaError, OSError) as exc:
        raise BenchError(f"cannot create bench topic {topic} on Kafka at {settings.bootstrap_servers} ({exc}); "
                         "start it with `prefloop up`") from exc
    try:
        client = FeedbackClient(settings, responses_topic=topic, actions_topic=topic, **client_options)
        raw = AIOKafkaProducer(**client.producer_options())
        await raw.start()
        try:
            async with client:
                if warm:  # connections, metadata and broker-side segments warm for both sides
                    await run_raw(raw, topic, pre_encode(warm), time_limit_s)
                    await run_sdk(client, warm, time_limit_s)
                raw_rounds, sdk_rounds = [], []
                for _ in range(rounds):
                    raw_rounds.append(await run_raw(raw, topic, encoded, time_limit_s))
                    sdk_rounds.append(await run_sdk(client, inputs, time_limit_s))
        finally:
            await raw.stop()
        return IngestResult(topic, partitions, client.producer_options(), sdk_rounds, raw_rounds)
    finally:
        await delete_topics(settings, [topic])


def format_result(result: IngestResult) -> str:
    p = result.producer
    lines = [
        f"ingest bench → {result.topic} ({result.partitions} partitions) on {p['bootstrap_servers']}: "
        f"acks=all, idempotent, linger_ms={p['linger_ms']}, max_batch_size={p['max_batch_size']}, "
        f"compression={p['compression_type'] or 'none'}",
    ]
    for phase, rounds in ((result.raw, result.raw_rounds), (result.sdk, result.sdk_rounds)):
        each = ", ".join(f"{p.rate:,.0f}" for p in rounds)
        lines.append(
            f"  {phase.name:<14} {phase.rate:>10,.0f} events/s  median of {len(rounds)} round(s) [{each}]; "
            f"{phase.events:,} events in {phase.seconds:.2f} s"
        )
    lines.append(f"  {'SDK / raw':<14} {result.ratio:>10.2f}")
    return "\n".join(lines)


def add_bench_command(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add `ingest` under `prefloop bench`."""
    defaults = ClientSettings()
    parser = bench_subparsers.add_parser(
        "ingest",
        help="events/s the SDK sustains into Kafka versus a raw aiokafka producer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=positive_int, default=200_000, help="events per side (default: 200000)")
    parser.add_argument("--batch", type=positive_int, default=None, metavar="BYTES",
                        help=f"producer max_batch_size in bytes (default: [sdk] setting, {defaults.max_batch_size})")
    parser.add_argument("--linger-ms", type=int, default=None,
                        help=f"producer linger_ms (default: [sdk] setting, {defaults.linger_ms})")
    parser.add_argument("--partitions", type=positive_int, default=None,
                        help="partitions of the bench topic (default: responses_partitions)")
    parser.add_argument("--time-limit", type=float, default=30.0, metavar="SECONDS",
                        help="upper bound of each side's run in each round (default: 30)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="alternating rounds of both sides; the median is reported (default: 3)")
    parser.set_defaults(handler=_handle)
    return parser


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    result = asyncio.run(
        run_ingest_bench(
            settings,
            events=args.events,
            partitions=args.partitions,
            time_limit_s=args.time_limit,
            rounds=args.rounds,
            max_batch_size=args.batch,
            linger_ms=args.linger_ms,
        )
    )
    print(format_result(result))
    return 0


__all__ = ["IngestResult", "Phase", "add_bench_command", "format_result", "run_ingest_bench"]
