"""The streams pipeline end to end on real Kafka, Redis and chDB (workers run as `prefloop worker`)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from prefloop import topics
from schemas import Action, ActionKind, DeadLetter, PairSource, PreferencePair, Response, encode, pair_hash
from streams_helpers import (assert_each_pair_once, diagnose_missing, produce, read_dlq, read_pairs, read_topic,
                             scalar, wait_for, wait_rows)
from streams.workload import mixed

pytestmark = pytest.mark.services


def tagged_pairs(settings, tag: str) -> list[PreferencePair]:
    return [p for p in read_pairs(settings) if tag in p.prompt]


def wait_pairs(settings, tag: str, count: int, timeout_s: float = 60.0, settle_s: float = 2.0) -> list[PreferencePair]:
    """Wait until at least `count` pairs of `tag` are on the topic, then a little longer to catch extras."""
    wait_for(lambda: len(tagged_pairs(settings, tag)) >= count, timeout_s, what=f"{count} pairs for {tag}")
    time.sleep(settle_s)
    return tagged_pairs(settings, tag)


def resp(tag: str, name: str, text: str, version: str = "v1", prompt: str | None = None, **kw) -> Response:
    prompt = prompt or f"[{tag}] How do I sort a dictionary by value in Python?"
    return Response(response_id=f"{tag}-{name}", prompt=prompt, response=text, model_version=version, **kw)


# --- pair rules ---------------------------------------------------------------------------------------
def test_each_pair_rule_end_to_end(services, pipeline, tag, store):
    a = resp(tag, "a", "Use sorted(d.items(), key=lambda kv: kv[1]).", "v1")
    b = resp(tag, "b", "Call dict.sort(), which sorts in place by value.", "v2")
    c = resp(tag, "c", "You can use operator.itemgetter(1) as the key of sorted().", "v1")
    d = resp(tag, "d", "Dictionaries cannot be sorted at all.", "v2")
    edited = "Use dict(sorted(d.items(), key=lambda kv: kv[1])) to get a new dict ordered by value."
    produce(services, [a, b, c, d,
                       Action(response_id=a.response_id, kind=ActionKind.EDIT, edited_text=edited),
                       Action(response_id=b.response_id, kind=ActionKind.CHOICE, rejected_response_id=a.response_id),
                       Action(response_id=c.response_id, kind=ActionKind.THUMBS_UP, user_id="u1"),
                       Action(response_id=d.response_id, kind=ActionKind.THUMBS_DOWN, user_id="u2"),
                       Action(response_id=b.response_id, kind=ActionKind.RATING, rating=5, user_id="u3"),
                       Action(response_id=c.response_id, kind=ActionKind.RATING, rating=2, user_id="u4"),
                       Action(response_id=a.response_id, kind=ActionKind.ACCEPT, user_id="u5")])
    pairs = wait_pairs(services, tag, 4)
    got = {(p.source, p.chosen, p.rejected, p.chosen_response_id, p.rejected_response_id) for p in pairs}
    assert got == {
        (PairSource.EDIT, edited, a.response, a.response_id, None),
        (PairSource.CHOICE, b.response, a.response, b.response_id, a.response_id),
        (PairSource.THUMBS, c.response, d.response, c.response_id, d.response_id),
        (PairSource.RATING, b.response, c.response, b.response_id, c.response_id),
    }
    for p in pairs:
        assert p.pair_id == pair_hash(p.prompt, p.chosen, p.rejected) == p.event_id
        assert p.prompt_id == a.prompt_id
    by_source = {p.source: p for p in pairs}
    assert (by_source[PairSource.CHOICE].chosen_model_version, by_source[PairSource.CHOICE].rejected_model_version) == ("v2", "v1")
    assert by_source[PairSource.EDIT].chosen_model_version == "human"
    ids = ",".join(f"'{p.pair_id}'" for p in pairs)
    wait_rows(store, f"SELECT count() FROM preference_pairs FINAL WHERE pair_id IN ({ids})", 4)
    row = store.query(f"SELECT source, chosen, rejected FROM preference_pairs FINAL WHERE pair_id = "
                      f"'{by_source[PairSource.EDIT].pair_id}'").rows[0]
    assert row == ["EDIT", edited, a.response]


def test_quality_rules_drop_and_count(services, pipeline, tag, store):
    base = "The answer is to use a context manager with open() so the file is closed."
    r1 = resp(tag, "q1", base)
    r2 = resp(tag, "q2", "", prompt=f"[{tag}] empty response prompt")
    r3 = resp(tag, "q3", "Short but fine answer here.", prompt=f"[{tag}] tiny edit prompt")
    acts = [
        Action(response_id=r1.response_id, kind=ActionKind.EDIT, edited_text="  THE answer is to use a context manager "
               "with open()   so the file is closed.  "),  # identical after normalising
        Action(response_id=r1.response_id, kind=ActionKind.EDIT, edited_text=base.replace("closed.", "closed!")),
        Action(response_id=r2.response_id, kind=ActionKind.EDIT, edited_text="A real answer to the question."),
        Action(response_id=r3.response_id, kind=ActionKind.EDIT, edited_text="k"),
        Action(response_id=r1.response_id, kind=ActionKind.EDIT, edited_text="Use pathlib.Path.read_text() instead."),
    ]
    produce(services, [r1, r2, r3, *acts])
    pairs = wait_pairs(services, tag, 1)
    assert [(p.chosen, p.rejected) for p in pairs] == [("Use pathlib.Path.read_text() instead.", base)]
    ids = ",".join(f"'{a.event_id}'" for a in acts)
    sql = f"SELECT reason, count() FROM pair_drops FINAL WHERE event_id IN ({ids}) GROUP BY reason ORDER BY reason"
    wait_for(lambda: len(store.query(sql).rows) == 4, 60, what="pair_drops rows")
    assert dict(map(tuple, store.query(sql).rows)) == {"empty": 1, "identical": 1, "near_duplicate": 1, "tiny": 1}


# --- join ---------------------------------------------------------------------------------------------
def test_actions_before_their_responses_are_held_then_paired(services, pipeline, tag):
    a = resp(tag, "a", "First answer: use a heap from heapq for the top k items.", "v1")
    b = resp(tag, "b", "Second answer: sort the whole list and slice it.", "v2")
    edited = "Use heapq.nlargest(k, items), which is O(n log k)."
    early = [
        Action(response_id=a.response_id, kind=ActionKind.EDIT, edited_text=edited),
        Action(response_id=a.response_id, kind=ActionKind.CHOICE, rejected_response_id=b.response_id),
        Action(response_id=a.response_id, kind=ActionKind.THUMBS_UP, user_id="u1"),
        Action(response_id=b.response_id, kind=ActionKind.THUMBS_DOWN, user_id="u2"),
    ]
    produce(services, early)
    time.sleep(1.0)  # well inside the 15 s TTL: the actions now wait in the pending table
    assert tagged_pairs(services, tag) == []
    produce(services, [a])  # CHOICE still waits for b, its rejected response
    time.sleep(1.0)
    produce(services, [b])
    pairs = wait_pairs(services, tag, 2)
    # CHOICE(a over b) and THUMBS(a up, b down) are the same (prompt, chosen, rejected): one pair_id.
    assert sorted((p.chosen, p.rejected) for p in pairs) == sorted([(edited, a.response), (a.response, b.response)])
    assert not [d for d in read_dlq(services) if tag.encode() in d.payload]


def test_duplicate_delivery_makes_one_pair_and_one_row(services, pipeline, tag, store):
    r = resp(tag, "a", "Use a set to remove duplicates, then sort if order matters.")
    edit = Action(response_id=r.response_id, kind=ActionKind.EDIT, user_id="u1",
                  edited_text="Use dict.fromkeys(items) to drop duplicates and keep the order.")
    # Another user makes the very same edit: a different event, the same pair.
    same_pair = Action(response_id=r.response_id, kind=ActionKind.EDIT, user_id="u2", edited_text=edit.edited_text)
    produce(services, [r, r, edit, edit, edit, same_pair])
    pairs = wait_pairs(services, tag, 1, settle_s=3)
    assert len(pairs) == 1
    wait_rows(store, f"SELECT count() FROM feedback_events FINAL WHERE response_id = '{r.response_id}'", 3)
    assert scalar(store, f"SELECT count() FROM action_facts FINAL WHERE event_id = '{edit.event_id}'") == 1
    assert scalar(store, f"SELECT count() FROM preference_pairs FINAL WHERE pair_id = '{pairs[0].pair_id}'") == 1


# --- dead letters ---------------------------------------------------------------------------------------
def test_dead_letters_carry_reason_bytes_and_source(services, pipeline, tag):
    good = resp(tag, "a", "Use functools.lru_cache to memoise the function.")
    garbage = f"not avro {tag}".encode()
    invalid = encode(Action(response_id=f"{tag}-a", kind=ActionKind.RATING, rating=None, event_id=f"{tag}-inv"))
    wrong_type = encode(resp(tag, "wrong", "a response on the actions topic"))
    orphan = Action(response_id=f"{tag}-never", kind=ActionKind.THUMBS_UP, event_id=f"{tag}-orphan")
    unknown = Action(response_id=good.response_id, kind=ActionKind.CHOICE, rejected_response_id=f"{tag}-nope",
                     event_id=f"{tag}-unknown")
    bad_response = f"bad response {tag}".encode()
    produce(services, [good, (topics.ACTIONS, b"k", garbage), (topics.ACTIONS, b"k", invalid),
                       (topics.ACTIONS, b"k", wrong_type), orphan, unknown, (topics.RESPONSES, b"k", bad_response)])
    payloads = {garbage: "undecodable", invalid: "invalid", wrong_type: "invalid", encode(orphan): "expired_orphan",
                encode(unknown): "unknown_reference", bad_response: "undecodable"}

    def letters() -> dict[bytes, DeadLetter]:
        return {d.payload: d for d in read_dlq(services) if d.payload in payloads}

    found = wait_for(lambda: len(letters()) == len(payloads) and letters(), 90, what="all dead letters")
    assert {p: d.reason for p, d in found.items()} == payloads
    assert "rating" in found[invalid].detail and "Response" in found[wrong_type].detail
    # source coordinates point at the very bytes that were dead-lettered
    for payload, letter in found.items():
        source = [r for r in read_topic(services, letter.source_topic)
                  if r.partition == letter.source_partition and r.offset == letter.source_offset]
        assert source and source[0].value == payload
    assert found[bad_response].source_topic == topics.RESPONSES


def test_flood_of_bad_events_does_not_stop_good_ones(services, pipeline, tag):
    n = 20_000
    flood = [(topics.ACTIONS, None, f"junk {tag} {i}".encode()) for i in range(n)]
    r = resp(tag, "a", "Use collections.Counter.most_common(3) for the top three.")
    edit = Action(response_id=r.response_id, kind=ActionKind.EDIT, edited_text="Counter(words).most_common(3)")
    t0 = time.monotonic()
    produce(services, [*flood, r, edit])
    wait_pairs(services, tag, 1, timeout_s=60, settle_s=0)
    elapsed = time.monotonic() - t0
    letters = wait_for(lambda: sum(tag.encode() in d.payload for d in read_dlq(services)) >= n and True, 60,
                       what="the flood in the DLQ")
    assert letters
    assert elapsed < 30, f"{n} bad events delayed a good pair by {elapsed:.1f}s"


# --- scale-out and crashes ---------------------------------------------------------------------------------
def run_and_collect(services, store, tag, workload_groups: int) -> tuple[dict, dict]:
    w = mixed(tag, workload_groups)
    expected = w.expected_pairs()
    produce(services, w.records())
    pairs = wait_pairs(services, tag, len(expected), timeout_s=120, settle_s=3)
    counts = {
        "pairs_topic": len(pairs),
        "pairs_unique": len({p.pair_id for p in pairs}),
        "preference_pairs": wait_rows(store, f"SELECT count() FROM preference_pairs FINAL WHERE prompt LIKE '[{tag}]%'",
                                      len(expected)),
        "feedback_events": wait_rows(store, f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE "
                                            f"'{tag}-%'", len(w.responses) + len(w.actions)),
        "action_facts": wait_rows(store, f"SELECT count() FROM action_facts FINAL WHERE response_id LIKE '{tag}-%'",
                                  len(w.actions)),
    }
    got = {p.pair_id: (p.source.value, p.chosen, p.rejected) for p in pairs}
    assert got == expected
    return got, counts


def test_two_workers_give_the_same_pairs_and_counts_as_one(services, pipeline, store):
    one_tag, two_tag = "one" + str(time.time_ns()), "two" + str(time.time_ns())
    one_pairs, one_counts = run_and_collect(services, store, one_tag, 40)
    second = pipeline.start()
    second.wait_ready(120)
    time.sleep(2)  # let the group settle on two members
    try:
        two_pairs, two_counts = run_and_collect(services, store, two_tag, 40)
        assert two_counts == one_counts
        normalise = lambda pairs, t: {(s, c.replace(t, "T"), r.replace(t, "T")) for s, c, r in pairs.values()}  # noqa: E731
        assert normalise(two_pairs, two_tag) == normalise(one_pairs, one_tag)
    finally:
        assert second.stop() == 0, second.log_tail()


def test_sigkill_mid_stream_loses_and_duplicates_nothing(services, pipeline, store, tag):
    w = mixed(tag, 300, duplicate_every=5)
    expected = w.expected_pairs()
    records = w.records()
    victim = pipeline.started[-1] if pipeline.started[-1].proc.poll() is None else pipeline.start()
    victim.wait_ready(120)
    chunks = [records[i::10] for i in range(10)]
    killed = threading.Event()

    def feed() -> None:
        for i, chunk in enumerate(chunks):
            produce(services, chunk)
            if i == 4:  # mid-stream: once pairs are coming out (a rebalance may still be settling)
                wait_for(lambda: tagged_pairs(services, tag), 60, what="pairs before the kill")
                victim.kill()  # SIGKILL: no commit, no flush, state only in the changelogs
                killed.set()
            time.sleep(0.3)

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert killed.wait(60)
    committed_at_kill = _committed(services)
    published_before_kill = len(tagged_pairs(services, tag))
    # the kill really was mid-stream: the victim had published some pairs, not all
    assert 0 < published_before_kill < len(expected)
    restarted = pipeline.start()
    feeder.join(120)
    restarted.wait_ready(120)
    try:
        pairs = wait_pairs(services, tag, len(expected), timeout_s=120, settle_s=5)
    except AssertionError:
        from prefloop.partitioner import partition_for

        missing = set(expected) - {p.pair_id for p in tagged_pairs(services, tag)}
        by_partition = Counter(partition_for(pid, services.pairs_partitions) for pid in missing)
        raise AssertionError(f"{len(missing)} pair(s) never published (by pairs partition {dict(by_partition)}):\n"
                             + diagnose_missing(services, records, missing)
                             + f"\ncommitted at kill: {committed_at_kill}\nnow: {_committed(services)}"
                             + "\nrestarted worker's log:\n" + restarted.log_tail(120)) from None
    assert_each_pair_once(store, tag, w, expected, pairs)


def test_workers_joining_and_leaving_mid_stream_lose_and_duplicate_nothing(services, pipeline, store, tag):
    """Partitions move between live workers while events flow: a worker joins, later the first one
    leaves (SIGTERM). Held actions and prompt groups move through the changelogs both times."""
    w = mixed(tag, 300, duplicate_every=5)
    expected = w.expected_pairs()
    records = w.records()
    live = [x for x in pipeline.started if x.proc.poll() is None]
    first = live[-1] if live else pipeline.start()
    first.wait_ready(120)
    chunks = [records[i::12] for i in range(12)]
    published: dict[str, int] = {}
    for i, chunk in enumerate(chunks):
        produce(services, chunk)
        if i == 2:  # the first worker alone has published some of them when the second one joins
            wait_for(lambda: tagged_pairs(services, tag), 60, what="pairs from the first worker")
            joiner = pipeline.start()
        if i == 3:
            joiner.wait_ready(120)  # the group rebalances onto two members while chunks 4.. flow
            published["joined"] = len(tagged_pairs(services, tag))
        if i == 7:
            assert first.stop() == 0, first.log_tail()  # leaves: its partitions move to the joiner
            published["left"] = len(tagged_pairs(services, tag))
        time.sleep(0.3)
    # both moves happened mid-stream: pairs were published before each, and not all of them
    assert 0 < published["joined"] <= published["left"] < len(expected), published
    pairs = wait_pairs(services, tag, len(expected), timeout_s=120, settle_s=5)
    assert_each_pair_once(store, tag, w, expected, pairs)


def _committed(services) -> dict[str, list[int | None]]:
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict[str, list[int | None]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=services.bootstrap_servers, group_id="prefloop-streams",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            out = {}
            for topic, n in (("feedback.actions", services.actions_partitions),
                             ("feedback.responses", services.responses_partitions)):
                out[topic] = [await consumer.committed(TopicPartition(topic, p)) for p in range(n)]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


# --- consumer batching (streams/compat/faust.py) ------------------------------------------------------------
def test_input_offsets_are_committed_to_the_end_through_batches(services, pipeline, store, tag):
    """Each fetched batch is one Faust message; acking it must commit past every record in it."""
    import asyncio

    from streams.bench import Progress

    async def uncommitted() -> int:
        async with Progress(services, "prefloop-streams") as progress:
            return await progress.uncommitted()

    w = mixed(tag, 60)
    produce(services, w.records())
    wait_pairs(services, tag, len(w.expected_pairs()), settle_s=0)
    lag = wait_for(lambda: asyncio.run(uncommitted()) == 0, 60,
                   what="committed offsets of feedback.responses and feedback.actions at their end offsets")
    assert lag


def test_event_times_reach_clickhouse_to_the_millisecond(services, pipeline, store, tag):
    a = resp(tag, "a", "Use sorted() with a key function.", occurred_at=1_700_000_000_007)
    b = resp(tag, "b", "Dictionaries cannot be sorted.", occurred_at=1_700_000_000_999)
    choice = Action(response_id=a.response_id, kind=ActionKind.CHOICE, rejected_response_id=b.response_id,
                    occurred_at=1_700_000_123_450)
    produce(services, [a, b, choice])
    wait_rows(store, f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE '{tag}-%'", 3)
    got = store.query(f"SELECT event_id, toUnixTimestamp64Milli(occurred_at) FROM feedback_events FINAL "
                      f"WHERE response_id LIKE '{tag}-%'").rows
    assert dict(got) == {a.event_id: a.occurred_at, b.event_id: b.occurred_at, choice.event_id: choice.occurred_at}
    pair_time = wait_for(lambda: scalar(store, f"SELECT toUnixTimestamp64Milli(created_at) FROM preference_pairs FINAL "
                                               f"WHERE chosen_response_id = '{a.response_id}'"), 60, what="the pair row")
    assert pair_time == choice.occurred_at


# --- event-time alignment (streams/alignment.py) ---------------------------------------------------------
def _end_offsets(services, topic: str) -> int:
    import asyncio

    from kafka_testing import end_offsets

    return sum(asyncio.run(end_offsets(services.bootstrap_servers, topic)).values())


def test_catch_up_takes_responses_before_the_actions_that_need_them(services, pipeline, tag):
    """A backlog of responses and then their actions, read by a worker that starts after both:
    the actions wait for their responses instead of being held one by one (each hold and
    release is a write to the pending-actions changelog). Without the alignment
    (PREFLOOP_STREAMS_EVENT_TIME_ALIGNMENT=false) this workload held most of its actions."""
    changelog = "prefloop-streams-pending-actions-changelog"
    for worker in pipeline.started:
        if worker.proc.poll() is None:
            assert worker.stop() == 0, worker.log_tail()
    w = mixed(tag, 300, duplicate_every=5)
    expected = w.expected_pairs()
    produce(services, w.responses)
    produce(services, [*w.actions, *w.duplicates])  # record times after every response's
    writes_before = _end_offsets(services, changelog)
    worker = pipeline.start()
    worker.wait_ready(120)
    pairs = wait_pairs(services, tag, len(expected), timeout_s=120)
    assert {p.pair_id: (p.source.value, p.chosen, p.rejected) for p in pairs} == expected
    held = _end_offsets(services, changelog) - writes_before
    assert held <= len(w.actions) // 20, f"{held} pending-actions changelog writes for {len(w.actions)} actions"
