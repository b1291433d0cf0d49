"""The columns of the analytics tables the streams workers fill, in the order their rows list them
(streams/sinks/rows.py builds the rows; `prefloop pairs export` reads preference_pairs by them)."""

from __future__ import annotations

COLUMNS: dict[str, tuple[str, ...]] = {
    "feedback_events": (
        "event_id", "event_type", "occurred_at", "response_id", "prompt_id", "model_version", "user_id", "kind",
        "rating", "rejected_response_id", "prompt_chars", "response_chars", "tags", "source_partition", "source_offset",
        "latency_ms", "error",
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
