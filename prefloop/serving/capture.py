"""Every answer the gateway gives becomes a `Response` on feedback.responses (through the SDK).

Failed generations are recorded too, with `error` set, so error rates are measurable per version.
A Response that Kafka does not take is counted and reported in /health; the user still gets the
answer (it was already generated), and the count says how many answers went unrecorded.
"""

from __future__ import annotations

import logging

from prefloop.errors import PrefloopError, one_line
from prefloop.sdk.client import FeedbackClient
from schemas.records import Response

log = logging.getLogger("prefloop.serve")


class ResponseCapture:
    """Sends Responses through `client`; with None, capture is off (the gateway is another one's upstream)."""

    def __init__(self, client: FeedbackClient | None) -> None:
        self.client = client
        self.recorded = 0
        self.failed = 0
        self.last_error = ""

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def start(self) -> None:
        if self.client is not None:
            await self.client.start()  # fail at start-up, not on the first answer, when Kafka is unreachable

    async def record(self, response: Response) -> bool:
        if self.client is None:
            return False
        try:
            await self.client.send(response)
        except PrefloopError as exc:
            self.failed += 1
            self.last_error = one_line(exc, 300)
            if self.failed == 1 or self.failed % 100 == 0:
                log.warning("%d answer(s) not recorded on feedback.responses; last: %s", self.failed, self.last_error)
            return False
        self.recorded += 1
        return True

    def status(self) -> dict[str, object]:
        return {"enabled": self.enabled, "recorded": self.recorded, "failed": self.failed, "last_error": self.last_error}

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
