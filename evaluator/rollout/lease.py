"""One controller acts at a time: a lease in Redis (`prefloop.keys.ROLLOUT_LEASE`), and writes fenced by it.

The holder sets the key to its owner id with a time-to-live and renews it every poll; another
controller waits until the key lapses (a holder that died or stalled for `ttl_s`). Every write that
changes what users get — the rollout record, the routing table — is a Lua script that first checks
the caller still holds the lease, atomically, so a holder that lost its lease while stalled cannot
overwrite its successor's work.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from prefloop import keys
from prefloop.routing import RoutingTable

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS: lease, state, commands. ARGV: owner, state JSON, "1" to also pop the command at the head.
_WRITE_STATE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('set', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  redis.call('lpop', KEYS[3])
end
return 1
"""
# KEYS: lease, routing hash. ARGV: owner, then field, value pairs.
_WRITE_ROUTING = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('hset', KEYS[2], unpack(ARGV, 2))
return 1
"""


class LeaseLost(Exception):
    """This controller no longer holds the lease: another one acts now. Not a user error."""


def new_owner_id(role: str = "controller") -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, redis_client: Any, owner: str, ttl_s: float) -> None:
        self.redis = redis_client
        self.owner = owner
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._renew = redis_client.register_script(_RENEW)
        self._release = redis_client.register_script(_RELEASE)
        self._write_state = redis_client.register_script(_WRITE_STATE)
        self._write_routing = redis_client.register_script(_WRITE_ROUTING)

    def acquire(self) -> bool:
        """Take the lease if it is free, or renew it if this owner holds it. True when held."""
        if self.redis.set(keys.ROLLOUT_LEASE, self.owner, nx=True, px=self.ttl_ms):
            return True
        return bool(self._renew(keys=[keys.ROLLOUT_LEASE], args=[self.owner, self.ttl_ms]))

    def holder(self) -> str | None:
        raw = self.redis.get(keys.ROLLOUT_LEASE)
        return raw.decode() if isinstance(raw, bytes) else raw

    def release(self) -> None:
        self._release(keys=[keys.ROLLOUT_LEASE], args=[self.owner])

    def write_state(self, state_json: str, pop_command: bool = False) -> None:
        """Replace the rollout record (and pop the command just applied), only while holding the lease."""
        done = self._write_state(keys=[keys.ROLLOUT_LEASE, keys.ROLLOUT_STATE, keys.ROLLOUT_COMMANDS],
                                 args=[self.owner, state_json, "1" if pop_command else "0"])
        if not done:
            raise LeaseLost(f"{self.owner} lost the rollout lease; the record was not written")

    def write_routing(self, table: RoutingTable) -> None:
        """Replace the routing table, only while holding the lease."""
        flat = [item for pair in table.to_redis().items() for item in pair]
        if not self._write_routing(keys=[keys.ROLLOUT_LEASE, keys.ROUTING], args=[self.owner, *flat]):
            raise LeaseLost(f"{self.owner} lost the rollout lease; the routing table was not written")
