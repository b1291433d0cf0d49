"""One training job as a subprocess of the trainer service:
`python -m trainer.job --snapshot ID --output DIR --result FILE [--home H --cache-dir C --trainer-settings S.json]`.

Runs `run_training` on a snapshot and writes `FILE` (JSON: metrics, adapter dir, snapshot, base
model) as its very last step. It does not touch the registry: the service registers the version
only after the job exited 0 with a result, so a crash, OOM kill or timeout can never leave a
version behind. Exit codes: 0 done, 2 bad input (PrefloopError; not worth retrying), 1 crash.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.job")
    parser.add_argument("--snapshot", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--home", type=Path, help="prefloop home (default: from settings)")
    parser.add_argument("--cache-dir", type=Path, help="model and reference cache (default: from settings)")
    parser.add_argument("--trainer-settings", type=Path, metavar="FILE.json",
                        help="TrainerSettings as JSON, as the service resolved them (default: from settings)")
    args = parser.parse_args(argv)

    from prefloop.errors import PrefloopError

    try:
        from prefloop.settings import load_settings
        from trainer.fsutil import atomic_write_json
        from trainer.settings import load_trainer_settings
        from trainer.snapshots import load_snapshot
        from trainer.train import print_summary, run_training

        settings = load_settings(home=args.home, cache_dir=args.cache_dir)
        if args.trainer_settings is not None:
            import json

            from trainer.settings import TrainerSettings

            trainer_settings = TrainerSettings(**json.loads(args.trainer_settings.read_text()))
        else:
            trainer_settings = load_trainer_settings(settings)
        snapshot = load_snapshot(settings.home, args.snapshot)
        run = run_training(
            trainer_settings, snapshot=snapshot, output_dir=args.output, home=settings.home, cache_dir=settings.cache_dir
        )
        print_summary(run)
        atomic_write_json(
            args.result,
            {
                "adapter_path": str(run.output_dir),
                "snapshot_id": run.snapshot_id,
                "base_model": run.base_model,
                "metrics": run.numeric_metrics,
            },
        )
        return EXIT_OK
    except PrefloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - reported to the service as the job's failure reason
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
