"""The routing table: which model version each user is served (ARCHITECTURE.md, "Serving and routing").

The table lives in one Redis hash (`prefloop.keys.ROUTING`): the production version and, during a
rollout, one canary version with its traffic fraction. A user goes to the canary when
`bucket(user_id) < fraction × 10,000`, where the bucket is a stable hash of the user id mod 10,000:
a user keeps their version across requests (sticky), and a user who got the canary at 5% still gets
it at 20%, 50% and 100% (monotone). A request without a user id is assigned by a random draw.

The gateway, the SDK's `choose_model` and the rollout controller all use this module, so they agree.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from prefloop import keys

BUCKETS = 10_000


def user_bucket(user_id: str) -> int:
    """A number in [0, 10,000) fixed by `user_id` alone (the same in every process and language:
    the first 8 bytes of SHA-256 of the UTF-8 id, big-endian, mod 10,000)."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % BUCKETS


def canary_threshold(fraction: float) -> int:
    return round(max(0.0, min(1.0, fraction)) * BUCKETS)


def gets_canary(user_id: str | None, fraction: float, rng: random.Random | None = None) -> bool:
    """Whether `user_id` is routed to the canary at `fraction`; without an id, a fresh draw."""
    threshold = canary_threshold(fraction)
    if user_id is None or user_id == "":
        return (rng or random).randrange(BUCKETS) < threshold
    return user_bucket(user_id) < threshold


@dataclass(frozen=True)
class RoutingTable:
    production: str
    canary: str = ""
    canary_fraction: float = 0.0
    updated_ms: int = 0

    def version_for(self, user_id: str | None, rng: random.Random | None = None) -> str:
        if self.canary and self.canary_fraction > 0 and gets_canary(user_id, self.canary_fraction, rng):
            return self.canary
        return self.production

    def to_redis(self) -> dict[str, str]:
        return {"production": self.production, "canary": self.canary, "canary_fraction": repr(float(self.canary_fraction)),
                "updated_ms": str(self.updated_ms or int(time.time() * 1000))}

    @classmethod
    def from_redis(cls, raw: dict[Any, Any]) -> "RoutingTable | None":
        """The table from HGETALL's answer (bytes or str), or None when no production version is set."""
        data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
        if not data.get("production"):
            return None
        return cls(production=data["production"], canary=data.get("canary", ""),
                   canary_fraction=float(data.get("canary_fraction") or 0.0), updated_ms=int(data.get("updated_ms") or 0))


def read_table(redis_client: Any) -> RoutingTable | None:
    """The table from a synchronous redis-py client; None when none is set."""
    return RoutingTable.from_redis(redis_client.hgetall(keys.ROUTING))


async def read_table_async(redis_client: Any) -> RoutingTable | None:
    return RoutingTable.from_redis(await redis_client.hgetall(keys.ROUTING))


def set_production(redis_client: Any, version: str) -> None:
    """Point the table's production at `version` (the registry mirror); the canary fields stay."""
    redis_client.hset(keys.ROUTING, mapping={"production": version, "updated_ms": str(int(time.time() * 1000))})


def write_table(redis_client: Any, table: RoutingTable) -> None:
    """Replace the whole table at once (the rollout controller)."""
    redis_client.hset(keys.ROUTING, mapping=table.to_redis())


async def write_table_async(redis_client: Any, table: RoutingTable) -> None:
    await redis_client.hset(keys.ROUTING, mapping=table.to_redis())


@dataclass
class CachedTable:
    """The last table read from Redis, re-read at most every `max_age_s` (the gateway and the SDK).

    A failed read keeps the last table: with Redis down, users stay on the versions they had.
    """

    max_age_s: float = 1.0
    table: RoutingTable | None = None
    read_at: float = float("-inf")  # time.monotonic() of the last read attempt
    ok_at: float | None = None  # time.monotonic() of the last successful read
    error: str = ""  # why the last read failed; empty after a success

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.read_at >= self.max_age_s

    def succeeded(self, table: RoutingTable | None, now: float | None = None) -> None:
        """Record a read; None (no table in Redis) keeps the last table."""
        self.read_at = self.ok_at = time.monotonic() if now is None else now
        self.error = ""
        if table is not None:
            self.table = table

    def failed(self, exc: BaseException, now: float | None = None) -> None:
        self.read_at = time.monotonic() if now is None else now
        self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

    async def refresh(self, redis_client: Any, force: bool = False) -> RoutingTable | None:
        """Re-read the table when due (or `force`d); returns the table in force."""
        if force or self.due():
            try:
                self.succeeded(await read_table_async(redis_client))
            except Exception as exc:  # noqa: BLE001 - any Redis failure keeps the last table
                self.failed(exc)
        return self.table
