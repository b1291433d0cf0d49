# The two commands of the README. Each runs the idempotent set-up first.
.PHONY: setup smoke test demo down

setup:
	@bash scripts/setup.sh

# The main job on the embedded default: start everything, emit events, read the results back.
smoke: setup
	@bash scripts/smoke.sh

# The test suite, against real Kafka, redis-server and chDB that the session starts and stops.
test: setup
	.venv/bin/python -m pytest

down:
	.venv/bin/prefloop down
