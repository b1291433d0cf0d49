"""Typed records for every topic, one dataclass per Avro schema.

Timestamps are epoch milliseconds (int) in Python; enums are `str` enums whose
values are the Avro symbols. `validate()` names every bad field; `to_avro()` and
`from_avro()` convert to and from the dicts fastavro reads and writes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import time
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from prefloop.errors import FieldError, ValidationError

R = TypeVar("R", bound="AvroRecord")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_event_id() -> str:
    """A random (version 4) UUID's 32 hex digits, as `uuid.uuid4().hex` gives, at a third of its cost
    (the collector stamps one on every event that comes without)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def normalise_text(text: str) -> str:
    """Case-folded, whitespace-collapsed, stripped: the form prompt ids hash and the quality rules compare."""
    return " ".join(text.casefold().split())

# The Response tag naming a prompt's category, and the product brief's five categories: what the
# simulator asks and the report's coverage counts.
CATEGORY_TAG = "category"
# Tags prefloop adds itself (the gateway's route: pinned, production or canary) start with this prefix;
# they describe prefloop's routing, not the users' input, so drift ignores them.
RESERVED_TAG_PREFIX = "prefloop_"
ROUTE_TAG = RESERVED_TAG_PREFIX + "route"
BRIEF_CATEGORIES = ("factual_qa", "comparison", "creative", "problem_solving", "explanation")


