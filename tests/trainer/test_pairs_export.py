"""`prefloop pairs export` against the session's real analytics store (chDB behind the analytics service):
pairs in `preference_pairs` come out once each, filtered, paged, and `prefloop train --pairs` reads them back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from prefloop.analytics.columns import COLUMNS
from prefloop.services.supervisor import service_env
from schemas import PairSource, PreferencePair
from streams.sinks.rows import preference_pair
from trainer.pairs_export import PairFilter, iter_pairs
from trainer.pairs_io import read_pairs_file

DAY_MS = 86_400_000


def _pair(tag: str, i: int, source: PairSource, created_at: int) -> PreferencePair:
    return PreferencePair(prompt_id=f"p-{tag}-{i % 3}", prompt=f"[{tag}] question {i % 3}", chosen=f"good answer {i}",
                          rejected=f"bad answer {i}", chosen_response_id=f"{tag}-c{i}", rejected_response_id=f"{tag}-r{i}",
                          chosen_model_version=f"v-{tag}", rejected_model_version="v1.0", source=source,
                          weight=1.0 + i / 10, created_at=created_at)


@pytest.fixture
def stored(store) -> tuple[str, list[PreferencePair]]:
    """Seven pairs of one tag: five recent (EDIT and CHOICE), two ten days old (RATING); the first is
    inserted twice, as a sink retry would (FINAL keeps one)."""
    tag = uuid.uuid4().hex[:10]
    now = int(time.time() * 1000)
    pairs = [_pair(tag, i, PairSource.EDIT if i % 2 else PairSource.CHOICE, now - i * 1000) for i in range(5)]
    pairs += [_pair(tag, i, PairSource.RATING, now - 10 * DAY_MS) for i in range(5, 7)]
    store.insert_rows("preference_pairs", COLUMNS["preference_pairs"], [preference_pair(p) for p in pairs + pairs[:1]])
    return tag, pairs


def _export(services, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefloop.cli", "pairs", "export", *args],
                          capture_output=True, text=True, env=service_env(services), timeout=120)


def test_export_writes_each_selected_pair_once_and_train_reads_it_back(services, stored, tmp_path: Path):
    tag, pairs = stored
    out = tmp_path / "pairs.jsonl"
    done = _export(services, "--out", str(out), "--model-version", f"v-{tag}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith(f"exported 7 pairs to {out}")
    back = read_pairs_file(out)  # what `prefloop train --pairs` reads
    assert sorted(back, key=lambda p: p.pair_id) == sorted(pairs, key=lambda p: p.pair_id)
    assert [p.pair_id for p in back] == sorted(p.pair_id for p in pairs)
    assert not out.with_name(out.name + ".part").exists()

    recent_edits = _export(services, "--model-version", f"v-{tag}", "--since", "1d", "--source", "EDIT")
    assert recent_edits.returncode == 0, recent_edits.stderr
    lines = [json.loads(line) for line in recent_edits.stdout.splitlines()]
    assert sorted(line["pair_id"] for line in lines) == sorted(p.pair_id for p in pairs if p.source is PairSource.EDIT)
    assert recent_edits.stderr.strip() == "exported 2 pairs"

    trl = _export(services, "--model-version", f"v-{tag}", "--source", "RATING", "--source", "CHOICE",
                  "--format", "trl", "--limit", "4")
    rows = [json.loads(line) for line in trl.stdout.splitlines()]
    assert len(rows) == 4 and all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    wanted = {(p.prompt, p.chosen, p.rejected) for p in pairs if p.source in (PairSource.RATING, PairSource.CHOICE)}
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in rows} <= wanted


def test_pages_follow_the_pair_id_order_without_gaps_or_repeats(store, stored):
    tag, pairs = stored
    for page_rows in (1, 2, 3, 7, 100):
        got = list(iter_pairs(store, PairFilter(model_version=f"v-{tag}"), page_rows=page_rows))
        assert [p.pair_id for p in got] == sorted(p.pair_id for p in pairs), page_rows
    limited = list(iter_pairs(store, PairFilter(model_version=f"v-{tag}", limit=5), page_rows=2))
    assert [p.pair_id for p in limited] == sorted(p.pair_id for p in pairs)[:5]


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "argument --since: should be a duration (7d, 24h, 30m) or an ISO date"),
    (["--source", "LIKE"], "argument --source: invalid choice: 'LIKE'"),
    (["--limit", "0"], "argument --limit: should be greater than zero"),
])
def test_bad_arguments_are_one_line(services, args, message):
    done = _export(services, *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
