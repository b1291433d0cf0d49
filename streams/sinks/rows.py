"""Rows the workers write to ClickHouse: builders from typed records, and the bundles that carry
them to the sink.

A row is a JSON list in the order of `COLUMNS[table]` (prefloop/analytics/columns.py; one JSONCompactEachRow line) with
timestamps already in a form ClickHouse parses, so the sink never decodes a row: it concatenates
the rows bundles (streams/wire.py, `pack_rows`) of a table into one insert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from prefloop.analytics.store import ch_time
from schemas import Action, PreferencePair, Response
from streams import wire

if TYPE_CHECKING:
    from streams.runtime import Runtime


def response_event(resp: Response, partition: int, offset: int) -> list[Any]:
    return [resp.event_id, "response", ch_time(resp.occurred_at), resp.response_id, resp.prompt_id,
            resp.model_version, resp.user_id, "", None, None, len(resp.prompt), len(resp.response),
            dict(resp.tags), partition, offset, resp.latency_ms, resp.error]


def action_event(action: Action, partition: int, offset: int, prompt_id: str = "", model_version: str = "",
                 prompt_chars: int = 0, response_chars: int = 0) -> list[Any]:
    return [action.event_id, "action", ch_time(action.occurred_at), action.response_id, prompt_id, model_version,
            action.user_id, action.kind.value, action.rating, action.rejected_response_id, prompt_chars,
            response_chars, {}, partition, offset, None, None]


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


def row_json(row: list[Any]) -> bytes:
    return orjson.dumps(row)


async def send_rows(rt: "Runtime", table_rows: dict[str, list[list[Any]]]) -> list:
    """Send rows to the analytics sink in bundles of at most wire.MAX_BUNDLE_BYTES; returns the send futures."""
    futures = []
    for table, rows_ in table_rows.items():
        futures += await send_json_rows(rt, table, [row_json(row) for row in rows_])
    return futures


async def send_json_rows(rt: "Runtime", table: str, encoded: list[bytes]) -> list:
    """Like send_rows, for rows already encoded by `row_json`."""
    futures = []
    for chunk in wire.chunks(encoded, wire.MAX_BUNDLE_BYTES, lambda r: len(r) + 1):
        futures.append(await rt.send(rt.analytics, None, wire.pack_rows(table, chunk)))
    return futures
