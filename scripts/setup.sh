#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, .venv with the locked Python
# packages, and the Kafka jars. Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v wrk >/dev/null || need_apt+=(wrk)  # HTTP load for `prefloop bench collector`
command -v openssl >/dev/null || need_apt+=(openssl)  # test certificates for the SASL_SSL broker
# Debian's Chromium, driven by Playwright in the web app's browser tests (no browser is downloaded).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" != 0 ]; then say "not root: install them yourself (apt-get install -y ${need_apt[*]})"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  $PYTHON -m venv .venv
fi

# Re-install only when the lock or the project metadata change.
stamp=".venv/.prefloop-$(cat requirements.lock trainer/requirements-nodeps.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing locked Python packages into .venv (torch first, exactly as locked)"
  .venv/bin/pip install -q --upgrade pip
  torch_pin=$(grep -E '^torch==' requirements.lock)
  .venv/bin/pip install -q "$torch_pin"
  # The lock pins every package, torch included, so this cannot swap the torch installed above.
  .venv/bin/pip install -q -r requirements.lock
  # Wheels whose declared dependencies are not needed (see the file's comments).
  .venv/bin/pip install -q --no-deps -r trainer/requirements-nodeps.txt
  .venv/bin/pip install -q --no-deps -e .
  .venv/bin/python - <<PY
import torch, sys
want = "$torch_pin".split("==")[1]
if torch.__version__.split("+")[0] != want:
    sys.exit(f"setup: torch {torch.__version__} installed, lock says {want}")
PY
  rm -f .venv/.prefloop-*
  touch "$stamp"
fi

.venv/bin/python -c "from prefloop.services.kafka import ensure_jars; from prefloop.settings import load_settings; ensure_jars(load_settings())"
say "ready"
