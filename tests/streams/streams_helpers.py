"""Helpers for the streams integration tests: produce events, read topics, run workers as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from prefloop import topics
from prefloop.services.process import worker_ready_file
from prefloop.settings import Settings
from schemas import Action, ActionKind, AvroRecord, PreferencePair, Response, decode, encode

REPO = Path(__file__).resolve().parents[2]
# The repository's virtualenv, or (in a git worktree without one) the interpreter running the tests.
PYTHON = REPO / ".venv" / "bin" / "python" if (REPO / ".venv" / "bin" / "python").exists() else Path(sys.executable)


def key_of(record: AvroRecord) -> bytes:
    """The SDK's keys: responses by prompt_id, actions by response_id."""
    if isinstance(record, Response):
        return record.prompt_id.encode()
    if isinstance(record, Action):
        return record.response_id.encode()
    raise TypeError(type(record))


def topic_of(record: AvroRecord) -> str:
    return topics.RESPONSES if isinstance(record, Response) else topics.ACTIONS


async def produce_async(settings: Settings, items: Iterable[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all",
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce(settings: Settings, records: Iterable[AvroRecord | tuple[str, bytes | None, bytes | None]]) -> None:
    """Send records (typed, encoded as the SDK does) or raw (topic, key, value) triples, in order."""
    items = []
    for r in records:
        if isinstance(r, tuple):
            items.append(r)
        else:
            items.append((topic_of(r), key_of(r), encode(r)))
    asyncio.run(produce_async(settings, items))


async def read_topic_async(settings: Settings, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """Every record currently in `topic` (all partitions, from the start), as aiokafka ConsumerRecords."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        counts = {spec.name: spec.partitions for spec in settings.topics()}
        if topic in counts:
            parts = range(counts[topic])
        else:  # an internal topic: ask the cluster
            cluster = await consumer._client.fetch_all_metadata()
            parts = sorted(cluster.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batch.values():
                out.extend(r for r in records if r.offset < end[TopicPartition(r.topic, r.partition)])
        return out
    finally:
        await consumer.stop()


def read_topic(settings: Settings, topic: str) -> list[Any]:
    return asyncio.run(read_topic_async(settings, topic))


def read_pairs(settings: Settings) -> list[PreferencePair]:
    return [decode(r.value) for r in read_topic(settings, topics.PAIRS)]  # type: ignore[misc]


def read_dlq(settings: Settings) -> list[Any]:
    return [decode(r.value) for r in read_topic(settings, topics.DLQ)]


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def scalar(store, sql: str):
    return store.query(sql).scalar()


def wait_rows(store, sql: str, expected, timeout_s: float = 60.0):
    return wait_for(lambda: scalar(store, sql) == expected, timeout_s, what=sql) and expected


def assert_each_pair_once(store, tag: str, w, expected: dict, pairs: list[PreferencePair]) -> None:
    """The expected pairs, each once, on the topic and in `preference_pairs FINAL`, and every event in
    `feedback_events FINAL`: what a crash or a rebalance must leave behind."""
    ids = Counter(p.pair_id for p in pairs)
    assert [pid for pid, n in ids.items() if n > 1] == [], "a pair was published twice"
    assert {p.pair_id: (p.source.value, p.chosen, p.rejected) for p in pairs} == expected
    in_store = f"SELECT pair_id FROM preference_pairs FINAL WHERE prompt LIKE '[{tag}]%'"
    try:
        wait_for(lambda: len(store.query(in_store).rows) == len(expected), 60, what="preference_pairs")
    except AssertionError:
        have = {r[0] for r in store.query(in_store).rows}
        raw = store.query(f"SELECT count() FROM preference_pairs WHERE prompt LIKE '[{tag}]%'").scalar()
        missing = sorted(set(expected) - have)
        raise AssertionError(f"{len(missing)} pair(s) missing in ClickHouse (raw rows {raw}, FINAL {len(have)}, "
                             f"extra {len(have - set(expected))}): {missing[:5]}") from None
    assert sorted(r[0] for r in store.query(in_store).rows) == sorted(expected)
    wait_rows(store, f"SELECT count() FROM feedback_events FINAL WHERE response_id LIKE '{tag}-%'",
              len(w.responses) + len(w.actions))



@dataclass
class Worker:
    """A `prefloop worker` subprocess; stopped by PID."""

    proc: subprocess.Popen
    log_path: Path
    ready_file: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker {self.pid} not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode


@dataclass
class Workers:
    settings: Settings
    env: dict[str, str]
    started: list[Worker] = field(default_factory=list)

    def start(self, **streams_overrides: Any) -> Worker:
        env = dict(self.env)
        for name, value in streams_overrides.items():
            env[f"PREFLOOP_STREAMS_{name.upper()}"] = str(value)
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"test-worker-{len(self.started)}-{time.time_ns()}.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([str(PYTHON), "-m", "prefloop.cli", "worker"], cwd=str(REPO), env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        worker = Worker(proc, log_path, worker_ready_file(self.settings, proc.pid))
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            try:
                worker.stop(timeout_s=20)
            except Exception:  # pragma: no cover - cleanup best effort
                if worker.proc.poll() is None:
                    os.kill(worker.pid, signal.SIGKILL)


def response(prompt: str, text: str, version: str = "v1", rid: str | None = None, **kw: Any) -> Response:
    rid = rid or f"r-{time.time_ns()}"
    return Response(response_id=rid, prompt=prompt, response=text, model_version=version, **kw)


def action(rid: str, kind: ActionKind | str, **kw: Any) -> Action:
    return Action(response_id=rid, kind=ActionKind(kind) if isinstance(kind, str) else kind, **kw)


def python_cmd() -> list[str]:
    return [str(PYTHON if PYTHON.exists() else sys.executable)]


def diagnose_missing(settings: Settings, records: list, missing: set[str], app_id: str = "prefloop-streams") -> str:
    """Where in the pipeline the actions behind missing pairs stopped (for failure messages)."""
    import json as _json

    from schemas import pair_hash as _pair_hash
    from streams import wire
    from streams.pairing.prompt_group import PromptGroup
    from streams.settings import StreamsSettings

    responses = {r.response_id: r for r in records if isinstance(r, Response)}
    groups: dict[str, PromptGroup] = {}
    for r in responses.values():
        groups.setdefault(r.prompt_id, PromptGroup(r.prompt_id, None, StreamsSettings())).add_response(r)
    culprits = {}
    for a in (r for r in records if isinstance(r, Action)):
        g = groups[responses[a.response_id].prompt_id]
        if g.seen(a.event_id):
            continue
        g.mark_seen(a.event_id)
        for d in g.apply(a):
            h = _pair_hash(d.prompt, d.chosen, d.rejected)
            if h in missing:
                culprits[h] = a
    forwarded = set()
    for r in read_topic(settings, f"{app_id}-resolved-actions"):
        for item in wire.unpack(r.value, wire.ForwardedAction):
            forwarded.add(item.event_id)
    candidates: dict[str, tuple[int, int]] = {}
    for r in read_topic(settings, f"{app_id}-pair-candidates"):
        for candidate in wire.unpack(r.value, wire.PairCandidate):
            candidates.setdefault(candidate.pair_id, (r.partition, r.offset))
    announced = set()
    for r in read_topic(settings, f"{app_id}-indexed-responses"):
        for indexed in wire.unpack(r.value, wire.IndexedResponse):
            announced.add(indexed.response_id)
    pending: dict[str, Any] = {}
    for r in read_topic(settings, f"{app_id}-pending-actions-changelog"):
        pending[_json.loads(r.key)] = None if r.value is None else _json.loads(r.value)
    group_state: dict[str, Any] = {}
    for r in read_topic(settings, f"{app_id}-prompt-groups-changelog"):
        group_state[_json.loads(r.key)] = None if r.value is None else _json.loads(r.value)
    actions_topic = {}
    for r in read_topic(settings, topics.ACTIONS):
        try:
            rec = decode(r.value)
        except Exception:
            continue
        if isinstance(rec, Action):
            actions_topic.setdefault(rec.event_id, (r.partition, r.offset))
    dead: dict[tuple[int, int], str] = {}
    for r in read_topic(settings, topics.DLQ):
        try:
            letter = decode(r.value)
        except Exception:
            continue
        if getattr(letter, "source_topic", None) == topics.ACTIONS:
            dead[(letter.source_partition, letter.source_offset)] = letter.reason
    import redis as _redis

    from prefloop.keys import INDEX_PREFIX as INDEX_KEY
    from prefloop.keys import PAIR_IDS_PREFIX as PAIR_IDS_KEY
    from prefloop.partitioner import partition_for

    index = _redis.Redis.from_url(settings.redis_dsn)
    lines = []
    for h, a in list(culprits.items())[:10]:
        lines.append(f"pair {h[:8]} {a.kind.value} event {a.event_id[:8]} response {a.response_id} "
                     f"at actions{actions_topic.get(a.event_id)} forwarded={a.event_id in forwarded} "
                     f"candidate={candidates.get(h)} announced={a.response_id in announced} "
                     f"pending={'live' if pending.get(a.response_id) else ('deleted' if a.response_id in pending else 'never')} "
                     f"dlq={dead.get(actions_topic.get(a.event_id))} index={index.get(INDEX_KEY + a.response_id)} "
                     f"in_group_state={a.response_id in ((group_state.get(responses[a.response_id].prompt_id) or {}).get('r') or {})} "
                     f"group_seen={a.event_id in ((group_state.get(responses[a.response_id].prompt_id) or {}).get('s') or [])} "
                     f"recorded={index.sismember(PAIR_IDS_KEY + str(partition_for(h, settings.pairs_partitions)), h)}")
    return "\n".join(lines)
