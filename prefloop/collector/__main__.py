"""`python -m prefloop.collector [--host H] [--port P]`: serve the HTTP collector (what `prefloop up` starts)."""

from __future__ import annotations

import argparse
import logging
import sys

from prefloop import topics
from prefloop.collector.app import run
from prefloop.errors import PrefloopError
from prefloop.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefloop.collector", description=__doc__)
    parser.add_argument("--host", help="address to bind (default: settings.collector_host)")
    parser.add_argument("--port", type=int, help="port to bind (default: settings.collector_port)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys")
    # For `prefloop bench collector`, which measures into topics of its own.
    parser.add_argument("--responses-topic", default=topics.RESPONSES, help=argparse.SUPPRESS)
    parser.add_argument("--actions-topic", default=topics.ACTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(collector_host=args.host, collector_port=args.port)
        run(settings, responses_topic=args.responses_topic, actions_topic=args.actions_topic, insecure=args.insecure)
    except PrefloopError as exc:
        print(f"prefloop collector: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
