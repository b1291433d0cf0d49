"""`prefloop demo`: argument parsing; the steps are in demo/run.py."""

from __future__ import annotations

import argparse

FLAGS = ("users", "rate", "trigger_pairs", "stages", "compare_s", "seed")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from prefloop.arguments import one_line_errors
    from prefloop.demo.settings import DemoSettings
    from prefloop.setting_fields import add_flags

    p = one_line_errors(sub.add_parser(
        "demo", help="the whole loop in one command: users' feedback → pairs → training → gate → canary → better model",
        description="Starts the services with the demo's settings, simulates users until the trigger fires, trains, "
                    "evaluates, rolls out in canary stages, compares the versions live, and writes summary.json and "
                    "an HTML report under <home>/demo/. Flags override [demo] settings.",
    ))
    add_flags(p, DemoSettings, FLAGS)
    p.add_argument("--fresh", action="store_true",
                   help="delete the home's data first (`prefloop down --purge`): the demo needs a home without trained versions")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import dataclasses

    from prefloop.demo.run import main
    from prefloop.demo.settings import DemoSettings
    from prefloop.setting_fields import flag_values
    from prefloop.settings import load_settings

    settings = load_settings()
    if args.fresh:
        from prefloop.services.supervisor import down

        down(settings, purge=True)
        settings = load_settings()
    ds = dataclasses.replace(settings.section(DemoSettings), **flag_values(args, FLAGS))
    return main(settings, ds)
