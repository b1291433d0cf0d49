"""Helpers shared by the gate tests (a module of its own: `from conftest import …` picks whichever
conftest.py was imported last when the whole suite runs)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefloop.services.process import free_port
from prefloop.settings import Settings

# Gentle, learnable training on the tiny model: the trainer's LoRA rate scaled for 30 steps. Harder
# training (5e-3) also learns the preferences but wrecks the tiny model's greedy answers (the guardrails
# catch it), which a test of promotion should not depend on.
TINY = dict(base_model="tiny", max_length=48, batch_size=8, max_steps=30, learning_rate=3e-4, progress=False,
            cpu_threads=1, ref_batch_size=32, device="cpu", min_heldout_pairs=0)
# Gate settings for tests: short guardrail answers, one CPU thread.
GATE_ENV = dict(cpu_threads=1, max_new_tokens=16, guardrail_prompts=16, batch_size=32, bootstrap_samples=1000)



@dataclass(frozen=True)
class Trained:
    home: Path  # its snapshots and held-out ledger
    adapter: Path
    snapshot_id: str



def gate_environment(monkeypatch: pytest.MonkeyPatch, home: Path, cache: Path, services: Settings | None = None) -> Settings:
    """Export settings so `load_settings()` (the CLI) sees `home`, `cache` and the test gate settings; without
    `services`, Redis and analytics point at free ports nobody listens on."""
    monkeypatch.delenv("PREFLOOP_CONFIG", raising=False)
    monkeypatch.chdir(home.parent)  # no stray prefloop.toml
    values = {"HOME": str(home), "CACHE_DIR": str(cache)}
    if services is None:
        values.update(REDIS_PORT=str(free_port()), REDIS_URL="", ANALYTICS_PORT=str(free_port()), CLICKHOUSE_URL="",
                      KAFKA_PORT=str(free_port()), KAFKA_BOOTSTRAP="")
    else:
        values.update(REDIS_PORT=str(services.redis_port), ANALYTICS_PORT=str(services.analytics_port),
                      KAFKA_PORT=str(services.kafka_port), KAFKA_BOOTSTRAP=services.kafka_bootstrap, REDIS_URL="",
                      CLICKHOUSE_URL="")
    for key, value in values.items():
        monkeypatch.setenv(f"PREFLOOP_{key}", value)
    for key, value in TINY.items():
        monkeypatch.setenv(f"PREFLOOP_TRAINER_{key.upper()}", str(value))
    for key, value in GATE_ENV.items():
        monkeypatch.setenv(f"PREFLOOP_EVALUATOR_{key.upper()}", str(value))
    from prefloop.settings import load_settings

    return load_settings()



def install_candidate(trained: Trained, home: Path, name: str = "adapter") -> str:
    """Copy a trained candidate's snapshots, ledger and adapter into `home` and register it; returns its version."""
    from trainer.registry import ModelRegistry

    shutil.copytree(trained.home / "snapshots", home / "snapshots", dirs_exist_ok=True)
    adapter = home / "runs" / name
    shutil.copytree(trained.adapter, adapter)
    record = ModelRegistry(home).register_candidate(adapter_path=adapter, base_model="tiny", snapshot_id=trained.snapshot_id,
                                                    metrics={})
    return record.version
