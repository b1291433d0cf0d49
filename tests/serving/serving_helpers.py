"""`prefloop serve` as a subprocess for the gateway tests: started with an environment, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from prefloop.services.process import free_port

REPO = Path(__file__).resolve().parents[2]
PROXY_KEY = "test-key-for-the-proxy"  # the proxy gateway is configured with its sha256, never the key
UPSTREAM_SECRET = "upstream-secret-xyz"  # the proxy's upstream_api_key: must appear in no log or status


@dataclass
class ServeProcess:
    """A `prefloop serve` subprocess; stopped by PID."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prefloop serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.health()["status"] == "ready":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"prefloop serve not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def start_serve(env: dict[str, str], log_dir: Path, name: str, port: int | None = None, **serve: str) -> ServeProcess:
    """`prefloop serve` on `port` (default: a free one), with `serve` as [serve] settings."""
    port = port or free_port()
    env = dict(env)
    env["PREFLOOP_SERVE_PORT"] = str(port)
    for key, value in serve.items():
        env[f"PREFLOOP_SERVE_{key.upper()}"] = value
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefloop.cli", "serve"], cwd=str(REPO), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return ServeProcess(proc, port, log_path, env)


def make_adapter(model_dir: Path, out: Path, seed: int = 7) -> Path:
    """A LoRA adapter of the tiny model with random (not zero) weights, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(out)
    return out
