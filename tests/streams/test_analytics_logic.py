"""Pure logic of drift, the trigger policy and the hot-path validator."""

from __future__ import annotations

import math

import pytest

from schemas import Action, ActionKind, Response, TriggerReason, encode
from streams.drift import OTHER, fold_top, js_divergence, length_bucket, psi, shares
from streams.dlq import decoded_errors
from streams.trigger import Policy, State, cooldown_left_s, decide


# --- drift math ------------------------------------------------------------------------------------------
def test_psi_and_js_are_zero_for_the_same_distribution():
    a = {"x": 10, "y": 30, "z": 60}
    b = {"x": 1, "y": 3, "z": 6}  # same shares, other scale
    assert psi(a, b) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(a, b) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_formula():
    cur, ref = {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}
    expected = (0.5 - 0.9) * math.log(0.5 / 0.9) + (0.5 - 0.1) * math.log(0.5 / 0.1)
    assert psi(cur, ref) == pytest.approx(expected)
    assert psi(cur, ref) > 0.25  # "large shift" by the usual rule of thumb


def test_js_is_bounded_and_symmetric():
    a, b = {"a": 1.0}, {"b": 1.0}
    assert js_divergence(a, b) == pytest.approx(1.0)  # disjoint supports: 1 bit
    c, d = {"a": 3, "b": 1}, {"a": 1, "b": 3}
    assert js_divergence(c, d) == pytest.approx(js_divergence(d, c))
    assert 0 < js_divergence(c, d) < 1


def test_empty_buckets_do_not_make_psi_infinite():
    assert math.isfinite(psi({"a": 10}, {"b": 10}))
    s = shares({"a": 10}, ["a", "b"])
    assert s["b"] > 0 and sum(s.values()) == pytest.approx(1.0)


def test_length_buckets_and_top_values():
    assert [length_bucket(i) for i in (1, 2, 7, 0)] == ["0-49", "50-99", "1600-3199", ">=3200"]
    folded = fold_top({"a": 5, "b": 4, "c": 1, "d": 1}, 2)
    assert folded == {"a": 5, "b": 4, OTHER: 2}


# --- trigger policy ------------------------------------------------------------------------------------------
POLICY = Policy(new_pairs=1000, min_pairs=100, drift_threshold=0.25, staleness_s=3600, cooldown_s=600)
NOW = 10_000_000_000


def state(new: int, drift: float | None = None, last_ago_s: float | None = None, since_ago_s: float | None = None) -> State:
    return State(pairs_total=5000 + new, pairs_at_last=5000,
                 last_request_ms=int(NOW - last_ago_s * 1000) if last_ago_s is not None else 0,
                 since_ms=int(NOW - since_ago_s * 1000) if since_ago_s is not None else 0, drift=drift, now_ms=NOW)


def test_trigger_on_new_pairs():
    assert decide(POLICY, state(999)) is None
    assert decide(POLICY, state(1000)) is TriggerReason.NEW_PAIRS


def test_trigger_on_drift_needs_min_pairs():
    assert decide(POLICY, state(99, drift=0.9)) is None
    assert decide(POLICY, state(100, drift=0.25)) is None  # strictly above the threshold
    assert decide(POLICY, state(100, drift=0.26)) is TriggerReason.DRIFT


def test_trigger_on_staleness_needs_min_pairs():
    assert decide(POLICY, state(100, last_ago_s=3000)) is None
    assert decide(POLICY, state(99, last_ago_s=4000)) is None
    assert decide(POLICY, state(100, last_ago_s=4000)) is TriggerReason.STALENESS
    # before any request, staleness counts from the first pair
    assert decide(POLICY, state(100, since_ago_s=4000)) is TriggerReason.STALENESS
    assert decide(POLICY, state(100)) is None


def test_cooldown_blocks_every_reason():
    s = state(5000, drift=5.0, last_ago_s=60)
    assert decide(POLICY, s) is None
    assert cooldown_left_s(POLICY, s) == pytest.approx(540)
    assert decide(POLICY, state(5000, last_ago_s=601)) is TriggerReason.NEW_PAIRS


# --- validator -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("record", [
    Action(response_id="r", kind=ActionKind.RATING),
    Action(response_id="r", kind=ActionKind.RATING, rating=9),
    Action(response_id="r", kind=ActionKind.EDIT, edited_text="  "),
    Action(response_id="r", kind=ActionKind.CHOICE),
    Action(response_id="r", kind=ActionKind.CHOICE, rejected_response_id="r"),
    Action(response_id=" ", kind=ActionKind.THUMBS_UP),
    Action(response_id="r", kind=ActionKind.THUMBS_UP, occurred_at=-5),
    Action(response_id="r", kind=ActionKind.THUMBS_UP),
    Response(response_id="r", prompt="p", response="", model_version="v1"),
    Response(response_id="r", prompt="p", response="x", model_version=" "),
])
def test_hot_path_validator_agrees_with_field_errors(record):
    from schemas import decode

    decoded = decode(encode(record))
    assert decoded_errors(decoded) == decoded.field_errors()
