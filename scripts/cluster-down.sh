#!/usr/bin/env bash
# Stop what scripts/cluster-up.sh started (`make cluster-down`); leaves no process behind.
# REVISOR_LOCAL_DIR: as for cluster-up.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m localkube down --state-dir "${REVISOR_LOCAL_DIR:-.local}/cluster"