def prompt_hash(prompt: str) -> str:
    """Default prompt_id: a hash of the normalised prompt (`normalise_text`)."""
    # surrogatepass: a record holding a lone surrogate is still built, and validate() names the field.
    return hashlib.sha256(normalise_text(prompt).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def pair_hash(prompt: str, chosen: str, rejected: str) -> str:
    """pair_id: content hash of (prompt, chosen, rejected); length-prefixed so no two triples collide by concatenation."""
    h = hashlib.sha256()
    for part in (prompt, chosen, rejected):
        raw = part.encode()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()[:32]


class ActionKind(str, enum.Enum):
    THUMBS_UP = "THUMBS_UP"
    THUMBS_DOWN = "THUMBS_DOWN"
    RATING = "RATING"
    EDIT = "EDIT"
    ACCEPT = "ACCEPT"
    CHOICE = "CHOICE"


class PairSource(str, enum.Enum):
    EDIT = "EDIT"
    CHOICE = "CHOICE"
    THUMBS = "THUMBS"
    RATING = "RATING"


class PromotionDecision(str, enum.Enum):
    PROMOTE = "PROMOTE"
    REJECT = "REJECT"
    ADVANCE = "ADVANCE"
    ROLLBACK = "ROLLBACK"
    COMPLETE = "COMPLETE"


class TriggerReason(str, enum.Enum):
    NEW_PAIRS = "NEW_PAIRS"
    DRIFT = "DRIFT"
    STALENESS = "STALENESS"
    MANUAL = "MANUAL"


class TrainingStatus(str, enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@functools.cache
def _field_types(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, inner type, nullable) per field; cached because get_type_hints is slow on hot decode paths."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, *_base_type(hints[f.name])) for f in dataclasses.fields(cls))


@functools.cache
def _avro_fields(cls: type) -> tuple[tuple[str, ...], tuple[tuple[str, type[enum.Enum]], ...]]:
    """Field names and the enum-typed fields of a record class; cached for the encode/decode hot paths."""
    types = _field_types(cls)
    enums = tuple((name, inner) for name, inner, _ in types if isinstance(inner, type) and issubclass(inner, enum.Enum))
    return tuple(name for name, _, _ in types), enums


@functools.cache
def _field_set(cls: type) -> frozenset[str]:
    return frozenset(_avro_fields(cls)[0])


@functools.cache
def _map_fields(cls: type) -> tuple[str, ...]:
    return tuple(name for name, inner, _ in _field_types(cls) if typing.get_origin(inner) is dict or inner is dict)


@functools.cache
def _has_post_init(cls: type) -> bool:
    return hasattr(cls, "__post_init__")


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(inner type, nullable) of a field annotation."""
    args = typing.get_args(hint)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


@dataclass
class AvroRecord:
    SCHEMA: ClassVar[str]
    # Fields that must hold a non-blank string.
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ()

    def to_avro(self) -> dict[str, Any]:
        cls = type(self)
        names, enums = _avro_fields(cls)
        out = self.__dict__.copy()
        if out.keys() != _field_set(cls):  # attributes beyond the fields: take the fields only
            out = {name: getattr(self, name) for name in names}
        for name, _ in enums:
            value = out[name]
            if isinstance(value, enum.Enum):
                out[name] = value.value
        for name in _map_fields(cls):
            if out[name] is not None:
                out[name] = dict(out[name])
        return out

    @classmethod
    def from_avro(cls: type[R], data: dict[str, Any]) -> R:
        """From a dict the codec read (timestamps already epoch-millisecond ints; see schemas/codec.py).

        Takes ownership of `data`: it becomes the record's attribute dict when it holds exactly
        the record's fields (the reader schema is the record's schema), skipping __init__.
        """
        names, enums = _avro_fields(cls)
        for name, enum_type in enums:
            value = data.get(name)
            if value is not None:
                data[name] = enum_type._value2member_map_.get(value) or enum_type(value)
        if data.keys() != _field_set(cls):
            return cls(**{k: data[k] for k in names if k in data})
        record = cls.__new__(cls)
        record.__dict__ = data
        if _has_post_init(cls):
            record.__post_init__()  # type: ignore[attr-defined]
        return record

    @classmethod
    def unchecked(cls: type[R], **values: Any) -> R:
        """An instance from every field's value, already of its type, without running __init__.

        For hot paths whose values come from a typed source (the Avro reader, or a stage's own
        bundle of a record it validated); dataclass __init__ with defaults costs several µs.
        """
        record = cls.__new__(cls)
        record.__dict__.update(values)
        return record

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        """Build from a JSON object, checking every field; raises ValidationError naming each bad one.

        Each field's coercion checks its type, so the record needs only its value rules
        (`value_errors`) afterwards, not `validate()`'s type checks again: this is the HTTP
        collector's per-event path.
        """
        spec = _json_fields(cls)
        errors: list[FieldError] = []
        if not data.keys() <= spec.keys():
            errors.extend(FieldError(key, "unknown field") for key in data if key not in spec)
        kwargs: dict[str, Any] = {}
        for name, f in spec.items():
            value = data.get(name, _ABSENT)
            if value is _ABSENT:
                if f.required:
                    errors.append(FieldError(name, "is required"))
                continue
            if value is None:
                if not f.nullable:
                    errors.append(FieldError(name, "must not be null"))
                else:
                    kwargs[name] = None
                continue
            try:
                kwargs[name] = f.coerce(value)
            except _FieldProblems as problems:
                errors.extend(problems.errors)
            except (TypeError, ValueError) as exc:
                errors.append(FieldError(name, str(exc)))
        if errors:
            raise ValidationError(errors, cls.SCHEMA)
        record = cls(**kwargs)
        errors = record.value_errors()
        if errors:
            raise ValidationError(errors, cls.SCHEMA)
        return record

    def field_errors(self) -> list[FieldError]:
        """Type checks from the annotations plus the record's own rules."""
        errors: list[FieldError] = []
        for name, inner, nullable in _field_types(type(self)):
            value = getattr(self, name)
            if value is None:
                if not nullable:
                    errors.append(FieldError(name, "must not be null"))
                continue
            origin = typing.get_origin(inner) or inner
            if origin is dict:
                if not isinstance(value, dict):
                    errors.append(FieldError(name, f"must be a map, got {type(value).__name__}"))
                    continue
                _, val_t = typing.get_args(inner)
                for k, v in value.items():
                    if not isinstance(k, str):
                        errors.append(FieldError(f"{name}.{k}", "map keys must be strings"))
                    ok = isinstance(v, str) if val_t is str else isinstance(v, (int, float)) and not isinstance(v, bool)
                    if not ok:
                        errors.append(FieldError(f"{name}.{k}", f"must be {val_t.__name__}, got {type(v).__name__}"))
            elif inner is float:
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    errors.append(FieldError(name, f"must be a number, got {type(value).__name__}"))
            elif inner is int:
                if not isinstance(value, int) or isinstance(value, bool):
                    errors.append(FieldError(name, f"must be an integer, got {type(value).__name__}"))
            elif isinstance(inner, type) and issubclass(inner, enum.Enum):
                if not isinstance(value, inner):
                    errors.append(FieldError(name, f"must be one of {[m.value for m in inner]}, got {value!r}"))
            elif inner is str:
                if not isinstance(value, str):
                    errors.append(FieldError(name, f"must be a string, got {type(value).__name__}"))
                elif not value.isascii():
                    try:
                        _check_utf8(value)
                    except ValueError as exc:
                        errors.append(FieldError(name, str(exc)))
            elif inner is bytes and not isinstance(value, (bytes, bytearray)):
                errors.append(FieldError(name, f"must be bytes, got {type(value).__name__}"))
        if errors:
            return errors
        return self.value_errors()

    def value_errors(self) -> list[FieldError]:
        """The rules beyond types, for a record whose fields are known to have their types
        (built by `from_json`, or read by the Avro reader): required text not blank,
        occurred_at not negative, then the record's own rules."""
        errors = []
        for name in self.REQUIRED_TEXT:
            value = getattr(self, name)
            if not value or not value.strip():
                errors.append(FieldError(name, "must not be empty"))
        if getattr(self, "occurred_at", 0) < 0:
            errors.append(FieldError("occurred_at", "must be epoch milliseconds >= 0"))
        if not errors:
            errors.extend(self.rule_errors())
        return errors

    def rule_errors(self) -> list[FieldError]:
        return []

    def validate(self: R) -> R:
        errors = self.field_errors()
        if errors:
            raise ValidationError(errors, self.SCHEMA)
        return self


_ABSENT = object()
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Avro long; an int field is bounded tighter by its record's rules


class _FieldProblems(Exception):
    """Several bad entries of one map field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


@dataclass(frozen=True)
class _JsonField:
    required: bool
    nullable: bool
    coerce: typing.Callable[[Any], Any]  # the field's value from a JSON value; raises ValueError naming the problem


@functools.cache
def _json_fields(cls: type) -> dict[str, _JsonField]:
    """How `from_json` reads each field of a record class; built once per class (typing is slow)."""
    hints = typing.get_type_hints(cls)
    spec = {}
    for f in dataclasses.fields(cls):
        inner, nullable = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        spec[f.name] = _JsonField(required, nullable, _coercer(f.name, inner))
    return spec


def _coercer(name: str, typ: Any) -> typing.Callable[[Any], Any]:
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        return functools.partial(_json_enum, typ)
    if name in ("occurred_at", "created_at"):
        return _json_time
    if typ is int:
        return _json_int
    if typ is float:
        return _json_float
    if typ is str:
        return _json_str
    if (typing.get_origin(typ) or typ) is dict:
        args = typing.get_args(typ)
        return functools.partial(_json_map, name, args[1] if args else str)
    return lambda value: value


def _type_name(value: Any) -> str:
    return type(value).__name__


def _json_enum(typ: type[enum.Enum], value: Any) -> enum.Enum:
    if not isinstance(value, str):
        raise ValueError(f"must be one of {[m.value for m in typ]}")
    member = typ._value2member_map_.get(value) or typ._value2member_map_.get(value.upper())
    if member is None:
        raise ValueError(f"must be one of {[m.value for m in typ]}, got {value!r}")
    return member


def _json_time(value: Any) -> int:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"must be epoch milliseconds or an ISO-8601 time, got {value!r}") from None
        if dt.tzinfo is None:
            raise ValueError(f"ISO-8601 time needs a timezone (e.g. Z), got {value!r}")
        return int(dt.timestamp() * 1000)
    return _json_int(value)


def _json_int(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass and not an integer here
        raise ValueError(f"must be an integer, got {_type_name(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"must fit in 64 bits, got {value}")
    return value


def _json_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {_type_name(value)}")
    return float(value)


def _json_str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"must be a string, got {_type_name(value)}")
    if not value.isascii():
        _check_utf8(value)
    return value


def _check_utf8(value: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, from a "\\ud800"-style JSON escape
        raise ValueError(f"is not valid Unicode text ({exc.reason} at position {exc.start})") from None


def _json_map(name: str, val_t: type, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be an object, got {_type_name(value)}")
    errors = []
    for k, v in value.items():
        try:
            _json_str(k)
            if val_t is str:
                _json_str(v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"must be {val_t.__name__}, got {_type_name(v)}")
        except ValueError as exc:
            message = str(exc).replace("must be a string", "must be str")
            errors.append(FieldError(f"{name}.{k}", message))
    if errors:
        raise _FieldProblems(errors)
    return value


@dataclass
class Response(AvroRecord):
    SCHEMA: ClassVar[str] = "Response"
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ("event_id", "response_id", "prompt_id", "prompt", "model_version")

    response_id: str
    prompt: str
    response: str
    model_version: str
    prompt_id: str = ""
    user_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    latency_ms: int | None = None
    error: str | None = None
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        if not self.prompt_id and isinstance(self.prompt, str):
            self.prompt_id = prompt_hash(self.prompt)

    def rule_errors(self) -> list[FieldError]:
        if isinstance(self.latency_ms, int) and self.latency_ms < 0:
            return [FieldError("latency_ms", f"must be >= 0, got {self.latency_ms}")]
        return []


@dataclass
class Action(AvroRecord):
    SCHEMA: ClassVar[str] = "Action"
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ("event_id", "response_id")

    response_id: str
    kind: ActionKind
    user_id: str | None = None
    rating: int | None = None
    edited_text: str | None = None
    rejected_response_id: str | None = None
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        if isinstance(self.kind, str) and not isinstance(self.kind, ActionKind):
            try:
                self.kind = ActionKind(self.kind.upper())
            except ValueError:
                pass  # reported by validate()

    def rule_errors(self) -> list[FieldError]:
        errors = []
        if self.kind is ActionKind.RATING:
            if self.rating is None:
                errors.append(FieldError("rating", "is required for kind RATING"))
            elif not 1 <= self.rating <= 5:
                errors.append(FieldError("rating", f"must be between 1 and 5, got {self.rating}"))
        elif self.rating is not None and not 1 <= self.rating <= 5:
            errors.append(FieldError("rating", f"must be between 1 and 5, got {self.rating}"))
        if self.kind is ActionKind.EDIT and not (self.edited_text or "").strip():
            errors.append(FieldError("edited_text", "is required for kind EDIT"))
        if self.kind is ActionKind.CHOICE:
            if not (self.rejected_response_id or "").strip():
                errors.append(FieldError("rejected_response_id", "is required for kind CHOICE"))
            elif self.rejected_response_id == self.response_id:
                errors.append(FieldError("rejected_response_id", "must differ from response_id"))
        return errors


@dataclass
class PreferencePair(AvroRecord):
    SCHEMA: ClassVar[str] = "PreferencePair"
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ("pair_id", "prompt_id", "chosen_response_id")

    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_response_id: str
    chosen_model_version: str
    rejected_model_version: str
    source: PairSource
    rejected_response_id: str | None = None
    weight: float = 1.0
    pair_id: str = ""
    event_id: str = ""
    created_at: int = field(default_factory=now_ms)
    occurred_at: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.source, str) and not isinstance(self.source, PairSource):
            self.source = PairSource(self.source)
        if not self.pair_id:
            self.pair_id = pair_hash(self.prompt, self.chosen, self.rejected)
        if not self.event_id:
            self.event_id = self.pair_id
        if not self.occurred_at:
            self.occurred_at = self.created_at


@dataclass
class PromotionEvent(AvroRecord):
    SCHEMA: ClassVar[str] = "PromotionEvent"
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ("candidate_version",)

    candidate_version: str
    baseline_version: str
    decision: PromotionDecision
    traffic_fraction: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)


@dataclass
class TrainingRequest(AvroRecord):
    SCHEMA: ClassVar[str] = "TrainingRequest"
    REQUIRED_TEXT: ClassVar[tuple[str, ...]] = ("snapshot_id",)

    snapshot_id: str
    reason: TriggerReason
    pair_count: int = 0
    base_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)


@dataclass
class TrainingResult(AvroRecord):
    SCHEMA: ClassVar[str] = "TrainingResult"

    request_id: str
    status: TrainingStatus
    version: str | None = None
    parent_version: str = ""
    snapshot_id: str = ""
    adapter_path: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)


@dataclass
class DeadLetter(AvroRecord):
    SCHEMA: ClassVar[str] = "DeadLetter"

    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    payload: bytes
    detail: str = ""
    event_id: str = field(default_factory=new_event_id)
    occurred_at: int = field(default_factory=now_ms)


RECORD_TYPES: dict[str, type[AvroRecord]] = {
    cls.SCHEMA: cls for cls in (Response, Action, PreferencePair, PromotionEvent, TrainingRequest, TrainingResult, DeadLetter)
}
