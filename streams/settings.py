"""Settings of the streams workers: `[streams]` in prefloop.toml, `PREFLOOP_STREAMS_<FIELD>` in the environment.

Load with `load_settings().section(StreamsSettings, "streams")`. Every field says its
default and why; constructors refuse values that cannot work and say what was given.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from prefloop.errors import ConfigError


@dataclass
class StreamsSettings:
    # --- Faust application -------------------------------------------------------------
    # Consumer group and prefix of internal topics (changelogs, repartition topics). Workers
    # with the same id share partitions; change it only to run two independent pipelines.
    app_id: str = "prefloop-streams"
    # Worker identity used for its data dir (home/streams/<worker_id>) and logs; empty means
    # "w<pid>", unique per process so several workers on one host never share a directory.
    worker_id: str = ""
    # Faust's web server (stats pages). Off by default: several workers on one host would
    # fight over a port, and nothing in prefloop reads it. When on, it binds port 0 (any free port).
    web_enabled: bool = False
    # Standby replicas of each table on other workers. 0 keeps CPU for processing on small
    # machines; a worker taking over a partition then replays its (compacted) changelog.
    standby_replicas: int = 0
    # How often Faust commits consumed offsets (seconds). Shorter means less replay after a
    # crash (replays are deduplicated, so this is a cost knob, not a correctness knob).
    commit_interval_s: float = 1.0
    # Faust events buffered per agent stream before fetching pauses; bounds memory when the
    # sinks push back. An event is a fetched batch of input records or an internal bundle.
    stream_buffer_maxsize: int = 64
    # Producer linger (ms): small batches trade a little latency for far fewer requests.
    producer_linger_ms: int = 5
    # Largest producer batch per partition (bytes); at most one such batch per partition
    # waits in memory. Kafka's 16 KiB default splits the pairs and changelog values of one
    # stage batch into many small requests, each costing the worker and the broker CPU.
    # Keep it below the broker's message.max.bytes (1 MiB by default).
    producer_batch_bytes: int = 256 * 1024
    # Consumer-group session timeout (seconds): how long a killed worker's partitions stay
    # unassigned before the others take them over. Faust's 60 s default is long for local use.
    session_timeout_s: float = 10.0
    # How long the worker rides out an unreachable Redis (seconds): every Redis command is
    # retried with back-off meanwhile and the stage waiting for it holds its batch (the
    # consumer stops fetching; nothing is dropped). Longer outages end the worker (exit 70),
    # which `prefloop up`'s watchdog or the container's restart policy starts again. Keep it
    # below Faust's broker_max_poll_interval (1000 s), past which the group drops a held worker.
    redis_outage_s: float = 600.0
    # Log level of the worker (DEBUG, INFO, WARNING, ...), and how often it logs its counters.
    log_level: str = "INFO"
    stats_interval_s: float = 30.0

    # --- Join ----------------------------------------------------------------------------------
    # How long an action waits for its response before it goes to the DLQ as an expired
    # orphan. Apps normally emit the response first; 10 minutes covers retries and lag.
    # Must exceed the time a crashed worker's partitions go unprocessed (2 x session_timeout_s);
    # the clock also restarts when a worker takes over partitions, and stops while any worker is backlogged.
    orphan_ttl_s: float = 600.0
    # How often held actions are checked against newly arrived responses and the TTL.
    sweep_interval_s: float = 0.25
    # How long the response_id -> prompt_id index is kept in Redis (seconds). Actions on
    # responses older than this are unknown references. 14 days covers late feedback.
    index_ttl_s: float = 14 * 24 * 3600.0
    # Responses kept per prompt group; older ones are evicted first. Bounds state for
    # prompts that get regenerated many times (an action on an evicted one is an unknown reference).
    max_group_responses: int = 32
    # When this many responses wait unread on a worker, no worker expires held actions (their
    # response may be in that backlog). Fetching is never paused for it: pausing partitions in
    # Faust 0.15 drops records already fetched for them.
    backlog_events: int = 5000
    # In catch-up, do not fetch actions that are ahead, in record time, of the responses still
    # to be processed (streams/alignment.py): they would be held and released one by one.
    event_time_alignment: bool = True
    # Votes/ratings remembered per response (one per user). Beyond this, the label of a
    # response is settled and new votes only count in analytics.
    max_voters_per_response: int = 1000
    # Action event ids remembered per prompt group for event-level dedup of producer retries.
    seen_events_per_group: int = 512

    # --- Pair rules ----------------------------------------------------------------------------
    # THUMBS: each response takes part in at most this many (up, down) pairs.
    thumbs_cap: int = 4
    # RATING: two responses pair when their mean ratings differ by at least this much (1..5 scale).
    rating_gap: float = 2.0
    # Weights put on each pair source (EDIT is the strongest signal, THUMBS the weakest).
    weight_edit: float = 1.0
    weight_choice: float = 1.0
    weight_thumbs: float = 0.5
    weight_rating: float = 0.75

    # --- Quality rules -------------------------------------------------------------------------
    # Pairs whose chosen and rejected texts are at least this similar (0..1, normalised
    # Levenshtein similarity after whitespace/case folding) are near-duplicates and dropped.
    similarity_threshold: float = 0.95
    # Chosen or rejected texts shorter than this (after stripping) are "tiny" and dropped.
    min_chars: int = 2

    # --- Batching --------------------------------------------------------------------------------
    # Records per fetch of the input topics (Kafka's max_poll_records). Each partition's share
    # of a fetch reaches the join stages as one batch (streams/batching.py).
    batch_max: int = 2000
    # Faust events (fetched batches or bundles) per processing batch of a stage, and how long
    # a batch may wait to fill (seconds). Larger batches amortise Redis/Kafka round trips;
    # `batch_s` bounds latency.
    batch_events: int = 16
    batch_s: float = 0.05
    # ClickHouse sink: rows per insert and the longest a row waits (seconds). ClickHouse wants
    # few large inserts; the time bound keeps dashboards fresh.
    sink_batch_rows: int = 20000
    sink_batch_s: float = 1.0
    # Retry delay when the analytics store refuses or is unreachable (seconds, doubles up to 30).
    # The sink never drops rows: it blocks (backpressure) until the store takes them.
    sink_retry_s: float = 0.5
    # Partitions of the internal analytics topic feeding the sink.
    analytics_partitions: int = 4

    # --- Windows and drift -----------------------------------------------------------------------
    # Drift window (seconds): drift_metrics gets one row per window and feature.
    window_s: int = 3600
    # How often the drift job recomputes the current and last window (seconds).
    drift_interval_s: float = 60.0
    # Reference period before the last training request used as the drift baseline (seconds).
    reference_s: int = 24 * 3600
    # Buckets below this many samples in a window are merged; windows with fewer samples are skipped.
    drift_min_samples: int = 50
    # Tag values per tag key tracked individually; the rest are folded into "(other)".
    drift_top_values: int = 20

    # --- Retraining trigger ---------------------------------------------------------------------
    # Fire when at least this many new unique pairs exist since the last training.
    trigger_new_pairs: int = 1000
    # Fire on drift above this (max PSI of input features in the latest window) ...
    trigger_drift_threshold: float = 0.25
    # ... or on staleness above this many seconds since the last training (default 7 days) ...
    trigger_staleness_s: float = 7 * 24 * 3600.0
    # ... provided at least this many new pairs exist (drift and staleness alone do not fire).
    trigger_min_pairs: int = 100
    # No two requests within this many seconds, whatever the reason.
    trigger_cooldown_s: float = 3600.0
    # How often each worker checks the policy (seconds).
    trigger_check_s: float = 5.0
    # Safety expiry of the trigger lock if the trainer never releases it (seconds).
    trigger_lock_ttl_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        positive = (
            "orphan_ttl_s", "sweep_interval_s", "index_ttl_s", "max_group_responses", "max_voters_per_response",
            "seen_events_per_group", "thumbs_cap", "batch_max", "batch_events", "batch_s", "sink_batch_rows", "sink_batch_s",
            "sink_retry_s", "analytics_partitions", "window_s", "drift_interval_s", "reference_s", "commit_interval_s",
            "stream_buffer_maxsize", "producer_batch_bytes", "trigger_new_pairs", "session_timeout_s", "redis_outage_s", "stats_interval_s", "trigger_check_s", "trigger_lock_ttl_s", "drift_top_values",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f'"{name}" should be greater than zero, got {getattr(self, name)}')
        non_negative = ("backlog_events", "standby_replicas", "producer_linger_ms", "rating_gap", "min_chars", "trigger_min_pairs",
                        "trigger_cooldown_s", "trigger_staleness_s", "trigger_drift_threshold", "drift_min_samples")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f'"{name}" should be zero or more, got {getattr(self, name)}')
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ConfigError(f'"similarity_threshold" should be in (0, 1], got {self.similarity_threshold}')
        if self.orphan_ttl_s < 2 * self.session_timeout_s:
            raise ConfigError(
                f'"orphan_ttl_s" should be at least twice "session_timeout_s" ({2 * self.session_timeout_s:g}), got '
                f"{self.orphan_ttl_s:g}: a response on a crashed worker's partitions waits that long for a new owner"
            )
        if not self.app_id.strip():
            raise ConfigError('"app_id" should not be empty')

    def describe(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def load_streams_settings(settings=None) -> StreamsSettings:
    """The `[streams]` section of the same config file and environment as `settings`."""
    from prefloop.settings import load_settings

    return (settings or load_settings()).section(StreamsSettings, "streams")
