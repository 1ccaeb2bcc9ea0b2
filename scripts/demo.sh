#!/usr/bin/env bash
# `make demo`: Revisor's main job, end to end, on this machine.
#
# A local Kubernetes control plane (or the cluster REVISOR_DEMO_KUBECONFIG
# names), the DatabaseMigration CRD, the operator, the example shop's Alembic
# revisions in a ConfigMap, and a DatabaseMigration against the embedded
# default database (a SQLite file). The resource's status is printed as it
# converges; exit 0 once it is Ready, non-zero with its message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
PY="${PY:-$root/.venv/bin/python}"
export PATH="$root/.venv/bin:$PATH"
export PYTHONPATH="$root/tools${PYTHONPATH:+:$PYTHONPATH}"
work="$root/.local/demo"
namespace="revisor-demo"
timeout="${REVISOR_DEMO_TIMEOUT:-240}"
mkdir -p "$work"
rm -f "$work"/shop.db*

bin_dir="$(scripts/kube-binaries.sh)"
kubectl="$bin_dir/kubectl"
operator_pid=""
started_cluster=""

cleanup() {
  if [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null; then
    wait "$operator_pid" 2>/dev/null || true
  fi
  if [ -n "$started_cluster" ]; then
    "$PY" -m localkube down --state-dir "$work/cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT INT TERM

if [ -n "${REVISOR_DEMO_KUBECONFIG:-}" ]; then
  export KUBECONFIG="$REVISOR_DEMO_KUBECONFIG"
  echo "==> using the cluster in $KUBECONFIG"
else
  echo "==> starting a local control plane + process-kubelet (state in .local/demo/cluster)"
  "$PY" -m localkube down --state-dir "$work/cluster" >/dev/null 2>&1 || true
  "$PY" -m localkube up --state-dir "$work/cluster" --kubeconfig "$work/kubeconfig" --detach >/dev/null
  started_cluster=1
  export KUBECONFIG="$work/kubeconfig"
fi
k() { "$kubectl" "$@"; }
k get nodes

echo "==> installing the DatabaseMigration CRD"
k apply -f manifests/crd/ >/dev/null
k wait --for=condition=Established crd/databasemigrations.revisor.dev --timeout=60s >/dev/null

echo "==> starting the operator (log: .local/demo/operator.log)"
revisor-operator --namespace "$namespace" --log-format json --metrics-port 0 --liveness "" \
  >"$work/operator.log" 2>&1 &
operator_pid=$!

echo "==> the example shop: revisions in a ConfigMap, the database URL in a Secret"
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$namespace" create configmap shop-migrations \
  --from-file=examples/shop/migrations/versions/ --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$namespace" create secret generic shop-db \
  --from-literal=url="sqlite:///$work/shop.db" --dry-run=client -o yaml | k apply -f - >/dev/null
# REVISOR_DEMO_TARGET shows another target (e.g. 9d2e7a11c0f3, or a bad one to see a failure).
sed "s/^  target: head$/  target: ${REVISOR_DEMO_TARGET:-head}/" examples/shop/databasemigration.yaml \
  | k -n "$namespace" apply -f -

echo "==> watching dbm/shop converge"
columns='NAME:.metadata.name,TARGET:.spec.target,CURRENT:.status.currentRevision,READY:.status.conditions[?(@.type=="Ready")].status,PHASE:.status.phase,MESSAGE:.status.conditions[?(@.type=="Ready")].message'
last=""
deadline=$((SECONDS + timeout))
ready=""
while [ $SECONDS -lt $deadline ]; do
  line="$(k -n "$namespace" get dbm shop -o custom-columns="$columns" --no-headers 2>/dev/null || true)"
  if [ "$line" != "$last" ]; then
    printf '%(%H:%M:%S)T  %s\n' -1 "$line"
    last="$line"
  fi
  ready="$(k -n "$namespace" get dbm shop -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  phase="$(k -n "$namespace" get dbm shop -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  if [ "$ready" = "True" ]; then break; fi
  case "$phase" in Failed|RolledBack) break ;; esac
  if ! kill -0 "$operator_pid" 2>/dev/null; then
    echo "the operator exited; its log:" >&2
    tail -n 40 "$work/operator.log" >&2
    exit 1
  fi
  sleep 1
done

echo
k -n "$namespace" get dbm shop
if [ "$ready" != "True" ]; then
  message="$(k -n "$namespace" get dbm shop -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' 2>/dev/null || true)"
  echo "demo failed: dbm/shop is not Ready: ${message:-no status after ${timeout}s}" >&2
  echo "operator log: .local/demo/operator.log" >&2
  exit 1
fi
echo
echo "==> status.lastRun"
k -n "$namespace" get dbm shop -o jsonpath='{.status.lastRun}' | "$PY" -m json.tool
echo
echo "==> the database itself, seen by the engine"
revisor --database-url "sqlite:///$work/shop.db" --scripts examples/shop/migrations current
revisor --database-url "sqlite:///$work/shop.db" --scripts examples/shop/migrations history --runs
echo
echo "demo done: dbm/shop is Ready."
