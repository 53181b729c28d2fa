#!/usr/bin/env bash
# The README's test command: install what is missing, then run every test (unit, property, doctests,
# and integration tests against a real Kafka broker that tests/integration/conftest.py starts and stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${FLOWBREAKER_PYTHON:-python3}" -m pytest -q "$@"
