#!/usr/bin/env bash
# The README's test command: install what is missing (scripts/install.sh: the project's .venv unless a virtualenv
# is active or FLOWBREAKER_PYTHON names an interpreter), then run every test with that interpreter (unit, property,
# doctests, and integration tests against a real Kafka broker that tests/integration/conftest.py starts and stops).
# The console's browser tests need Debian's chromium and chromedriver: installed here first when missing (as root,
# scripts/browser.sh), so the download is not timed as part of a test; without them those tests skip saying why.
# Arguments go to pytest: scripts/test.sh tests/unit -k breaker
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
bash scripts/install.sh
bash scripts/browser.sh install >/dev/null || echo "test.sh: the console's browser tests will be skipped" >&2
exec "$(fb_python)" -m pytest -q "$@"
