"""Hypothesis properties of the pure parts: the codec (round trips, the compiled writer is
byte-for-byte fastavro, anything else is a DecodeError), JSON events, and the pair rules."""

from __future__ import annotations

import io
import random
import string

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import schemas
from prefloop.errors import DecodeError, ValidationError
from prefloop.sdk.events import parse_event
from schemas import (
    Action,
    ActionKind,
    DeadLetter,
    PairSource,
    PreferencePair,
    PromotionDecision,
    PromotionEvent,
    Response,
    TrainingRequest,
    TrainingResult,
    TrainingStatus,
    TriggerReason,
    pair_hash,
)
from schemas.codec import HEADER_LEN, MARKER
from schemas.records import normalise_text
from streams.pairing.prompt_group import PromptGroup
from streams.pairing.quality import QualityRules
from streams.settings import StreamsSettings

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=16)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
times = st.integers(min_value=0, max_value=2**62)
doubles = st.floats(allow_nan=False)
opt = st.none

RECORDS = st.one_of(
    st.builds(Response, response_id=ids, prompt=text, response=text, model_version=ids, prompt_id=ids,
              user_id=opt() | text, tags=st.dictionaries(text, text, max_size=4), latency_ms=opt() | longs,
              error=opt() | text, event_id=ids, occurred_at=times),
    st.builds(Action, response_id=ids, kind=st.sampled_from(ActionKind), user_id=opt() | text,
              rating=opt() | st.integers(-(2**31), 2**31 - 1), edited_text=opt() | text,
              rejected_response_id=opt() | ids, event_id=ids, occurred_at=longs),
    st.builds(PreferencePair, prompt_id=ids, prompt=text, chosen=text, rejected=text, chosen_response_id=ids,
              chosen_model_version=ids, rejected_model_version=ids, source=st.sampled_from(PairSource),
              rejected_response_id=opt() | ids, weight=doubles, created_at=times),
    st.builds(PromotionEvent, candidate_version=ids, baseline_version=text, decision=st.sampled_from(PromotionDecision),
              traffic_fraction=doubles, metrics=st.dictionaries(text, doubles, max_size=3), reason=text),
    st.builds(TrainingRequest, snapshot_id=ids, reason=st.sampled_from(TriggerReason), pair_count=longs,
              base_version=text, metrics=st.dictionaries(text, doubles, max_size=3)),
    st.builds(TrainingResult, request_id=ids, status=st.sampled_from(TrainingStatus), version=opt() | ids,
              adapter_path=opt() | text, metrics=st.dictionaries(text, doubles, max_size=3)),
    st.builds(DeadLetter, source_topic=ids, source_partition=st.integers(0, 2**31 - 1), source_offset=longs,
              reason=ids, payload=st.binary(max_size=64), detail=text),
)


@PROPERTY
@given(RECORDS)
def test_every_record_round_trips_and_the_compiled_writer_writes_fastavros_bytes(record):
    data = schemas.encode(record)
    entry = schemas.default_registry().reader(record.SCHEMA)
    body = io.BytesIO()
    schemaless_writer(body, entry.writable, record.to_avro())
    assert data == MARKER + entry.fingerprint + body.getvalue()
    assert schemas.decode(data) == record


@PROPERTY
@given(RECORDS, st.data())
def test_a_truncated_or_corrupted_record_is_a_decode_error_or_another_valid_record(record, data):
    encoded = schemas.encode(record)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        schemas.decode(encoded[:cut])
    flipped = bytearray(encoded)
    at = data.draw(st.integers(0, len(encoded) - 1))
    flipped[at] ^= data.draw(st.integers(1, 255))
    try:
        schemas.decode(bytes(flipped))  # a flipped byte inside a string can still decode
    except DecodeError:
        pass


@PROPERTY
@given(st.binary(max_size=200))
def test_random_bytes_are_a_decode_error(payload):
    with pytest.raises(DecodeError):
        schemas.decode(payload)


def test_values_the_compiled_writer_refuses_fail_as_fastavro_fails():
    too_big = Response(response_id="r", prompt="p", response="a", model_version="v", latency_ms=2**63)
    with pytest.raises(ValueError):
        schemas.encode(too_big)
    lone_surrogate = Response(response_id="r", prompt="\ud800", response="a", model_version="v")
    with pytest.raises(UnicodeEncodeError):
        schemas.encode(lone_surrogate)
    with pytest.raises(ValidationError, match="prompt: is not valid Unicode text"):
        lone_surrogate.validate()  # what the SDK runs before encoding


# --- JSON events (the collector's and `prefloop emit`'s input) ------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["type", "response_id", "prompt", "response", "model_version", "kind", "rating",
                                        "user_id", "tags", "occurred_at", "event_id", "latency_ms", "edited_text", "x"]),
                       json_values, max_size=8))
