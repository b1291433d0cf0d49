"""`SyncFeedbackClient`: the same API for synchronous apps, on a background event-loop thread."""

from __future__ import annotations

import asyncio
import atexit
import threading
from typing import Any, Coroutine, Iterable, Mapping, TypeVar

from aiokafka.structs import RecordMetadata

from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.exceptions import ClientClosedError
from prefloop.settings import Settings
from schemas.records import Action, ActionKind, AvroRecord, Response

R = TypeVar("R", bound=AvroRecord)
T = TypeVar("T")


class SyncFeedbackClient:
    """Blocking twin of FeedbackClient; takes the same constructor arguments.

    One daemon thread runs an event loop that owns the async client; each call hands
    it a coroutine and waits for the result. Calls are thread-safe. `close()` flushes;
    a client still open when the interpreter exits is closed (and flushed) by atexit.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        # Built here so bad options raise in the caller's thread; the producer itself starts in the loop.
        self._client = FeedbackClient(settings, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prefloop-sdk-loop", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    @property
    def config(self):  # the ClientSettings in force
        return self._client.config

    @property
    def closed(self) -> bool:
        return self._closed

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientClosedError("this SyncFeedbackClient is closed; create a new one to send more events")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        self._call(self._client.start())

    def response(
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
        return self._call(
            self._client.response(
                prompt=prompt,
                response=response,
                model_version=model_version,
                response_id=response_id,
                prompt_id=prompt_id,
                user_id=user_id,
                tags=tags,
                latency_ms=latency_ms,
                error=error,
            )
        )

    def choose_model(self, user_id: str | None) -> str:
        """The model version `user_id` is served (see FeedbackClient.choose_model)."""
        return self._call(self._client.choose_model(user_id))

    def action(
        self,
        *,
        response_id: str,
        kind: ActionKind | str,
        rating: int | None = None,
        edited_text: str | None = None,
        rejected_response_id: str | None = None,
        user_id: str | None = None,
    ) -> Action:
        return self._call(
            self._client.action(
                response_id=response_id,
                kind=kind,
                rating=rating,
                edited_text=edited_text,
                rejected_response_id=rejected_response_id,
                user_id=user_id,
            )
        )

    def send(self, record: R) -> R:
        return self._call(self._client.send(record))

    def send_many(self, records: Iterable[AvroRecord]) -> list[RecordMetadata]:
        return self._call(self._client.send_many(list(records)))

    def flush(self) -> None:
        self._call(self._client.flush())

    def close(self) -> None:
        """Flush, disconnect and stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._call(self._client.close())
            finally:
                self._closed = True
                atexit.unregister(self.close)
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()

    def __enter__(self) -> "SyncFeedbackClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
