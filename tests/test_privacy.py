"""Privacy: pseudonymous user ids (SDK and collector, over the real Kafka) and `prefloop forget`
(over the real analytics store), and the training snapshots that obey the forgotten-users ledger."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from prefloop.auth import AuthSettings
from prefloop.cli import main as cli
from prefloop.collector import create_app
from prefloop.errors import ConfigError
from prefloop.privacy import ForgottenLedger, PrivacySettings, pseudonym
from prefloop.sdk import FeedbackClient
from kafka_testing import create_topic, delete_topic, read_range
from prefloop.settings import load_settings
from schemas import Action, ActionKind, PairSource, PreferencePair, Response
from prefloop.analytics.columns import COLUMNS
from streams.sinks import rows
from trainer.snapshots import preview_snapshot

KEY = "k3y-for-tests-0123456789abcdef"
RAW = "alice@example.com"


def test_settings_need_a_key_and_hide_it():
    with pytest.raises(ConfigError, match="user_id_key.*at least 16 characters"):
        PrivacySettings(pseudonymise_user_ids=True, user_id_key="short")
    settings = PrivacySettings(pseudonymise_user_ids=True, user_id_key=KEY)
    assert KEY not in repr(settings)
    assert pseudonym(RAW, KEY) == pseudonym(RAW, KEY) != pseudonym(RAW, KEY + "x")
    assert pseudonym(RAW, KEY).startswith("p_") and len(pseudonym(RAW, KEY)) == 34


@pytest.fixture
def private_env(prefloop_env, monkeypatch):
    monkeypatch.setenv("PREFLOOP_PRIVACY_PSEUDONYMISE_USER_IDS", "true")
    monkeypatch.setenv("PREFLOOP_PRIVACY_USER_ID_KEY", KEY)
    return load_settings()


@pytest.fixture
async def topics(services):
    names = tuple(f"test.privacy.{kind}.{uuid.uuid4().hex[:8]}" for kind in ("responses", "actions"))
    for name in names:
        await create_topic(services.bootstrap_servers, name, 2)
    yield names
    for name in names:
        await delete_topic(services.bootstrap_servers, name)


@pytest.mark.services
async def test_sdk_and_collector_send_pseudonyms_never_the_raw_id(private_env, topics):
    client = FeedbackClient(private_env, responses_topic=topics[0], actions_topic=topics[1], linger_ms=1)
    sent = await client.response(prompt="Hi", response="Hello", model_version="v1", user_id=RAW, response_id="r-priv")
    assert sent.user_id == RAW  # the caller's record is left as it was
    await client.action(response_id="r-priv", kind=ActionKind.THUMBS_UP, user_id=RAW)
    await client.flush()
    http = TestClient(TestServer(create_app(private_env, client, AuthSettings())))
    await http.start_server()
    try:
        reply = await http.post("/v1/events", json=[{"type": "action", "response_id": "r-priv", "kind": "ACCEPT", "user_id": RAW}])
        assert reply.status == 202
    finally:
        await http.close()
        await client.close()
    messages = [*await read_range(private_env.bootstrap_servers, topics[0], since={}),
                *await read_range(private_env.bootstrap_servers, topics[1], since={})]
    assert len(messages) == 3
    for message in messages:
        assert b"alice" not in message.value
        assert message.record().user_id == pseudonym(RAW, KEY)


def _insert(store, tag: str, who: str, user: str, n: int) -> tuple[list[Response], list[Action], list[PreferencePair]]:
    responses = [Response(response_id=f"{tag}-{who}-{i}", prompt=f"[{tag}] q{i}", response=f"answer {i}",
                          model_version="v1", user_id=user) for i in range(n)]
    actions = [Action(response_id=r.response_id, kind=ActionKind.EDIT, edited_text=f"{user}'s own words {i}", user_id=user)
               for i, r in enumerate(responses)]
    pairs = [PreferencePair(prompt_id=r.prompt_id, prompt=r.prompt, chosen=a.edited_text or "", rejected=r.response,
                            chosen_response_id=r.response_id, chosen_model_version="human", rejected_model_version="v1",
                            source=PairSource.EDIT) for r, a in zip(responses, actions)]
    store.insert_rows("feedback_events", COLUMNS["feedback_events"],
                      [rows.response_event(r, 0, i) for i, r in enumerate(responses)] +
                      [rows.action_event(a, 0, i) for i, a in enumerate(actions)])
    store.insert_rows("action_facts", COLUMNS["action_facts"],
                      [rows.action_fact(a, r.prompt_id, "v1", "", 0.5, 3, 3) for r, a in zip(responses, actions)])
    store.insert_rows("preference_pairs", COLUMNS["preference_pairs"], [rows.preference_pair(p) for p in pairs])
    return responses, actions, pairs


def _count(store, table: str, tag: str, who: str) -> int:
    column = "chosen_response_id" if table == "preference_pairs" else "response_id"
    return int(store.query(f"SELECT count() FROM {table} WHERE {column} LIKE '{tag}-{who}-%'").rows[0][0])


@pytest.mark.services
def test_forget_deletes_the_users_rows_and_every_later_snapshot_leaves_them_out(private_env, store, capsys):
    tag = "forget" + uuid.uuid4().hex[:8]
    _, _, alice_raw_pairs = _insert(store, tag, "a", RAW, 2)  # sent before pseudonymisation was on
    _, _, alice_pairs = _insert(store, tag, "p", pseudonym(RAW, KEY), 3)  # and after
    _, _, bob_pairs = _insert(store, tag, "b", "bob", 2)
    tables = ("feedback_events", "action_facts", "preference_pairs")
    assert [_count(store, t, tag, "p") for t in tables] == [6, 3, 3]

    assert cli(["forget", RAW, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ids_checked"] == 2 and report["response_ids"] == 5
    assert report["deleted"]["feedback_events"] == 10 and report["deleted"]["preference_pairs"] == 5
    for table in tables:
        assert _count(store, table, tag, "a") == 0
        assert _count(store, table, tag, "p") == 0
    assert [_count(store, t, tag, "b") for t in tables] == [4, 2, 2]

    ledger = ForgottenLedger(private_env.home)
    assert ledger.has_user(RAW) and RAW not in ledger.path.read_text() and pseudonym(RAW, KEY) not in ledger.path.read_text()
    # Kafka's pairs topic still holds the pairs: a snapshot made from it now leaves them out.
    snapshot = preview_snapshot([*alice_raw_pairs, *alice_pairs, *bob_pairs], private_env.home, f"snap-{tag}")
    assert {p.pair_id for p in snapshot.pairs} == {p.pair_id for p in bob_pairs}

    assert cli(["forget", RAW]) == 0  # again: nothing left, still fine
    assert "rows deleted: action_facts 0, feedback_events 0" in capsys.readouterr().out


def test_forget_refuses_an_empty_id(prefloop_env, capsys):
    assert cli(["forget", "  "]) == 2
    assert capsys.readouterr().err.strip() == "prefloop forget: error: USER_ID should not be empty"
