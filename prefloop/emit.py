"""`prefloop emit FILE.jsonl`: validate a file of JSON-lines events, then produce it.

Each line is one JSON object with `"type": "response" | "action"` plus the contract's
fields (the same shape the HTTP collector takes). Every line is validated before
anything is produced; a bad line is reported by number and field
(`line 7: rating: must be between 1 and 5, got 9`) and, unless `skip_invalid`,
nothing is produced at all.

A line without `event_id` gets a deterministic one, a UUID5 over the line's content,
so emitting the same file twice produces duplicates that downstream deduplication
recognises. A line without `occurred_at` is stamped with the current time. The file
is read twice (validate, then produce) so its size is not bounded by memory.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from prefloop.errors import PrefloopError, ValidationError
from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.events import parse_event
from prefloop.settings import Settings
from schemas.records import Action, Response

# Namespace of the deterministic event ids; changing it would defeat deduplication of re-emitted files.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "prefloop:emit:event_id")


class EmitError(PrefloopError):
    """An emit file is missing or holds invalid lines (and skipping them was not asked for)."""


@dataclass(frozen=True)
class LineError:
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"line {self.line}: {where}{self.message}"


@dataclass
class EmitReport:
    path: Path
    responses: int = 0
    actions: int = 0
    skipped: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def emitted(self) -> int:
        return self.responses + self.actions


def deterministic_event_id(obj: dict) -> str:
    """UUID5 over the event's canonical JSON, so the same line always gets the same id."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return uuid.uuid5(EVENT_ID_NAMESPACE, canonical).hex


def parse_lines(path: Path) -> Iterator[tuple[int, Response | Action | None, list[LineError]]]:
    """(line number, record or None, errors) for every non-blank line of a JSON-lines file."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, [LineError(number, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, None, [LineError(number, None, f"not valid JSON: {exc.msg} (column {exc.colno})")]
                continue
            if isinstance(obj, dict) and obj.get("event_id") is None:
                obj = {**obj, "event_id": deterministic_event_id({k: v for k, v in obj.items() if k != "event_id"})}
            try:
                yield number, parse_event(obj), []
            except ValidationError as exc:
                yield number, None, [LineError(number, e.field, e.message) for e in exc.errors]


def _open_check(path: Path) -> None:
    if not path.exists():
        raise EmitError(f"{path}: no such file")
    if not path.is_file():
        raise EmitError(f"{path}: not a regular file")


async def emit_file_async(
    settings: Settings,
    path: Path,
    skip_invalid: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    client: FeedbackClient | None = None,
) -> EmitReport:
    """Validate every line of `path`, then produce the good ones (all of them, or none unless
    `skip_invalid`). `client` defaults to a FeedbackClient on `settings`, closed at the end;
    a given client is flushed but left open."""
    out = out or sys.stdout
    err = err or sys.stderr
    path = Path(path)
    _open_check(path)
    report = EmitReport(path)
    bad_lines: set[int] = set()
    total = 0
    for number, _, errors in parse_lines(path):
        total += 1
        if errors:
            bad_lines.add(number)
            report.errors.extend(errors)
    for error in report.errors:
        print(error, file=err)
    if bad_lines and not skip_invalid:
        raise EmitError(
            f"{len(bad_lines)} of {total} line(s) of {path} are invalid (first: {report.errors[0]}); "
            "nothing was emitted: fix them, or pass --skip-invalid to emit only the valid lines"
        )
    report.skipped = len(bad_lines)

    own_client = client is None
    client = client if client is not None else FeedbackClient(settings)
    try:
        for number, record, errors in parse_lines(path):
            if number in bad_lines:
                continue
            if record is None:
                raise EmitError(f"{path} changed while it was being emitted (line {number}: {errors[0]}); check it and emit again")
            await client.send(record)
            if isinstance(record, Response):
                report.responses += 1
            else:
                report.actions += 1
        await client.flush()
    finally:
        if own_client:
            await client.close()

    skipped = f", skipped {report.skipped} invalid line(s)" if report.skipped else ""
    print(
        f"emitted {report.responses} response(s) and {report.actions} action(s) from {path} "
        f"to Kafka at {client.bootstrap_servers}{skipped}",
        file=out,
    )
    return report


def emit_file(
    settings: Settings,
    path: Path,
    skip_invalid: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> EmitReport:
    """Blocking `emit_file_async` for the CLI; raises EmitError (one line) when lines are bad or the file is missing."""
    _open_check(Path(path))
    return asyncio.run(emit_file_async(settings, path, skip_invalid=skip_invalid, out=out, err=err))


__all__ = ["EmitError", "EmitReport", "LineError", "emit_file", "emit_file_async", "parse_lines", "deterministic_event_id"]
