"""Bundles: many small records in one Kafka message between the stages of one pipeline.

Stages hand each other work per target partition and batch, not per event: one message
carries every record bound for that partition, which divides Faust's per-message cost by
the batch size. A bundle is a magic prefix and a MessagePack array of items, each an array
of exactly `width` values (bytes, str, int, float or nil), so a stage reads decoded fields
straight out of it. Bundles only travel on prefloop's internal topics; contract topics carry
one Avro record per message.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import msgpack

MAGIC = b"PB2"
MAX_BUNDLE_BYTES = 512 * 1024  # well under the internal topics' 4 MiB message limit


class BundleError(ValueError):
    """Bytes that are not a bundle written by `pack` (corrupt or from another producer)."""


def pack(items: Sequence[Sequence[Any]], width: int) -> bytes:
    for item in items:
        if len(item) != width:
            raise BundleError(f"bundle item should have {width} fields, got {len(item)}")
    return MAGIC + msgpack.packb(items, use_bin_type=True)


def unpack(data: bytes, width: int) -> list[list[Any]]:
    """The items of a bundle; BundleError when it is not one, or an item is not `width` wide."""
    if data[:3] != MAGIC:
        raise BundleError("not a prefloop bundle (bad magic)")
    try:
        items = msgpack.unpackb(memoryview(data)[3:], raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for truncated or corrupt input
        raise BundleError(f"corrupt bundle: {type(exc).__name__}: {exc}") from None
    if not isinstance(items, list) or any(not isinstance(item, list) or len(item) != width for item in items):
        raise BundleError(f"bundle items should be arrays of {width} fields")
    return items


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
