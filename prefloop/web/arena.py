"""The arena's battle logic: two versions answer one question as "Model A" and "Model B", a person
votes, and the vote becomes feedback events exactly once.

The flow follows FastChat's anonymous arena (`gradio_block_arena_anony.py`): sides are drawn at
random and named only after the vote; the votes are A is better, B is better, tie, both are bad.
What FastChat enforces only in the browser is enforced here on the server:

- A battle lives in Redis (`keys.ARENA_BATTLE_PREFIX`), written by the server when both answers
  are in; a vote names only the battle id, so no client can change what it votes on.
- The first vote claims the battle with SET NX (`keys.ARENA_VOTE_PREFIX`); every later vote on it
  (a double click, a replayed request, a second browser tab) is refused with the recorded vote.
- The vote's events have event ids derived from the battle id, so even a vote sent again after a
  failed attempt is one vote downstream (the streams deduplicate event ids).

The answers come from the serving gateway, which records each one as a `Response` (tagged
`source=arena`, `battle_id`, `arena_side`); a vote therefore emits only actions: a CHOICE for
"A/B is better", a THUMBS_DOWN on each answer for "both are bad", nothing for a tie (docs/web.md).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from prefloop import keys
from prefloop.errors import PrefloopError
from prefloop.routing import RoutingTable
from schemas.records import Action, ActionKind

log = logging.getLogger("prefloop.web.arena")

SOURCE_TAG = "arena"  # the `source` tag of every arena answer
DAY_COUNT_TTL_S = 400 * 86400  # the per-day vote tallies outlive a year of weekly reports
CHALLENGER_STATUSES = ("canary", "approved", "candidate")


class ArenaError(PrefloopError):
    """Something a person in the arena can fix or retry: an empty question, an expired battle, a gateway down."""


class Vote(str, enum.Enum):
    A = "A"
    B = "B"
    TIE = "tie"
    BOTH_BAD = "both_bad"

    @property
    def label(self) -> str:
        return {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}[self.value]


@dataclass(frozen=True)
class VersionInfo:
    """What the arena needs to know about a registry version."""

    version: str
    status: str
    created_at: int = 0


@dataclass(frozen=True)
class Answer:
    version: str
    response_id: str  # the gateway's completion id = the response_id of the Response it recorded
    text: str


@dataclass(frozen=True)
class Battle:
    battle_id: str
    prompt: str
    mode: str  # "default" or "named"
    a: Answer
    b: Answer
    user_id: str
    created_ms: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Battle":
        data = json.loads(text)
        return cls(**{**data, "a": Answer(**data["a"]), "b": Answer(**data["b"])})


@dataclass(frozen=True)
class VoteResult:
    accepted: bool  # False: the battle had been voted on already; nothing was emitted now
    vote: Vote  # the battle's vote (the earlier one when refused)
    battle: Battle
    events: int  # actions emitted now

    def reveal(self) -> str:
        return f"Model A was {self.battle.a.version}, Model B was {self.battle.b.version}."


class Generator(Protocol):
    """Asks one version for one answer. The gateway implementation records the Response itself."""

    def answer(self, *, prompt: str, version: str, user_id: str, tags: dict[str, str]) -> Answer: ...


class ActionSink(Protocol):
    """Sends records and waits for Kafka's acknowledgement (the SDK's `send_many`)."""

    def send_many(self, records: Sequence[Action]) -> Any: ...


def vote_event_id(battle_id: str, kind: ActionKind, response_id: str) -> str:
    """The idempotency key of one action of a battle's vote: the same battle, kind and answer give the same id."""
    return hashlib.sha256(f"arena-vote\0{battle_id}\0{kind.value}\0{response_id}".encode()).hexdigest()[:32]


def vote_actions(battle: Battle, vote: Vote) -> list[Action]:
    """The actions a vote emits: CHOICE of the better answer over the other, THUMBS_DOWN on both, or none."""
    user = battle.user_id or None
    if vote in (Vote.A, Vote.B):
        chosen, rejected = (battle.a, battle.b) if vote is Vote.A else (battle.b, battle.a)
        return [Action(response_id=chosen.response_id, kind=ActionKind.CHOICE, rejected_response_id=rejected.response_id,
                       user_id=user, event_id=vote_event_id(battle.battle_id, ActionKind.CHOICE, chosen.response_id))]
    if vote is Vote.BOTH_BAD:
        return [Action(response_id=ans.response_id, kind=ActionKind.THUMBS_DOWN, user_id=user,
                       event_id=vote_event_id(battle.battle_id, ActionKind.THUMBS_DOWN, ans.response_id))
                for ans in (battle.a, battle.b)]
    return []


def default_pair(table: RoutingTable | None, versions: Sequence[VersionInfo]) -> tuple[str, str]:
    """(production, challenger): the running canary, else the newest canary, approved or candidate version.
    With no challenger yet, production answers on both sides (two samples still make a preference pair)."""
    production = table.production if table else next((v.version for v in versions if v.status == "production"), "")
    if not production:
        raise ArenaError("no production version yet: train or register a model first (`prefloop models list`)")
    if table and table.canary and table.canary != production:
        return production, table.canary
    challengers = [v for v in versions if v.status in CHALLENGER_STATUSES and v.version != production]
    if not challengers:
        return production, production
    newest = max(challengers, key=lambda v: (v.created_at, v.version))
    return production, newest.version


def named_pair(first: str, second: str, versions: Sequence[VersionInfo]) -> tuple[str, str]:
    known = {v.version for v in versions}
    for name in (first, second):
        if not name:
            raise ArenaError("named mode: pick two versions")
        if name not in known:
            raise ArenaError(f"named mode: {name!r} is not a registry version ({', '.join(sorted(known)) or 'none'})")
    if first == second:
        raise ArenaError("named mode: pick two different versions")
    return first, second


