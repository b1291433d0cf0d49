"""`prefloop bench streams` end to end, at a tiny size: its own Kafka, Redis and chDB, a worker, every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_streams_runs_to_completion_and_prints_every_figure(tmp_path):
    home = tmp_path / "bench-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFLOOP_")}
    out = subprocess.run(
        [sys.executable, "-m", "prefloop.cli", "bench", "streams", "--events", "1300", "--latency-rate", "200",
         "--latency-seconds", "1", "--time-limit", "120", "--home", str(home)],
        capture_output=True, text=True, env=env, timeout=400)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text  # 0 only when every expected pair was published and all input committed
    assert re.search(r"preloaded \d+ events \((\d+) pairs expected\)", text), text
    expected = int(re.search(r"\((\d+) pairs expected\)", text).group(1))
    assert re.search(rf"pipeline: \d+ events in [\d.]+s = [\d,]+ events/s \({expected} pairs\)", text), text
    assert re.search(r"passthrough: \d+ events in [\d.]+s = [\d,]+ events/s", text), text
    assert re.search(r"latency at 200 events/s: action->pair p50 \d+ ms, p99 \d+ ms over [1-9]\d* pairs", text), text
    assert re.search(r"ratio pipeline/passthrough: [\d.]+", text), text
    # The bench stops what it started: no process whose environment or command line names its home.
    assert processes_mentioning(str(home)) == []


def processes_mentioning(text: str) -> list[int]:
    needle = text.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as env, open(f"/proc/{entry}/cmdline", "rb") as cmd:
                if needle in env.read() or needle in cmd.read():
                    found.append(int(entry))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return found
