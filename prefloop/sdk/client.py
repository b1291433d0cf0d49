"""`FeedbackClient`: the async app SDK that records responses and users' actions on Kafka.

Events are typed records (schemas.records), validated before anything is sent,
encoded as Avro single-object bytes and produced by one idempotent aiokafka
producer (acks=all) that batches per partition. Responses are keyed by
`prompt_id` and actions by `response_id`: the stream join relies on both keys.

`send()` returns once the event is buffered; delivery failures are counted and
raised by the next `flush()` or `close()`. `send_many()` waits for Kafka to
acknowledge every event of its batch, for callers that must answer for them
(the HTTP collector).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Callable, Iterable, Mapping, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from prefloop import routing, topics
from prefloop.kafka_client import diagnose, kafka_options
from prefloop.privacy import PrivacySettings, Pseudonymiser
from prefloop.sdk.config import ClientSettings
from prefloop.sdk.exceptions import ClientClosedError, DeliveryError, KafkaUnavailableError, RoutingUnavailableError
from prefloop.settings import Settings, load_settings, redact_url
from schemas import encode
from schemas.codec import SchemaRegistry, default_registry
from schemas.records import Action, ActionKind, AvroRecord, Response, new_event_id

log = logging.getLogger("prefloop.sdk")

R = TypeVar("R", bound=AvroRecord)

CHECK_EVERY = 1024  # sends between bulk checks of delivery futures


@dataclass(frozen=True)
class Route:
    topic: str
    key: Callable[[Any], str]


class FeedbackClient:
    """Async producer of Response and Action events. Use as `async with FeedbackClient() as client:`.

    Producer knobs come from `[sdk]` in the config file / `PREFLOOP_SDK_*` (see ClientSettings);
    constructor arguments override them. The topics default to the contract's; tests and the
    ingest benchmark point them elsewhere.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        linger_ms: int | None = None,
        max_batch_size: int | None = None,
        compression_type: str | None = None,
        request_timeout_ms: int | None = None,
        delivery_timeout_s: float | None = None,
        client_id: str | None = None,
        responses_topic: str = topics.RESPONSES,
        actions_topic: str = topics.ACTIONS,
        registry: SchemaRegistry | None = None,
    ) -> None:
        settings = settings if settings is not None else load_settings()
        self._settings = settings
        overrides = {
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "compression_type": compression_type,
            "request_timeout_ms": request_timeout_ms,
            "delivery_timeout_s": delivery_timeout_s,
            "client_id": client_id,
        }
        base = settings.section(ClientSettings)
        # replace() runs ClientSettings' checks again on the overridden values.
        self.config = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
        self.bootstrap_servers = bootstrap_servers or settings.bootstrap_servers
        self._kafka = kafka_options(settings, self.bootstrap_servers)  # [kafka] security settings
        self.redis_dsn = settings.redis_dsn
        # The routing table for choose_model(): read from Redis at most once a second, like the gateway.
        self._routing = routing.CachedTable(max_age_s=1.0)
        self._redis: Any = None
        self._registry = registry or default_registry()
        # [privacy] pseudonymise_user_ids: user ids are replaced here, so no raw id reaches Kafka.
        self._pseudonymiser = Pseudonymiser.from_settings(settings.section(PrivacySettings))
        self._routes: dict[type, Route] = {
            Response: Route(responses_topic, attrgetter("prompt_id")),
            Action: Route(actions_topic, attrgetter("response_id")),
        }
        self._producer: AIOKafkaProducer | None = None
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        # Delivery futures of send(); checked in bulk every `_check_at` sends rather than by one
        # done-callback per event, which costs a loop callback per event on the hot path.
        self._inflight: list[asyncio.Future] = []
        self._check_at = CHECK_EVERY
        self._failed = 0
        self._first_failure: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._producer is not None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def producer_options(self) -> dict[str, Any]:
        """The exact aiokafka producer configuration this client uses."""
        return {**self._kafka, **self.config.producer_options()}

    async def start(self) -> None:
        """Connect to Kafka. Sending starts the client on first use, so calling this is optional."""
        await self._ensure_started()

    async def _ensure_started(self) -> AIOKafkaProducer:
        if self._closed:
            raise ClientClosedError("this FeedbackClient is closed; create a new one to send more events")
        if self._producer is not None:
            return self._producer
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._closed:
                raise ClientClosedError("this FeedbackClient is closed; create a new one to send more events")
            if self._producer is None:
                producer = AIOKafkaProducer(**self.producer_options())
                try:
                    await producer.start()
                except Exception as exc:
                    await producer.stop()
                    raise KafkaUnavailableError(await diagnose(exc, self._settings, self.bootstrap_servers)) from exc
                self._producer = producer
        return self._producer

    async def flush(self) -> None:
        """Wait until Kafka acknowledged every event sent so far; raise DeliveryError if any failed."""
        await self._flush(self._producer)

    async def _flush(self, producer: AIOKafkaProducer | None) -> None:
        if producer is not None:
            await self._await_delivery(_send_now_and_wait(producer))
        if self._inflight:
            await self._await_delivery(asyncio.gather(*self._inflight, return_exceptions=True))
        self._check_inflight()
        if self._failed:
            failed, first = self._failed, self._first_failure
            self._failed, self._first_failure = 0, None
            raise DeliveryError(
                f"Kafka did not acknowledge {failed} event(s): {type(first).__name__}: {first}", failed=failed
            )

    async def _await_delivery(self, awaitable: Any) -> None:
        try:
            await asyncio.wait_for(awaitable, self.config.delivery_timeout_s)
        except asyncio.TimeoutError:
            raise DeliveryError(
                f"timed out after {self.config.delivery_timeout_s:g}s waiting for Kafka at {self.bootstrap_servers} "
                f"to acknowledge {len(self._inflight)} event(s)",
                failed=len(self._inflight),
            ) from None

    async def close(self) -> None:
        """Flush buffered events, then disconnect. Idempotent; raises DeliveryError if events were lost."""
        if self._closed:
            return
        self._closed = True
        # From here on send() finds no producer and raises ClientClosedError.
        producer, self._producer = self._producer, None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if producer is None:
            return
        try:
            await self._flush(producer)
        finally:
            await producer.stop()

    async def __aenter__(self) -> "FeedbackClient":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- routing -----------------------------------------------------------------------

    async def choose_model(self, user_id: str | None) -> str:
        """The model version `user_id` is served, by the same routing table and sticky canary rule as
        `prefloop serve` (prefloop/routing.py), for apps that serve models themselves. The table is
        re-read at most once a second; with Redis unreachable the last table read stays in force."""
        if self._closed:
            raise ClientClosedError("this FeedbackClient is closed; create a new one to choose models")
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self.redis_dsn, socket_timeout=1.0, socket_connect_timeout=1.0)
        table = await self._routing.refresh(self._redis)
        if table is None:
            why = f"Redis is unreachable ({self._routing.error})" if self._routing.error else "no version is in production yet"
            raise RoutingUnavailableError(f"no routing table at {redact_url(self.redis_dsn)}: {why}; is `prefloop up` running?")
        return table.version_for(user_id)

    # -- events ------------------------------------------------------------------------

    async def response(
        self,
        *,
        prompt: str,
        response: str,
        model_version: str,
        response_id: str | None = None,
        prompt_id: str | None = None,
        user_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        latency_ms: int | None = None,
        error: str | None = None,
    ) -> Response:
        """Record a response shown to a user. A missing response_id is generated; a missing
        prompt_id is a hash of the normalised prompt, so regenerations group together.
        `latency_ms` and `error` (why generation failed) feed per-version error rates and latency."""
        record = Response(
            response_id=new_event_id() if response_id is None else response_id,
            prompt=prompt,
            response=response,
            model_version=model_version,
            prompt_id=prompt_id or "",
            user_id=user_id,
            tags={} if tags is None else dict(tags) if isinstance(tags, Mapping) else tags,  # type: ignore[arg-type]
            latency_ms=latency_ms,
            error=error,
        )
        return await self.send(record)

    async def action(
        self,
        *,
        response_id: str,
        kind: ActionKind | str,
        rating: int | None = None,
        edited_text: str | None = None,
        rejected_response_id: str | None = None,
        user_id: str | None = None,
    ) -> Action:
        """Record a user's action on a response (THUMBS_UP, THUMBS_DOWN, RATING, EDIT, ACCEPT, CHOICE)."""
        record = Action(
            response_id=response_id,
            kind=kind,  # type: ignore[arg-type]  # a str is coerced by Action, a bad one reported by validate()
            rating=rating,
            edited_text=edited_text,
            rejected_response_id=rejected_response_id,
            user_id=user_id,
        )
        return await self.send(record)

    async def send(self, record: R) -> R:
        """Validate, encode and buffer one prebuilt Response or Action; returns it once buffered."""
        topic, key, value = self._prepare(record)
        producer = self._producer or await self._ensure_started()
        try:
            fut = await producer.send(topic, value, key=key)
        except KafkaError as exc:
            raise self._send_error(topic, exc) from exc
        inflight = self._inflight
        inflight.append(fut)
        if len(inflight) >= self._check_at:
            self._check_inflight()
        return record

    async def send_many(self, records: Iterable[AvroRecord], *, validated: bool = False) -> list[RecordMetadata]:
        """Validate and encode every record first (nothing is sent if one is bad), then send them
        all and wait for Kafka to acknowledge each; raises DeliveryError otherwise. The wait
        includes up to `linger_ms`, the time a batch may wait for more events.

        `validated=True` skips the per-record validation for records the caller has just
        validated itself (the collector builds them with `from_json`, which checks every field).
        """
        prepared = [self._prepare(record, validate=not validated) for record in records]
        producer = self._producer or await self._ensure_started()
        send = producer.send
        futures = []
        for topic, key, value in prepared:
            try:
                futures.append(await send(topic, value, key=key))
            except KafkaError as exc:
                raise self._send_error(topic, exc) from exc
        if not futures:
            return []
        pending = await _wait_all(futures, self.config.delivery_timeout_s)
        for fut in pending:  # retrieve their outcome later, so no "exception never retrieved" noise
            fut.add_done_callback(_consume_outcome)
        if pending:
            raise DeliveryError(
                f"timed out after {self.config.delivery_timeout_s:g}s waiting for Kafka at {self.bootstrap_servers} "
                f"to acknowledge {len(pending)} of {len(futures)} event(s)",
                failed=len(pending),
            )
        errors = [exc for fut in futures if (exc := fut.exception()) is not None]
        if errors:
            raise DeliveryError(
                f"Kafka did not acknowledge {len(errors)} of {len(futures)} event(s): "
                f"{type(errors[0]).__name__}: {errors[0]}",
                failed=len(errors),
            )
        return [fut.result() for fut in futures]

    def _prepare(self, record: AvroRecord, validate: bool = True) -> tuple[str, bytes, bytes]:
        route = self._routes.get(type(record))
        if route is None:
            raise TypeError(f"FeedbackClient sends Response and Action records, got {type(record).__name__}")
        if validate:
            record.validate()
        if self._pseudonymiser is not None:
            record = self._pseudonymiser.apply(record)
        return route.topic, route.key(record).encode(), encode(record, self._registry)

    def _send_error(self, topic: str, exc: Exception) -> DeliveryError:
        return DeliveryError(f"cannot send to topic {topic!r} on Kafka at {self.bootstrap_servers}: {type(exc).__name__}: {exc}")

    def _check_inflight(self) -> None:
        """Drop delivered futures, counting failures for the next flush(); amortised O(1) per send."""
        still = []
        for fut in self._inflight:
            if not fut.done():
                still.append(fut)
            elif not fut.cancelled() and (exc := fut.exception()) is not None:
                self._failed += 1
                if self._first_failure is None:
                    self._first_failure = exc
                    log.warning("Kafka did not acknowledge an event: %s: %s", type(exc).__name__, exc)
        self._inflight = still
        self._check_at = max(CHECK_EVERY, 2 * len(still))


async def _send_now_and_wait(producer: AIOKafkaProducer) -> None:
    """Send lingering batches at once and wait for them, as Java's KafkaProducer.flush() does.

    aiokafka's public flush() waits out each batch's linger_ms first; its accumulator's
    flush_for_commit() (what its transactions use) closes the open batches so the sender
    takes them now. aiokafka is pinned; should that internal go, the public flush() is used.
    """
    accumulator = getattr(producer, "_message_accumulator", None)
    flush_now = getattr(accumulator, "flush_for_commit", None)
    await (flush_now() if flush_now is not None else producer.flush())


async def _wait_all(futures: list[asyncio.Future], timeout_s: float) -> list[asyncio.Future]:
    """Wait until every future is done or `timeout_s` passed; returns those still pending.

    Newest first: a partition's batches are acknowledged in order, so once the newest future
    of a partition is done the older ones mostly are too, and the loop waits a few times per
    call (about once per partition) instead of registering a callback on every future, as
    `asyncio.wait(futures)` does.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for fut in reversed(futures):
        if not fut.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait((fut,), timeout=remaining)
    return [fut for fut in futures if not fut.done()]


def _consume_outcome(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
