-- Serving measurements on responses (Response schema: latency_ms, error), for per-version error
-- rates and latency percentiles; NULL for responses whose producer did not measure them.
ALTER TABLE feedback_events ADD COLUMN IF NOT EXISTS latency_ms Nullable(UInt32) AFTER source_offset;
ALTER TABLE feedback_events ADD COLUMN IF NOT EXISTS error Nullable(String) AFTER latency_ms
