"""The rollout controller: a thin loop around the pure policy.

Each step, while holding the lease: finish a decision left half done; queue the PROMOTE events read
from models.promotions; apply operators' commands; start the next waiting promotion when no rollout
runs; and every `check_interval_s`, read both arms' live metrics, `decide`, persist the decision,
then carry it out (`actions.Effects`). Everything the next step needs is in the rollout record in
Redis, so a controller killed at any point and started again (or a standby taking over) continues
the same stage with the time it had left, repeats an unfinished decision with the same `event_id`,
and never skips a stage.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from evaluator.rollout import commands
from evaluator.rollout.actions import Effects, Publisher
from evaluator.rollout.commands import ERROR_PREFIX, Command, CommandKind
from evaluator.rollout.lease import Lease
from evaluator.rollout.metrics import read_metrics
from evaluator.rollout.policy import Decision, Verdict, decide
from evaluator.rollout.settings import RolloutSettings
from evaluator.rollout.state import Decided, Rollout, RolloutState, RolloutStatus, Waiting
from prefloop import keys
from prefloop.errors import DecodeError, PrefloopError, ValidationError
from schemas import decode
from schemas.records import PromotionDecision, PromotionEvent, now_ms
from trainer.errors import RegistryError
from trainer.registry import ModelRegistry, VersionStatus


@dataclass(frozen=True)
class Record:
    """One record read from models.promotions."""

    partition: int
    offset: int
    value: bytes


def log(message: str) -> None:
    print(f"prefloop rollout: {message}", file=sys.stderr, flush=True)


class Controller:
    def __init__(self, rollout_settings: RolloutSettings, redis_client: Any, registry: ModelRegistry, store: Any,
                 publisher: Publisher, owner: str, clock: Callable[[], int] = now_ms,
                 say: Callable[[str], None] = log) -> None:
        self.settings = rollout_settings
        self.redis = redis_client
        self.registry = registry
        self.store = store
        self.owner = owner
        self.clock = clock
        self.say = say  # the service logs each step; the CLI, applying a command, prints only its result
        self.lease = Lease(redis_client, owner, rollout_settings.lease_ttl_s)
        self.effects = Effects(registry, self.lease, publisher, store)
        self._last_check_monotonic: float | None = None

    # --- the record ---
    def load(self) -> RolloutState:
        return RolloutState.from_json(self.redis.get(keys.ROLLOUT_STATE))

    def save(self, state: RolloutState, pop_command: bool = False) -> None:
        self.lease.write_state(state.to_json(), pop_command=pop_command)

    def paused(self) -> bool:
        return bool(self.redis.exists(keys.ROLLOUT_PAUSED))

    # --- one step ---
    async def step(self, records: Iterable[Record] = (), checks: bool = True) -> RolloutState:
        """Everything one poll does; `checks=False` (the CLI) applies commands without reading metrics."""
        state = self.load()
        await self.finish_pending(state)
        if self.take_promotions(state, records):
            self.save(state)
        while await self.apply_next_command(state):
            pass
        await self.start_waiting(state)
        if checks and state.running is not None and self._check_due():
            await self.check(state)
        return state

    def _check_due(self) -> bool:
        now = time.monotonic()
        if self._last_check_monotonic is not None and now - self._last_check_monotonic < self.settings.check_interval_s:
            return False
        self._last_check_monotonic = now
        return True

    async def finish_pending(self, state: RolloutState) -> None:
        """Carry out the persisted decision (again, after a crash), log it and clear it."""
        if state.pending is None:
            return
        decided = state.pending
        await self.effects.carry_out(decided)
        state.pending = None
        state.log(decided, self.settings.decision_log)
        self.save(state)
        self.say(f"{decided.decision.value} {decided.candidate} (traffic {decided.traffic_fraction:g}, event "
                 f"{decided.event_id}): {decided.reason}")

    async def _act(self, state: RolloutState, decision: PromotionDecision, candidate: str, baseline: str,
                   fraction: float, reason: str, figures: dict[str, float], event_id: str,
                   command: tuple[Command, str] | None = None) -> None:
        """Persist a decision (with a command's result, popping the command), then carry it out."""
        state.pending = Decided(event_id, decision, candidate, baseline, fraction, reason, figures, self.clock(),
                                self.owner)
        if command is not None:
            state.remember_command(command[0].command_id, command[1])
        self.save(state, pop_command=command is not None)
        await self.finish_pending(state)

    # --- PROMOTE events ---
    def take_promotions(self, state: RolloutState, records: Iterable[Record]) -> bool:
        """Queue the PROMOTE events among `records`, recording how far models.promotions was read."""
        changed = False
        for record in records:
            changed = True
            state.offsets[str(record.partition)] = record.offset + 1
            try:
                event = decode(record.value, expect=PromotionEvent)
            except (DecodeError, ValidationError) as exc:
                self.say(f"skipped an undecodable record at {record.partition}:{record.offset}: {exc}")
                continue
            if event.decision is not PromotionDecision.PROMOTE:
                continue
            problem = self._not_promotable(state, event.candidate_version, manual=False)
            if problem:
                self.say(f"ignored PROMOTE {event.event_id} of {event.candidate_version}: {problem}")
                continue
            state.waiting.append(Waiting(event.candidate_version, f"PROMOTE {event.event_id}", self.clock()))
            ahead = f" behind {state.running.candidate}'s rollout" if state.running else ""
            self.say(f"PROMOTE {event.event_id}: {event.candidate_version} queued{ahead}")
        return changed

    def _not_promotable(self, state: RolloutState, version: str, manual: bool) -> str:
        """Why `version` cannot start (or wait for) a rollout now; empty when it can."""
        try:
            record = self.registry.get(version)
        except RegistryError as exc:
            return str(exc)
        running = state.running
        if running is not None and running.candidate == version:
            return f"{version} is already rolling out (stage {running.stage_index + 1}/{running.canary_stages})"
        if any(w.candidate == version for w in state.waiting):
            return f"{version} is already waiting for its rollout"
        if record.status is VersionStatus.PRODUCTION:
            return f"{version} is already production"
        if self.registry.production() is None:
            return "the registry has no production version to compare a canary with"
        if not manual and record.status is not VersionStatus.APPROVED:
            # A rolled-back (or rejected, or unevaluated) version is rolled out only when a person asks.
            return f"its status is {record.status.value}, not approved (`prefloop models promote {version}` overrides)"
        return ""

    async def start_waiting(self, state: RolloutState) -> None:
        """Start the oldest waiting promotion when nothing runs (and nobody paused the controller)."""
        while state.running is None and state.pending is None and state.waiting and not self.paused():
            waiting = state.waiting.pop(0)
            problem = self._not_promotable(state, waiting.candidate, manual=waiting.manual)
            if problem:
                self.say(f"dropped the waiting {waiting.origin} of {waiting.candidate}: {problem}")
                self.save(state)
                continue
            await self._begin(state, waiting.candidate, waiting.origin, waiting.start_stage)

    async def _begin(self, state: RolloutState, candidate: str, origin: str, start_stage: int,
                     command: tuple[Command, str] | None = None) -> None:
        production = self.registry.production()
        assert production is not None, "checked by _not_promotable"
        now = self.clock()
        plan = list(self.settings.plan)
        rollout = Rollout(uuid.uuid4().hex[:12], candidate, production.version, origin, plan, start_stage, now, now)
        state.rollout = rollout
        stage = rollout.stage
        if stage.fraction >= 1.0:
            decision, reason = PromotionDecision.COMPLETE, f"{origin}: straight to production, no canary"
            rollout.status, rollout.finished_ms = RolloutStatus.COMPLETED, now
        else:
            decision = PromotionDecision.ADVANCE
            reason = (f"{origin}: rollout of {candidate} against {production.version} starts at stage "
                      f"{start_stage + 1}/{rollout.canary_stages} ({stage.label})")
        event_id = rollout.next_event_id(decision)
        rollout.steps += 1
        await self._act(state, decision, candidate, production.version, stage.fraction, reason,
                        {"stage": float(start_stage + 1)}, event_id, command)

    # --- checks ---
    async def check(self, state: RolloutState) -> Decision:
        rollout = state.running
        assert rollout is not None
        metrics = await asyncio.to_thread(
            read_metrics, self.store, rollout.candidate, rollout.baseline, rollout.started_ms,
            rollout.stage_started_ms, self.settings.max_p99_latency_ms)
        now = self.clock()
        decision = decide(rollout, metrics, self.settings, now, paused=self.paused())
        state.last_check = {"at_ms": now, "verdict": decision.verdict.value, "outcome": decision.outcome.value,
                            "reason": decision.reason, "figures": decision.figures}
        if decision.verdict is Verdict.WAIT:
            self.save(state)
            return decision
        await self._decided(state, rollout, decision, now)
        return decision

    async def _decided(self, state: RolloutState, rollout: Rollout, decision: Decision, now: int) -> None:
        kind = PromotionDecision(decision.verdict.value)
        event_id = rollout.next_event_id(kind)
        rollout.steps += 1
        if decision.verdict is Verdict.ROLLBACK:
            rollout.status, rollout.finished_ms = RolloutStatus.ROLLED_BACK, now
        else:
            rollout.stage_index, rollout.stage_started_ms = decision.stage_index, now
            if decision.verdict is Verdict.COMPLETE:
                rollout.status, rollout.finished_ms = RolloutStatus.COMPLETED, now
        await self._act(state, kind, rollout.candidate, rollout.baseline, decision.fraction, decision.reason,
                        decision.figures, event_id)

    # --- operators' commands ---
    async def apply_next_command(self, state: RolloutState) -> bool:
        """Apply the command at the head of the list; False when there is none."""
        try:
            command = commands.head(self.redis)
        except (ValueError, KeyError, TypeError) as exc:
            self.say(f"dropped a malformed command: {exc}")
            self.save(state, pop_command=True)
            return True
        if command is None:
            return False
        if command.command_id in state.commands:  # applied, then the process died before popping it
            self.save(state, pop_command=True)
            return True
        try:
            if command.kind is CommandKind.ROLLBACK:
                await self._manual_rollback(state, command)
            else:
                await self._manual_promote(state, command)
        except PrefloopError as exc:
            if command.command_id in state.commands:  # persisted with its decision: carrying it out failed, retry
                raise
            self._refuse(state, command, str(exc))  # a command that cannot apply must not block the ones after it
        return True

    def _refuse(self, state: RolloutState, command: Command, problem: str) -> None:
        state.remember_command(command.command_id, ERROR_PREFIX + problem)
        self.save(state, pop_command=True)
        self.say(f"command {command.kind.value} {command.version}: {problem}")

    async def _manual_rollback(self, state: RolloutState, command: Command) -> None:
        reason = f"manual rollback: {command.reason}" if command.reason else "manual rollback"
        rollout = state.running
        if rollout is not None:
            now = self.clock()
            event_id = rollout.next_event_id(PromotionDecision.ROLLBACK)
            rollout.steps += 1
            rollout.status, rollout.finished_ms = RolloutStatus.ROLLED_BACK, now
            result = f"rolled back the canary {rollout.candidate}; {rollout.baseline} stays production"
            await self._act(state, PromotionDecision.ROLLBACK, rollout.candidate, rollout.baseline, 0.0, reason,
                            {"stage": float(rollout.stage_index + 1)}, event_id, (command, result))
            return
        history = self.registry.production_history()
        if len(history) < 2:
            self._refuse(state, command, "nothing to roll back: no rollout is running and production has no predecessor")
            return
        production, previous = history[-1], history[-2]
        result = f"rolled back {production}; {previous} is production again"
        await self._act(state, PromotionDecision.ROLLBACK, production, previous, 0.0, reason, {},
                        f"manual-{command.command_id}-rollback", (command, result))

    async def _manual_promote(self, state: RolloutState, command: Command) -> None:
        version, running = command.version, state.running
        # A running rollout of this version keeps the plan it started with; a new one takes today's.
        plan = running.stages if running is not None and running.candidate == version else list(self.settings.plan)
        origin = f"manual: {command.reason}" if command.reason else "manual promotion"
        start = 0
        if command.to_fraction is not None:
            matches = [i for i, s in enumerate(plan) if abs(s.fraction - command.to_fraction) < 1e-9]
            if not matches:
                self._refuse(state, command, f"--to {command.to_fraction:g} is not a stage of the plan "
                                             f"({', '.join(f'{s.fraction:g}' for s in plan)})")
                return
            start = matches[0]
        if running is not None and running.candidate == version:
            if start <= running.stage_index:
                self._refuse(state, command, f"{version} is already rolling out at stage {running.stage_index + 1}/"
                                             f"{running.canary_stages} ({running.stage.label}); --to a later stage")
                return
            await self._jump(state, running, start, origin, command)
            return
        problem = self._not_promotable(state, version, manual=True)
        if problem:
            self._refuse(state, command, problem)
            return
        if running is not None:
            state.waiting.append(Waiting(version, origin, self.clock(), manual=True, start_stage=start))
            state.remember_command(command.command_id, f"{version} queued behind {running.candidate}'s rollout "
                                                       f"(stage {running.stage_index + 1}/{running.canary_stages})")
            self.save(state, pop_command=True)
            return
        stage = plan[start]
        result = (f"{version} is production now" if stage.fraction >= 1.0 else
                  f"{version} rollout started at stage {start + 1}/{len(plan) - 1} ({stage.label})")
        await self._begin(state, version, origin, start, (command, result))

    async def _jump(self, state: RolloutState, rollout: Rollout, start: int, origin: str, command: Command) -> None:
        """Move a running rollout forward to stage `start` on a person's word."""
        now = self.clock()
        stage = rollout.stages[start]
        final = stage.fraction >= 1.0
        kind = PromotionDecision.COMPLETE if final else PromotionDecision.ADVANCE
        event_id = rollout.next_event_id(kind)
        rollout.steps += 1
        rollout.stage_index, rollout.stage_started_ms = start, now
        if final:
            rollout.status, rollout.finished_ms = RolloutStatus.COMPLETED, now
        result = (f"{rollout.candidate} is production now" if final else
                  f"{rollout.candidate} moved to stage {start + 1}/{rollout.canary_stages} ({stage.label})")
        await self._act(state, kind, rollout.candidate, rollout.baseline, stage.fraction, f"{origin}: -> {stage.label}",
                        {"stage": float(start + 1)}, event_id, (command, result))

