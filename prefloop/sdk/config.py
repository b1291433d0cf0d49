"""Producer settings of the app SDK: the `[sdk]` table of the config file, `PREFLOOP_SDK_*` env vars, or constructor args."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from prefloop.errors import ConfigError
from prefloop.partitioner import Murmur2Partitioner
from prefloop.setting_fields import check_fields, setting

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass
class ClientSettings:
    SECTION: ClassVar[str] = "sdk"

    linger_ms: int = setting(
        5, ge=0, help="How long the producer waits for more events before sending a partition's batch (ms). A few "
                      "milliseconds fill batches under load at a latency cost nobody notices in feedback.")
    max_batch_size: int = setting(
        65_536, ge=1024, help="Largest batch per partition, in bytes; bigger batches mean fewer requests under load.")
    compression_type: str = setting(
        "none", choices=COMPRESSION_TYPES,
        help="Batch compression: none, gzip, snappy, lz4 or zstd (the last three need their Python package).")
    request_timeout_ms: int = setting(
        30_000, gt=0, help="How long one Kafka request (metadata, produce) may take before it is retried or fails (ms).")
    delivery_timeout_s: float = setting(
        30.0, gt=0, help="How long `flush()`, `close()` and `send_many()` wait for Kafka to acknowledge events.")
    client_id: str = setting("prefloop-sdk", help="Client id the broker sees in its logs and quotas.")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.client_id.strip():
            raise ConfigError(f'"client_id" should be a non-empty string, got {self.client_id!r}')

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

