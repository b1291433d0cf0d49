"""`prefloop eval` and `prefloop evaluator`: argument parsing and printing only.

Imported when the `prefloop` parser is built, so nothing heavy (torch, transformers, TRL) is imported
here at module level; each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from prefloop.arguments import one_line_errors
from prefloop.kafka_client import kafka_options
from prefloop.setting_fields import add_flags, flag_values

GATE_FLAGS = ("min_pairs", "min_improvement", "alpha", "min_slice_pairs", "guardrail_prompts", "max_new_tokens",
              "max_pairs", "batch_size", "device")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from evaluator.gate.settings import GateSettings

    p = one_line_errors(sub.add_parser(
        "eval",
        help="judge a trained adapter against production on held-out pairs and publish PROMOTE or REJECT",
        description="The offline gate in the foreground. Flags override [evaluator] settings.",
    ))
    p.add_argument("--candidate", required=True, metavar="DIR|VERSION", help="a registry version or an adapter directory")
    p.add_argument("--baseline", metavar="VERSION", help="compare with this version (default: production, else the base model)")
    p.add_argument("--pairs", type=Path, metavar="FILE.jsonl",
                   help="held-out pairs to judge on (default: the snapshot's held-out pairs and earlier held-out pairs)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object (the report) instead of a table")
    p.add_argument("--no-publish", action="store_true",
                   help="only print the verdict: no event, no promotions row, no registry change, no report file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_flags(p, GateSettings, GATE_FLAGS)
    p.set_defaults(handler=cmd_eval)

    p = one_line_errors(sub.add_parser(
        "evaluator", help="run the evaluator service: consume training.results, publish PROMOTE/REJECT on models.promotions"
    ))
    p.add_argument("--once", action="store_true", help="handle one training result, then exit")
    p.set_defaults(handler=cmd_evaluator)


class _Bar:
    """A rich progress bar on stderr, one task per stage (score, generate); silent off a terminal."""

    LABELS = {"score": "scoring held-out pairs", "generate": "guardrail answers"}

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True, disable=not enabled)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_Bar":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def cmd_eval(args: argparse.Namespace) -> int:
    from evaluator.gate import heldout as heldout_sets
    from evaluator.gate.evaluate import load_heldout, resolve_contest, run_gate
    from evaluator.gate.settings import load_gate_settings
    from prefloop.settings import load_settings
    from trainer.registry import ModelRegistry

    settings = load_settings()
    gate = load_gate_settings(settings, **flag_values(args, GATE_FLAGS))
    # Every input is checked before the (long) evaluation and before anything is written.
    contest = resolve_contest(settings, args.candidate, args.baseline, registry=ModelRegistry(settings.home))
    if args.pairs is not None:
        heldout = heldout_sets.from_file(args.pairs, gate.max_pairs)
    else:
        heldout = load_heldout(settings, contest, gate)
    publish = not args.no_publish and contest.candidate_version is not None
    if publish:
        asyncio.run(_check_kafka(settings, gate.publish_timeout_s))
    with _Bar(enabled=not args.no_progress and sys.stderr.isatty()) as bar:
        report = run_gate(settings, gate, contest, heldout, progress=bar)
    doc = report.to_json()
    if publish:
        asyncio.run(_publish(settings, gate, report))
    if args.json:
        print(json.dumps(doc))
    else:
        _print_verdict(doc)
        if not args.no_publish and contest.candidate_version is None:
            print(f"{contest.candidate.name} is not in the model registry: nothing was published")
        elif publish:
            print(f"published {doc['decision']} ({doc['event']['event_id']}) on models.promotions; "
                  f"report: {Path(doc['candidate_adapter']) / 'evaluation.json'}")
    return 0


async def _check_kafka(settings: Any, timeout_s: float) -> None:
    """Fail before evaluating when the decision could not be published."""
    from aiokafka import AIOKafkaProducer

    from evaluator.gate.errors import PublishError

    producer = AIOKafkaProducer(**kafka_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(producer.start(), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same to the user
        raise PublishError(f"cannot reach Kafka at {settings.bootstrap_servers} to publish the decision ({type(exc).__name__}); "
                           "start it with `prefloop up` or pass --no-publish") from None
    finally:
        await producer.stop()


async def _publish(settings: Any, gate: Any, report: Any) -> None:
    from aiokafka import AIOKafkaProducer

    from evaluator.gate.report import write_report
    from evaluator.gate.service import publish_decision
    from prefloop import topics
    from schemas import encode
    from trainer.mirror import open_registry

    path = write_report(report, Path(report.candidate_adapter))
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async def send(event) -> None:
            await asyncio.wait_for(producer.send_and_wait(topics.PROMOTIONS, encode(event), key=event.candidate_version.encode()),
                                   timeout=gate.publish_timeout_s)

        await publish_decision(settings, open_registry(settings), report.event, send, report.to_json(), path)
    finally:
        await producer.stop()


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _print_verdict(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{doc['candidate']} vs {doc['baseline']}: {doc['decision']}", show_header=True)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    table.add_row("held-out pairs", f"{doc['n']} ({doc['heldout']['origin']})")
    table.add_row("win rate", f"{_fmt(doc['win_rate'])}  [{_fmt(doc['win_rate_lower'])}, {_fmt(doc['win_rate_upper'])}]")
    table.add_row("wins / losses / ties", f"{doc['wins']} / {doc['losses']} / {doc['ties']}")
    table.add_row("sign test p", _fmt(doc["p_value"], ".3g"))
    table.add_row("mean s_C - s_B", f"{_fmt(doc['mean_diff'])} (lower bound {_fmt(doc['mean_diff_lower'])})")
    length = doc["length"]
    table.add_row("not-longer pairs", f"{_fmt(length['win_rate'])} over {length['n']} (upper bound {_fmt(length['upper'])}); "
                                      f"length correlation {_fmt(length['correlation'], '.2f')}")
    for source, s in doc["sources"].items():
        table.add_row(f"source {source}", f"{_fmt(s['win_rate'])} over {s['n']}  [{_fmt(s['lower'])}, {_fmt(s['upper'])}]")
    g = doc["guardrails"]
    if g:
        c, b = g["candidate"], g["baseline"]
        table.add_row("empty answers C / B", f"{_fmt(c['empty_rate'], '.0%')} / {_fmt(b['empty_rate'], '.0%')}")
        table.add_row("repeated 3-grams C / B", f"{_fmt(c['repeat_rate'], '.0%')} / {_fmt(b['repeat_rate'], '.0%')}")
        table.add_row("answer length C / B", f"{_fmt(c['mean_length'], '.1f')} / {_fmt(b['mean_length'], '.1f')} tokens "
                                             f"(ratio {_fmt(g['length_ratio'], '.2f')})")
    s = doc["scoring"]
    table.add_row("scoring", f"{s['device']} {s['dtype']}, {_fmt(s['pairs_per_second'], '.1f')} pairs/s, "
                             f"reference cache {s['ref_cache_hits']} hits / {s['ref_forward_pairs']} computed")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"{doc['decision']}: {doc['reason']}", highlight=False, soft_wrap=True)


def cmd_evaluator(args: argparse.Namespace) -> int:
    from evaluator.gate.service import run_service
    from prefloop.settings import load_settings

    asyncio.run(run_service(load_settings(), once=args.once))
    return 0
