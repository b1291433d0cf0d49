"""Named errors of the app SDK."""

from __future__ import annotations

from prefloop.errors import PrefloopError, ServiceError


class KafkaUnavailableError(ServiceError):
    """The producer could not connect to Kafka at start-up."""


class DeliveryError(PrefloopError):
    """Kafka did not acknowledge one or more events (broker down, unknown topic, timeout)."""

    def __init__(self, message: str, failed: int = 0) -> None:
        super().__init__(message)
        self.failed = failed


class ClientClosedError(PrefloopError):
    """An event was sent through a client after `close()`."""


class RoutingUnavailableError(ServiceError):
    """`choose_model` found no routing table: Redis unreachable and no table read before, or none written yet."""
