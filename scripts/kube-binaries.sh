#!/usr/bin/env bash
# Provide etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
# kubectl of one pinned Kubernetes release, and print the directory holding them.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, when set (the envtest convention): used as is.
#   2. The per-version cache outside the repository:
#      ${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/revisor}/kube/<version>/bin
#   3. A build from source through the Go module proxy into that cache.
#
# No registry ships these binaries, and `go install k8s.io/kubernetes/cmd/...@v`
# fails because the main module uses replace directives for its staging
# modules. So we build through a throwaway wrapper module that requires
# k8s.io/kubernetes and replaces each staging module (k8s.io/* v0.0.0 in that
# release's go.mod) with its published v0.X.Y twin. etcd comes from the
# go.etcd.io/etcd/server/v3 version that same go.mod requires, built in the
# same module graph so the Go build cache is shared.
#
# The build goes to a temporary directory next to the cache and is renamed into
# place only when complete: an interrupted build never leaves a half cache.
# Human-readable progress goes to stderr; stdout carries only the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version_file="$here/../tools/localkube/kube-version.txt"
KUBE_VERSION="${REVISOR_KUBE_VERSION:-$(tr -d '[:space:]' <"$version_file")}"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

# The oldest Go that builds KUBE_VERSION: the go directive of its go.mod (1.24.0 for
# v1.34). Checked before anything is downloaded, then again against the real
# directive once go.mod is at hand (REVISOR_KUBE_VERSION may name a newer release).
GO_MIN=1.24

