#!/usr/bin/env bash
# Installs flowbreaker (editable) and its test tools, without root, into:
#   - the project's virtualenv .venv, created here on the first run (the default);
#   - the active virtualenv instead, when one is active ($VIRTUAL_ENV);
#   - $FLOWBREAKER_PYTHON's environment instead, when that is set (an interpreter you chose).
# Idempotent, and quiet when everything is in place already. Afterwards, to type `flowbreaker`:
#   export PATH="$PWD/.venv/bin:$PATH"        (or: source .venv/bin/activate)
#
# Environment: FLOWBREAKER_BASE_PYTHON, the Python 3.11+ that creates .venv (default python3).
# Kafka's jars and Prometheus are fetched by scripts/kafka.sh and scripts/prometheus.sh when first needed
# (Prometheus with apt-get, which needs root; see the README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

die() { echo "install: $*" >&2; exit 1; }

PY=$(fb_python)
if [[ -z ${FLOWBREAKER_PYTHON:-} && -z ${VIRTUAL_ENV:-} && ! -x .venv/bin/python ]]; then
    base=${FLOWBREAKER_BASE_PYTHON:-python3}
    command -v "$base" >/dev/null 2>&1 || die "$base not found: Python 3.11 or newer is needed (FLOWBREAKER_BASE_PYTHON)"
    "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$base is Python $("$base" -c 'import sys; print(sys.version.split()[0])'); 3.11 or newer is needed"
    echo "install: creating the project virtualenv .venv with $base" >&2
    "$base" -m venv .venv \
        || { rm -rf .venv; die "$base -m venv failed (on Debian/Ubuntu, as root: apt-get install python3-venv)"; }
fi
"$PY" -c 'import sys' 2>/dev/null || die "cannot run $PY"

stamp="$("$PY" -c 'import hashlib;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')"
marker="$("$PY" -c 'import sys;print(sys.prefix)')/.flowbreaker-install-$stamp"
if [[ -f $marker ]] && "$PY" -c 'import detector, streams, models, faust, kafka, sklearn, msgspec, hypothesis, mcp, opentelemetry.proto, opentelemetry.sdk' 2>/dev/null \
   && [[ -x $(fb_scripts_dir "$PY")/flowbreaker ]]; then
    exit 0
fi
echo "install: pip install -e '.[test,mcp,otel]' into $("$PY" -c 'import sys;print(sys.prefix)') (first run takes a minute)" >&2
"$PY" -m pip install --disable-pip-version-check -q -e ".[test,mcp,otel]"
touch "$marker" 2>/dev/null || true
bin=$(fb_scripts_dir "$PY")
if [[ $(command -v flowbreaker 2>/dev/null) != "$bin/flowbreaker" ]]; then
    echo "install: done; to type flowbreaker: export PATH=\"$bin:\$PATH\"" >&2
fi
