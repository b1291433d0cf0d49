"""Stage A, keyed by response_id: find each action's prompt group, or hold it until its response arrives.

Actions arrive on feedback.actions keyed by `response_id`; the pair rules need the prompt
group. The group stage records `response_id -> (prompt_id, partition)` in Redis as it takes
each response, then announces the new ids on `<app>-indexed-responses` (bundled, partitioned
like feedback.actions). This stage consumes both topics:

- an action: look its response up in Redis (one MGET per batch); known -> forward it, bundled
  per target partition, to the group stage; unknown -> hold it in the `pending-actions` table
  (changelog-backed, co-partitioned with feedback.actions).
- an announcement: forward every action held for the announced responses.

A sweep expires held actions after `orphan_ttl_s` (DLQ `expired_orphan`, and a
`feedback_events` row with an empty prompt_id) and, as a safety net for producers that do not
key actions by response_id, re-checks long-held ones against Redis every few seconds.

Crash safety: forwards and dead letters are acknowledged by the broker before the deletion of
the pending entry that produced them reaches the changelog (`Runtime.write_dirty` settles the
acks first), so a crash can repeat a forward (the group stage drops the repeat by event
id) but never lose one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from typing import Any, Sequence

from prefloop import topics as contract
from schemas import Action
from streams import wire
from streams.batching import records
from streams.dlq import EXPIRED_ORPHAN, Rejected, dead_letter, decode_as
from prefloop.keys import INDEX_PREFIX
from streams.runtime import BatchStage, Runtime, fatal
from streams.sinks import rows
from streams.state import HeldAction
from streams.wire import ForwardedAction, IndexedResponse, forwarded_action

log = logging.getLogger("prefloop.streams.resolve")

RECHECK_S = 5.0  # safety-net Redis re-check of held actions


class ResolveStage(BatchStage):
    name = "resolve stage"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.lock = asyncio.Lock()
        self._last_recheck = 0.0
        self.earliest_ms: float = float("inf")  # earliest arrival among held actions (a lower bound)
        # Held actions decoded, by event id, so a release need not decode them again (memory only;
        # entries recovered from the changelog are decoded on release).
        self.decoded: dict[str, Action] = {}

    def on_revoked(self) -> None:
        self.decoded.clear()

    def _held(self, entry: HeldAction) -> tuple[bytes, Action]:
        """The payload of a held entry leaving the table, and its action (cached, else decoded)."""
        payload = base64.b64decode(entry["b"])
        return payload, self.decoded.pop(entry["e"], None) or decode_as(payload, Action)

    # --- the agent --------------------------------------------------------------------------------
    async def process(self, events: Sequence[Any]) -> None:
        rt = self.rt
        now = rt.now_ms()
        msgs = records(events)
        if len(msgs) >= rt.ss.batch_max:
            await rt.mark_busy()
        futures = []
        actions: list[tuple[Action, bytes, int, int]] = []
        located: dict[str, tuple[str, int]] = {}  # response_id -> (prompt_id, group partition), announced
        for msg in msgs:
            if msg.topic != contract.ACTIONS:
                try:
                    for indexed in wire.unpack(msg.value, IndexedResponse):
                        located[indexed.response_id] = (indexed.prompt_id, indexed.group_partition)
                except wire.BundleError as exc:
                    log.error("skipping corrupt announcement bundle at offset %d: %s", msg.offset, exc)
                continue
            try:
                action = decode_as(msg.value, Action)
            except Rejected as rej:
                futures.append(await rt.send_dead_letter(
                    dead_letter(msg.topic, msg.partition, msg.offset, rej.reason, msg.value, rej.detail, now),
                    rej.reason))
                continue
            actions.append((action, msg.value, msg.partition, msg.offset))
        rt.stats.add("actions.in", len(actions))
        unknown = [a.response_id for a, *_ in actions if a.response_id not in located]
        if unknown:
            found = await rt.redis.mget([INDEX_PREFIX + rid for rid in unknown])
            for rid, where in zip(unknown, found):
                if where is not None:
                    prompt_id, _, gp = where.decode().partition("\t")
                    located[rid] = (prompt_id, int(gp))
        forwards: dict[int, list[ForwardedAction]] = defaultdict(list)
        held: dict[str, tuple[int, list[HeldAction]]] = {}
        for action, payload, partition, offset in actions:
            where = located.get(action.response_id)
            if where is not None:
                forwards[where[1]].append(forwarded_action(action, payload, partition, offset, now, where[0]))
                continue
            key = action.response_id
            if key not in held:
                held[key] = (partition, list(rt.pending.data.get(key) or []))
            entries = held[key][1]
            if all(e["e"] != action.event_id for e in entries):
                entries.append({"e": action.event_id, "b": base64.b64encode(payload).decode(), "p": partition,
                                "o": offset, "a": now})
                self.decoded[action.event_id] = action
                self.earliest_ms = min(self.earliest_ms, now)
        released: list[tuple[str, int]] = []
        for rid, (prompt_id, gp) in located.items():
            if rid in held:
                entries = held.pop(rid)[1]
                partition = entries[0]["p"]
            else:
                entries = rt.pending.data.get(rid)
                if not entries:
                    continue
                partition = entries[0]["p"]
            for e in entries:
                payload, action = self._held(e)
                forwards[gp].append(forwarded_action(action, payload, e["p"], e["o"], e["a"], prompt_id))
            if rid in rt.pending.data:
                released.append((rid, partition))
        futures.extend(await self._forward(forwards))
        rt.expect_acks(futures)
        for key, (partition, entries) in held.items():
            rt.stage_put(rt.pending, partition, key, entries)
        for key, partition in released:
            rt.stage_delete(rt.pending, partition, key)
        rt.stats.add("actions.held", sum(len(e) for _, e in held.values()))

    async def _forward(self, forwards: dict[int, list[ForwardedAction]]) -> list:
        rt = self.rt
        futures = []
        for partition, items in forwards.items():
            for chunk in wire.chunks(items, wire.MAX_BUNDLE_BYTES, lambda it: 2 * len(it.payload) + 96):
                futures.append(await rt.send(rt.resolved_actions, None, wire.pack(chunk, ForwardedAction), partition))
            rt.stats.add("actions.forwarded", len(items))
        return futures

    # --- the sweep ------------------------------------------------------------------------------------
    async def sweep(self) -> None:
        """Dead-letter held actions past the TTL; every RECHECK_S, re-check held ones against Redis."""
        rt = self.rt
        if not rt.pending.data:
            return
        async with self.lock:
            try:
                await self._sweep()
            except Exception as exc:
                fatal(exc, "resolve sweep")

    async def _sweep(self) -> None:
        rt = self.rt
        owned = rt.owned(contract.ACTIONS)
        now = rt.now_ms()
        recheck = time.monotonic() - self._last_recheck >= RECHECK_S
        if self.earliest_ms == float("inf"):  # recovered from the changelog: find out once
            self.earliest_ms = min((e["a"] for v in rt.pending.data.values() if v for e in v), default=now)
        if not recheck and not rt.expired(int(self.earliest_ms), now):
            return  # nothing can have expired yet, and no re-check is due
        may_expire = await rt.expiry_allowed()
        if not recheck and not may_expire:
            return
        entries = [(key, value[0]["p"], value) for key, value in list(rt.pending.data.items())
                   if value and value[0]["p"] in owned
                   and (recheck or (may_expire and any(rt.expired(e["a"], now) for e in value)))]
        if not entries:
            if recheck:
                self._last_recheck = time.monotonic()
            return
        located: list[bytes | None] = [None] * len(entries)
        if recheck:
            self._last_recheck = time.monotonic()
            for start in range(0, len(entries), 10000):
                chunk = entries[start:start + 10000]
                located[start:start + len(chunk)] = await rt.redis.mget([INDEX_PREFIX + key for key, _, _ in chunk])
        forwards: dict[int, list[ForwardedAction]] = defaultdict(list)
        futures, analytics, done, kept = [], [], [], []
        for (key, partition, held), where in zip(entries, located):
            if where is not None:
                prompt_id, _, group_partition = where.decode().partition("\t")
                for e in held:
                    payload, action = self._held(e)
                    forwards[int(group_partition)].append(
                        forwarded_action(action, payload, e["p"], e["o"], e["a"], prompt_id))
                done.append((key, partition))
                continue
            if not may_expire:
                continue
            remaining = []
            for e in held:
                if rt.expired(e["a"], now):
                    payload, action = self._held(e)
                    detail = f"response {key} did not arrive within {rt.ss.orphan_ttl_s:g}s"
                    futures.append(await rt.send_dead_letter(
                        dead_letter(contract.ACTIONS, e["p"], e["o"], EXPIRED_ORPHAN, payload, detail, now),
                        EXPIRED_ORPHAN))
                    analytics.append(rows.action_event(action, e["p"], e["o"]))
                else:
                    remaining.append(e)
            if len(remaining) != len(held):
                kept.append((key, partition, remaining))
        futures.extend(await self._forward(forwards))
        if analytics:
            futures.extend(await rows.send_rows(rt, {"feedback_events": analytics}))
        rt.expect_acks(futures)
        for key, partition in done:
            rt.stage_delete(rt.pending, partition, key)
        for key, partition, remaining in kept:
            if remaining:
                rt.stage_put(rt.pending, partition, key, remaining)
            else:
                rt.stage_delete(rt.pending, partition, key)
        await rt.write_dirty(rt.pending)  # a sweep is not followed by an offset commit
        self.earliest_ms = min((e["a"] for v in rt.pending.data.values() if v for e in v), default=float("inf"))
