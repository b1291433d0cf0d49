"""Fixtures for gate tests: one tiny model and one trained candidate of each kind per session.

Candidates are trained once (seconds each on the tiny Llama) and copied into each test's home
when a test needs a registry of its own, so the whole module trains four adapters.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for gate_synthetic

from gate_synthetic import feature_pairs, length_pairs, write_jsonl  # noqa: E402

from prefloop.services.process import free_port  # noqa: E402
from prefloop.settings import Settings  # noqa: E402

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


@pytest.fixture(scope="session")
def gate_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir with the tiny Llama; its reference cache fills as candidates train."""
    from trainer.tiny_model import ensure_tiny_model

    cache = tmp_path_factory.mktemp("gate-cache")
    ensure_tiny_model(cache)
    return cache


@pytest.fixture(scope="session")
def train_candidate(tmp_path_factory: pytest.TempPathFactory, gate_cache: Path) -> Callable[[str], Trained]:
    """kind -> a candidate trained once per session: `true`, `flipped`, `coin` (feature pairs; a quarter
    held out) or `length` (chosen always the longer reply; nothing held out)."""
    from trainer.settings import TrainerSettings
    from trainer.snapshots import create_snapshot
    from trainer.train import run_training

    done: dict[str, Trained] = {}

    def train(kind: str) -> Trained:
        if kind not in done:
            root = tmp_path_factory.mktemp(f"candidate-{kind}")
            if kind == "length":
                rows, fraction = length_pairs(240, seed=1, longer_share=1.0), 0.0
            else:
                rows, fraction = feature_pairs(240, seed=1, labels=kind), 0.25
            snapshot = create_snapshot(rows, root / "home")
            settings = TrainerSettings(**TINY, heldout_fraction=fraction)
            run = run_training(settings, snapshot=snapshot, output_dir=root / "adapter", home=root / "home", cache_dir=gate_cache)
            done[kind] = Trained(home=root / "home", adapter=run.output_dir, snapshot_id=snapshot.snapshot_id)
        return done[kind]

    return train


@pytest.fixture(scope="session")
def heldout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 held-out feature pairs (new prompts, the same features) as a `--pairs` file."""
    return write_jsonl(tmp_path_factory.mktemp("heldout") / "heldout.jsonl", feature_pairs(200, seed=99, tag="h"))


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


@pytest.fixture
def gate_env(tmp_path: Path, gate_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """An empty home of this test, with the session's cache, exported for the CLI; no services."""
    (tmp_path / "home").mkdir()
    yield gate_environment(monkeypatch, tmp_path / "home", gate_cache)


def install_candidate(trained: Trained, home: Path, name: str = "adapter") -> str:
    """Copy a trained candidate's snapshots, ledger and adapter into `home` and register it; returns its version."""
    from trainer.registry import ModelRegistry

    shutil.copytree(trained.home / "snapshots", home / "snapshots", dirs_exist_ok=True)
    adapter = home / "runs" / name
    shutil.copytree(trained.adapter, adapter)
    record = ModelRegistry(home).register_candidate(adapter_path=adapter, base_model="tiny", snapshot_id=trained.snapshot_id,
                                                    metrics={})
    return record.version
