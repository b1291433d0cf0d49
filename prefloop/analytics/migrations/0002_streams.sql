-- Tables written by the streams workers (streams/). Every fact table is a ReplacingMergeTree
-- keyed by the event that produced the row, so a batch replayed after a crash replaces rows
-- instead of adding them. Aggregates (win_rates) are views over the facts, read with FINAL.

-- One row per action once it is joined with its response: the response's model version,
-- the other response's version for CHOICE, and the normalised edit distance for EDIT.
CREATE TABLE IF NOT EXISTS action_facts (
    event_id               String,
    occurred_at            DateTime64(3, 'UTC'),
    kind                   LowCardinality(String),
    response_id            String,
    prompt_id              String,
    model_version          LowCardinality(String),
    user_id                Nullable(String),
    rating                 Nullable(UInt8),
    rejected_response_id   Nullable(String),
    rejected_model_version LowCardinality(String),
    edit_distance          Nullable(Float64),
    prompt_chars           UInt32,
    response_chars         UInt32,
    ingested_at            DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY event_id;

-- Pairs a rule proposed and a quality rule dropped: one row per (reason, action, pair).
CREATE TABLE IF NOT EXISTS pair_drops (
    pair_id     String,
    event_id    String,
    prompt_id   String,
    source      LowCardinality(String),
    reason      LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (reason, event_id, pair_id);

-- Drift per window and feature. kind 'input': metric 'psi' or 'js' of a feature's distribution
-- against the reference profile. kind 'preference': metric 'delta' = current - baseline of the
-- production version's thumbs-up rate or win rate. Recomputing a window replaces its rows.
CREATE TABLE IF NOT EXISTS drift_metrics (
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    kind          LowCardinality(String),
    feature       String,
    metric        LowCardinality(String),
    model_version LowCardinality(String),
    value         Float64,
    current       Nullable(Float64),
    baseline      Nullable(Float64),
    samples       UInt64,
    reference     String,
    computed_at   DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (window_start, kind, feature, metric, model_version);

-- Reference profile of the inputs a training run saw: bucket shares per feature.
CREATE TABLE IF NOT EXISTS drift_reference (
    reference   String,
    feature     String,
    bucket      String,
    share       Float64,
    samples     UInt64,
    created_at  DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(created_at)
ORDER BY (reference, feature, bucket);

-- Every TrainingRequest the trigger published.
CREATE TABLE IF NOT EXISTS training_requests (
    request_id  String,
    occurred_at DateTime64(3, 'UTC'),
    snapshot_id String,
    reason      LowCardinality(String),
    pair_count  UInt64,
    metrics     Map(String, Float64),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY request_id;

-- Win rates per model version and hour. wins: CHOICE events whose chosen response came from
-- this version and the other from another version. losses: the reverse. ties: CHOICE events
-- between two responses of this same version. win_rate = wins / (wins + losses).
CREATE VIEW IF NOT EXISTS win_rates AS
SELECT
    window_start,
    window_start + INTERVAL 1 HOUR AS window_end,
    mv AS model_version,
    sum(w) AS wins,
    sum(l) AS losses,
    sum(t) AS ties,
    if(sum(w) + sum(l) > 0, sum(w) / (sum(w) + sum(l)), NULL) AS win_rate,
    sum(up) AS thumbs_up,
    sum(down) AS thumbs_down,
    if(sum(up) + sum(down) > 0, sum(up) / (sum(up) + sum(down)), NULL) AS thumbs_up_rate,
    if(sum(nr) > 0, sum(rs) / sum(nr), NULL) AS mean_rating,
    sum(nr) AS ratings,
    sum(ne) AS edits,
    sum(nresp) AS responses,
    if(sum(nresp) > 0, sum(ne) / sum(nresp), NULL) AS edit_rate,
    if(sum(ne) > 0, sum(ed) / sum(ne), NULL) AS mean_edit_distance
FROM
(
    SELECT
        toStartOfHour(occurred_at) AS window_start,
        toString(model_version) AS mv,
        toUInt64(countIf(kind = 'CHOICE' AND rejected_model_version != model_version)) AS w,
        toUInt64(0) AS l,
        toUInt64(countIf(kind = 'CHOICE' AND rejected_model_version = model_version)) AS t,
        toUInt64(countIf(kind = 'THUMBS_UP')) AS up,
        toUInt64(countIf(kind = 'THUMBS_DOWN')) AS down,
        toFloat64(sumIf(ifNull(rating, 0), kind = 'RATING')) AS rs,
        toUInt64(countIf(kind = 'RATING')) AS nr,
        toUInt64(countIf(kind = 'EDIT')) AS ne,
        toFloat64(sumIf(ifNull(edit_distance, 0), kind = 'EDIT')) AS ed,
        toUInt64(0) AS nresp
    FROM action_facts FINAL
    GROUP BY window_start, mv
    UNION ALL
    SELECT
        toStartOfHour(occurred_at) AS window_start,
        toString(rejected_model_version) AS mv,
        toUInt64(0), toUInt64(count()), toUInt64(0), toUInt64(0), toUInt64(0),
        toFloat64(0), toUInt64(0), toUInt64(0), toFloat64(0), toUInt64(0)
    FROM action_facts FINAL
    WHERE kind = 'CHOICE' AND rejected_model_version != model_version
    GROUP BY window_start, mv
    UNION ALL
    SELECT
        toStartOfHour(occurred_at) AS window_start,
        toString(model_version) AS mv,
        toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0), toUInt64(0),
        toFloat64(0), toUInt64(0), toUInt64(0), toFloat64(0), toUInt64(count())
    FROM feedback_events FINAL
    WHERE event_type = 'response'
    GROUP BY window_start, mv
)
GROUP BY window_start, mv;
