"""Every Redis key prefloop uses, declared once (ARCHITECTURE.md: "Redis key names are declared in one module").

A name ending in ":" is a prefix: the key is the prefix plus the id named in its comment.
Who writes each key is in its comment; readers import the name from here.
"""

# --- streams workers ---------------------------------------------------------------------------
INDEX_PREFIX = "prefloop:index:"  # + response_id -> "prompt_id\tpartition" of the responses topic (group stage)
PAIR_IDS_PREFIX = "prefloop:pairs:ids:"  # + pairs partition -> SET of pair_ids published there (publish stage)
PAIR_WM_PREFIX = "prefloop:pairs:wm:"  # + pairs partition -> offset below which PAIR_IDS holds every id
PAIRS_TOTAL = "prefloop:pairs:total"  # unique pairs ever published
STREAMS_BUSY = "prefloop:streams:busy"  # set (short expiry) while any stage takes full batches: no TTL expiry
STREAMS_BACKLOG = "prefloop:streams:backlog"  # set (short expiry) while responses lag: no TTL expiry
DRIFT_LOCK = "prefloop:drift:lock"  # one worker at a time recomputes drift

# --- retraining trigger (streams) and trainer --------------------------------------------------
TRIGGER_LOCK = "prefloop:trigger:lock"  # SET NX by the trigger when it publishes a request; deleted by the trainer
TRIGGER_STATE = "prefloop:trigger:state"  # hash: pairs_at_last, last_request_ms, last_request_id, snapshot_id, offsets, since_ms, pending

# --- model registry, routing and rollout -------------------------------------------------------
# Routing table (hash, prefloop/routing.py): production, canary, canary_fraction, updated_ms. Written by
# the registry mirror (production) and the rollout controller (canary, fraction); read by the gateway,
# the SDK's choose_model and the web app.
ROUTING = "prefloop:routing"
ROLLOUT_STATE = "prefloop:rollout:state"  # the controller's persisted rollout record (JSON)
ROLLOUT_LEASE = "prefloop:rollout:lease"  # one rollout controller acts at a time
ROLLOUT_PAUSED = "prefloop:rollout:paused"  # set by `prefloop rollout pause` (JSON: since_ms, reason); deleted by resume
# List of operators' commands (JSON: id, kind promote|rollback, version, to_fraction, reason), pushed by
# `prefloop models promote|rollback`, applied and popped in order by the lease holder of ROLLOUT_LEASE.
ROLLOUT_COMMANDS = "prefloop:rollout:commands"
EVALUATOR_LEASE = "prefloop:evaluator:lease"  # one evaluator evaluates a given result at a time

# --- web app arena (prefloop/web/arena.py) -----------------------------------------------------------
ARENA_BATTLE_PREFIX = "prefloop:arena:battle:"  # + battle_id -> the battle (JSON: prompt, each side's version and response); expires
# + battle_id -> the vote (A, B, tie, both_bad), SET NX by the web app before it emits anything: one vote per battle,
# whatever the browser sends twice; deleted again only when emitting the vote's events failed (so it can be retried).
ARENA_VOTE_PREFIX = "prefloop:arena:vote:"
ARENA_VOTES_DAY_PREFIX = "prefloop:arena:votes:"  # + UTC date YYYY-MM-DD -> hash vote -> battles voted so (ties leave no event)
