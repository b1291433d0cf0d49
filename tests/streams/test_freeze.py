"""streams/freeze.py: a worker that stood still past the session timeout is told so; a busy one is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streams.freeze import FreezeWatch, FrozenError


def test_not_armed_before_the_first_tick():
    watch = FreezeWatch(0.01)
    time.sleep(0.05)
    watch.check()  # start-up may take longer than the limit: no tick yet, nothing to say


def test_a_busy_process_is_not_frozen():
    watch = FreezeWatch(0.2)
    watch.tick()
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:  # the event loop blocked by work: heartbeats went on meanwhile
        pass
    watch.check()


def test_a_stopped_process_is_frozen(tmp_path):
    """SIGSTOP for longer than the limit, then SIGCONT: the next check raises (a real stopped process)."""
    script = tmp_path / "stopped.py"
    script.write_text(
        "import sys, time\n"
        "from streams.freeze import FreezeWatch, FrozenError\n"
        "watch = FreezeWatch(0.5)\n"
        "watch.tick()\n"
        "print('ticked', flush=True)\n"
        "time.sleep(2.0)\n"  # stopped during this sleep by the test, for longer than the limit
        "try:\n"
        "    watch.check()\n"
        "except FrozenError as exc:\n"
        "    print('frozen:', exc, flush=True)\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "ticked"
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(2.5)
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "frozen: this worker stood still for" in out


def test_an_idle_wait_past_the_limit_counts_as_frozen():
    """Without ticks a wait looks like a stop: what the ticker every TICK_S is for."""
    watch = FreezeWatch(0.1)
    watch.tick()
    time.sleep(0.3)
    with pytest.raises(FrozenError):
        watch.check()