def test_any_json_object_is_a_valid_record_that_encodes_or_a_validation_error(obj):
    try:
        record = parse_event(obj)
    except ValidationError as exc:
        assert exc.errors and all(e.message for e in exc.errors)
        return
    assert schemas.decode(schemas.encode(record)) == record


@PROPERTY
@given(st.permutations(["type", "response_id", "prompt", "response", "model_version", "user_id", "tags", "event_id",
                        "occurred_at"]))
def test_a_json_event_means_the_same_record_whatever_its_field_order(order):
    event = {"type": "response", "response_id": "r1", "prompt": "Hi there", "response": "Hello!", "model_version": "v1",
             "user_id": "u", "tags": {"a": "b"}, "event_id": "e1", "occurred_at": 5}
    shuffled = {key: event[key] for key in order}
    assert schemas.encode(parse_event(shuffled)) == schemas.encode(parse_event(event))


# --- pair rules ----------------------------------------------------------------------------------

PAIR_FIELDS = ["prompt_id", "prompt", "chosen", "rejected", "chosen_response_id", "chosen_model_version",
               "rejected_model_version", "source", "rejected_response_id", "weight", "created_at"]


@PROPERTY
@given(text, text, text, st.randoms(use_true_random=False))
def test_pair_ids_are_stable_under_field_order_and_depend_on_the_direction(prompt, chosen, rejected, rnd: random.Random):
    fields = {"prompt_id": "g", "prompt": prompt, "chosen": chosen, "rejected": rejected, "chosen_response_id": "a",
              "chosen_model_version": "v1", "rejected_model_version": "v0", "source": "CHOICE",
              "rejected_response_id": "b", "weight": 1.0, "created_at": 7}
    order = list(PAIR_FIELDS)
    rnd.shuffle(order)
    shuffled = PreferencePair.from_json({k: fields[k] for k in order})
    assert shuffled.pair_id == PreferencePair.from_json(fields).pair_id == pair_hash(prompt, chosen, rejected)
    decoded = schemas.decode(schemas.encode(shuffled))
    assert decoded.pair_id == shuffled.pair_id
    if chosen != rejected:
        assert pair_hash(prompt, rejected, chosen) != shuffled.pair_id


# Few distinct texts, so identical and near-identical responses are common.
TEXTS = ["Paris.", "paris.", "Paris", "  Paris.  ", "Lyon is big.", "Lyon is big!", "", "x", "Marseille, on the sea."]


@st.composite
def group_histories(draw):
    n = draw(st.integers(2, 6))
    responses = [Response(response_id=f"r{i}", prompt="Where?", response=draw(st.sampled_from(TEXTS)),
                          model_version=draw(st.sampled_from(["v1", "v2"])), prompt_id="g", occurred_at=i)
                 for i in range(n)]
    actions = []
    for j in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(list(ActionKind)))
        rid = f"r{draw(st.integers(0, n - 1))}"
        other = f"r{draw(st.integers(0, n - 1))}"
        if kind is ActionKind.CHOICE and other == rid:
            continue
        actions.append(Action(
            response_id=rid, kind=kind, user_id=draw(st.sampled_from(["u1", "u2", "u3", None])),
            rating=draw(st.integers(1, 5)) if kind is ActionKind.RATING else None,
            edited_text=draw(st.sampled_from([t for t in TEXTS if t.strip()]) | text.filter(str.strip)) if kind is ActionKind.EDIT else None,
            rejected_response_id=other if kind is ActionKind.CHOICE else None, event_id=f"e{j}", occurred_at=100 + j,
        ).validate())
    return responses, actions


@PROPERTY
@given(group_histories())
def test_no_pair_ever_has_identical_chosen_and_rejected(history):
    responses, actions = history
    group = PromptGroup("g", None, StreamsSettings())
    quality = QualityRules.from_settings(StreamsSettings())
    for response in responses:
        group.add_response(response)
    kept = []
    for action in actions:
        for draft in group.apply(action):
            if quality.check(draft.chosen, draft.rejected) is None:
                kept.append(draft)
    for draft in kept:
        assert normalise_text(draft.chosen) != normalise_text(draft.rejected)
        assert draft.chosen_response_id != draft.rejected_response_id
    # the group's state is JSON-able and rebuilding from it changes nothing (the changelog's round trip)
    again = PromptGroup("g", group.state, StreamsSettings())
    assert again.state == group.state


@PROPERTY
@given(group_histories())
def test_a_vote_delivered_twice_adds_no_pair_and_no_vote_pair_repeats(history):
    responses, actions = history
    group = PromptGroup("g", None, StreamsSettings())
    for response in responses:
        group.add_response(response)
    votes = [a for a in actions if a.kind in (ActionKind.THUMBS_UP, ActionKind.THUMBS_DOWN, ActionKind.RATING)]
    made = []
    for vote in votes:
        made.extend(group.apply(vote))
        assert group.apply(vote) == []  # a producer retry delivered right after
    assert len({(d.source, d.chosen_response_id, d.rejected_response_id) for d in made}) == len(made)
