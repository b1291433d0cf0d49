"""HTTP collector for non-Python apps: `POST /v1/events` → the same Kafka topics as the SDK."""

from prefloop.collector.app import create_app, run

__all__ = ["create_app", "run"]
