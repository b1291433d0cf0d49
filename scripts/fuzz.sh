#!/usr/bin/env bash
# A bigger fuzz run than CI's: PREFLOOP_FUZZ_INPUTS bad Kafka records (default 100000) and an eighth as
# many bad HTTP requests, mixed with good events, against services the test session starts (temporary
# home, free ports). Prints the counts by kind, the worker's peak RSS and the collector's /healthz times,
# and writes them to fuzz-report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFLOOP_FUZZ_INPUTS=${PREFLOOP_FUZZ_INPUTS:-100000}
export PREFLOOP_FUZZ_REPORT=${PREFLOOP_FUZZ_REPORT:-$PWD/fuzz-report.json}
rm -f "$PREFLOOP_FUZZ_REPORT"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m pytest tests/streams/test_fuzz.py -q -s -p no:cacheprovider
echo "report: $PREFLOOP_FUZZ_REPORT"
