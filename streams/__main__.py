"""`python -m streams`: run one streams worker in the foreground (what `prefloop worker` and `prefloop up` start)."""

from __future__ import annotations

import sys

from prefloop.errors import PrefloopError
from prefloop.settings import load_settings
from streams.app import run_worker
from streams.settings import StreamsSettings


def main() -> int:
    try:
        settings = load_settings()
        ss = settings.section(StreamsSettings)
    except PrefloopError as exc:
        print(f"prefloop worker: error: {exc}", file=sys.stderr)
        return 2
    return run_worker(settings, ss)


if __name__ == "__main__":
    sys.exit(main())
