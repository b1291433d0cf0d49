"""JSON events as non-Python apps write them: `prefloop emit` lines and collector bodies.

An event is a JSON object with `"type": "response" | "action"` plus the contract's
fields of that record (ARCHITECTURE.md). `event_id` and `occurred_at` may be left
out: the record fills in a fresh id and the current time.
"""

from __future__ import annotations

import json
from typing import Any

from prefloop.errors import FieldError, ValidationError
from schemas.records import Action, Response

EVENT_TYPES: dict[str, type[Response] | type[Action]] = {"response": Response, "action": Action}


def parse_event(obj: Any) -> Response | Action:
    """Typed, validated record from one JSON event; raises ValidationError naming every bad field."""
    if not isinstance(obj, dict):
        # An empty field name means the whole event.
        raise ValidationError([FieldError("", f"must be a JSON object, got {_json_type(obj)}")])
    kind = obj.get("type")
    cls = EVENT_TYPES.get(kind.lower()) if isinstance(kind, str) else None
    if cls is None:
        got = "nothing" if "type" not in obj else json.dumps(kind)
        raise ValidationError([FieldError("type", f'must be "response" or "action", got {got}')])
    fields = {k: v for k, v in obj.items() if k != "type"}
    return cls.from_json(fields)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
