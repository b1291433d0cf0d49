"""The arena's battles and votes: server-side one vote per battle in the real Redis, the vote's
events on the real Kafka, and the pair the streams worker makes of them in chDB.

Where no model is needed the answers come from `RecordingGenerator`, which records each answer
exactly as the gateway does (a Response carrying the request's tags); the browser test
(test_browser.py) runs the same flow through a real `prefloop serve`.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from prefloop import keys, topics
from prefloop.errors import ConfigError
from prefloop.routing import RoutingTable
from prefloop.sdk import SyncFeedbackClient
from prefloop.web.arena import (Answer, Arena, ArenaError, BattleStore, VersionInfo, Vote, default_pair, named_pair,
                                today_utc, vote_actions, vote_event_id)
from prefloop.auth.settings import is_loopback
from prefloop.web.settings import WebSettings, check_bind
from prefloop.web.sources import LoopSources
from schemas.records import ActionKind
from streams_helpers import read_topic
from streams_helpers import wait_for
from web_helpers import decodable, make_registry, set_routing

TEXTS = {"v1.0": "Open Settings, then Security, and choose Reset password.",
         "v1.1": "Happy to help! You can reset your password from the account page whenever you like."}


class RecordingGenerator:
    """Answers as the gateway does: records a Response with the request's tags and returns its id."""

    def __init__(self, client: SyncFeedbackClient) -> None:
        self.client = client

    def answer(self, *, prompt: str, version: str, user_id: str, tags: dict[str, str]) -> Answer:
        text = TEXTS.get(version, f"{version} says hello")
        r = self.client.response(prompt=prompt, response=text, model_version=version, user_id=user_id, tags=tags)
        return Answer(version, r.response_id, text)


class FakeGenerator:
    def answer(self, *, prompt: str, version: str, user_id: str, tags: dict[str, str]) -> Answer:
        return Answer(version, f"r-{tags['battle_id']}-{tags['arena_side']}", f"{version}: {prompt}")


class ListSink:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list = []
        self.fail = fail

    def send_many(self, records):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("Kafka is down")
        self.sent.extend(records)


def fake_arena(redis_client, sink=None, seed: int = 3) -> Arena:
    versions = [VersionInfo("v1.0", "production", 1), VersionInfo("v1.1", "candidate", 2)]
    return Arena(BattleStore(redis_client, 600), FakeGenerator(), sink or ListSink(), lambda: versions,
                 lambda: RoutingTable("v1.0"), rng=random.Random(seed))


@pytest.mark.services
def test_a_vote_becomes_one_choice_and_one_pair_and_a_second_vote_adds_nothing(
        web_pipeline, web_settings, redis_client, store, tag) -> None:
    make_registry(web_settings, candidates=1)
    set_routing(redis_client, "v1.0")
    sources = LoopSources(web_settings)
    with SyncFeedbackClient(web_settings) as sdk:
        arena = Arena(BattleStore(redis_client, 600), RecordingGenerator(sdk), sdk, sources.versions, sources.routing)
        battle = arena.start(f"How do I reset my password? {tag}", "arena:tester")
        assert {battle.a.version, battle.b.version} == {"v1.0", "v1.1"}
        first = arena.vote(battle.battle_id, Vote.B)
        again = arena.vote(battle.battle_id, Vote.A)  # a double click or a replayed request
        arena.close()
    assert first.accepted and first.events == 1
    assert not again.accepted and again.vote is Vote.B and again.events == 0
    assert again.reveal() == f"Model A was {battle.a.version}, Model B was {battle.b.version}."

    ours = {battle.a.response_id, battle.b.response_id}
    actions = decodable([r.value for r in read_topic(web_settings, topics.ACTIONS)])
    mine = [a for a in actions if a.response_id in ours]
    assert len(mine) == 1
    choice = mine[0]
    assert choice.kind is ActionKind.CHOICE
    assert (choice.response_id, choice.rejected_response_id) == (battle.b.response_id, battle.a.response_id)
    assert choice.event_id == vote_event_id(battle.battle_id, ActionKind.CHOICE, battle.b.response_id)

    pairs = wait_for(lambda: store.query(
        f"SELECT source, chosen_model_version, rejected_model_version, rejected_response_id FROM preference_pairs FINAL "
        f"WHERE chosen_response_id = '{battle.b.response_id}'").rows, 60, what="the vote's pair in preference_pairs")
    assert pairs == [["CHOICE", battle.b.version, battle.a.version, battle.a.response_id]]
    tags = store.query(f"SELECT response_id, tags FROM feedback_events FINAL WHERE event_type = 'response' "
                       f"AND response_id IN ('{battle.a.response_id}', '{battle.b.response_id}') ORDER BY response_id").rows
    sides = {rid: t for rid, t in tags}
    assert sides[battle.a.response_id] == {"source": "arena", "battle_id": battle.battle_id, "arena_side": "A"}
    assert sides[battle.b.response_id]["arena_side"] == "B"


