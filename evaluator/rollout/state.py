"""The persisted rollout record: everything a restarted controller needs to carry on.

One JSON document in Redis (`prefloop.keys.ROLLOUT_STATE`), written — only by the lease holder —
before each action, as Argo Rollouts keeps its step index in the rollout's status: the current
rollout (candidate, baseline, plan, stage, when the stage began), the decision being carried out
(`pending`, with its event id, so a crash between writing and acting repeats the same decision and
never a new one), the decision log, the promotions waiting their turn, the offsets of
models.promotions already read, and the results of operators' commands.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from evaluator.rollout.plan import Stage
from schemas.records import PromotionDecision, PromotionEvent

FORMAT_VERSION = 1
KEPT_COMMAND_RESULTS = 20


class RolloutStatus(str, enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


@dataclass
class Rollout:
    rollout_id: str
    candidate: str
    baseline: str  # production when the rollout started: the arm the canary is compared with
    origin: str  # what started it: "PROMOTE <event id>" or "manual: <reason>"
    stages: list[Stage]  # the plan when it started; a settings change applies to the next rollout
    stage_index: int
    stage_started_ms: int
    started_ms: int
    status: RolloutStatus = RolloutStatus.RUNNING
    steps: int = 0  # decisions published so far; numbers the next decision's event id
    finished_ms: int = 0

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def running(self) -> bool:
        return self.status is RolloutStatus.RUNNING

    @property
    def canary_stages(self) -> int:
        return len(self.stages) - 1

    def next_event_id(self, decision: PromotionDecision) -> str:
        """The id of this rollout's next decision: fixed by the rollout and the step, so a decision
        carried out again after a crash is published with the same id."""
        return f"rollout-{self.rollout_id}-{self.steps:02d}-{decision.value.lower()}"


@dataclass
class Decided:
    """A decision as published on models.promotions, and who made it."""

    event_id: str
    decision: PromotionDecision
    candidate: str
    baseline: str
    traffic_fraction: float
    reason: str
    metrics: dict[str, float]
    at_ms: int
    owner: str = ""

    def event(self) -> PromotionEvent:
        return PromotionEvent(
            candidate_version=self.candidate, baseline_version=self.baseline, decision=self.decision,
            traffic_fraction=self.traffic_fraction, metrics=dict(self.metrics), reason=self.reason,
            event_id=self.event_id, occurred_at=self.at_ms,
        )


@dataclass
class Waiting:
    """A promotion waiting for the running rollout to finish."""

    candidate: str
    origin: str
    queued_ms: int
    manual: bool = False  # asked by a person: starts even when the version is not `approved`
    start_stage: int = 0


@dataclass
class RolloutState:
    rollout: Rollout | None = None  # the running rollout, or the last one finished
    pending: Decided | None = None  # decided and persisted, its actions not all done yet
    waiting: list[Waiting] = field(default_factory=list)
    decisions: list[Decided] = field(default_factory=list)  # newest last, at most `decision_log`
    offsets: dict[str, int] = field(default_factory=dict)  # models.promotions partition → next offset to read
    commands: dict[str, str] = field(default_factory=dict)  # command id → result line, the last few
    last_check: dict[str, Any] = field(default_factory=dict)  # the newest check: at_ms, outcome, reason, figures

    @property
    def running(self) -> Rollout | None:
        return self.rollout if self.rollout is not None and self.rollout.running else None

    def remember_command(self, command_id: str, result: str) -> None:
        self.commands[command_id] = result
        while len(self.commands) > KEPT_COMMAND_RESULTS:
            self.commands.pop(next(iter(self.commands)))

    def log(self, decided: Decided, keep: int) -> None:
        self.decisions.append(decided)
        del self.decisions[:-keep]

    # --- JSON ---
    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}, default=_enum_value,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "RolloutState":
        if not text:
            return cls()
        data = json.loads(text)
        data.pop("format_version", None)
        rollout = data.pop("rollout")
        pending = data.pop("pending")
        return cls(
            rollout=_rollout(rollout) if rollout else None,
            pending=_decided(pending) if pending else None,
            waiting=[Waiting(**w) for w in data.pop("waiting")],
            decisions=[_decided(d) for d in data.pop("decisions")],
            **data,
        )


def _enum_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _rollout(data: dict[str, Any]) -> Rollout:
    data = dict(data)
    data["stages"] = [Stage(**s) for s in data["stages"]]
    data["status"] = RolloutStatus(data["status"])
    return Rollout(**data)


def _decided(data: dict[str, Any]) -> Decided:
    data = dict(data)
    data["decision"] = PromotionDecision(data["decision"])
    return Decided(**data)
