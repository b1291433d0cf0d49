"""Consumer-side batching of the input topics, as the stages see it: one Faust event per fetched
partition batch.

Faust hands every Kafka record to its streams one at a time (a message, a channel fan-out, an event,
sensors, an ack and two tasks per record), which on a small machine costs more than the pipeline's own
work (measured: a no-op Faust agent reads ~5,000 events/s where raw aiokafka passes ~29,000 through).
So the consumer (streams/compat/faust.py, a patch of Faust's consumer and acks) delivers all records
of one input topic-partition in one fetch as a single message whose value is a `RecordBatch`; the
agents read its records with `records(events)`. Every other topic (internal bundles, changelogs) is
delivered exactly as Faust does, as raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from faust.serializers import codecs
from faust.types import Message

CODEC = "prefloop-batch"


@dataclass(frozen=True)
class RecordBatch:
    """Consecutive records of one topic-partition, in offset order (aiokafka `ConsumerRecord`s:
    `topic`, `partition`, `offset`, `value`, ...)."""

    records: Sequence[Any]


class _PassThrough(codecs.Codec):
    """Value codec of agents over batched topics: a `RecordBatch` (built by the consumer) or,
    from the unbatched topics the same agent reads, the raw bytes."""

    def _loads(self, s: Any) -> Any:
        if not isinstance(s, (RecordBatch, bytes)):
            raise TypeError(f"expected a RecordBatch or bytes, got {type(s).__name__}")
        return s

    def _dumps(self, s: Any) -> bytes:
        raise TypeError("batched input topics are read-only for the streams app")


codecs.register(CODEC, _PassThrough())


def records(events: Sequence[Any]) -> list[Message]:
    """The Kafka records behind a list of Faust events: batches flattened, other events as they are."""
    out: list[Any] = []
    for event in events:
        value = event.value
        if isinstance(value, RecordBatch):
            out.extend(value.records)
        else:
            out.append(event.message)
    return out
