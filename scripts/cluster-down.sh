#!/usr/bin/env bash
# Stop what scripts/cluster-up.sh started (`make cluster-down`); leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m localkube down --state-dir .local/cluster
