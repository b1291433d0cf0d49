"""`prefloop emit FILE.jsonl` against the real Kafka of the test session (contract topics, read by offset range)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from pathlib import Path

import pytest

from prefloop import topics as contract
from prefloop.emit import EmitError, deterministic_event_id, emit_file
from prefloop.errors import PrefloopError
from kafka_testing import end_offsets, read_range
from prefloop.settings import Settings
from schemas import Action, ActionKind, Response

pytestmark = pytest.mark.services


def lines_for(tag: str) -> list[dict]:
    """Four good events; ids carry `tag` so a test recognises its own events on the shared topics."""
    return [
        {"type": "response", "event_id": f"{tag}-e1", "response_id": f"{tag}-r1", "prompt": "Sum 2+2",
         "response": "4", "model_version": "v1", "occurred_at": 1_700_000_000_000, "tags": {"app": "math"}},
        {"type": "response", "response_id": f"{tag}-r2", "prompt": "Sum 2+2", "response": "four",
         "model_version": "v2"},
        {"type": "action", "response_id": f"{tag}-r1", "kind": "CHOICE", "rejected_response_id": f"{tag}-r2",
         "occurred_at": "2024-05-06T07:08:09Z"},
        {"type": "action", "response_id": f"{tag}-r2", "kind": "rating", "rating": 2, "user_id": "u"},
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


class Snapshot:
    """End offsets of both feedback topics, to read back exactly what a test emitted."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.since: dict[str, dict[int, int]] = {}

    async def take(self) -> "Snapshot":
        for topic in (contract.RESPONSES, contract.ACTIONS):
            self.since[topic] = await end_offsets(self.settings.bootstrap_servers, topic)
        return self

    async def records(self, tag: str) -> tuple[list, list]:
        out = []
        for topic in (contract.RESPONSES, contract.ACTIONS):
            messages = await read_range(self.settings.bootstrap_servers, topic, self.since[topic])
            out.append([m for m in messages if m.record().response_id.startswith(tag)])
        return out[0], out[1]


async def run_emit(settings: Settings, path: Path, skip_invalid: bool = False):
    """emit_file is the CLI's blocking call (it runs its own loop), so it runs on a thread here."""
    out, err = io.StringIO(), io.StringIO()
    try:
        report = await asyncio.to_thread(emit_file, settings, path, skip_invalid, out, err)
    except EmitError as exc:
        return exc, out.getvalue(), err.getvalue()
    return report, out.getvalue(), err.getvalue()


async def test_good_file_produces_every_line(services: Settings, tmp_path: Path):
    tag = f"emit-{uuid.uuid4().hex[:8]}"
    rows = lines_for(tag)
    path = write_jsonl(tmp_path / "good.jsonl", [rows[0], "", rows[1], "   ", rows[2], rows[3]])
    snap = await Snapshot(services).take()
    report, out, err = await run_emit(services, path)
    assert (report.responses, report.actions, report.skipped) == (2, 2, 0)
    assert "emitted 2 response(s) and 2 action(s)" in out
    assert err == ""

    responses, actions = await snap.records(tag)
    by_response = {m.record().response_id: m.record() for m in responses}
    assert set(by_response) == {f"{tag}-r1", f"{tag}-r2"}
    first = by_response[f"{tag}-r1"]
    assert first == Response(response_id=f"{tag}-r1", prompt="Sum 2+2", response="4", model_version="v1",
                             tags={"app": "math"}, event_id=f"{tag}-e1", occurred_at=1_700_000_000_000)
    # Missing event_id: UUID5 over the line's content; missing occurred_at: now.
    second = by_response[f"{tag}-r2"]
    expected_id = deterministic_event_id({k: v for k, v in rows[1].items()})
    assert second.event_id == expected_id
    assert second.occurred_at > 1_700_000_000_000
    assert all(m.key == m.record().prompt_id.encode() for m in responses)

    kinds = {m.record().kind: m.record() for m in actions}
    assert set(kinds) == {ActionKind.CHOICE, ActionKind.RATING}
    assert kinds[ActionKind.CHOICE].occurred_at == 1_714_979_289_000
    assert kinds[ActionKind.RATING] == Action(response_id=f"{tag}-r2", kind=ActionKind.RATING, rating=2, user_id="u",
                                              event_id=kinds[ActionKind.RATING].event_id,
                                              occurred_at=kinds[ActionKind.RATING].occurred_at)
    assert all(m.key == m.record().response_id.encode() for m in actions)


