"""The gateway's copy of the routing table (prefloop/routing.py), refreshed in the background.

Requests never wait on Redis: they read the cached table, which a background task re-reads every
`routing_refresh_s`. With Redis down the last table stays in force and /health says so; before any
table was read (or while Redis has none), the registry's production version serves everyone. When
Redis answers but holds no table, the gateway writes the registry's production into it, so the
SDK's `choose_model` and the gateway agree from the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

import redis.asyncio as aioredis

from prefloop import routing
from prefloop.routing import CachedTable, RoutingTable

log = logging.getLogger("prefloop.serve")


class RoutingCache:
    def __init__(self, redis_dsn: str, refresh_s: float, timeout_s: float, fallback: Callable[[], str | None]) -> None:
        self.redis_dsn = redis_dsn
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.fallback = fallback
        self.cache = CachedTable(max_age_s=refresh_s)
        self._redis: aioredis.Redis | None = None
        self._task: asyncio.Task | None = None
        self._was_down = False

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.redis_dsn, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="prefloop-serve-routing")

    async def refresh(self) -> None:
        assert self._redis is not None
        await self.cache.refresh(self._redis, force=True)
        if self.cache.error:
            if not self._was_down:
                log.warning("routing table unreadable (%s); serving from the last table read (or the registry's production)", self.cache.error)
            self._was_down = True
            return
        if self._was_down:
            log.info("routing table readable again")
            self._was_down = False
        if self.cache.table is None:
            production = self.fallback()
            if production:
                with contextlib.suppress(Exception):  # best effort: the registry mirror owns this field
                    await routing.write_table_async(self._redis, RoutingTable(production=production))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def table(self) -> RoutingTable | None:
        if self.cache.table is not None:
            return self.cache.table
        production = self.fallback()
        return RoutingTable(production=production) if production else None

    def route(self, user_id: str | None) -> tuple[str, str] | None:
        """(version, "canary" | "production") for `user_id`, or None when nothing is servable yet."""
        table = self.table()
        if table is None:
            return None
        version = table.version_for(user_id)
        return version, "canary" if version == table.canary and version != table.production else "production"

    def status(self) -> dict[str, object]:
        table = self.table()
        now = time.monotonic()
        return {
            "source": "redis" if self.cache.table is not None else "registry",
            "redis": "down" if self.cache.error else "ok",
            "error": self.cache.error,
            "serving_last_table": bool(self.cache.error) and self.cache.table is not None,
            "seconds_since_read": round(now - self.cache.ok_at, 1) if self.cache.ok_at is not None else None,
            "production": table.production if table else None,
            "canary": table.canary if table else "",
            "canary_fraction": table.canary_fraction if table else 0.0,
        }

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()
