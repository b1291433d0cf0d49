"""Settings of the streams workers: `[streams]` in prefloop.toml, `PREFLOOP_STREAMS_<FIELD>` in the environment.

Load with `load_settings().section(StreamsSettings)`. Every field says its default and why;
constructors refuse values that cannot work and say what was given. The pair rules
(streams/pairing/), the quality rules and the trigger's policy read their knobs from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting


@dataclass
class StreamsSettings:
    SECTION: ClassVar[str] = "streams"

    # --- Faust application -------------------------------------------------------------
    app_id: str = setting(
        "prefloop-streams",
        help="Consumer group and prefix of internal topics (changelogs, repartition topics). Workers with the same id "
             "share partitions; change it only to run two independent pipelines.")
    worker_id: str = setting(
        "", help="Worker identity used for its data dir (home/streams/<worker_id>) and logs; empty means \"w<pid>\", "
                 "unique per process so several workers on one host never share a directory.")
    web_enabled: bool = setting(
        False, help="Faust's web server (stats pages). Off by default: several workers on one host would fight over a "
                    "port, and nothing in prefloop reads it. When on, it binds any free port.")
    standby_replicas: int = setting(
        0, ge=0, help="Standby replicas of each table on other workers. 0 keeps CPU for processing on small machines; a "
                      "worker taking over a partition then replays its (compacted) changelog.")
    commit_interval_s: float = setting(
        1.0, gt=0, help="How often Faust commits consumed offsets (seconds). Shorter means less replay after a crash "
                        "(replays are deduplicated, so this is a cost knob, not a correctness knob).")
    stream_buffer_maxsize: int = setting(
        64, gt=0, help="Faust events buffered per agent stream before fetching pauses; bounds memory when the sinks push "
                       "back. An event is a fetched batch of input records or an internal bundle.")
    producer_linger_ms: int = setting(
        5, ge=0, help="Producer linger (ms): small batches trade a little latency for far fewer requests.")
    producer_batch_bytes: int = setting(
        256 * 1024, gt=0,
        help="Largest producer batch per partition (bytes); at most one such batch per partition waits in memory. "
             "Kafka's 16 KiB default splits the pairs and changelog values of one stage batch into many small "
             "requests, each costing the worker and the broker CPU. Keep it below the broker's message.max.bytes "
             "(1 MiB by default).")
    session_timeout_s: float = setting(
        10.0, gt=0, help="Consumer-group session timeout (seconds): how long a killed worker's partitions stay "
                         "unassigned before the others take them over. Faust's 60 s default is long for local use.")
    redis_outage_s: float = setting(
        600.0, gt=0,
        help="How long the worker rides out an unreachable Redis (seconds): every Redis command is retried with "
             "back-off meanwhile and the stage waiting for it holds its batch (the consumer stops fetching; nothing is "
             "dropped). Longer outages end the worker (exit 70), which `prefloop up`'s watchdog or the container's "
             "restart policy starts again. Keep it below Faust's broker_max_poll_interval (1000 s), past which the "
             "group drops a held worker.")
    log_level: str = setting("INFO", help="Log level of the worker (DEBUG, INFO, WARNING, ...).")
    stats_interval_s: float = setting(30.0, gt=0, help="How often the worker logs its counters (seconds).")

    # --- Join ----------------------------------------------------------------------------------
    orphan_ttl_s: float = setting(
        600.0, gt=0,
        help="How long an action waits for its response before it goes to the DLQ as an expired orphan. Apps normally "
             "emit the response first; 10 minutes covers retries and lag. Must be at least twice session_timeout_s "
             "(a crashed worker's partitions go unprocessed that long); the clock also restarts when a worker takes "
             "over partitions, and stops while any worker is backlogged.")
    sweep_interval_s: float = setting(
        0.25, gt=0, help="How often held actions are checked against newly arrived responses and the TTL (seconds).")
    index_ttl_s: float = setting(
        14 * 24 * 3600.0, gt=0,
        help="How long the response_id -> prompt_id index is kept in Redis (seconds). Actions on responses older than "
             "this are unknown references. 14 days covers late feedback.")
    max_group_responses: int = setting(
        32, gt=0, help="Responses kept per prompt group; older ones are evicted first. Bounds state for prompts that "
                       "get regenerated many times (an action on an evicted one is an unknown reference).")
    backlog_events: int = setting(
        5000, ge=0, help="When this many responses wait unread on a worker, no worker expires held actions (their "
                         "response may be in that backlog). Fetching is never paused for it: pausing partitions in "
                         "Faust 0.15 drops records already fetched for them. 0 turns the check off.")
    event_time_alignment: bool = setting(
        True, help="In catch-up, do not fetch actions that are ahead, in record time, of the responses still to be "
                   "processed (streams/alignment.py): they would be held and released one by one.")
    max_voters_per_response: int = setting(
        1000, gt=0, help="Votes/ratings remembered per response (one per user). Beyond this, the label of a response "
                         "is settled and new votes only count in analytics.")
    seen_events_per_group: int = setting(
        512, gt=0, help="Action event ids remembered per prompt group for event-level dedup of producer retries.")

    # --- Pair rules ----------------------------------------------------------------------------
    thumbs_cap: int = setting(4, gt=0, help="THUMBS: each response takes part in at most this many (up, down) pairs.")
    rating_gap: float = setting(
        2.0, ge=0, help="RATING: two responses pair when their mean ratings differ by at least this much (1..5 scale).")
    weight_edit: float = setting(1.0, help="Weight of EDIT pairs (the strongest signal).")
    weight_choice: float = setting(1.0, help="Weight of CHOICE pairs.")
    weight_thumbs: float = setting(0.5, help="Weight of THUMBS pairs (the weakest signal).")
    weight_rating: float = setting(0.75, help="Weight of RATING pairs.")

    # --- Quality rules -------------------------------------------------------------------------
    similarity_threshold: float = setting(
        0.95, gt=0, le=1,
        help="Pairs whose chosen and rejected texts are at least this similar (normalised Levenshtein similarity "
             "after whitespace/case folding) are near-duplicates and dropped.")
    min_chars: int = setting(
        2, ge=0, help="Chosen or rejected texts shorter than this (after stripping) are \"tiny\" and dropped.")

    # --- Batching --------------------------------------------------------------------------------
    batch_max: int = setting(
        2000, gt=0, help="Records per fetch of the input topics (Kafka's max_poll_records). Each partition's share of "
                         "a fetch reaches the join stages as one batch (streams/batching.py).")
    batch_events: int = setting(
        16, gt=0, help="Faust events (fetched batches or bundles) per processing batch of a stage. Larger batches "
                       "amortise Redis/Kafka round trips.")
    batch_s: float = setting(0.05, gt=0, help="How long a stage's batch may wait to fill (seconds); bounds latency.")
    sink_batch_rows: int = setting(
        20000, gt=0, help="ClickHouse sink: rows per insert. ClickHouse wants few large inserts.")
    sink_batch_s: float = setting(
        1.0, gt=0, help="ClickHouse sink: the longest a row waits for its insert (seconds); keeps dashboards fresh.")
    sink_retry_s: float = setting(
        0.5, gt=0, help="Retry delay when the analytics store refuses or is unreachable (seconds, doubles up to 30). "
                        "The sink never drops rows: it blocks (backpressure) until the store takes them.")
    analytics_partitions: int = setting(4, gt=0, help="Partitions of the internal analytics topic feeding the sink.")

    # --- Windows and drift -----------------------------------------------------------------------
    window_s: int = setting(3600, gt=0, help="Drift window (seconds): drift_metrics gets one row per window and feature.")
    drift_interval_s: float = setting(
        60.0, gt=0, help="How often the drift job recomputes the current and last window (seconds).")
    reference_s: int = setting(
        24 * 3600, gt=0, help="Reference period before the last training request used as the drift baseline (seconds).")
    drift_min_samples: int = setting(
        50, ge=0, help="Buckets below this many samples in a window are merged; windows with fewer samples are skipped.")
    drift_top_values: int = setting(
        20, gt=0, help="Tag values per tag key tracked individually; the rest are folded into \"(other)\".")

    # --- Retraining trigger ---------------------------------------------------------------------
    trigger_new_pairs: int = setting(
        1000, gt=0, help="Fire when at least this many new unique pairs exist since the last training.")
    trigger_drift_threshold: float = setting(
        0.25, ge=0, help="Fire on drift above this (max PSI of input features in the latest window), given "
                         "trigger_min_pairs new pairs.")
    trigger_staleness_s: float = setting(
        7 * 24 * 3600.0, ge=0, help="Fire on staleness above this many seconds since the last training (default 7 "
                                    "days), given trigger_min_pairs new pairs.")
    trigger_min_pairs: int = setting(
        100, ge=0, help="New pairs drift and staleness need before they fire (alone they do not).")
    trigger_cooldown_s: float = setting(
        3600.0, ge=0, help="No two training requests within this many seconds, whatever the reason.")
    trigger_check_s: float = setting(5.0, gt=0, help="How often each worker checks the trigger policy (seconds).")
    trigger_lock_ttl_s: float = setting(
        6 * 3600.0, gt=0, help="Safety expiry of the trigger lock if the trainer never releases it (seconds).")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.orphan_ttl_s < 2 * self.session_timeout_s:
            raise ConfigError(
                f'"orphan_ttl_s" should be at least twice "session_timeout_s" ({2 * self.session_timeout_s:g}), got '
                f"{self.orphan_ttl_s:g}: a response on a crashed worker's partitions waits that long for a new owner"
            )
        if not self.app_id.strip():
            raise ConfigError('"app_id" should not be empty')
