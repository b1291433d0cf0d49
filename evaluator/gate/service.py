"""The evaluator service: consume `training.results`, evaluate each new version against production,
publish exactly one PromotionEvent (PROMOTE or REJECT) per SUCCEEDED result on `models.promotions`.

Per result (`handle_result`, no Kafka needed):
- FAILED: recorded in the journal (`<home>/evaluator/journal.jsonl`) and skipped.
- SUCCEEDED: if the adapter's saved report (`evaluation.json`) was made for this very result, its event
  is republished as it is (same `event_id`: a redelivery after a crash never evaluates twice).
  Otherwise the gate runs, the report is written next to the adapter (before anything is published,
  so a crash after publishing is recognised on redelivery), the registry status is set (REJECT ->
  rejected, PROMOTE -> approved, which the rollout controller requires before it acts on a PROMOTE),
  then the event is published and written to the `promotions` table. The event_id is derived from the
  result's event_id, so even an evaluation repeated after a crash before its report was saved publishes
  under the same id.
- A result the gate cannot evaluate (unknown version, missing adapter, no held-out pairs) is REJECTed
  with the reason; an unexpected crash stops the service before the offset is committed (retried).

`publish_decision` is the publishing half, shared with `prefloop eval`.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.gate.report import REPORT_JSON, read_report, saved_event, write_report
from evaluator.gate.settings import GateSettings, load_gate_settings
from prefloop.errors import PrefloopError
from prefloop.kafka_client import kafka_options
from schemas import PromotionDecision, PromotionEvent, TrainingResult, TrainingStatus
from trainer.fsutil import file_lock
from trainer.registry import ModelRegistry, VersionStatus

Publish = Callable[[PromotionEvent], Awaitable[None]]
PROMOTIONS_TABLE = "promotions"
PROMOTIONS_COLUMNS = ("event_id", "occurred_at", "candidate_version", "baseline_version", "decision", "traffic_fraction",
                      "metrics", "reason")
# The gate moves a version only while nobody else has: a canary, production or rolled-back version keeps its status.
GATE_STATUSES = {VersionStatus.CANDIDATE, VersionStatus.APPROVED, VersionStatus.REJECTED}
_EVENT_NAMESPACE = uuid.UUID("5b0c4d6e-7a1f-4f43-9a55-6e2f0c1d9b21")
LOG = "prefloop evaluator:"


@dataclass(frozen=True)
class Outcome:
    """What `handle_result` did: `event` published (None for a skipped FAILED result), and whether it was
    republished from a saved report."""

    event: PromotionEvent | None
    republished: bool = False
    report: Path | None = None


def promotion_event_id(result: TrainingResult) -> str:
    """The PromotionEvent id of a training result: fixed by the result, so every attempt publishes the same id."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{result.event_id}:{result.version or ''}").hex


def _log(message: str) -> None:
    print(f"{LOG} {message}", file=sys.stderr, flush=True)


def journal(settings: Any, entry: dict[str, Any]) -> None:
    """Append one line per handled result to `<home>/evaluator/journal.jsonl`."""
    path = Path(settings.home) / "evaluator" / "journal.jsonl"
    with file_lock(path.with_suffix(".lock")):
        with open(path, "a") as handle:
            handle.write(json.dumps({"at": int(time.time() * 1000), **entry}) + "\n")


def promotions_row(event: PromotionEvent) -> list[Any]:
    from prefloop.analytics.store import ch_time

    metrics = {k: float(v) for k, v in event.metrics.items() if math.isfinite(v)}
    return [event.event_id, ch_time(event.occurred_at), event.candidate_version, event.baseline_version,
            event.decision.value, float(event.traffic_fraction), metrics, event.reason]


def evaluation_record(event: PromotionEvent, doc: dict[str, Any] | None, report: Path | None) -> dict[str, Any]:
    """What the registry keeps of an evaluation (`models list` shows it)."""
    record: dict[str, Any] = {"decision": event.decision.value, "reason": event.reason, "baseline": event.baseline_version,
                              "event_id": event.event_id}
    for key in ("n", "win_rate", "win_rate_lower", "p_value"):
        if key in event.metrics:
            record[key] = event.metrics[key]
    if doc is not None:
        record["check"] = doc.get("check", "")
    if report is not None:
        record["report"] = str(report)
    return record


