"""Pure logic of the streams workers: pair rules, quality rules, text measures, bundles, settings."""

from __future__ import annotations

import random

import pytest

from prefloop.errors import ConfigError
from schemas import Action, ActionKind, PairSource, Response, pair_hash
from streams import wire
from streams.pairing.prompt_group import HUMAN_VERSION, PromptGroup
from streams.pairing.quality import EMPTY, IDENTICAL, NEAR_DUPLICATE, TINY, QualityRules
from streams.pairing.text import levenshtein, normalised_distance, similarity_at_least
from streams.settings import StreamsSettings

PROMPT = "How do I reverse a list in Python?"


def resp(rid: str, text: str, version: str = "v1") -> Response:
    return Response(response_id=rid, prompt=PROMPT, response=text, model_version=version)


def act(rid: str, kind: str, **kw) -> Action:
    return Action(response_id=rid, kind=ActionKind(kind), **kw)


def group_with(*responses: Response, **rules) -> PromptGroup:
    g = PromptGroup(responses[0].prompt_id, None, StreamsSettings(**rules))
    for r in responses:
        assert g.add_response(r)
    return g


def combos(drafts) -> set[tuple[str, str]]:
    return {(d.chosen_response_id, d.rejected_response_id) for d in drafts}


# --- EDIT / CHOICE ---------------------------------------------------------------------------------
def test_edit_pair_chosen_is_edited_text_rejected_is_original():
    g = group_with(resp("a", "Use list.reverse() or slicing."))
    [d] = g.apply(act("a", "EDIT", edited_text="Use reversed(xs) or xs[::-1]."))
    assert d.source is PairSource.EDIT
    assert (d.chosen, d.rejected) == ("Use reversed(xs) or xs[::-1].", "Use list.reverse() or slicing.")
    assert d.rejected_response_id is None and d.chosen_model_version == HUMAN_VERSION
    assert d.rejected_model_version == "v1" and d.prompt == PROMPT


def test_choice_pair_needs_both_responses_and_orders_them():
    g = group_with(resp("a", "Answer A", "v1"), resp("b", "Answer B", "v2"))
    choice = act("b", "CHOICE", rejected_response_id="a")
    assert g.missing_references(choice) == []
    [d] = g.apply(choice)
    assert (d.chosen, d.rejected, d.chosen_model_version, d.rejected_model_version) == ("Answer B", "Answer A", "v2", "v1")
    assert g.missing_references(act("b", "CHOICE", rejected_response_id="zzz")) == ["zzz"]


# --- THUMBS -------------------------------------------------------------------------------------------
def test_thumbs_pairs_every_up_down_combination():
    g = group_with(*(resp(r, f"text {r}") for r in "abcd"))
    out = []
    out += g.apply(act("a", "THUMBS_UP", user_id="u1"))
    out += g.apply(act("b", "THUMBS_UP", user_id="u2"))
    assert out == []  # no down-voted response yet
    out += g.apply(act("c", "THUMBS_DOWN", user_id="u3"))
    out += g.apply(act("d", "THUMBS_DOWN", user_id="u4"))
    assert combos(out) == {("a", "c"), ("b", "c"), ("a", "d"), ("b", "d")}
    assert all(d.source is PairSource.THUMBS for d in out)


def test_thumbs_cap_limits_pairs_per_response():
    g = group_with(*(resp(f"u{i}", f"up {i}") for i in range(3)), *(resp(f"d{i}", f"down {i}") for i in range(5)),
                   thumbs_cap=2)
    out = []
    for i in range(3):
        out += g.apply(act(f"u{i}", "THUMBS_UP", user_id=f"x{i}"))
    for i in range(5):
        out += g.apply(act(f"d{i}", "THUMBS_DOWN", user_id=f"y{i}"))
    per_response: dict[str, int] = {}
    for d in out:
        for rid in (d.chosen_response_id, d.rejected_response_id):
            per_response[rid] = per_response.get(rid, 0) + 1
    assert max(per_response.values()) == 2
    assert len(out) == 3 * 2  # every up response reached its cap (5 downs available)


def test_thumbs_vote_is_per_user_and_idempotent():
    g = group_with(resp("a", "text a"), resp("b", "text b"))
    up = act("a", "THUMBS_UP", user_id="u1")
    assert g.apply(up) == [] and g.apply(up) == []
    assert g.state["v"]["a"] == {"u1": 1}
    # the same user flips the vote on b twice: one voter, net -1
    g.apply(act("b", "THUMBS_UP", user_id="u2"))
    out = g.apply(act("b", "THUMBS_DOWN", user_id="u2"))
    assert combos(out) == {("a", "b")}


# --- RATING -------------------------------------------------------------------------------------------
def test_rating_pairs_when_means_differ_by_the_gap():
    g = group_with(resp("a", "text a"), resp("b", "text b"), resp("c", "text c"), rating_gap=2)
    out = []
    out += g.apply(act("a", "RATING", rating=5, user_id="u1"))
    out += g.apply(act("b", "RATING", rating=4, user_id="u2"))  # gap 1: no pair
    assert out == []
    out += g.apply(act("c", "RATING", rating=2, user_id="u3"))  # a-c gap 3, b-c gap 2
    assert combos(out) == {("a", "c"), ("b", "c")}
    assert all(d.source is PairSource.RATING for d in out)
    # a second rating of the same pair never emits it again
    assert g.apply(act("c", "RATING", rating=1, user_id="u4")) == []


