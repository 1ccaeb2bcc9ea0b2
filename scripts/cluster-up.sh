#!/usr/bin/env bash
# Start a local control plane + process-kubelet in the background (`make cluster-up`).
# kubeconfig: .local/kubeconfig; state, logs and the daemon's pid: .local/cluster/.
# REVISOR_LOCAL_DIR moves .local elsewhere (relative to the repository; the tests use it).
# Stop it with scripts/cluster-down.sh (`make cluster-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"
local_dir="${REVISOR_LOCAL_DIR:-.local}"
bin_dir="$(scripts/kube-binaries.sh)"
"$PY" -m localkube up --state-dir "$local_dir/cluster" --kubeconfig "$local_dir/kubeconfig" --detach >/dev/null
cat <<MSG
Cluster is up.
  kubectl:    $bin_dir/kubectl --kubeconfig $local_dir/kubeconfig get nodes
  logs:       $local_dir/cluster/logs/ (pods: $local_dir/cluster/kubelet/pods/*/logs/)
  stop:       make cluster-down
MSG
"$bin_dir/kubectl" --kubeconfig "$local_dir/kubeconfig" get nodes