def write_promotions_row(settings: Any, event: PromotionEvent) -> None:
    """The `promotions` row (best effort: the topic is the contract, the table an analyst's copy)."""
    try:
        from prefloop.analytics.store import connect

        store = connect(settings)
        try:
            store.insert_rows(PROMOTIONS_TABLE, PROMOTIONS_COLUMNS, [promotions_row(event)])
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - the decision is published
        _log(f"warning: could not write the {PROMOTIONS_TABLE} row of {event.event_id} "
             f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")


def set_status(registry: ModelRegistry, event: PromotionEvent, doc: dict[str, Any] | None, report: Path | None) -> None:
    """REJECT -> rejected, PROMOTE -> approved, with the evaluation record; a version that moved on keeps its status."""
    version = event.candidate_version
    known = {v.version: v for v in registry.versions()}
    if version not in known or known[version].status not in GATE_STATUSES:
        return
    status = VersionStatus.APPROVED if event.decision is PromotionDecision.PROMOTE else VersionStatus.REJECTED
    registry.set_status(version, status, reason=event.reason, evaluation=evaluation_record(event, doc, report))


async def publish_decision(settings: Any, registry: ModelRegistry, event: PromotionEvent, publish: Publish,
                           doc: dict[str, Any] | None = None, report: Path | None = None) -> None:
    """Registry status first (the rollout controller acts on a PROMOTE only for an approved version), then
    the event, then the `promotions` row. Every step is idempotent, so a redelivery may repeat them all."""
    await asyncio.to_thread(set_status, registry, event, doc, report)
    await publish(event)
    await asyncio.to_thread(write_promotions_row, settings, event)


async def handle_result(result: TrainingResult, settings: Any, publish: Publish, *, gate: GateSettings | None = None,
                        registry: ModelRegistry | None = None) -> Outcome:
    """Evaluate (or republish) one training result; see the module docstring."""
    gate = gate or load_gate_settings(settings)
    if registry is None:
        from trainer.mirror import open_registry

        registry = open_registry(settings)
    entry = {"result_event_id": result.event_id, "request_id": result.request_id, "status": result.status.value,
             "version": result.version}
    if result.status is not TrainingStatus.SUCCEEDED or not result.version:
        journal(settings, {**entry, "outcome": "skipped", "reason": result.reason or "no version"})
        _log(f"skipped {result.status.value} result of request {result.request_id}: {result.reason or 'no version'}")
        return Outcome(event=None)
    production = registry.production()
    try:
        event, doc, report_path, republished = await _evaluate_or_reload(result, settings, gate, registry)
        outcome = "republished" if republished else "evaluated"
    except PrefloopError as exc:
        event = PromotionEvent(event_id=promotion_event_id(result), candidate_version=result.version,
                               baseline_version=production.version if production else "base model",
                               decision=PromotionDecision.REJECT, reason=f"cannot evaluate: {exc}")
        doc, report_path, republished, outcome = None, None, False, "error"
    await publish_decision(settings, registry, event, publish, doc, report_path)
    journal(settings, {**entry, "outcome": outcome, "decision": event.decision.value, "event_id": event.event_id,
                       "reason": event.reason, "report": str(report_path) if report_path else None})
    _log(f"{result.version} {event.decision.value} ({event.reason})")
    return Outcome(event=event, republished=republished, report=report_path)


async def _evaluate_or_reload(result: TrainingResult, settings: Any, gate: GateSettings, registry: ModelRegistry
                              ) -> tuple[PromotionEvent, dict[str, Any], Path, bool]:
    """(event, report document, report path, republished): the saved report's event when it was made for
    this result, else a fresh evaluation whose report is written before returning."""
    from evaluator.gate.evaluate import load_heldout, resolve_contest, run_gate

    record = registry.get(result.version)
    if record.adapter_path:  # checked before anything else: the version may have moved on since (canary, production)
        doc = read_report(Path(record.adapter_path))
        if doc is not None and doc.get("training_result_id") == result.event_id:
            event = saved_event(doc)
            _log(f"{result.version} was evaluated before a restart; republishing {event.event_id} from its report")
            return event, doc, Path(record.adapter_path) / REPORT_JSON, True
    contest = resolve_contest(settings, result.version, registry=registry)
    adapter_dir = contest.candidate.adapter_dir
    assert adapter_dir is not None  # resolve_contest refuses a base-model candidate
    _log(f"evaluating {result.version} against {contest.baseline.name} (request {result.request_id})")
    heldout = load_heldout(settings, contest, gate)
    report = await asyncio.to_thread(run_gate, settings, gate, contest, heldout, event_id=promotion_event_id(result),
                                     training_result_id=result.event_id)
    path = write_report(report, adapter_dir)
    return report.event, report.to_json(), path, False


async def run_service(settings: Any, once: bool = False, stop: asyncio.Event | None = None) -> None:
    """Consume training.results forever (or one SUCCEEDED/FAILED result with `once`), one evaluation at a time."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from prefloop import topics
    from prefloop.record_loop import one_at_a_time
    from schemas import encode
    from trainer.mirror import open_registry

    gate = load_gate_settings(settings)
    registry = open_registry(settings)
    consumer = AIOKafkaConsumer(
        topics.TRAINING_RESULTS,
        **kafka_options(settings),
        group_id=gate.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1,
        # An evaluation holds the consumer while it runs; past this Kafka hands the partition to another member.
        max_poll_interval_ms=int(gate.max_evaluation_s * 1000),
    )
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await consumer.start()
    except BaseException:
        await producer.stop()
        raise

    async def publish(event: PromotionEvent) -> None:
        await asyncio.wait_for(
            producer.send_and_wait(topics.PROMOTIONS, encode(event), key=event.candidate_version.encode()),
            timeout=gate.publish_timeout_s,
        )

    async def handle(result: TrainingResult) -> None:
        await handle_result(result, settings, publish, gate=gate, registry=registry)

    def skipped(offset: int, exc: Exception) -> None:
        _log(f"skipped an undecodable result at offset {offset}: {exc}")

    _log(f"consuming {topics.TRAINING_RESULTS} at {settings.bootstrap_servers}")
    try:
        await one_at_a_time(consumer, TrainingResult, handle, skipped, once, stop)
    finally:
        await consumer.stop()
        await producer.stop()