def test_rating_uses_mean_per_response():
    g = group_with(resp("a", "text a"), resp("b", "text b"), rating_gap=2)
    g.apply(act("a", "RATING", rating=5, user_id="u1"))
    g.apply(act("a", "RATING", rating=1, user_id="u2"))  # mean 3
    assert g.apply(act("b", "RATING", rating=2, user_id="u3")) == []  # 3 vs 2
    assert g.apply(act("b", "RATING", rating=1, user_id="u4")) == []  # 3 vs 1.5
    # u3 changes their rating of b: one rating per user, so b's mean is now 1
    assert combos(g.apply(act("b", "RATING", rating=1, user_id="u3"))) == {("a", "b")}


def test_accept_makes_no_pair():
    g = group_with(resp("a", "text a"))
    assert g.apply(act("a", "ACCEPT")) == []


# --- state -----------------------------------------------------------------------------------------------
def test_state_round_trips_through_json_and_dedups_events():
    import json

    g = group_with(resp("a", "text a"), resp("b", "text b"))
    first = act("a", "THUMBS_UP", user_id="u1")
    g.mark_seen(first.event_id)
    g.apply(first)
    again = PromptGroup(g.prompt_id, json.loads(json.dumps(g.state)), StreamsSettings())
    assert again.seen(first.event_id)
    assert combos(again.apply(act("b", "THUMBS_DOWN", user_id="u2"))) == {("a", "b")}


def test_group_evicts_oldest_response_beyond_the_cap():
    g = group_with(*(resp(f"r{i}", f"t{i}") for i in range(4)), max_group_responses=3)
    assert not g.has_response("r0") and g.has_response("r3")


def test_seen_events_are_bounded():
    g = PromptGroup("p", None, StreamsSettings(seen_events_per_group=3))
    for i in range(5):
        g.mark_seen(f"e{i}")
    assert [g.seen(f"e{i}") for i in range(5)] == [False, False, True, True, True]


# --- quality -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        ("", "something", EMPTY),
        ("   ", "something", EMPTY),
        ("a", "something", TINY),
        ("Same answer.", "same   ANSWER.", IDENTICAL),
        ("The quick brown fox jumps over the lazy dog!!", "The quick brown fox jumps over the lazy dog.", NEAR_DUPLICATE),
        ("Paris is the capital.", "Lyon is a large city in France.", None),
    ],
)
def test_quality_rules(chosen, rejected, reason):
    assert QualityRules(min_chars=2, similarity_threshold=0.95).check(chosen, rejected) == reason


def test_similarity_threshold_is_configurable():
    a, b = "abcdefghij", "abcdefghXY"  # similarity 0.8
    assert QualityRules.from_settings(StreamsSettings(similarity_threshold=0.8)).check(a, b) == NEAR_DUPLICATE
    assert QualityRules.from_settings(StreamsSettings(similarity_threshold=0.81)).check(a, b) is None


