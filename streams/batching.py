"""Consumer-side batching of the input topics: one Faust event per fetched partition batch.

Faust hands every Kafka record to its streams one at a time: a `ConsumerMessage`, the
conductor's channel fan-out, an `Event`, sensors, stream iteration and an ack, plus (in
`Consumer._drain_messages`) a `wait_first` that creates two tasks per record. On a small
machine that costs more than the whole pipeline's own work (measured: a no-op Faust agent
reads ~5,000 events/s where raw aiokafka passes ~29,000 through). The input topics carry
one small Avro record per message, so this is where the throughput goes.

`BatchingConsumer` keeps everything Faust does — group membership, assignment, flow
control, acks, offset commits, table changelogs and recovery — and changes one thing: for
the topics in `App.batch_topics`, all records of one topic-partition in one fetch reach the
agent as a single message whose value is a `RecordBatch` and whose offset is the batch's
last record. The offsets inside the batch are registered with Faust's gap tracker
(`_add_gap`), so acking the batch message commits past the whole batch, and not one
record earlier: a batch is committed all or nothing, after the agent has processed it.
Every other topic (internal bundles, changelogs) is delivered exactly as Faust does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

import faust
from faust.serializers import codecs
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

CODEC = "prefloop-batch"


@dataclass(frozen=True)
class RecordBatch:
    """Consecutive records of one topic-partition, in offset order (Faust `ConsumerMessage`s)."""

    messages: Sequence[Message]


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


class BatchingConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, delivering each fetch of a batched topic-partition as one message."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        batched = self.app.batch_topics
        groups: dict[TP, list[Message]] = {}
        async for tp, message in super().getmany(timeout):
            if tp.topic in batched:
                groups.setdefault(tp, []).append(message)
            else:
                yield tp, message
        if not self.flow_active:
            return  # a rebalance began: like Faust's getmany, deliver nothing more of this fetch
        for tp, messages in groups.items():
            first, last = messages[0], messages[-1]
            if last.generation_id != self.app.consumer_generation_id:
                continue  # fetched before a rebalance; the stream would skip it anyway
            if last.offset > first.offset:
                # Offsets first..last-1 are acked together with the batch message (offset last).
                await self._add_gap(tp, first.offset, last.offset - 1)
            yield tp, _batch_message(tp, messages)


def _batch_message(tp: TP, messages: list[Message]) -> Message:
    last = messages[-1]
    return aiokafka_driver.ConsumerMessage(
        tp.topic, tp.partition, last.offset, last.timestamp, last.timestamp_type, [], None,
        RecordBatch(messages), None, 0, sum(m.serialized_value_size or 0 for m in messages), tp,
        generation_id=last.generation_id,
    )


class BatchingTransport(aiokafka_driver.Transport):
    Consumer = BatchingConsumer


class BatchingApp(faust.App):
    """A Faust app whose consumer batches `batch_topics` (see the module doc)."""

    batch_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> BatchingTransport:
        return BatchingTransport(self.conf.broker_consumer, self)

    def batch_topic(self, *names: str, batched: Sequence[str]) -> faust.types.TopicT:
        """A topic over `names`: events of the `batched` ones carry a `RecordBatch`, the others bytes."""
        unknown = set(batched) - set(names)
        if unknown:
            raise ValueError(f"batched topics should be among {sorted(names)}, got {sorted(unknown)}")
        self.batch_topics = self.batch_topics | frozenset(batched)
        return self.topic(*names, key_type=None, value_type=None, key_serializer="raw", value_serializer=CODEC)


def records(events: Sequence[Any]) -> list[Message]:
    """The Kafka records behind a list of Faust events: batches flattened, other events as they are."""
    out: list[Message] = []
    for event in events:
        value = event.value
        if isinstance(value, RecordBatch):
            out.extend(value.messages)
        else:
            out.append(event.message)
    return out
