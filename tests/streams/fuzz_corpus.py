"""Bad inputs of every kind the issue names, mixed with good events, from a seed.

Kafka records (what a broken or hostile producer can write to feedback.responses/actions) and
HTTP requests (what a broken or hostile app can send the collector). Each bad input carries
its kind and what the system must answer: the dead-letter reason for a record, the status and
a phrase of the error for a request. tests/streams/test_fuzz.py runs them; `scripts/fuzz.sh`
runs the same with more inputs.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from prefloop import topics
from schemas import Action, ActionKind, Response, encode
from schemas.codec import HEADER_LEN, MARKER

UNDECODABLE, INVALID = "undecodable", "invalid"


@dataclass(frozen=True)
class BadRecord:
    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    reason: str  # the DeadLetter.reason it must get


@dataclass
class KafkaCorpus:
    good: list[Response | Action] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    order: list[tuple[bool, int]] = field(default_factory=list)  # (is_bad, index) in production order


def _varint(n: int) -> bytes:
    out = bytearray()
    n = (n << 1) ^ (n >> 63)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(raw: bytes) -> bytes:
    return _varint(len(raw)) + raw


def _action_body(response_id: bytes, kind_index: int, event_id: bytes = b"e", occurred_at: int = 1) -> bytes:
    """An Action body written by hand (fields in Action.avsc order), so it can hold what no valid record holds."""
    null = b"\x00"
    return (_string(event_id) + _varint(occurred_at) + _string(response_id) + null + _varint(kind_index)
            + null + null + null)


def _action_header() -> bytes:
    return encode(Action(response_id="x", kind=ActionKind.ACCEPT))[:HEADER_LEN]


def _bad(kind: str, rng: random.Random, tag: str, i: int) -> BadRecord:
    """One bad record of `kind`; every payload holds the tag, so the test finds its letters among others'."""
    marker = f"{tag}-bad-{i}".encode()
    action_topic = topics.ACTIONS
    valid = encode(Action(response_id=f"{tag}-bad-{i}", kind=ActionKind.THUMBS_UP, event_id=f"{tag}-bad-{i}"))
    if kind == "random_bytes":
        return BadRecord(kind, rng.choice([topics.ACTIONS, topics.RESPONSES]), None,
                         marker + rng.randbytes(rng.randint(0, 200)), UNDECODABLE)
    if kind == "truncated_avro":
        full = encode(Response(response_id=f"{tag}-bad-{i}", prompt="p" * rng.randint(1, 50), response="r",
                               model_version="v", tags={"k": "v"}))
        return BadRecord(kind, topics.RESPONSES, marker, full[:rng.randint(HEADER_LEN + 1, len(full) - 1)], UNDECODABLE)
    if kind == "unknown_fingerprint":
        return BadRecord(kind, action_topic, marker, MARKER + rng.randbytes(8) + valid[HEADER_LEN:], UNDECODABLE)
    if kind == "wrong_marker":
        return BadRecord(kind, action_topic, marker, rng.choice([b"\xc3\x00", b"\x00\x01", b"{\""]) + valid[2:], UNDECODABLE)
    if kind == "rating_out_of_range":
        value = encode(Action(response_id=f"{tag}-bad-{i}", kind=rng.choice([ActionKind.RATING, ActionKind.THUMBS_UP]),
                              rating=rng.choice([0, 9, -1, 2**31 - 1]), event_id=f"{tag}-bad-{i}"))
        return BadRecord(kind, action_topic, marker, value, INVALID)
    if kind == "unknown_enum_symbol":
        body = _action_body(marker, rng.randint(len(ActionKind), 60), event_id=marker)
        return BadRecord(kind, action_topic, marker, _action_header() + body, UNDECODABLE)
    if kind == "negative_timestamp":
        value = encode(Action(response_id=f"{tag}-bad-{i}", kind=ActionKind.ACCEPT, event_id=f"{tag}-bad-{i}",
                              occurred_at=-rng.randint(1, 2**62)))
        return BadRecord(kind, action_topic, marker, value, INVALID)
    if kind == "empty_ids":
        blank = rng.choice(["", "   ", "\t"])
        if rng.random() < 0.5:
            value = encode(Action(response_id=blank, kind=ActionKind.ACCEPT, event_id=f"{tag}-bad-{i}"))
        else:
            value = encode(Response(response_id=f"{tag}-bad-{i}", prompt=f"{tag} p", response="r", model_version=blank))
            return BadRecord(kind, topics.RESPONSES, marker, value, INVALID)
        return BadRecord(kind, action_topic, marker, value, INVALID)
    if kind == "oversized_string":  # a length prefix far past the message's end (2 GiB to 2^60 bytes)
        body = _string(marker) + _varint(1) + _varint(rng.randint(2**31, 2**60)) + b"x" * 10
        return BadRecord(kind, action_topic, marker, _action_header() + body, UNDECODABLE)
    if kind == "invalid_utf8":
        bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"])  # last two: surrogate, cut sequence
        body = _action_body(marker + bad, 0, event_id=marker)
        return BadRecord(kind, action_topic, marker, _action_header() + body, UNDECODABLE)
    if kind == "empty_value":
        return BadRecord(kind, action_topic, marker, None, UNDECODABLE)
    if kind == "wrong_record_type":
        value = encode(Response(response_id=f"{tag}-bad-{i}", prompt=f"{tag} p", response="r", model_version="v"))
        return BadRecord(kind, action_topic, marker, value, INVALID)
    if kind == "trailing_bytes":
        return BadRecord(kind, action_topic, marker, valid + rng.randbytes(rng.randint(1, 20)), UNDECODABLE)
    raise ValueError(kind)


