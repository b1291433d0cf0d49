"""What a decision does, in an order that keeps users safe, each step safe to repeat.

A decision is carried out after it is persisted (`state.pending`), and carried out again from the
start if the controller dies half way, so every step checks before it changes anything:

- ADVANCE (also the start of a rollout): registry `canary`, then the routing table's canary fraction.
- COMPLETE: registry promote (the old production becomes `retired`; the mirror points the routing
  table's production at the candidate), then the canary fields of the routing table are cleared.
- ROLLBACK of a canary: traffic first (routing table back to production alone), then registry
  `rolled_back`; of a production version (`prefloop models rollback` with no rollout running):
  traffic to the previous production, then the registry's rollback.

Then the PromotionEvent is published on models.promotions (its `event_id` fixed by the decision, so a
repeat is recognisable) and copied to the `promotions` table (keyed by `event_id`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from evaluator.rollout.lease import Lease
from evaluator.rollout.state import Decided
from prefloop.routing import RoutingTable
from schemas.records import PromotionDecision, PromotionEvent
from trainer.registry import ModelRegistry, VersionStatus

PROMOTIONS_TABLE = "promotions"
PROMOTIONS_COLUMNS = ("event_id", "occurred_at", "candidate_version", "baseline_version", "decision",
                      "traffic_fraction", "metrics", "reason")


class Publisher(Protocol):
    async def publish(self, event: PromotionEvent) -> None: ...


def promotions_row(event: PromotionEvent) -> list[Any]:
    from prefloop.analytics.store import ch_time

    return [event.event_id, ch_time(event.occurred_at), event.candidate_version, event.baseline_version,
            event.decision.value, event.traffic_fraction, dict(event.metrics), event.reason]


@dataclass
class Effects:
    registry: ModelRegistry
    lease: Lease
    publisher: Publisher
    store: Any  # prefloop.analytics.store: insert_rows

    async def carry_out(self, decided: Decided) -> None:
        if decided.decision is PromotionDecision.ADVANCE:
            self._canary(decided)
        elif decided.decision is PromotionDecision.COMPLETE:
            self._complete(decided)
        elif decided.decision is PromotionDecision.ROLLBACK:
            self._rollback(decided)
        else:  # pragma: no cover - the controller decides nothing else
            raise ValueError(f"the rollout controller does not carry out {decided.decision.value}")
        event = decided.event()
        await self.publisher.publish(event)
        await asyncio.to_thread(self.store.insert_rows, PROMOTIONS_TABLE, PROMOTIONS_COLUMNS, [promotions_row(event)])

    def _status(self, version: str) -> VersionStatus:
        return self.registry.get(version).status

    def _canary(self, decided: Decided) -> None:
        if self._status(decided.candidate) is not VersionStatus.CANARY:
            self.registry.set_status(decided.candidate, VersionStatus.CANARY, reason=decided.reason)
        self.lease.write_routing(RoutingTable(production=decided.baseline, canary=decided.candidate,
                                              canary_fraction=decided.traffic_fraction))

    def _complete(self, decided: Decided) -> None:
        production = self.registry.production()
        if production is None or production.version != decided.candidate:
            if self._status(decided.candidate) in (VersionStatus.ROLLED_BACK, VersionStatus.REJECTED):
                # A person asked for this version (`prefloop models promote V --to 1.0`): lift the mark first.
                self.registry.set_status(decided.candidate, VersionStatus.CANARY, reason=decided.reason)
            self.registry.promote(decided.candidate, reason=decided.reason)
        self.lease.write_routing(RoutingTable(production=decided.candidate))

    def _rollback(self, decided: Decided) -> None:
        self.lease.write_routing(RoutingTable(production=decided.baseline))
        production = self.registry.production()
        if production is not None and production.version == decided.candidate:
            self.registry.rollback(reason=decided.reason)
        elif self._status(decided.candidate) is not VersionStatus.ROLLED_BACK:
            self.registry.set_status(decided.candidate, VersionStatus.ROLLED_BACK, reason=decided.reason)
