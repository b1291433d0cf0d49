"""Verbs for services, data in and data out: up, down, status, init, emit, sql, collector, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from prefloop.settings import load_settings

if TYPE_CHECKING:
    from prefloop.services.supervisor import TriggerProgress


def add_commands(sub: argparse._SubParsersAction, trigger_progress: TriggerProgress | None = None) -> None:
    """`trigger_progress` gives `prefloop status` its retraining-trigger section (streams/, wired by prefloop/cli.py)."""
    p = sub.add_parser("up", help="start Kafka, Redis, the analytics store, a streams worker, the collector, the trainer, the evaluator, the gateway, the rollout controller and the web app")
    p.add_argument("--only", metavar="LIST", help="comma-separated subset: kafka,redis,analytics,worker,collector,trainer,evaluator,gateway,rollout,web")
    p.set_defaults(handler=cmd_up)

    p = sub.add_parser("down", help="stop what `up` started (data is kept)")
    p.add_argument("--purge", action="store_true", help="also delete the prefloop home (all data)")
    p.set_defaults(handler=cmd_down)

    p = sub.add_parser("status", help="health of each service, topic end offsets, table row counts, trigger progress")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status, trigger_progress=trigger_progress)

    p = sub.add_parser("init", help="create the contract topics and apply analytics migrations on external services")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("emit", help="validate a JSON-lines file of events and produce it to Kafka")
    p.add_argument("file", type=Path, metavar="FILE.jsonl")
    p.add_argument("--skip-invalid", action="store_true", help="produce the valid lines even if some are bad")
    p.set_defaults(handler=cmd_emit)

    p = sub.add_parser("sql", help="run a query on the analytics store")
    p.add_argument("query", metavar='"SELECT …"')
    p.add_argument("--format", choices=["table", "json", "csv", "tsv"], default="table")
    p.set_defaults(handler=cmd_sql)

    p = sub.add_parser("collector", help="run the HTTP collector in the foreground")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback collector_host without API keys")
    p.set_defaults(handler=cmd_collector)

    from prefloop.auth import cli as auth_cli
    from prefloop.privacy import cli as privacy_cli

    auth_cli.add_commands(sub)
    privacy_cli.add_commands(sub)

    bench = sub.add_parser("bench", help="measure throughput against a baseline in the same run")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    from prefloop.bench import collector as collector_bench
    from prefloop.bench import ingest

    ingest.add_bench_command(bench_sub)
    collector_bench.add_bench_command(bench_sub)
    for module in ("streams.bench", "trainer.bench", "evaluator.gate.bench", "prefloop.serving.bench", "prefloop.web.bench"):
        try:
            mod = __import__(module, fromlist=["add_bench_command"])
        except ImportError:
            continue
        mod.add_bench_command(bench_sub)


def cmd_up(args: argparse.Namespace) -> int:
    from prefloop.services.supervisor import up

    settings = load_settings()
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    up(settings, only)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from prefloop.services.supervisor import down

    down(load_settings(), purge=args.purge)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from prefloop.services.supervisor import status

    settings = load_settings()
    report = status(settings, args.trigger_progress)
    if args.json:
        print(json.dumps(asdict(report), indent=2, default=str))
        return 0 if all(s.healthy for s in report.services if s.pid) else 1
    print(f"home: {settings.home}")
    if report.watchdog_pid:
        print(f"watchdog: running (pid {report.watchdog_pid}); services that die are restarted")
    else:
        print("watchdog: not running; services that die stay down (`prefloop up` starts it)")
    print(f"{'service':<10} {'state':<10} {'pid':>8} {'restarts':>8}  last exit")
    for s in report.services:
        state = "healthy" if s.healthy else ("unhealthy" if s.pid else (s.detail or "stopped"))
        print(f"{s.name:<10} {state:<10} {s.pid or '-':>8} {s.restarts:>8}  {s.last_exit or '-'}")
    if report.topic_offsets:
        print("\ntopic end offsets (records written)")
        for topic, n in report.topic_offsets.items():
            print(f"  {topic:<22} {n:>10}")
    if report.table_rows:
        print("\ntable rows")
        for table, n in report.table_rows.items():
            print(f"  {table:<22} {n:>10}")
    if report.trigger:
        print("\nretraining trigger")
        for key, value in report.trigger.items():
            print(f"  {key:<22} {value}")
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0 if all(s.healthy for s in report.services if s.pid) else 1


def cmd_init(args: argparse.Namespace) -> int:
    import asyncio

    from prefloop.analytics.migrations import migrate
    from prefloop.analytics.store import connect
    from prefloop.kafka_admin import create_topics

    settings = load_settings()
    created = asyncio.run(create_topics(settings, settings.topics()))
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    store = connect(settings)
    try:
        applied = migrate(store)
    finally:
        store.close()
    print(f"migrations applied: {', '.join(f'{m.version:04d}_{m.name}' for m in applied) or 'none (up to date)'}")
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    from prefloop.emit import emit_file

    emit_file(load_settings(), args.file, skip_invalid=args.skip_invalid)
    return 0


SQL_FORMATS = {"table": "PrettyCompactMonoBlock", "json": "JSONEachRow", "csv": "CSVWithNames", "tsv": "TSVWithNames"}


def cmd_sql(args: argparse.Namespace) -> int:
    from prefloop.analytics.store import open_for_command

    store = open_for_command(load_settings())
    try:
        out = store.raw(args.query, SQL_FORMATS[args.format])
    finally:
        store.close()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    from prefloop.collector import run

    run(load_settings(), insecure=args.insecure)
    return 0
