"""`prefloop bench collector` through the CLI, briefly, against the session's Kafka: wrk loads a real
collector process, the SDK path runs beside it, and every accepted event is found in Kafka."""

from __future__ import annotations

import re

import pytest

from prefloop.bench.collector import BenchError, parse_wrk
from prefloop.cli import main as cli


def test_wrk_summary_is_parsed():
    out = 'Running 1s test\nWRK_RESULT {"requests": 120, "duration_us": 2000000, "non_2xx": 20, "errors": 1, "p50_us": 1500, "p99_us": 9000}\n'
    run = parse_wrk(out, batch=100)
    assert (run.accepted, run.rate, run.p50_ms, run.p99_ms, run.errors) == (10_000, 5_000.0, 1.5, 9.0, 1)
    with pytest.raises(BenchError, match="wrk printed no result"):
        parse_wrk("Running 1s test\n", batch=100)


@pytest.mark.services
def test_bench_collector_prints_both_sides_and_finds_every_accepted_event(prefloop_env, capsys):
    assert cli(["bench", "collector", "--duration", "1", "--rounds", "2", "--sdk-events", "3000", "--connections", "4"]) == 0
    out = capsys.readouterr().out
    collector = re.search(r"collector\s+([\d,]+) events/s .*non-2xx (\d+), socket errors (\d+)", out)
    sdk = re.search(r"SDK\s+([\d,]+) events/s", out)
    assert collector and sdk, out
    assert int(collector.group(1).replace(",", "")) > 0 and int(sdk.group(1).replace(",", "")) > 0
    assert collector.group(2) == "0", out  # every request was accepted (the bench's own API key)
    assert re.search(r"collector / SDK\s+\d+\.\d\d", out) and "CPU per event: collector" in out
    assert "Kafka holds" in out and "EVENTS MISSING" not in out


def test_bench_collector_refuses_bad_arguments_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["bench", "collector", "--duration", "0"])
    assert exit_.value.code == 2
    assert "should be greater than zero, got 0" in capsys.readouterr().err
