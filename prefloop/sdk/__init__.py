"""The app SDK: record responses and users' actions on Kafka.

    async with FeedbackClient() as client:
        shown = await client.response(prompt=p, response=text, model_version="v3")
        await client.action(response_id=shown.response_id, kind="THUMBS_UP")
        version = await client.choose_model(user_id)  # the routing table's version for this user

`SyncFeedbackClient` offers the same calls for synchronous code.
"""

from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.config import ClientSettings
from prefloop.sdk.events import parse_event
from prefloop.sdk.exceptions import ClientClosedError, DeliveryError, KafkaUnavailableError, RoutingUnavailableError
from prefloop.sdk.sync import SyncFeedbackClient

__all__ = [
    "ClientClosedError", "ClientSettings", "DeliveryError", "FeedbackClient", "KafkaUnavailableError",
    "RoutingUnavailableError", "SyncFeedbackClient", "parse_event",
]
