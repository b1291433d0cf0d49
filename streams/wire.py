"""Bundles: many small records in one Kafka message between the stages of one pipeline.

Stages hand each other work per target partition and batch, not per event: one message
carries every record bound for that partition, which divides Faust's per-message cost by
the batch size. A bundle is a flat sequence of length-prefixed byte fields, `width` fields
per item. Bundles only travel on prefloop's internal topics; contract topics carry one
Avro record per message.
"""

from __future__ import annotations

import struct
from typing import Iterator, Sequence

_LEN = struct.Struct(">I")
MAGIC = b"PB1"
MAX_BUNDLE_BYTES = 512 * 1024  # well under the internal topics' 4 MiB message limit


class BundleError(ValueError):
    """Bytes that are not a bundle written by `pack` (corrupt or from another producer)."""


def pack(items: Sequence[Sequence[bytes]], width: int) -> bytes:
    parts = [MAGIC, bytes([width])]
    for item in items:
        if len(item) != width:
            raise BundleError(f"bundle item should have {width} fields, got {len(item)}")
        for f in item:
            parts.append(_LEN.pack(len(f)))
            parts.append(f)
    return b"".join(parts)


def unpack(data: bytes) -> Iterator[tuple[bytes, ...]]:
    if data[:3] != MAGIC or len(data) < 4:
        raise BundleError("not a prefloop bundle (bad magic)")
    width = data[3]
    view = memoryview(data)
    pos, end = 4, len(data)
    item: list[bytes] = []
    while pos < end:
        if pos + 4 > end:
            raise BundleError("truncated bundle")
        (n,) = _LEN.unpack_from(data, pos)
        pos += 4
        if pos + n > end:
            raise BundleError("truncated bundle")
        item.append(bytes(view[pos:pos + n]))
        pos += n
        if len(item) == width:
            yield tuple(item)
            item = []
    if item:
        raise BundleError("bundle ends inside an item")


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