def today_utc(now_s: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now_s is None else now_s, tz=timezone.utc).strftime("%Y-%m-%d")


@contextmanager
def _redis_reachable() -> Iterator[None]:
    """Redis failures as one line a person can act on."""
    import redis

    try:
        yield
    except redis.RedisError as exc:
        raise ArenaError(f"Redis is not reachable ({type(exc).__name__}); the arena needs it for battles and votes: "
                         "start it with `prefloop up`") from None


class BattleStore:
    """Battles and their one vote, in Redis (a synchronous redis-py client)."""

    def __init__(self, redis_client: Any, ttl_s: float) -> None:
        self.redis = redis_client
        self.ttl_ms = int(ttl_s * 1000)

    def save(self, battle: Battle) -> None:
        with _redis_reachable():
            self.redis.set(keys.ARENA_BATTLE_PREFIX + battle.battle_id, battle.to_json(), px=self.ttl_ms)

    def load(self, battle_id: str) -> Battle | None:
        with _redis_reachable():
            raw = self.redis.get(keys.ARENA_BATTLE_PREFIX + battle_id)
        return Battle.from_json(raw) if raw else None

    def claim_vote(self, battle_id: str, vote: Vote) -> Vote | None:
        """Record `vote` as the battle's vote; None if it took, else the vote recorded before."""
        key = keys.ARENA_VOTE_PREFIX + battle_id
        with _redis_reachable():
            if self.redis.set(key, vote.value, nx=True, px=self.ttl_ms):
                return None
            earlier = self.redis.get(key)
        return Vote(earlier.decode() if isinstance(earlier, bytes) else earlier) if earlier else vote

    def release_vote(self, battle_id: str) -> None:
        with _redis_reachable():
            self.redis.delete(keys.ARENA_VOTE_PREFIX + battle_id)

    def count_vote(self, vote: Vote, day: str) -> None:
        key = keys.ARENA_VOTES_DAY_PREFIX + day
        with _redis_reachable():
            pipe = self.redis.pipeline()
            pipe.hincrby(key, vote.value, 1)
            pipe.expire(key, DAY_COUNT_TTL_S)
            pipe.execute()

    def votes_by_day(self, days: Sequence[str]) -> dict[str, dict[Vote, int]]:
        pipe = self.redis.pipeline()
        for day in days:
            pipe.hgetall(keys.ARENA_VOTES_DAY_PREFIX + day)
        out: dict[str, dict[Vote, int]] = {}
        for day, raw in zip(days, pipe.execute()):
            out[day] = {Vote(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return out


class Arena:
    def __init__(self, store: BattleStore, generator: Generator, sink: ActionSink,
                 versions: Callable[[], Sequence[VersionInfo]], routing: Callable[[], RoutingTable | None],
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.generator = generator
        self.sink = sink
        self.versions = versions
        self.routing = routing
        self.rng = rng or random.SystemRandom()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="arena-answer")

    def pair(self, mode: str, first: str = "", second: str = "") -> tuple[str, str]:
        versions = self.versions()
        if mode == "named":
            return named_pair(first, second, versions)
        return default_pair(self.routing(), versions)

    def start(self, prompt: str, user_id: str, mode: str = "default", first: str = "", second: str = "") -> Battle:
        """Draw the sides, ask both versions at once, and keep the battle for its vote."""
        prompt = prompt.strip()
        if not prompt:
            raise ArenaError("type a question first")
        pair = list(self.pair(mode, first, second))
        self.rng.shuffle(pair)  # which version is Model A is random; the Responses' tags and the log record it
        battle_id = uuid.uuid4().hex
        futures = [
            self._pool.submit(self.generator.answer, prompt=prompt, version=version, user_id=user_id,
                              tags={"source": SOURCE_TAG, "battle_id": battle_id, "arena_side": side})
            for side, version in zip("AB", pair)
        ]
        a, b = (f.result() for f in futures)
        battle = Battle(battle_id, prompt, mode, a, b, user_id, int(time.time() * 1000))
        self.store.save(battle)
        log.info("battle %s: Model A = %s (%s), Model B = %s (%s), mode %s", battle_id, a.version, a.response_id,
                 b.version, b.response_id, mode)
        return battle

    def vote(self, battle_id: str, vote: Vote | str) -> VoteResult:
        """Record the battle's one vote and emit its actions; a second vote is refused and emits nothing."""
        vote = Vote(vote)
        battle = self.store.load(battle_id) if battle_id else None
        if battle is None:
            raise ArenaError("this battle is over or has expired: start a new round")
        earlier = self.store.claim_vote(battle_id, vote)
        if earlier is not None:
            return VoteResult(False, earlier, battle, 0)
        actions = vote_actions(battle, vote)
        try:
            if actions:
                self.sink.send_many(actions)
        except Exception as exc:
            # Nothing may be lost: free the battle so the person can vote again (same event ids, so no double count).
            self.store.release_vote(battle_id)
            raise ArenaError(f"the vote was not recorded ({' '.join(str(exc).split())[:200]}); vote again") from exc
        self.store.count_vote(vote, today_utc())
        log.info("battle %s: vote %s (A = %s, B = %s), %d event(s)", battle_id, vote.value, battle.a.version,
                 battle.b.version, len(actions))
        return VoteResult(True, vote, battle, len(actions))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["Arena", "ArenaError", "Answer", "Battle", "BattleStore", "Generator", "ActionSink", "Vote", "VoteResult",
           "VersionInfo", "vote_actions", "vote_event_id", "default_pair", "named_pair", "today_utc", "SOURCE_TAG"]
