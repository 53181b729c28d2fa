#!/usr/bin/env bash
# Installs flowbreaker and its test tools into the current Python (idempotent, quiet when done already).
# Kafka's jars and Prometheus are fetched by scripts/kafka.sh and scripts/prometheus.sh when first needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${FLOWBREAKER_PYTHON:-python3}"
stamp="$("$PY" -c 'import hashlib,sys;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')"
marker="$("$PY" -c 'import sys;print(sys.prefix)')/.flowbreaker-install-$stamp"
if [ -f "$marker" ] && "$PY" -c 'import detector, streams, models, faust, kafka, sklearn, msgspec, hypothesis' 2>/dev/null \
   && command -v flowbreaker >/dev/null; then
  exit 0
fi
echo "install: pip install -e '.[test]' (first run takes a minute)" >&2
"$PY" -m pip install --disable-pip-version-check -q -e ".[test]"
touch "$marker" 2>/dev/null || true