# --- text ------------------------------------------------------------------------------------------------
def _dp(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_levenshtein_matches_dynamic_programming():
    rng = random.Random(7)
    for _ in range(500):
        a = "".join(rng.choice("abcé ") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("abcé ") for _ in range(rng.randint(0, 30)))
        assert levenshtein(a, b) == _dp(a, b)
        longest = max(len(a), len(b)) or 1
        for t in (0.5, 0.8, 0.95):
            assert similarity_at_least(a, b, t) == (1 - _dp(a, b) / longest >= t - 1e-12 if a or b else True)


def test_normalised_distance_bounds():
    assert normalised_distance("", "") == 0.0
    assert normalised_distance("abc", "abc") == 0.0
    assert normalised_distance("abc", "xyz") == 1.0
    assert normalised_distance("kitten", "sitting") == pytest.approx(3 / 7)


# --- bundles ---------------------------------------------------------------------------------------------
def test_bundles_round_trip_typed_fields_and_reject_garbage():
    items = [wire.PairCandidate("p1", b"\x00" * 300, b'["p1"]'), wire.PairCandidate("x\u00e9", b"", b"[]")]
    assert wire.unpack(wire.pack(items, wire.PairCandidate), wire.PairCandidate) == items
    assert wire.unpack(wire.pack(items, wire.PairCandidate), wire.PairCandidate)[0].record == b"\x00" * 300
    with pytest.raises(wire.BundleError, match="bad magic"):
        wire.unpack(b"garbage", wire.PairCandidate)
    with pytest.raises(wire.BundleError, match="corrupt bundle"):
        wire.unpack(wire.pack(items, wire.PairCandidate)[:-1], wire.PairCandidate)
    with pytest.raises(wire.BundleError, match="arrays of 13 fields"):
        wire.unpack(wire.pack([wire.IndexedResponse("r", "p", 1)], wire.IndexedResponse), wire.ForwardedAction)
    with pytest.raises(wire.BundleError, match="should have 3 fields, got 2"):
        wire.pack([["r", 1]], wire.PairCandidate)


def test_forwarded_action_carries_the_action_and_where_it_was_read():
    action = Action(response_id="r1", kind=ActionKind.CHOICE, rejected_response_id="r2", user_id="u")
    item = wire.forwarded_action(action, b"avro", 3, 17, 1234, "prompt-1")
    (back,) = wire.unpack(wire.pack([item], wire.ForwardedAction), wire.ForwardedAction)
    assert (back.partition, back.offset, back.arrived_ms, back.prompt_id) == (3, 17, 1234, "prompt-1")
    assert wire.action_of(back) == action


def test_rows_bundles_carry_a_table_and_its_rows():
    data = wire.pack_rows("pair_drops", [b'["a",1]', b'["b",2]'])
    assert wire.unpack_rows(data) == ("pair_drops", b'["a",1]\n["b",2]\n', 2)


def test_pair_id_is_the_content_hash():
    g = group_with(resp("a", "Use slicing."))
    [d] = g.apply(act("a", "EDIT", edited_text="Use reversed()."))
    assert pair_hash(d.prompt, d.chosen, d.rejected) == pair_hash(PROMPT, "Use reversed().", "Use slicing.")


# --- settings ----------------------------------------------------------------------------------------------
def test_settings_validate_and_load_from_env(monkeypatch):
    from prefloop.settings import Settings

    with pytest.raises(ConfigError, match='"thumbs_cap" should be greater than zero, got 0'):
        StreamsSettings(thumbs_cap=0)
    monkeypatch.setenv("PREFLOOP_STREAMS_THUMBS_CAP", "7")
    monkeypatch.setenv("PREFLOOP_STREAMS_ORPHAN_TTL_S", "25.5")
    ss = Settings().section(StreamsSettings, "streams")
    assert (ss.thumbs_cap, ss.orphan_ttl_s) == (7, 25.5)
    with pytest.raises(ConfigError, match="orphan_ttl_s"):
        StreamsSettings(orphan_ttl_s=5, session_timeout_s=10)


# --- partitioning and deferred table writes ---------------------------------------------------------
def test_partition_for_is_kafkas_murmur2_partitioner():
    """The Java client's test vectors (signed murmur2 with Kafka's seed), and aiokafka's pure-Python murmur2."""
    import ctypes
    import random

    from aiokafka.partitioner import murmur2
    from murmurhash2 import murmurhash2

    from prefloop.partitioner import KAFKA_MURMUR2_SEED, partition_for

    vectors = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
               "a-little-bit-longer-string": -1486304829, "abc": 479470107,
               "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for key, signed in vectors.items():
        assert ctypes.c_int32(murmurhash2(key.encode(), KAFKA_MURMUR2_SEED)).value == signed
        assert partition_for(key, 12) == (signed & 0x7FFFFFFF) % 12
    rng = random.Random(7)
    for _ in range(2000):
        key = "".join(rng.choice("abcdef0123456789-é") for _ in range(rng.randint(0, 40)))
        assert partition_for(key, 8) == (murmur2(key.encode()) & 0x7FFFFFFF) % 8


def test_deferred_table_writes_send_each_dirty_key_once_and_skip_short_lived_keys():
    import asyncio
    import json
    from types import SimpleNamespace

    from streams.runtime import Runtime, Stats

    sent = []

    async def send_batch(topic, partition, records):
        for key, value in records:
            sent.append((topic.get_topic_name(), json.loads(key), None if value is None else json.loads(value),
                         partition))
        return []

    rt = Runtime.__new__(Runtime)
    rt.stats, rt._dirty, rt._created, rt._unacked, rt.send_batch = Stats(), {}, {}, [], send_batch
    table = SimpleNamespace(name="t", data={"old": [1], "gone": [2]},
                            changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-changelog"))
    rt.stage_put(table, 3, "old", [1, 2])
    rt.stage_put(table, 3, "old", [1, 2, 3])  # twice in one interval: written once, last value
    rt.stage_delete(table, 5, "gone")  # existed before: needs a tombstone
    rt.stage_put(table, 1, "brief", [9])
    rt.stage_delete(table, 1, "brief")  # created and deleted between writes: the changelog never had it
    rt.stage_put(table, 2, "new", {"a": "é"})
    assert asyncio.run(rt.write_dirty(table)) == 3
    assert sorted(sent, key=str) == sorted([("t-changelog", "old", [1, 2, 3], 3), ("t-changelog", "gone", None, 5),
                                            ("t-changelog", "new", {"a": "é"}, 2)], key=str)
    sent.clear()
    assert asyncio.run(rt.write_dirty(table)) == 0 and sent == []  # nothing dirty any more
    rt.stage_delete(table, 2, "new")  # written by the last write_dirty, so deleting it needs a tombstone
    assert asyncio.run(rt.write_dirty(table)) == 1 and sent == [("t-changelog", "new", None, 2)]
