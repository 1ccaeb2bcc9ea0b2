#!/usr/bin/env bash
# Start a local control plane + process-kubelet in the background (`make cluster-up`).
# kubeconfig: .local/kubeconfig; state, logs and the daemon's pid: .local/cluster/.
# Stop it with scripts/cluster-down.sh (`make cluster-down`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD/tools${PYTHONPATH:+:$PYTHONPATH}"
bin_dir="$(scripts/kube-binaries.sh)"
"$PY" -m localkube up --state-dir .local/cluster --kubeconfig .local/kubeconfig --detach >/dev/null
cat <<MSG
Cluster is up.
  kubectl:    $bin_dir/kubectl --kubeconfig .local/kubeconfig get nodes
  logs:       .local/cluster/logs/ (pods: .local/cluster/kubelet/pods/*/logs/)
  stop:       make cluster-down
MSG
"$bin_dir/kubectl" --kubeconfig .local/kubeconfig get nodes
