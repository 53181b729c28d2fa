#!/usr/bin/env bash
# The live demo in one command: installs flowbreaker if it is missing (scripts/install.sh), then runs
# `flowbreaker demo`, which starts what is not running yet (a local Kafka via scripts/kafka.sh, the topics,
# a worker, the freeze actuator, the reference agent runtime with simulated traffic, Prometheus when
# scripts/prometheus.sh can) and shows throughput, alerts, freezes with their incident trace, and the
# frozen agents stopping. Ctrl-C stops everything it started (by pid), and nothing else.
#
#   scripts/demo.sh                         until Ctrl-C, Kafka on 127.0.0.1:9092
#   scripts/demo.sh --duration 120          stop by itself after two minutes (CI smoke runs)
#   scripts/demo.sh --keep                  go on from the last run's broker data (default: every run starts clean)
#   scripts/demo.sh --help                  every option (agents, pace, incident rate, webhook, ports ...)
#
# Environment: FLOWBREAKER_DEMO_KEEP=1 (as --keep), FLOWBREAKER_PYTHON (default: the active virtualenv's, else the project's .venv, see
# scripts/install.sh), FLOWBREAKER_BOOTSTRAP, FLOWBREAKER_TOPIC_PREFIX and the other FLOWBREAKER_* settings of
# streams/settings.py; FLOWBREAKER_KAFKA_PORT is not needed (the port comes from --bootstrap).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
bash scripts/install.sh
exec "$(fb_python)" -m streams.cli.main demo "$@"
