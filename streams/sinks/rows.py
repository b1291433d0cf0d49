"""Rows the workers write to ClickHouse: column lists per table and builders from typed records.

Rows travel as JSON lists in the order of `COLUMNS[table]`; timestamps are already
`ch_time` strings so the sink only batches and inserts.
"""

from __future__ import annotations

from typing import Any

from prefloop.analytics.store import ch_time
from schemas import Action, PreferencePair, Response

COLUMNS: dict[str, tuple[str, ...]] = {
    "feedback_events": (
        "event_id", "event_type", "occurred_at", "response_id", "prompt_id", "model_version", "user_id", "kind",
        "rating", "rejected_response_id", "prompt_chars", "response_chars", "tags", "source_partition", "source_offset",
    ),
    "action_facts": (
        "event_id", "occurred_at", "kind", "response_id", "prompt_id", "model_version", "user_id", "rating",
        "rejected_response_id", "rejected_model_version", "edit_distance", "prompt_chars", "response_chars",
    ),
    "pair_drops": ("pair_id", "event_id", "prompt_id", "source", "reason", "occurred_at"),
    "preference_pairs": (
        "pair_id", "prompt_id", "prompt", "chosen", "rejected", "chosen_response_id", "rejected_response_id",
        "chosen_model_version", "rejected_model_version", "source", "weight", "created_at",
    ),
}


def response_event(resp: Response, partition: int, offset: int) -> list[Any]:
    return [resp.event_id, "response", ch_time(resp.occurred_at), resp.response_id, resp.prompt_id,
            resp.model_version, resp.user_id, "", None, None, len(resp.prompt), len(resp.response),
            dict(resp.tags), partition, offset]


def action_event(action: Action, partition: int, offset: int, prompt_id: str = "", model_version: str = "",
                 prompt_chars: int = 0, response_chars: int = 0) -> list[Any]:
    return [action.event_id, "action", ch_time(action.occurred_at), action.response_id, prompt_id, model_version,
            action.user_id, action.kind.value, action.rating, action.rejected_response_id, prompt_chars,
            response_chars, {}, partition, offset]


def action_fact(action: Action, prompt_id: str, model_version: str, rejected_model_version: str,
                edit_distance: float | None, prompt_chars: int, response_chars: int) -> list[Any]:
    return [action.event_id, ch_time(action.occurred_at), action.kind.value, action.response_id, prompt_id,
            model_version, action.user_id, action.rating, action.rejected_response_id, rejected_model_version,
            edit_distance, prompt_chars, response_chars]


def pair_drop(pair_id: str, event_id: str, prompt_id: str, source: str, reason: str, occurred_at: int) -> list[Any]:
    return [pair_id, event_id, prompt_id, source, reason, ch_time(occurred_at)]


def preference_pair(pair: PreferencePair) -> list[Any]:
    return [pair.pair_id, pair.prompt_id, pair.prompt, pair.chosen, pair.rejected, pair.chosen_response_id,
            pair.rejected_response_id, pair.chosen_model_version, pair.rejected_model_version, pair.source.value,
            pair.weight, ch_time(pair.created_at)]
