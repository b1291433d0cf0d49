"""The app SDK: record responses and users' actions on Kafka.

    async with FeedbackClient() as client:
        shown = await client.response(prompt=p, response=text, model_version="v3")
        await client.action(response_id=shown.response_id, kind="THUMBS_UP")

`SyncFeedbackClient` offers the same calls for synchronous code.
"""

from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.config import ClientSettings
from prefloop.sdk.events import parse_event
from prefloop.sdk.exceptions import ClientClosedError, DeliveryError, KafkaUnavailableError
from prefloop.sdk.sync import SyncFeedbackClient

__all__ = [
    "ClientClosedError", "ClientSettings", "DeliveryError", "FeedbackClient", "KafkaUnavailableError",
    "SyncFeedbackClient", "parse_event",
]
