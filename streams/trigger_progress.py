"""The retraining trigger's progress, as `prefloop status` shows it (wired in by prefloop/cli.py)."""

from __future__ import annotations

import time
from typing import Any

from prefloop.keys import PAIRS_TOTAL, TRIGGER_LOCK, TRIGGER_STATE
from prefloop.settings import Settings
from streams.settings import StreamsSettings
from streams.trigger import Policy, State, cooldown_left_s, decide


def trigger_progress(settings: Settings, ss: StreamsSettings | None = None) -> dict[str, Any]:
    """Pairs since the last training, the thresholds, cooldown left and the lock holder (Redis + ClickHouse)."""
    import redis

    ss = ss or settings.section(StreamsSettings)
    policy = Policy.from_settings(ss)
    client = redis.Redis.from_url(settings.redis_dsn, socket_timeout=2)
    try:

        total = int(client.get(PAIRS_TOTAL) or 0)
        fields = {k.decode(): v.decode() for k, v in client.hgetall(TRIGGER_STATE).items()}
        holder = client.get(TRIGGER_LOCK)
        lock_ttl_ms = client.pttl(TRIGGER_LOCK) if holder else -2
    finally:
        client.close()
    state = State(pairs_total=total, pairs_at_last=int(fields.get("pairs_at_last", 0)),
                  last_request_ms=int(fields.get("last_request_ms", 0)), since_ms=int(fields.get("since_ms", 0)),
                  now_ms=int(time.time() * 1000))
    drift = None
    try:
        from prefloop.analytics.store import connect
        from streams.drift import latest_input_drift

        store = connect(settings)
        try:
            drift = latest_input_drift(store)
        finally:
            store.close()
    except Exception:  # the analytics service may be down; progress is still useful
        pass
    state.drift = drift
    reason = decide(policy, state)
    return {
        "pairs_total": total,
        "pairs_since_last_training": state.new_pairs,
        "pairs_needed": max(0, policy.new_pairs - state.new_pairs),
        "new_pairs_threshold": policy.new_pairs,
        "min_pairs": policy.min_pairs,
        "drift": drift,
        "drift_threshold": policy.drift_threshold,
        "staleness_s": round(state.staleness_s, 1),
        "staleness_threshold_s": policy.staleness_s,
        "cooldown_s": policy.cooldown_s,
        "cooldown_left_s": round(cooldown_left_s(policy, state), 1),
        "lock_holder": holder.decode() if holder else None,
        "lock_ttl_s": round(lock_ttl_ms / 1000, 1) if holder and lock_ttl_ms and lock_ttl_ms > 0 else None,
        "last_request_id": fields.get("last_request_id"),
        "last_snapshot_id": fields.get("snapshot_id"),
        "pending_request": bool(fields.get("pending")),
        "would_fire": reason.value if reason is not None and not holder else None,
    }
