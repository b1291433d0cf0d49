"""Stage B, keyed by prompt_id: the join of responses and actions, and the pair rules.

Input: feedback.responses (keyed by prompt_id) and the resolved-actions bundles from stage A,
sent to the partition the response was read from, so one worker holds a whole prompt group.
State: the `prompt-groups` table (changelog-backed), one `PromptGroup` per prompt_id.
Output: pair candidates (bundled per pairs partition, to stage C), analytics rows, the
`response_id -> prompt_id` index in Redis, and dead letters for bad responses and for actions
whose references never appear in the group (`unknown_reference`).

Crash safety, per batch: (1) apply every event to the in-memory groups, (2) send candidates,
rows and dead letters, (3) mark the changed groups dirty. Before the next offset commit the
pipeline writes the dirty groups to the changelog (`Runtime.write_dirty`), which first waits
for the acks of every send. A crash before that replays the input since the last commit
onto the older state and re-sends the same candidates, which stage C drops by pair_id; a
crash after it lost nothing because the outputs were already acknowledged.
Offsets are committed by Faust after the producer flush.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict, deque
from typing import Any, Sequence

from prefloop import topics as contract
from prefloop.keys import INDEX_PREFIX
from prefloop.partitioner import partition_for
from schemas import Action, ActionKind, PreferencePair, Response, encode
from streams import wire
from streams.batching import records
from streams.dlq import UNKNOWN_REFERENCE, Rejected, dead_letter, decode_as
from streams.pairing.prompt_group import PairDraft, PromptGroup
from streams.pairing.quality import QualityRules
from streams.pairing.text import normalised_distance
from streams.runtime import BatchStage, Runtime, fatal
from streams.sinks import rows
from streams.sinks.rows import row_json, send_rows
from streams.state import GroupState, HeldAction
from streams.wire import ForwardedAction, IndexedResponse, PairCandidate

log = logging.getLogger("prefloop.streams.group")

WRAPPERS_MAX = 100_000  # PromptGroup wrappers cached across batches
# Index writes kept to be written again after a Redis restart: with appendfsync everysec a killed
# redis-server loses at most ~2 s of acknowledged writes; 10 s leaves a margin.
REWRITE_WINDOW_S = 10.0
# SET every index key with its value and the TTL (last ARGV) in one round trip.
INDEX_SCRIPT = """
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[i], 'EX', ttl) end
return #KEYS
"""


class Batch:
    """Everything one batch of the group stage sends, and the groups it changed."""

    def __init__(self) -> None:
        self.groups: dict[str, tuple[PromptGroup, int]] = {}
        self.candidates: dict[int, dict[str, PairCandidate]] = defaultdict(dict)  # pairs partition -> pair_id -> it
        self.rows: dict[str, list[list[Any]]] = defaultdict(list)
        self.index: dict[str, str] = {}
        self.futures: list = []


class GroupStage(BatchStage):
    name = "group stage"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.quality = QualityRules.from_settings(rt.ss)
        self.lock = asyncio.Lock()
        # responses partition -> (offset, record timestamp) of the last response whose batch is
        # flushed (indexed in Redis): the backlog check and the event-time alignment read it
        self.processed: dict[int, tuple[int, int]] = {}
        self._index_script = None
        self.holding: set[str] = set()  # prompt groups with held actions (the sweep's short list)
        self._last_full_scan = 0.0
        # PromptGroup wrappers kept across batches (building one indexes its state's lists);
        # valid while the table still holds the very state dict they wrap.
        self._wrappers: dict[str, PromptGroup] = {}
        # (monotonic time, keys, values) of the index writes of the last REWRITE_WINDOW_S of
        # activity, and the Redis epoch they were last re-written at (`repair_index`).
        self._recent_index: deque[tuple[float, list[str], list[str]]] = deque()
        self._repaired_epoch = 0

    def on_revoked(self) -> None:
        self.processed.clear()
        self._wrappers.clear()

    def _wrap(self, prompt_id: str, state: GroupState | None) -> PromptGroup:
        group = self._wrappers.get(prompt_id)
        if group is None or state is None or group.state is not state:
            group = PromptGroup(prompt_id, state, self.rt.ss)
            if len(self._wrappers) >= WRAPPERS_MAX:
                del self._wrappers[next(iter(self._wrappers))]  # the oldest; rebuilt when needed
            self._wrappers[prompt_id] = group
        return group

    # --- batch ---------------------------------------------------------------------------------------
    async def process(self, events: Sequence[Any]) -> None:
        rt = self.rt
        await self.repair_index()
        batch = Batch()
        now = rt.now_ms()
        msgs = records(events)
        if len(msgs) >= rt.ss.batch_max:
            await rt.mark_busy()
        progress: dict[int, tuple[int, int]] = {}
        for msg in msgs:
            if msg.topic == contract.RESPONSES:
                progress[msg.partition] = (msg.offset, msg.timestamp)
                await self._response(batch, msg.value, msg.partition, msg.offset, now)
            else:
                try:
                    items = wire.unpack(msg.value, ForwardedAction)
                except wire.BundleError as exc:
                    log.error("skipping corrupt bundle at %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)
                    continue
                for item in items:
                    await self._action(batch, item, msg.partition, now)
        await self._flush(batch)
        self.processed.update(progress)
        if rt.ss.backlog_events:
            read = {p: offset for p, (offset, _) in self.processed.items()}
            if rt.lag(contract.RESPONSES, read) > rt.ss.backlog_events:
                await rt.mark_backlog()

    def _group(self, batch: Batch, prompt_id: str, partition: int) -> PromptGroup:
        hit = batch.groups.get(prompt_id)
        if hit is None:
            group = self._wrap(prompt_id, self.rt.groups.data.get(prompt_id))
            group.state["pt"] = partition  # the sweep needs it outside any event
            batch.groups[prompt_id] = (group, partition)
            return group
        return hit[0]

    async def _response(self, batch: Batch, payload: bytes, partition: int, offset: int, now: int) -> None:
        rt = self.rt
        try:
            resp = decode_as(payload, Response)
        except Rejected as rej:
            batch.futures.append(await rt.send_dead_letter(
                dead_letter(contract.RESPONSES, partition, offset, rej.reason, payload, rej.detail, now), rej.reason))
            return
        rt.stats.add("responses.in")
        group = self._group(batch, resp.prompt_id, partition)
        added = group.add_response(resp)
        batch.index[resp.response_id] = f"{resp.prompt_id}\t{partition}"
        batch.rows["feedback_events"].append(rows.response_event(resp, partition, offset))
        if added and group.state["h"]:
            await self._release_held(batch, group, partition, now)

    async def _release_held(self, batch: Batch, group: PromptGroup, partition: int, now: int) -> None:
        ready = []
        for entry in group.held():
            action = decode_as(base64.b64decode(entry["b"]), Action)
            if not group.missing_references(action):
                ready.append((entry, action))
        if ready:
            group.release({entry["e"] for entry, _ in ready})
            for entry, action in ready:
                await self._apply(batch, group, action, entry["p"], entry["o"], now)

    async def _action(self, batch: Batch, item: ForwardedAction, partition: int, now: int) -> None:
        try:
            action = wire.action_of(item)
        except (ValueError, TypeError) as exc:  # only a corrupt bundle gets here
            batch.futures.append(await self.rt.send_dead_letter(dead_letter(
                contract.ACTIONS, item.partition, item.offset, "invalid", item.payload,
                f"corrupt forwarded action: {exc}", now), "invalid"))
            return
        group = self._group(batch, item.prompt_id, partition)
        if group.seen(action.event_id):
            self.rt.stats.add("actions.duplicate")
            return
        if group.missing_references(action):
            held: HeldAction = {"e": action.event_id, "b": base64.b64encode(item.payload).decode(), "p": item.partition,
                                "o": item.offset, "a": item.arrived_ms}
            group.hold(held)
            self.holding.add(group.prompt_id)
            return
        await self._apply(batch, group, action, item.partition, item.offset, now)

    async def _apply(self, batch: Batch, group: PromptGroup, action: Action, source_partition: int,
                     source_offset: int, now: int) -> None:
        """Apply an action whose references are all in the group; `source_*`: where it was read on feedback.actions."""
        group.mark_seen(action.event_id)
        drafts = group.apply(action)
        text, version, _, prompt = group.response(action.response_id)
        rejected_version = ""
        if action.kind is ActionKind.CHOICE and action.rejected_response_id:
            rejected_version = group.response(action.rejected_response_id)[1]
        distance = normalised_distance(text, action.edited_text or "") if action.kind is ActionKind.EDIT else None
        batch.rows["feedback_events"].append(rows.action_event(
            action, source_partition, source_offset, group.prompt_id, version, len(prompt), len(text)))
        batch.rows["action_facts"].append(rows.action_fact(
            action, group.prompt_id, version, rejected_version, distance, len(prompt), len(text)))
        for draft in drafts:
            self._candidate(batch, group.prompt_id, draft)

    def _candidate(self, batch: Batch, prompt_id: str, draft: PairDraft) -> None:
        pair = PreferencePair(
            prompt_id=prompt_id, prompt=draft.prompt, chosen=draft.chosen, rejected=draft.rejected,
            chosen_response_id=draft.chosen_response_id, rejected_response_id=draft.rejected_response_id,
            chosen_model_version=draft.chosen_model_version, rejected_model_version=draft.rejected_model_version,
            source=draft.source, weight=draft.weight, created_at=draft.occurred_at,
        )
        reason = self.quality.check(draft.chosen, draft.rejected)
        if reason is not None:
            self.rt.stats.add(f"pairs.dropped.{reason}")
            batch.rows["pair_drops"].append(rows.pair_drop(
                pair.pair_id, draft.event_id, prompt_id, draft.source.value, reason, draft.occurred_at))
            return
        self.rt.stats.add("pairs.candidates")
        part = partition_for(pair.pair_id, self.rt.settings.pairs_partitions)
        if pair.pair_id not in batch.candidates[part]:
            batch.candidates[part][pair.pair_id] = PairCandidate(pair.pair_id, encode(pair),
                                                                 row_json(rows.preference_pair(pair)))

    async def _flush(self, batch: Batch) -> None:
        rt = self.rt
        futures = batch.futures
        if batch.index:
            announce: dict[int, list[IndexedResponse]] = defaultdict(list)
            keys, values = [], []
            for rid, where in batch.index.items():
                keys.append(INDEX_PREFIX + rid)
                values.append(where)
                prompt_id, _, gp = where.partition("\t")
                announce[partition_for(rid, rt.settings.actions_partitions)].append(IndexedResponse(rid, prompt_id, int(gp)))
            await self._write_index(keys, values)
            # After the index write: an action that missed the index is held, and then released by this.
            for partition, items in announce.items():
                for chunk in wire.chunks(items, wire.MAX_BUNDLE_BYTES, lambda it: len(it[0]) + len(it[1]) + 16):
                    futures.append(await rt.send(rt.indexed, None, wire.pack(chunk, IndexedResponse), partition))
        for partition, pairs in batch.candidates.items():
            for chunk in wire.chunks(list(pairs.values()), wire.MAX_BUNDLE_BYTES,
                                     lambda c: len(c.record) + len(c.row) + 48):
                futures.append(await rt.send(rt.candidates, None, wire.pack(chunk, PairCandidate), partition))
        futures.extend(await send_rows(rt, batch.rows))
        rt.expect_acks(futures)
        for prompt_id, (group, partition) in batch.groups.items():
            rt.stage_put(rt.groups, partition, prompt_id, group.state)

    async def _write_index(self, keys: list[str], values: list[str]) -> None:
        """SET each index key to its value with the index TTL, and remember the write for `repair_index`."""
        await self._set_index(keys, values)
        now = time.monotonic()
        recent = self._recent_index
        recent.append((now, keys, values))
        while recent[0][0] < now - REWRITE_WINDOW_S:  # the window trails the newest write, not the clock
            recent.popleft()

    async def _set_index(self, keys: list[str], values: list[str]) -> None:
        rt = self.rt
        if self._index_script is None:
            self._index_script = rt.redis.register_script(INDEX_SCRIPT)
        ttl = int(rt.ss.index_ttl_s)
        for start in range(0, len(keys), 5000):
            await self._index_script(keys=keys[start:start + 5000], args=[*values[start:start + 5000], ttl])

    async def repair_index(self) -> None:
        """After Redis came back from an outage, write the index entries of the last REWRITE_WINDOW_S
        of activity again: a restarted Redis may have lost them, and an action whose response is
        missing from the index would wait (held) until it expired as an orphan. SET is idempotent."""
        epoch = self.rt.redis_epoch
        if epoch == self._repaired_epoch:
            return
        self._repaired_epoch = epoch
        recent = list(self._recent_index)
        for _, keys, values in recent:
            await self._set_index(keys, values)
        if recent:
            log.warning("Redis came back: wrote the last %d index entries again", sum(len(k) for _, k, _ in recent))

    # --- the sweep ------------------------------------------------------------------------------------
    async def sweep(self) -> None:
        """Dead-letter held actions whose references did not reach the group within the TTL."""
        rt = self.rt
        async with self.lock:
            try:
                await self.repair_index()
                owned = rt.owned(contract.RESPONSES)
                now = rt.now_ms()
                if not await rt.expiry_allowed():
                    return
                batch = Batch()
                if time.monotonic() - self._last_full_scan > 30:  # groups recovered from the changelog
                    self._last_full_scan = time.monotonic()
                    self.holding |= {k for k, v in rt.groups.data.items() if v and v.get("h")}
                for prompt_id in list(self.holding):
                    state = rt.groups.data.get(prompt_id)
                    if not state or not state.get("h"):
                        self.holding.discard(prompt_id)
                        continue
                    expired = [h for h in state["h"] if rt.expired(h["a"], now)]
                    if not expired:
                        continue
                    group, partition = self._sweep_group(batch, prompt_id, state, owned)
                    if group is None:
                        continue
                    for h in expired:
                        payload = base64.b64decode(h["b"])
                        action = decode_as(payload, Action)
                        missing = group.missing_references(action)
                        detail = f"response(s) {', '.join(missing)} not in prompt group {prompt_id}"
                        batch.futures.append(await rt.send_dead_letter(dead_letter(
                            contract.ACTIONS, h["p"], h["o"], UNKNOWN_REFERENCE, payload, detail, now),
                            UNKNOWN_REFERENCE))
                        batch.rows["feedback_events"].append(rows.action_event(action, h["p"], h["o"], prompt_id))
                        group.mark_seen(action.event_id)
                    group.release({h["e"] for h in expired})
                if batch.groups:
                    await self._flush(batch)
                    await rt.write_dirty(rt.groups)  # a sweep is not followed by an offset commit
            except Exception as exc:
                fatal(exc, "group sweep")

    def _sweep_group(self, batch: Batch, prompt_id: str, state: GroupState, owned: set[int]):
        partition = state.get("pt")
        if partition is None or partition not in owned:
            return None, None
        group = self._wrap(prompt_id, state)
        batch.groups[prompt_id] = (group, partition)
        return group, partition
