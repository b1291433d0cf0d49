"""Helpers of the web tests: a registry in a test's home, the routing table, the web app and Chromium
(polling is streams_helpers.wait_for)."""

from __future__ import annotations

import time
from typing import Any

from prefloop import keys, routing
from prefloop.errors import DecodeError
from prefloop.settings import Settings


def make_registry(settings: Settings, candidates: int = 1):
    """v1.0 (the tiny base) in production and `candidates` trained versions, in the test's own home; the
    routing table points at this production with no canary."""
    from trainer.registry import ModelRegistry

    reg = ModelRegistry(settings.home)
    reg.ensure_base("tiny")
    for _ in range(candidates):
        reg.register_candidate(adapter_path="/nonexistent/adapter", base_model="tiny", snapshot_id="s", metrics={})
    return reg


def set_routing(redis_client: Any, production: str, canary: str = "", fraction: float = 0.0) -> None:
    redis_client.delete(keys.ROUTING)
    routing.write_table(redis_client, routing.RoutingTable(production, canary, fraction))


CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup.sh installs it); Playwright downloads no browser
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_context(playwright: Any, user_data_dir: Any, **options: Any) -> Any:
    """A headless Chromium with a fresh profile in `user_data_dir` (Playwright's persistent context)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS,
        viewport={"width": 1280, "height": 900}, **options)


class WebProcess:
    """`prefloop web` as a subprocess, started with `env` and stopped by PID."""

    def __init__(self, env: dict[str, str], log_path: Any) -> None:
        import subprocess
        import sys

        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "prefloop.cli", "web"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120) -> None:
        from prefloop.web.server import READY_LINE

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if READY_LINE in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"prefloop web exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(f"prefloop web not ready after {timeout_s:g}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def decodable(values: list[bytes]) -> list[Any]:
    """The records of a shared feedback topic that decode: the session's fuzz tests put corrupt ones there
    on purpose (the streams worker sends those to the DLQ)."""
    from schemas import decode

    out = []
    for value in values:
        try:
            out.append(decode(value))
        except DecodeError:
            pass
    return out
