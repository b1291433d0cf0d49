"""Win rates, drift, the analysts' SQL and the retraining trigger, on the real services."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from prefloop import topics
from prefloop.analytics.store import ch_time
from schemas import Action, ActionKind, Response, TrainingRequest, decode
from schemas.records import ROUTE_TAG
from streams import drift
from streams.pairing.text import normalised_distance
from prefloop.keys import PAIRS_TOTAL as PAIRS_TOTAL_KEY
from prefloop.keys import TRIGGER_LOCK as LOCK_KEY
from prefloop.keys import TRIGGER_STATE as STATE_KEY
from streams.settings import StreamsSettings
from streams.trigger import Trigger
from streams.trigger_progress import trigger_progress
from trainer.snapshots import freeze_pairs
from streams_helpers import produce, read_pairs, read_topic, wait_for

pytestmark = pytest.mark.services

DOC = Path(__file__).resolve().parents[2] / "README.md"


def win_rate_workload(tag: str, groups: int = 10) -> tuple[list, dict]:
    a, b = f"{tag}-A", f"{tag}-B"
    records, edits = [], []
    for g in range(groups):
        prompt = f"[{tag}] win-rate question {g} about caching strategy number {g}"
        r = [Response(response_id=f"{tag}-{g}-{i}", prompt=prompt, model_version=(a, b)[i % 2],
                      response=f"response {i} of group {g}: " + " ".join(f"t{i}{j}" for j in range(8)))
             for i in range(4)]
        records += r
        edited = f"edited response for group {g}: use a write-through cache with a TTL"
        edits.append(normalised_distance(r[3].response, edited))
        records += [
            Action(response_id=r[1].response_id, kind=ActionKind.CHOICE, rejected_response_id=r[0].response_id),
            Action(response_id=r[0].response_id, kind=ActionKind.THUMBS_UP, user_id=f"u{g}"),
            Action(response_id=r[1].response_id, kind=ActionKind.THUMBS_DOWN, user_id=f"v{g}"),
            Action(response_id=r[2].response_id, kind=ActionKind.RATING, rating=4, user_id=f"w{g}"),
            Action(response_id=r[3].response_id, kind=ActionKind.RATING, rating=2, user_id=f"x{g}"),
            Action(response_id=r[3].response_id, kind=ActionKind.EDIT, edited_text=edited),
        ]
        if g < 5:  # A vs A: a tie for A
            records.append(Action(response_id=r[2].response_id, kind=ActionKind.CHOICE,
                                  rejected_response_id=r[0].response_id))
    expected = {
        a: dict(wins=0, losses=groups, ties=5, thumbs_up=groups, thumbs_down=0, mean_rating=4.0, edits=0,
                responses=2 * groups),
        b: dict(wins=groups, losses=0, ties=0, thumbs_up=0, thumbs_down=groups, mean_rating=2.0, edits=groups,
                responses=2 * groups, edit_rate=0.5, mean_edit_distance=sum(edits) / len(edits)),
    }
    return records, expected


def test_win_rates_per_version(services, pipeline, store, tag):
    records, expected = win_rate_workload(tag)
    produce(services, records)
    sql = (f"SELECT model_version, sum(wins), sum(losses), sum(ties), sum(thumbs_up), sum(thumbs_down), "
           f"sum(ratings), sum(mean_rating * ratings) / sum(ratings), sum(edits), sum(responses), "
           f"sum(mean_edit_distance * edits) / nullIf(sum(edits), 0) FROM win_rates "
           f"WHERE model_version LIKE '{tag}-%' GROUP BY model_version ORDER BY model_version")
    n_actions = sum(isinstance(r, Action) for r in records)
    wait_for(lambda: store.query(f"SELECT count() FROM action_facts FINAL WHERE response_id LIKE '{tag}-%'").scalar()
             == n_actions, 60, what="all action facts")
    wait_for(lambda: store.query(f"SELECT count() FROM feedback_events FINAL WHERE event_type = 'response' AND "
                                 f"response_id LIKE '{tag}-%'").scalar() == 40, 60, what="all responses")
    rows = {r[0]: r[1:] for r in store.query(sql).rows}
    for version, exp in expected.items():
        wins, losses, ties, up, down, ratings, mean_rating, edits, responses, mean_ed = rows[version]
        assert (wins, losses, ties, up, down, edits, responses) == (
            exp["wins"], exp["losses"], exp["ties"], exp["thumbs_up"], exp["thumbs_down"], exp["edits"],
            exp["responses"])
        assert mean_rating == pytest.approx(exp["mean_rating"])
        if exp["edits"]:
            assert mean_ed == pytest.approx(exp["mean_edit_distance"])
    view = store.query(f"SELECT sum(edits) / sum(responses), sum(wins) / (sum(wins) + sum(losses)) FROM win_rates "
                       f"WHERE model_version = '{tag}-B'").rows[0]
    assert view == [pytest.approx(0.5), pytest.approx(1.0)]


# --- drift ------------------------------------------------------------------------------------------------------------
def insert_window(store, start_ms: int, tag: str, version: str, prompt_lengths: list[int], categories: list[str],
                  thumbs_up: int, thumbs_down: int, canary_share: float = 0.0) -> None:
    cols = ["event_id", "event_type", "occurred_at", "response_id", "prompt_id", "model_version", "user_id", "kind",
            "rating", "rejected_response_id", "prompt_chars", "response_chars", "tags", "source_partition",
            "source_offset"]
    rows = [[f"{tag}-{start_ms}-{i}", "response", ch_time(start_ms + i), f"{tag}-r{i}", f"{tag}-p", version, None, "",
             None, None, n, 120, {"category": c, ROUTE_TAG: "canary" if i < canary_share * len(categories) else "production"},
             0, i] for i, (n, c) in enumerate(zip(prompt_lengths, categories))]
    store.insert_rows("feedback_events", cols, rows)
    fcols = ["event_id", "occurred_at", "kind", "response_id", "prompt_id", "model_version", "user_id", "rating",
             "rejected_response_id", "rejected_model_version", "edit_distance", "prompt_chars", "response_chars"]
    facts = [[f"{tag}-{start_ms}-f{i}", ch_time(start_ms + i), "THUMBS_UP" if i < thumbs_up else "THUMBS_DOWN",
              f"{tag}-r{i}", f"{tag}-p", version, None, None, None, "", None, 60, 120]
             for i in range(thumbs_up + thumbs_down)]
    store.insert_rows("action_facts", fcols, facts)


def test_drift_against_reference_and_own_baseline(services, store, tag):
    hour = 3600 * 1000
    # Windows far from any other test's events; the version name is unique to this test.
    base = (4_000_000_000_000 // hour + int(time.time()) % 1000) * hour
    version = f"{tag}-prod"
    insert_window(store, base, tag, version, [60] * 100, ["coding"] * 50 + ["chat"] * 50, thumbs_up=80, thumbs_down=20)
    # ... and a canary rollout began: the gateway's route tag moved, which is not drift of the users' input.
    insert_window(store, base + hour, tag, version, [60] * 50 + [500] * 50, ["coding"] * 50 + ["chat"] * 50,
                  thumbs_up=40, thumbs_down=60, canary_share=0.5)
    reference = drift.Reference("test-ref", drift.input_profile(store, base, base + hour, 20), {})
    rows = drift.compute_window(store, base + hour, 3600, 10, 20, reference)
    got = {(r[2], r[3], r[4]): r for r in rows}
    assert got[("input", "prompt_length", "psi")][6] > 0.25  # half the prompts got much longer
    assert got[("input", "tag:category", "psi")][6] == pytest.approx(0.0, abs=1e-9)  # categories unchanged
    assert not [k for k in got if k[1] == f"tag:{ROUTE_TAG}"]
    assert got[("input", "response_length", "js")][6] == pytest.approx(0.0, abs=1e-9)
    assert 0 < got[("input", "prompt_length", "js")][6] <= 1
    pref = got[("preference", "thumbs_up_rate", "delta")]
    assert pref[5] == version and pref[6] == pytest.approx(-0.4) and pref[7] == pytest.approx(0.4)
    assert pref[8] == pytest.approx(0.8)  # the version's own first window is its baseline
    # written twice (a rerun): FINAL still shows one row per key
    store.insert_rows("drift_metrics", drift.DRIFT_COLUMNS, rows)
    store.insert_rows("drift_metrics", drift.DRIFT_COLUMNS, rows)
    window = f"window_start = toDateTime64('{ch_time(base + hour)}', 3, 'UTC')"
    assert store.query(f"SELECT count() FROM drift_metrics FINAL WHERE {window}").scalar() == len(rows)
    # leave no far-future window behind for the trigger's "latest drift"
    store.command(f"ALTER TABLE drift_metrics DELETE WHERE {window} SETTINGS mutations_sync = 1")
    assert store.query(f"SELECT count() FROM drift_metrics WHERE {window}").scalar() == 0


# --- the analysts' SQL ---------------------------------------------------------------------------------------------
def test_analytics_doc_queries_run_and_answer(services, pipeline, store, tag):
    records, _ = win_rate_workload(tag, groups=3)
    produce(services, records)
    wait_for(lambda: store.query(f"SELECT count() FROM preference_pairs FINAL WHERE prompt LIKE '[{tag}]%'").scalar()
             >= 9, 60, what="pairs in ClickHouse")
    wait_for(lambda: store.query(f"SELECT count() FROM action_facts FINAL WHERE response_id LIKE '{tag}-%'").scalar()
             == sum(isinstance(r, Action) for r in records), 60, what="facts")
    queries = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    assert len(queries) >= 7
    results = [store.query(q) for q in queries]  # every query of the README runs
    losing, per_day, drift_rows, per_source, _drops, errors, decisions = results[:7]
    assert errors.columns == ["model_version", "responses", "error_rate", "p99_ms"]
    assert decisions.columns[:3] == ["occurred_at", "candidate_version", "decision"]
    assert "negative" in losing.columns and losing.rows
    days = {(r[1]): r for r in per_day.rows}
    assert days[f"{tag}-B"][2] == 3 and days[f"{tag}-A"][3] == 3  # B won every A-vs-B choice
    assert {r[1] for r in per_source.rows} >= {"EDIT", "CHOICE", "THUMBS", "RATING"}
    assert drift_rows.columns[:4] == ["window_start", "kind", "feature", "metric"]


# --- trigger ----------------------------------------------------------------------------------------------------------
async def concurrent_checks(settings, ss: StreamsSettings, n: int) -> list[TrainingRequest | None]:
    """n triggers as n workers would run them: own Redis connection, own producer, at the same moment."""
    clients = [aioredis.Redis.from_url(settings.redis_dsn) for _ in range(n)]
    producers = [AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all") for _ in range(n)]
    for p in producers:
        await p.start()
    try:
        def sender(producer):
            async def send(topic, key, value):
                return await producer.send(topic, value=value, key=key)
            return send

        triggers = [Trigger(settings, ss, c, sender(p), freeze_pairs) for c, p in zip(clients, producers)]
        return list(await asyncio.gather(*(t.check() for t in triggers)))
    finally:
        for p in producers:
            await p.stop()
        for c in clients:
            await c.aclose()


def requests_on_topic(settings) -> list[TrainingRequest]:
    return [decode(r.value) for r in read_topic(settings, topics.TRAINING_REQUESTS)]  # type: ignore[misc]


def test_trigger_fires_once_per_crossing(services, pipeline, redis_client, tag):
    from trainer.snapshots import load_snapshot

    first = [Response(response_id=f"{tag}-t{i}", prompt=f"[{tag}] trigger prompt {i}", model_version="v1",
                      response=f"an answer about topic {i} that is long enough") for i in range(6)]
    produce(services, [*first, *(Action(response_id=r.response_id, kind=ActionKind.EDIT,
                                        edited_text=f"a better answer number {i}") for i, r in enumerate(first))])
    wait_for(lambda: len([p for p in read_pairs(services) if tag in p.prompt]) == 6, 60, what="6 pairs")
    wait_for(lambda: int(redis_client.get(PAIRS_TOTAL_KEY) or 0) >= 6, 30, what="pairs counted")
    redis_client.delete(STATE_KEY, LOCK_KEY)  # this test owns the trigger state
    total = int(redis_client.get(PAIRS_TOTAL_KEY))
    before = len(requests_on_topic(services))
    ss = StreamsSettings(trigger_new_pairs=total, trigger_min_pairs=1, trigger_cooldown_s=0)

    fired = [r for r in asyncio.run(concurrent_checks(services, ss, 3)) if r is not None]
    assert len(fired) == 1
    request = fired[0]
    assert request.reason.value == "NEW_PAIRS" and request.pair_count == total
    snapshot = load_snapshot(services.home, request.snapshot_id)
    assert len(snapshot.pairs) == total
    published = requests_on_topic(services)[before:]
    assert [r.event_id for r in published] == [request.event_id]
    assert redis_client.get(LOCK_KEY).decode() == request.event_id
    progress = trigger_progress(services, ss)
    assert progress["pairs_since_last_training"] == 0 and progress["lock_holder"] == request.event_id

    # The next crossing: while the lock is held (training runs) nothing fires; once released, one request
    # with exactly the new pairs.
    second = [Response(response_id=f"{tag}-s{i}", prompt=f"[{tag}] second prompt {i}", model_version="v2",
                       response=f"another answer about subject {i}, long enough") for i in range(4)]
    produce(services, [*second, *(Action(response_id=r.response_id, kind=ActionKind.EDIT,
                                         edited_text=f"an improved answer {i}") for i, r in enumerate(second))])
    wait_for(lambda: int(redis_client.get(PAIRS_TOTAL_KEY)) >= total + 4, 60, what="4 more pairs")
    ss2 = StreamsSettings(trigger_new_pairs=4, trigger_min_pairs=1, trigger_cooldown_s=0)
    assert [r for r in asyncio.run(concurrent_checks(services, ss2, 3)) if r] == []
    assert trigger_progress(services, ss2)["pairs_since_last_training"] == 4
    redis_client.delete(LOCK_KEY)  # the trainer finished
    fired = [r for r in asyncio.run(concurrent_checks(services, ss2, 3)) if r is not None]
    assert len(fired) == 1 and fired[0].pair_count == 4
    snapshot = load_snapshot(services.home, fired[0].snapshot_id)
    assert {p.prompt for p in snapshot.pairs} == {r.prompt for r in second}
    assert [r.event_id for r in requests_on_topic(services)[before:]] == [request.event_id, fired[0].event_id]
    # nothing new: nothing fires, even with the lock free
    redis_client.delete(LOCK_KEY)
    assert [r for r in asyncio.run(concurrent_checks(services, ss2, 3)) if r] == []