async def test_emitting_twice_gives_the_same_event_ids(services: Settings, tmp_path: Path):
    tag = f"emit-{uuid.uuid4().hex[:8]}"
    path = write_jsonl(tmp_path / "again.jsonl", lines_for(tag))
    snap = await Snapshot(services).take()
    await run_emit(services, path)
    await run_emit(services, path)
    responses, actions = await snap.records(tag)
    ids = [m.record().event_id for m in responses + actions]
    assert len(ids) == 8
    assert len(set(ids)) == 4  # each event twice, with one id: deduplicable downstream


async def test_bad_file_reports_line_numbers_and_produces_nothing(services: Settings, tmp_path: Path):
    tag = f"emit-{uuid.uuid4().hex[:8]}"
    good = lines_for(tag)
    rows = [
        good[0],
        good[1],
        {"type": "action", "response_id": f"{tag}-r1", "kind": "RATING", "rating": 9},
        "{not json",
        good[2],
        {"type": "feedback", "response_id": f"{tag}-r1"},
        good[3],
        {"type": "response", "response_id": f"{tag}-r3", "prompt": "p", "model_version": "", "mood": "happy"},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    snap = await Snapshot(services).take()
    before = dict(snap.since)
    error, out, err = await run_emit(services, path)
    assert isinstance(error, EmitError) and isinstance(error, PrefloopError)
    assert str(error).startswith(f"4 of 8 line(s) of {path} are invalid")
    assert "nothing was emitted" in str(error) and "--skip-invalid" in str(error)
    assert "\n" not in str(error)
    assert err.splitlines() == [
        "line 3: rating: must be between 1 and 5, got 9",
        "line 4: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        'line 6: type: must be "response" or "action", got "feedback"',
        "line 8: mood: unknown field",
        "line 8: response: is required",
    ]
    assert out == ""
    after = await Snapshot(services).take()
    assert after.since == before
    assert await snap.records(tag) == ([], [])


async def test_empty_model_version_is_reported(services: Settings, tmp_path: Path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"type": "response", "response_id": "r", "prompt": "p",
                                                 "response": "a", "model_version": " "}])
    error, _, err = await run_emit(services, path)
    assert isinstance(error, EmitError)
    assert err.strip() == "line 1: model_version: must not be empty"


async def test_skip_invalid_produces_only_the_good_lines(services: Settings, tmp_path: Path):
    tag = f"emit-{uuid.uuid4().hex[:8]}"
    good = lines_for(tag)
    rows = [good[0], {"type": "action", "response_id": f"{tag}-r9", "kind": "EDIT"}, good[1], "[1, 2]", good[3]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    snap = await Snapshot(services).take()
    report, out, err = await run_emit(services, path, skip_invalid=True)
    assert (report.responses, report.actions, report.skipped) == (2, 1, 2)
    assert [str(e) for e in report.errors] == [
        "line 2: edited_text: is required for kind EDIT",
        "line 4: must be a JSON object, got an array",
    ]
    assert err.splitlines() == [str(e) for e in report.errors]
    assert "emitted 2 response(s) and 1 action(s)" in out and "skipped 2 invalid line(s)" in out
    responses, actions = await snap.records(tag)
    assert sorted(m.record().response_id for m in responses) == [f"{tag}-r1", f"{tag}-r2"]
    assert [m.record().response_id for m in actions] == [f"{tag}-r2"]  # the EDIT on r9 was skipped


def test_missing_file_is_a_one_line_error(tmp_path: Path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(EmitError, match=f"^{re.escape(str(missing))}: no such file$"):
        emit_file(Settings(), missing)
    with pytest.raises(EmitError, match="not a regular file"):
        emit_file(Settings(), tmp_path)
