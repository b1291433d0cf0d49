#!/usr/bin/env bash
# The main job on the embedded default: start the services, emit example feedback, and read
# the resulting events and preference pairs back from the analytics store.
set -euo pipefail
cd "$(dirname "$0")/.."
prefloop=.venv/bin/prefloop

$prefloop up
$prefloop emit examples/feedback.jsonl
want_events=$(wc -l < examples/feedback.jsonl)
echo "waiting for the streams worker to process $want_events events…"
for _ in $(seq 1 60); do
  n=$($prefloop sql "SELECT count() FROM feedback_events FINAL" --format tsv | tail -n 1)
  [ "${n:-0}" -ge "$want_events" ] && break
  sleep 1
done
$prefloop sql "SELECT event_type, kind, count() AS events FROM feedback_events FINAL GROUP BY event_type, kind ORDER BY event_type, kind"
$prefloop sql "SELECT source, left(prompt, 40) AS prompt, left(chosen, 30) AS chosen, left(rejected, 30) AS rejected FROM preference_pairs FINAL ORDER BY source"
$prefloop status
echo "smoke run done; \`make down\` stops the services (data is kept under .prefloop/)"