say() { printf 'kube-binaries: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Is dotted version $1 >= $2? (1.24 == 1.24.0; `sort -V` says otherwise.)
version_ge() {
    local i
    local -a mine theirs
    IFS=. read -r -a mine <<<"$1"
    IFS=. read -r -a theirs <<<"$2"
    for ((i = 0; i < 3; i++)); do
        ((10#${mine[i]:-0} > 10#${theirs[i]:-0})) && return 0
        ((10#${mine[i]:-0} < 10#${theirs[i]:-0})) && return 1
    done
    return 0
}

# Refuse a Go older than $1 now, with the fix, rather than fail in `go mod tidy` later.
require_go() {
    local need="$1" reported have
    reported="$("$GO" version 2>&1 || true)"
    have="$(grep -oE 'go[0-9]+(\.[0-9]+)+' <<<"$reported" | head -n1 || true)"
    have="${have#go}"
    [[ -n "$have" ]] || die "cannot tell which Go $GO is (\`$GO version\` said: $reported)"
    version_ge "$have" "$need" || die "Go $have ($GO) is too old: Kubernetes $KUBE_VERSION needs Go >= $need.
  Install Go >= $need and put it first on PATH (or set GO=/path/to/go), or point
  KUBEBUILDER_ASSETS at a directory holding: ${BINARIES[*]} (Kubernetes $KUBE_VERSION).
  (The build never downloads a toolchain itself: GOTOOLCHAIN=local.)"
}

missing_in() {
    local dir="$1" name absent=()
    for name in "${BINARIES[@]}"; do
        [[ -x "$dir/$name" ]] || absent+=("$name")
    done
    echo "${absent[*]-}"
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    missing="$(missing_in "$KUBEBUILDER_ASSETS")"
    [[ -z "$missing" ]] || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks: $missing
  (envtest archives ship only etcd, kube-apiserver and kubectl; add
  kube-controller-manager and kube-scheduler of the same release, or unset
  KUBEBUILDER_ASSETS to build all five from source)"
    say "using KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
fi

cache_root="${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/revisor}"
version_dir="$cache_root/kube/$KUBE_VERSION"
bin_dir="$version_dir/bin"

if [[ -z "$(missing_in "$bin_dir")" ]]; then
    say "Kubernetes $KUBE_VERSION binaries (cached) in $bin_dir"
    echo "$bin_dir"
    exit 0
fi

# $GO overrides; otherwise go on PATH, otherwise $GOROOT/bin/go (the tarball's /usr/local/go).
GO="${GO:-$(command -v go || echo "${GOROOT:-/usr/local/go}/bin/go")}"
[[ -x "$GO" ]] || die "no Kubernetes $KUBE_VERSION binaries in $bin_dir, and no Go toolchain to build them
  (looked for \`go\` on PATH and for $GO). Either:
  - install Go >= $GO_MIN and rerun (the first build takes about 6 min on 2 cores), or set GO=/path/to/go;
  - or set KUBEBUILDER_ASSETS to a directory holding: ${BINARIES[*]} (Kubernetes $KUBE_VERSION)."
require_go "$GO_MIN"

mkdir -p "$cache_root/kube"
# One build at a time per cache; a second caller waits, then finds the cache.
exec 9>"$cache_root/kube/.lock-$KUBE_VERSION"
if ! flock -n 9; then
    say "another build of $KUBE_VERSION is running; waiting for it"
    flock 9
fi
if [[ -z "$(missing_in "$bin_dir")" ]]; then
    echo "$bin_dir"
    exit 0
fi

# Holding the lock, any earlier build directory is debris of an interrupted build.
rm -rf "$cache_root/kube/.build-$KUBE_VERSION".*
work="$(mktemp -d "$cache_root/kube/.build-$KUBE_VERSION.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Never let the go command fetch another toolchain: that is a prebuilt download.
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=mod" GOWORK=off

say "building Kubernetes $KUBE_VERSION with $("$GO" version) (first time: about 6 min on 2 cores)"
started=$SECONDS
"$GO" mod download k8s.io/kubernetes@"$KUBE_VERSION" >&2
kube_mod="$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
[[ -f "$kube_mod" ]] || die "missing $kube_mod after go mod download"

minor="${KUBE_VERSION#v1.}"        # 34.4
staging_version="v0.$minor"         # v0.34.4
go_directive="$(awk '$1 == "go" {print $2; exit}' "$kube_mod")"
require_go "$go_directive"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$kube_mod")"
[[ -n "$etcd_version" ]] || die "cannot find go.etcd.io/etcd/server/v3 in $kube_mod"
# Staging modules are exactly the k8s.io/* modules required at v0.0.0.
mapfile -t staging < <(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kube_mod" | sort -u)
((${#staging[@]} > 0)) || die "no staging modules found in $kube_mod"

mkdir -p "$work/src" "$work/bin"
{
    echo "module revisor.local/kubebuild"
    echo
    echo "go $go_directive"
    echo
    grep -E '^godebug ' "$kube_mod" || true
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $etcd_version"
    echo ")"
    echo
    echo "replace ("
    for module in "${staging[@]}"; do
        echo "	$module => $module $staging_version"
    done
    echo ")"
} >"$work/src/go.mod"
cat >"$work/src/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF

ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

(
    cd "$work/src"
    "$GO" mod tidy >&2
    say "resolved; compiling (etcd $etcd_version)"
    "$GO" build -trimpath -ldflags "$ldflags" -o "$work/bin/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl >&2
    "$GO" build -trimpath -ldflags "-s -w" -o "$work/bin/etcd" go.etcd.io/etcd/server/v3 >&2
)
missing="$(missing_in "$work/bin")"
[[ -z "$missing" ]] || die "build finished without: $missing"
printf 'kubernetes %s\netcd %s\n' "$KUBE_VERSION" "$etcd_version" >"$work/bin/VERSIONS"

# Atomic publish: rename a complete directory into place.
mkdir -p "$version_dir"
rm -rf "$bin_dir.old"
[[ -e "$bin_dir" ]] && mv "$bin_dir" "$bin_dir.old"
mv "$work/bin" "$bin_dir"
rm -rf "$bin_dir.old"
say "built in $((SECONDS - started)) s: $bin_dir"
echo "$bin_dir"
