"""The aiokafka patch (aiokafka 0.14.0): producer batches built and sent whole, topics kept in the
producer's metadata, and the consumer's per-partition fetch state.

- `send_in_batches`: a record costs one append to aiokafka's batch builder instead of a `send`
  (partitioner, accumulator and a future per record); for the many small records of one partition
  (pairs, changelog values) that is most of the cost of producing them.
- `keep_in_metadata`: aiokafka's client asks for all topics until its first `add_topic`, then only for
  those added, and replaces its view with each answer. A topic the producer knew only from an
  all-topics answer then vanishes from its view; batches queued for it have no leader, and the sender
  asks for metadata in a tight loop that never names that topic: the worker spins at full CPU and the
  next commit's flush waits for good (seen in the bench). Naming every topic before its first record
  keeps them all in every answer.
- `assignment_state`: the consumer's fetch position and highwater of a partition (event-time alignment).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

from prefloop.compat import Internal, require_version

VERSION = "0.14.0"
require_version("aiokafka", VERSION, __name__)

# Every aiokafka internal this module relies on, with its source digest in VERSION.
INTERNALS = (
    Internal("aiokafka.producer.producer:AIOKafkaProducer.create_batch", "c4efda4bb7a09741", "send_in_batches"),
    Internal("aiokafka.producer.producer:AIOKafkaProducer.send_batch", "bf42b0f0c5c0646d", "send_in_batches"),
    Internal("aiokafka.producer.message_accumulator:BatchBuilder.append", "657d76f55157d9ca",
             "send_in_batches: None means the batch is full"),
    Internal("aiokafka.client:AIOKafkaClient.add_topic", "b054eda662913f08", "keep_in_metadata"),
    Internal("aiokafka.client:AIOKafkaClient._metadata_update", "06dc51ed3e0d38b8",
             "keep_in_metadata: all topics until the first add_topic, then only those added"),
    Internal("aiokafka.consumer.subscription_state:SubscriptionState.subscription", "fbbd34b17218040f", "assignment_state"),
    Internal("aiokafka.consumer.subscription_state:Assignment.state_value", "183fea82ef48f3e6", "assignment_state"),
    Internal("aiokafka.consumer.fetcher:Fetcher.fetched_records", "be4348896b9b66af",
             "an empty partition set means every partition (streams/compat/faust.py copies the active set)"),
)


async def send_in_batches(producer: Any, topic: str, partition: int,
                          records: Iterable[tuple[bytes | None, bytes | None]]) -> list[tuple[Awaitable[Any], int]]:
    """Send (key, value) records to one partition, in order, as whole producer batches; returns each
    batch's future (its first record's metadata) and record count."""
    sent: list[tuple[Awaitable[Any], int]] = []
    batch = producer.create_batch()
    for key, value in records:
        if batch.append(timestamp=None, key=key, value=value) is None:  # full: submit it, start the next
            sent.append((await producer.send_batch(batch, topic, partition=partition), batch.record_count()))
            batch = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value)  # a batch's first record always fits
    if batch.record_count():
        sent.append((await producer.send_batch(batch, topic, partition=partition), batch.record_count()))
    return sent


def keep_in_metadata(producer: Any, topic: str) -> None:
    """Make `topic` one the producer's metadata refreshes always ask for (see the module doc)."""
    producer.client.add_topic(topic)


def assignment_state(consumer: Any, tp: Any) -> Any:
    """The consumer's fetch state of `tp` (`highwater`, `position`), or None when it is not assigned."""
    try:
        subscription = consumer._fetcher._subscriptions.subscription
        return subscription.assignment.state_value(tp) if subscription is not None else None
    except Exception:  # not started, or mid-rebalance
        return None
