-- Raw events, one row per event_id (the idempotency key): re-inserting the same event is harmless.
CREATE TABLE IF NOT EXISTS feedback_events (
    event_id         String,
    event_type       LowCardinality(String),          -- 'response' | 'action'
    occurred_at      DateTime64(3, 'UTC'),
    response_id      String,
    prompt_id        String,                          -- '' for actions whose response is not known yet
    model_version    LowCardinality(String),
    user_id          Nullable(String),
    kind             LowCardinality(String),          -- action kind, '' for responses
    rating           Nullable(UInt8),
    rejected_response_id Nullable(String),
    prompt_chars     UInt32,
    response_chars   UInt32,
    tags             Map(String, String),
    source_partition UInt32,
    source_offset    UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (event_type, event_id);

-- Deduplicated preference pairs; read with FINAL or argMax.
CREATE TABLE IF NOT EXISTS preference_pairs (
    pair_id                String,
    prompt_id              String,
    prompt                 String,
    chosen                 String,
    rejected               String,
    chosen_response_id     String,
    rejected_response_id   Nullable(String),
    chosen_model_version   LowCardinality(String),
    rejected_model_version LowCardinality(String),
    source                 LowCardinality(String),
    weight                 Float64,
    created_at             DateTime64(3, 'UTC'),
    ingested_at            DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY pair_id;

-- Mirror of the on-disk model registry; the newest row per version wins.
CREATE TABLE IF NOT EXISTS model_versions (
    version          String,
    parent_version   String,
    status           LowCardinality(String),
    adapter_path     String,
    snapshot_id      String,
    metrics          Map(String, Float64),
    created_at       DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY version;

-- Every event published on models.promotions.
CREATE TABLE IF NOT EXISTS promotions (
    event_id          String,
    occurred_at       DateTime64(3, 'UTC'),
    candidate_version String,
    baseline_version  String,
    decision          LowCardinality(String),
    traffic_fraction  Float64,
    metrics           Map(String, Float64),
    reason            String
) ENGINE = ReplacingMergeTree
ORDER BY event_id;
