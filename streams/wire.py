"""Bundles: many small records in one Kafka message between the stages of one pipeline, and every
bundle's layout.

Stages hand each other work per target partition and batch, not per event: one message carries every
record bound for that partition, which divides Faust's per-message cost by the batch size. Bundles
only travel on prefloop's internal topics; contract topics carry one Avro record per message.

- Stage bundles (`pack` / `unpack`): a magic prefix and a MessagePack array of items, each an array of
  exactly the fields of its layout (a NamedTuple below: `IndexedResponse`, `ForwardedAction`,
  `PairCandidate`), so a stage reads decoded fields straight out of it.
- Rows bundles (`pack_rows` / `unpack_rows`) for the analytics sink: the table name, a newline, then
  newline-terminated JSONCompactEachRow rows, which the sink concatenates into one insert unread.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence, TypeVar

import msgpack

from schemas import Action, ActionKind

MAGIC = b"PB2"
MAX_BUNDLE_BYTES = 512 * 1024  # well under the internal topics' 4 MiB message limit

L = TypeVar("L", bound=tuple)


class IndexedResponse(NamedTuple):
    """Group stage -> resolve stage (`<app>-indexed-responses`): a response now in the Redis index."""

    response_id: str
    prompt_id: str
    group_partition: int  # the responses partition whose group stage holds the prompt group


class ForwardedAction(NamedTuple):
    """Resolve stage -> group stage (`<app>-resolved-actions`): an action whose prompt group is known."""

    payload: bytes  # the Avro record as consumed (dead letters carry it)
    partition: int  # where it was read on feedback.actions (dead letters, feedback_events rows)
    offset: int
    arrived_ms: int  # when the resolve stage first saw it: the orphan TTL runs from here
    prompt_id: str
    # The decoded fields, so the group stage need not decode Avro again.
    kind: str
    event_id: str
    occurred_at: int
    response_id: str
    user_id: str | None
    rating: int | None
    edited_text: str | None
    rejected_response_id: str | None


class PairCandidate(NamedTuple):
    """Group stage -> publish stage (`<app>-pair-candidates`): a pair that passed the quality rules."""

    pair_id: str
    record: bytes  # the Avro PreferencePair
    row: bytes  # its preference_pairs row, JSON (`streams.sinks.rows.row_json`)


class BundleError(ValueError):
    """Bytes that are not a bundle written by `pack` (corrupt or from another producer)."""


def pack(items: Sequence[Sequence[Any]], layout: type[tuple]) -> bytes:
    width = len(layout._fields)  # type: ignore[attr-defined]
    for item in items:
        if len(item) != width:
            raise BundleError(f"bundle item should have {width} fields, got {len(item)}")
    return MAGIC + msgpack.packb(items, use_bin_type=True)


def unpack(data: bytes, layout: type[L]) -> list[L]:
    """The items of a bundle as `layout`s; BundleError when it is not one, or an item has other fields."""
    if data[:3] != MAGIC:
        raise BundleError("not a prefloop bundle (bad magic)")
    try:
        items = msgpack.unpackb(memoryview(data)[3:], raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for truncated or corrupt input
        raise BundleError(f"corrupt bundle: {type(exc).__name__}: {exc}") from None
    width = len(layout._fields)  # type: ignore[attr-defined]
    if not isinstance(items, list) or any(not isinstance(item, list) or len(item) != width for item in items):
        raise BundleError(f"bundle items should be arrays of {width} fields")
    make = layout._make  # type: ignore[attr-defined]
    return [make(item) for item in items]


def forwarded_action(action: Action, payload: bytes, partition: int, offset: int, arrived_ms: int,
                     prompt_id: str) -> ForwardedAction:
    return ForwardedAction(payload, partition, offset, arrived_ms, prompt_id, action.kind.value, action.event_id,
                           action.occurred_at, action.response_id, action.user_id, action.rating, action.edited_text,
                           action.rejected_response_id)


_KINDS = ActionKind._value2member_map_


def action_of(item: ForwardedAction) -> Action:
    """The action of a forwarded item (validated by the resolve stage before it was forwarded)."""
    return Action.unchecked(kind=_KINDS.get(item.kind) or ActionKind(item.kind), event_id=item.event_id,
                            occurred_at=item.occurred_at, response_id=item.response_id, user_id=item.user_id,
                            rating=item.rating, edited_text=item.edited_text,
                            rejected_response_id=item.rejected_response_id)


def pack_rows(table: str, rows: Sequence[bytes]) -> bytes:
    """A rows bundle of `table`: rows already encoded as JSON arrays in the order of its columns."""
    return table.encode() + b"\n" + b"\n".join(rows) + b"\n"


def unpack_rows(data: bytes) -> tuple[str, bytes, int]:
    """(table, JSONCompactEachRow body, row count) of a rows bundle."""
    table, _, body = data.partition(b"\n")
    return table.decode(), body, body.count(b"\n")


def chunks(items: list, max_bytes: int, size_of) -> Iterator[list]:
    """Split items so each bundle stays under `max_bytes` (Kafka's message size limit)."""
    batch: list = []
    size = 0
    for item in items:
        s = size_of(item)
        if batch and size + s > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += s
    if batch:
        yield batch
