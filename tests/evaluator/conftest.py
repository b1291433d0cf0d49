"""Fixtures for gate tests: one tiny model and one trained candidate of each kind per session.

Candidates are trained once (seconds each on the tiny Llama) and copied into each test's home
when a test needs a registry of its own, so the whole module trains four adapters.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for gate_synthetic

from gate_helpers import TINY, Trained, gate_environment  # noqa: E402
from gate_synthetic import feature_pairs, length_pairs, write_jsonl  # noqa: E402

from prefloop.settings import Settings  # noqa: E402

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


@pytest.fixture
def gate_env(tmp_path: Path, gate_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """An empty home of this test, with the session's cache, exported for the CLI; no services."""
    (tmp_path / "home").mkdir()
    yield gate_environment(monkeypatch, tmp_path / "home", gate_cache)


