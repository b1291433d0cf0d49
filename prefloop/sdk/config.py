"""Producer settings of the app SDK: the `[sdk]` table of the config file, `PREFLOOP_SDK_*` env vars, or constructor args."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefloop.errors import ConfigError
from prefloop.partitioner import Murmur2Partitioner

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass
class ClientSettings:
    # How long the producer waits for more events before sending a partition's batch.
    # A few milliseconds fill batches under load at a latency cost nobody notices in feedback.
    linger_ms: int = 5
    # Largest batch per partition, in bytes; bigger batches mean fewer requests under load.
    max_batch_size: int = 65_536
    # Batch compression: none, gzip, snappy, lz4 or zstd (the last three need their Python package).
    compression_type: str = "none"
    # How long one Kafka request (metadata, produce) may take before it is retried or fails.
    request_timeout_ms: int = 30_000
    # How long `flush()`, `close()` and `send_many()` wait for Kafka to acknowledge events.
    delivery_timeout_s: float = 30.0
    # Client id the broker sees in its logs and quotas.
    client_id: str = "prefloop-sdk"

    def __post_init__(self) -> None:
        _check(self.linger_ms >= 0, "linger_ms", ">= 0", self.linger_ms)
        _check(self.max_batch_size >= 1024, "max_batch_size", ">= 1024 (bytes)", self.max_batch_size)
        _check(self.request_timeout_ms >= 1, "request_timeout_ms", "greater than zero", self.request_timeout_ms)
        _check(self.delivery_timeout_s > 0, "delivery_timeout_s", "greater than zero", self.delivery_timeout_s)
        _check(self.compression_type in COMPRESSION_TYPES, "compression_type", f"one of {', '.join(COMPRESSION_TYPES)}", self.compression_type)
        _check(bool(self.client_id.strip()), "client_id", "a non-empty string", self.client_id)

    def producer_options(self) -> dict[str, Any]:
        """aiokafka producer options; the SDK and the raw baseline of `prefloop bench ingest` both use them."""
        return {
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_size,
            "compression_type": None if self.compression_type == "none" else self.compression_type,
            "request_timeout_ms": self.request_timeout_ms,
            # Same partitions as aiokafka's default (murmur2 of the key), computed in C.
            "partitioner": Murmur2Partitioner(),
        }


def _check(ok: bool, name: str, should: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f'"{name}" should be {should}, got {got!r}')
