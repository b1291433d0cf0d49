"""`prefloop simulate`: argument parsing and the printed summary; the loop is in traffic.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path

from prefloop.arguments import one_line_errors, positive_float, positive_int


def _version_pair(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) != 2 or parts[0] == parts[1]:
        raise argparse.ArgumentTypeError(f"should be two different versions like v1.0,v1.1, got {text!r}")
    return parts[0], parts[1]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = one_line_errors(sub.add_parser(
        "simulate", help="synthetic users asking questions and giving feedback (through the gateway, or templates)",
        description="Users with a hidden preference (polite openers, short answers) ask questions at --rate per second "
                    "for --duration seconds and give thumbs, ratings, edits, accepts and A/B choices.",
    ))
    p.add_argument("--users", type=positive_int, default=50, help="distinct simulated users (default 50)")
    p.add_argument("--rate", type=positive_float, default=2.0, help="requests per second (default 2)")
    p.add_argument("--duration", type=positive_float, default=60.0, metavar="S", help="seconds to run (default 60)")
    p.add_argument("--mode", choices=["generate", "template"], default="generate",
                   help="generate: answers from the serving gateway (default); template: canned answers for load tests")
    p.add_argument("--seed", type=int, default=0, help="seed of users, questions and judgements (default 0)")
    p.add_argument("--max-requests", type=positive_int, help="stop after this many requests")
    p.add_argument("--concurrency", type=positive_int, default=8, help="requests in flight at most (default 8)")
    p.add_argument("--ab-versions", type=_version_pair, metavar="A,B",
                   help="A/B choices compare these two pinned versions (default: two answers of the user's version)")
    p.add_argument("--gateway", metavar="URL", help="gateway base URL (default: serve_host:serve_port of the settings)")
    p.add_argument("--api-key", help="the gateway's API key when it requires one (default: $PREFLOOP_API_KEY)")
    p.add_argument("--max-tokens", type=positive_int, default=48, help="tokens per generated answer (default 48)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    p.set_defaults(handler=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from prefloop.settings import load_settings

    settings = load_settings()
    report = asyncio.run(_run(settings, args))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2, default=_nan_none) + "\n")
    return 0 if report.answers else 1


async def _run(settings, args):
    import random

    from prefloop.sdk import FeedbackClient
    from prefloop.simulator.traffic import GatewayBackend, Simulation, SimulationConfig, TemplateBackend

    config = SimulationConfig(users=args.users, rate=args.rate, duration_s=args.duration, seed=args.seed,
                              max_requests=args.max_requests, concurrency=args.concurrency, ab_versions=args.ab_versions)
    if args.mode == "generate":
        url = args.gateway or f"http://{settings.serve_host}:{settings.serve_port}"
        backend = GatewayBackend(url, api_key=args.api_key or os.environ.get("PREFLOOP_API_KEY", ""), max_tokens=args.max_tokens)
    else:
        backend = TemplateBackend(random.Random(f"answers:{args.seed}"), _routing_choice(settings))
    print(f"simulate: {args.users} users, {args.rate:g} requests/s for {args.duration:g}s, mode {args.mode}, seed {args.seed}",
          file=sys.stderr, flush=True)
    async with FeedbackClient(settings) as feedback:
        try:
            return await Simulation(config, backend, feedback, progress=_progress).run()
        finally:
            await backend.close()


def _routing_choice(settings):
    """The routing table's choice per user (template mode), read once; v1.0 when Redis has none."""
    from prefloop import routing

    try:
        import redis

        client = redis.Redis.from_url(settings.redis_dsn, socket_connect_timeout=1, socket_timeout=1)
        try:
            table = routing.read_table(client)
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no Redis: everything is the base version
        table = None
    table = table or routing.RoutingTable(production="v1.0")
    return lambda user_id: table.version_for(user_id)


def _progress(report) -> None:
    print(f"  {report.seconds:5.0f}s  {report.requests} requests, {report.answers} answers, "
          f"{sum(report.actions.values())} actions, {report.failed} failed", file=sys.stderr, flush=True)


def _nan_none(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def print_report(report) -> None:
    print(f"{report.requests} requests in {report.seconds:.1f}s: {report.answers} answers, {report.failed} failed; actions "
          + ", ".join(f"{k} {v}" for k, v in sorted(report.actions.items())))
    for error, n in report.errors.most_common(3):
        print(f"  error x{n}: {error}")
    print(f"{'version':<10}{'answers':>8}{'polite':>8}{'true score':>12}{'true up-rate':>14}{'clicked up-rate':>17}")
    for version, t in sorted(report.truth.versions.items()):
        clicked = t.clicked_thumbs_up_rate
        print(f"{version:<10}{t.answers:>8}{t.polite / t.answers:>8.0%}{t.mean_score:>12.3f}{t.expected_thumbs_up_rate:>14.3f}"
              f"{'-' if math.isnan(clicked) else f'{clicked:.3f}':>17}")
