"""One record at a time off a Kafka consumer: the loop of the services that run one long job per record
(the trainer per training request, the evaluator per training result)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prefloop.errors import DecodeError, ValidationError
from schemas import AvroRecord, decode

R = TypeVar("R", bound=AvroRecord)


async def one_at_a_time(consumer: Any, expect: type[R], handle: Callable[[R], Awaitable[Any]],
                        skipped: Callable[[int, Exception], None], once: bool = False,
                        stop: asyncio.Event | None = None) -> None:
    """Decode each record as `expect` and await `handle` on it, then commit its offset: a crash mid-job
    leaves the record to the group's next member. A record that is not an `expect` goes to `skipped`
    (its offset and why) and is committed too. Returns after one record with `once`, or once `stop` is set."""
    while stop is None or not stop.is_set():
        batch = await consumer.getmany(timeout_ms=1000, max_records=1)
        for messages in batch.values():
            for message in messages:
                try:
                    record = decode(message.value, expect=expect)
                except (DecodeError, ValidationError) as exc:
                    skipped(message.offset, exc)
                else:
                    await handle(record)  # type: ignore[arg-type]
                await consumer.commit()
                if once:
                    return
