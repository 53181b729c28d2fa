#!/usr/bin/env bash
# The README's test command: install what is missing (scripts/install.sh: the project's .venv unless a virtualenv
# is active or FLOWBREAKER_PYTHON names an interpreter), then run every test with that interpreter (unit, property,
# doctests, and integration tests against a real Kafka broker that tests/integration/conftest.py starts and stops).
# Arguments go to pytest: scripts/test.sh tests/unit -k breaker
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
bash scripts/install.sh
exec "$(fb_python)" -m pytest -q "$@"