KAFKA_KINDS = ("random_bytes", "truncated_avro", "unknown_fingerprint", "wrong_marker", "rating_out_of_range",
               "unknown_enum_symbol", "negative_timestamp", "empty_ids", "oversized_string", "invalid_utf8",
               "empty_value", "wrong_record_type", "trailing_bytes")


def kafka_corpus(tag: str, bad: int, good_groups: int, seed: int = 20) -> KafkaCorpus:
    """`bad` bad records (kinds in turn) and `good_groups` responses each with an EDIT (one pair each), shuffled."""
    rng = random.Random(seed)
    corpus = KafkaCorpus()
    for g in range(good_groups):
        r = Response(response_id=f"{tag}-r{g}", prompt=f"[{tag}] question {g}: how do I reverse a list?",
                     response=f"Use reversed() on it, answer {g}.", model_version="v1", user_id=f"u{g % 7}")
        edit = Action(response_id=r.response_id, kind=ActionKind.EDIT, user_id=f"u{g % 7}",
                      edited_text=f"Call items.reverse() to reverse list {g} in place.")
        corpus.good += [r, edit]
    corpus.bad = [_bad(KAFKA_KINDS[i % len(KAFKA_KINDS)], rng, tag, i) for i in range(bad)]
    # Responses keep their place before their edits (a pair needs both); bad records fall anywhere.
    corpus.order = [(False, i) for i in range(len(corpus.good))]
    for j in range(len(corpus.bad)):
        corpus.order.insert(rng.randint(0, len(corpus.order)), (True, j))
    return corpus


# --- HTTP ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BadRequest:
    kind: str
    method: str
    path: str
    body: bytes
    content_type: str | None
    status: int
    says: str  # a phrase the error must contain


def good_request(tag: str, n: int, events: int = 5) -> list[dict]:
    out = []
    for e in range(events):
        rid = f"{tag}-h{n}-{e}"
        out.append({"type": "response", "response_id": rid, "prompt": f"[{tag}] http {n} {e}", "response": "Fine.",
                    "model_version": "v1"})
        out.append({"type": "action", "response_id": rid, "kind": "THUMBS_UP", "user_id": f"hu{e}"})
    return out


def _event(tag: str, i: int, **fields) -> dict:
    return {"type": "action", "response_id": f"{tag}-x{i}", "kind": "ACCEPT", **fields}


