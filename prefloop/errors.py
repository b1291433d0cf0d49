"""Named errors a user can hit. Each message says what happened and what to do, in one line."""

from __future__ import annotations

from dataclasses import dataclass


def one_line(what: BaseException | str, limit: int = 200) -> str:
    """An error (or a text) as one line of at most `limit` characters, for logs and one-line reports;
    an exception without a message is named by its type."""
    text = " ".join(str(what).split())[:limit]
    return text or (type(what).__name__ if isinstance(what, BaseException) else "")


class PrefloopError(Exception):
    """Base of every error prefloop raises on purpose; the CLI prints it as one line."""


class ConfigError(PrefloopError):
    """A setting is missing, malformed or out of range."""


class ServiceError(PrefloopError):
    """A local service (Kafka, Redis, analytics store) failed to start, stop or answer."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(PrefloopError, ValueError):
    """An event failed validation; `errors` names every bad field."""

    def __init__(self, errors: list[FieldError], record_type: str = "event") -> None:
        self.errors = errors
        self.record_type = record_type
        super().__init__(f"invalid {record_type}: " + "; ".join(str(e) for e in errors))


class DecodeError(PrefloopError, ValueError):
    """Bytes that are not a prefloop Avro single-object record (bad marker, unknown schema, corrupt body)."""