@pytest.mark.services
def test_sides_are_drawn_at_random_and_each_vote_names_the_right_answer(redis_client) -> None:
    sink = ListSink()
    arena = fake_arena(redis_client, sink)
    orders = Counter()
    for i in range(40):
        battle = arena.start(f"question {i}", "arena:u")
        orders[(battle.a.version, battle.b.version)] += 1
        vote = Vote.A if i % 2 else Vote.B
        arena.vote(battle.battle_id, vote)
        chosen = battle.a if vote is Vote.A else battle.b
        assert sink.sent[-1].response_id == chosen.response_id
    assert set(orders) == {("v1.0", "v1.1"), ("v1.1", "v1.0")}
    assert all(n >= 8 for n in orders.values())  # 40 fair draws: each order at least 8 times (p > 0.999)


@pytest.mark.services
def test_both_bad_sends_a_thumbs_down_on_each_and_a_tie_sends_nothing(redis_client) -> None:
    sink = ListSink()
    arena = fake_arena(redis_client, sink)
    day = keys.ARENA_VOTES_DAY_PREFIX + today_utc()
    before = {k.decode(): int(v) for k, v in redis_client.hgetall(day).items()}
    bad, tie = arena.start("q1", "arena:u"), arena.start("q2", "arena:u")
    assert arena.vote(bad.battle_id, Vote.BOTH_BAD).events == 2
    assert [(a.kind, a.response_id) for a in sink.sent] == [(ActionKind.THUMBS_DOWN, bad.a.response_id),
                                                          (ActionKind.THUMBS_DOWN, bad.b.response_id)]
    result = arena.vote(tie.battle_id, Vote.TIE)
    assert result.accepted and result.events == 0 and len(sink.sent) == 2
    assert not arena.vote(tie.battle_id, Vote.A).accepted  # a tie is a vote too: the battle is closed
    after = {k.decode(): int(v) for k, v in redis_client.hgetall(day).items()}
    assert after.get("both_bad", 0) - before.get("both_bad", 0) == 1
    assert after.get("tie", 0) - before.get("tie", 0) == 1
    assert after.get("A", 0) == before.get("A", 0)


@pytest.mark.services
def test_simultaneous_votes_on_one_battle_make_one_vote(redis_client) -> None:
    sink = ListSink()
    arena = fake_arena(redis_client, sink)
    battle = arena.start("q", "arena:u")
    results = []
    threads = [threading.Thread(target=lambda v=v: results.append(arena.vote(battle.battle_id, v)))
               for v in (Vote.A, Vote.B, Vote.A, Vote.BOTH_BAD) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.accepted for r in results) == 1
    assert len({r.vote for r in results}) == 1  # everyone is told the one recorded vote
    assert len({a.event_id for a in sink.sent}) == len(sink.sent) == (2 if results[0].vote is Vote.BOTH_BAD else 1)