def _bad_request(kind: str, rng: random.Random, tag: str, i: int, max_events: int, max_body: int) -> BadRequest:
    post, json_type = "POST", "application/json"
    good = json.dumps(good_request(tag, i, 2)).encode()
    if kind == "malformed_json":
        return BadRequest(kind, post, "/v1/events", good[:rng.randint(0, len(good) - 1)], json_type, 400, "not valid JSON")
    if kind == "deeply_nested_json":
        depth = rng.randint(1100, 50_000)
        return BadRequest(kind, post, "/v1/events", b"[" * depth + b"]" * depth, json_type, 400, "not valid JSON")
    if kind == "wrong_content_type":
        ctype = rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                            "application/octet-stream", "text/html"])
        return BadRequest(kind, post, "/v1/events", good, ctype, 415, "Content-Type should be application/json")
    if kind == "huge_array":
        n = rng.randint(max_events + 1, max_body // 3)
        return BadRequest(kind, post, "/v1/events", b"[" + b",".join([b"1"] * n) + b"]", json_type, 413, "at most")
    if kind == "oversized_body":
        return BadRequest(kind, post, "/v1/events", b'{"x": "' + b"a" * (max_body + rng.randint(1, 5000)) + b'"}',
                          json_type, 413, "larger than the collector's limit")
    if kind == "random_bytes":
        return BadRequest(kind, post, "/v1/events", b"\x00" + rng.randbytes(rng.randint(0, 300)), json_type, 400, "not valid JSON")
    if kind == "invalid_utf8":
        return BadRequest(kind, post, "/v1/events", b'{"type": "action", "response_id": "\xff\xfe"}', json_type, 400,
                          "not valid JSON")
    if kind == "lone_surrogate":
        return BadRequest(kind, post, "/v1/events", b'{"type": "action", "response_id": "a\\ud800", "kind": "ACCEPT"}',
                          json_type, 400, "not valid JSON")
    if kind == "invalid_values":
        field, value, says = rng.choice([
            ("rating", rng.choice([0, 9, -3]), "must be between 1 and 5"),
            ("occurred_at", -rng.randint(1, 10**12), "must be epoch milliseconds >= 0"),
            ("kind", "CLICK", "must be one of"),
            ("response_id", "", "must not be empty"),
            ("occurred_at", 2**64 - 1, "must fit in 64 bits"),
            ("occurred_at", 1e21, "must be an integer"),
            ("user_id", 7, "must be a string"),
            ("colour", "red", "unknown field"),
        ])
        events = [_event(tag, i), _event(tag, i, **{field: value})]
        return BadRequest(kind, post, "/v1/events", json.dumps(events).encode(), json_type, 400, says)
    if kind == "wrong_shape":
        body = rng.choice([b"3", b'"text"', b"null", b"true", b'{"events": 5}', b"[]", b'[1, 2]'])
        says = "no events" if body == b"[]" else "must be a JSON object" if body == b"[1, 2]" else "body should be"
        return BadRequest(kind, post, "/v1/events", body, json_type, 400, says)
    if kind == "wrong_method":
        return BadRequest(kind, rng.choice(["GET", "PUT", "DELETE"]), "/v1/events", b"", None, 405, "Method Not Allowed")
    if kind == "unknown_path":
        return BadRequest(kind, post, rng.choice(["/v1/event", "/v2/events", "/admin", "/v1/events/../x"]), good,
                          json_type, 404, "Not Found")
    raise ValueError(kind)


HTTP_KINDS = ("malformed_json", "deeply_nested_json", "wrong_content_type", "huge_array", "oversized_body",
              "random_bytes", "invalid_utf8", "lone_surrogate", "invalid_values", "wrong_shape", "wrong_method",
              "unknown_path")


def http_corpus(tag: str, bad: int, good: int, max_events: int, max_body: int, seed: int = 21) -> list[BadRequest | list[dict]]:
    """`bad` bad requests (kinds in turn) and `good` good batches, shuffled."""
    rng = random.Random(seed)
    items: list[BadRequest | list[dict]] = [_bad_request(HTTP_KINDS[i % len(HTTP_KINDS)], rng, tag, i, max_events, max_body)
                                            for i in range(bad)]
    items += [good_request(tag, n) for n in range(good)]
    rng.shuffle(items)
    return items