@pytest.mark.services
def test_a_vote_kafka_did_not_take_can_be_cast_again_with_the_same_event_ids(redis_client) -> None:
    sink = ListSink(fail=1)
    arena = fake_arena(redis_client, sink)
    battle = arena.start("q", "arena:u")
    with pytest.raises(ArenaError, match="the vote was not recorded .*Kafka is down.*vote again"):
        arena.vote(battle.battle_id, Vote.A)
    retried = arena.vote(battle.battle_id, Vote.A)
    assert retried.accepted and len(sink.sent) == 1
    assert sink.sent[0].event_id == vote_event_id(battle.battle_id, ActionKind.CHOICE, battle.a.response_id)


@pytest.mark.services
def test_unknown_or_expired_battles_and_empty_questions_are_refused(redis_client) -> None:
    arena = fake_arena(redis_client)
    with pytest.raises(ArenaError, match="over or has expired"):
        arena.vote("no-such-battle", Vote.A)
    with pytest.raises(ArenaError, match="over or has expired"):
        arena.vote("", Vote.A)
    with pytest.raises(ArenaError, match="type a question"):
        arena.start("   ", "arena:u")
    with pytest.raises(ValueError):
        arena.vote("x", "C")


def test_vote_actions_have_event_ids_fixed_by_the_battle() -> None:
    from prefloop.web.arena import Battle

    battle = Battle("b1", "q", "default", Answer("v1.0", "ra", "x"), Answer("v1.1", "rb", "y"), "u", 0)
    one, two = vote_actions(battle, Vote.A), vote_actions(battle, Vote.A)
    assert [a.event_id for a in one] == [a.event_id for a in two]
    assert one[0].rejected_response_id == "rb" and one[0].user_id == "u"
    other = Battle("b2", "q", "default", battle.a, battle.b, "u", 0)
    assert vote_actions(other, Vote.A)[0].event_id != one[0].event_id
    assert vote_actions(battle, Vote.TIE) == []


def test_default_pair_is_production_against_the_canary_or_the_newest_challenger() -> None:
    versions = [VersionInfo("v1.0", "retired", 1), VersionInfo("v1.1", "production", 2),
                VersionInfo("v1.2", "rejected", 3), VersionInfo("v1.3", "candidate", 4), VersionInfo("v1.4", "approved", 5)]
    assert default_pair(RoutingTable("v1.1"), versions) == ("v1.1", "v1.4")
    assert default_pair(RoutingTable("v1.1", "v1.3", 0.2), versions) == ("v1.1", "v1.3")
    assert default_pair(None, versions) == ("v1.1", "v1.4")
    assert default_pair(RoutingTable("v1.1"), versions[:3]) == ("v1.1", "v1.1")  # no challenger: two samples
    with pytest.raises(ArenaError, match="no production version"):
        default_pair(None, [VersionInfo("v1.3", "candidate", 4)])


def test_named_pair_needs_two_different_known_versions() -> None:
    versions = [VersionInfo("v1.0", "production"), VersionInfo("v1.1", "candidate")]
    assert named_pair("v1.1", "v1.0", versions) == ("v1.1", "v1.0")
    for first, second, message in (("v1.0", "v1.0", "two different"), ("v1.0", "v9", "not a registry version"),
                                   ("", "v1.0", "pick two versions")):
        with pytest.raises(ArenaError, match=message):
            named_pair(first, second, versions)


def test_off_loopback_the_app_needs_a_login() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("web.example")
    check_bind("127.0.0.1", WebSettings())
    check_bind("0.0.0.0", WebSettings(username="ops", password="s3cret"))
    with pytest.raises(ConfigError, match="not a loopback address: set \\[web\\] username and password"):
        check_bind("0.0.0.0", WebSettings())
    with pytest.raises(ConfigError, match="go together"):
        WebSettings(username="ops")
    assert "s3cret" not in repr(WebSettings(username="ops", password="s3cret"))


def test_without_redis_the_arena_says_so_in_one_line() -> None:
    import redis

    from prefloop.services.process import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    arena = fake_arena(dead)
    with pytest.raises(ArenaError, match="Redis is not reachable .*start it with `prefloop up`"):
        arena.start("q", "arena:u")
    with pytest.raises(ArenaError, match="Redis is not reachable"):
        arena.vote("b1", Vote.A)
