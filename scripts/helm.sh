#!/usr/bin/env bash
# Provide the Helm v3 binary of one pinned release and print its path.
#
# Order of preference:
#   1. $HELM, when set: used only if it reports the pinned version (a
#      different Helm renders differently and would make `make manifests-check`
#      flap), otherwise this script fails and says why.
#   2. The per-version cache outside the repository:
#      ${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/revisor}/helm/<version>/helm
#   3. A build from source through the Go module proxy into that cache
#      (`go install helm.sh/helm/v3/cmd/helm@<version>`): no prebuilt binary is
#      ever downloaded.
#
# A `helm` on PATH is deliberately ignored, whatever its version: the rendered
# manifests must not depend on what a developer happens to have installed.
# Set HELM=$(command -v helm) to use it when it is the pinned release.
#
# The build goes to a temporary directory next to the cache and is renamed into
# place only when complete: an interrupted build never leaves a half cache.
# Human-readable progress goes to stderr; stdout carries only the binary's path.
set -euo pipefail

HELM_VERSION="${REVISOR_HELM_VERSION:-v3.21.4}"

say() { printf 'helm: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# `helm version --template` prints e.g. v3.21.4.
version_of() { "$1" version --template '{{ .Version }}' 2>/dev/null || true; }

if [[ -n "${HELM:-}" ]]; then
    found="$(version_of "$HELM")"
    [[ "$found" == "$HELM_VERSION" ]] || die "HELM=$HELM reports '${found:-no version}', \
this project pins $HELM_VERSION; unset HELM to build the pinned release"
    say "using HELM=$HELM"
    echo "$HELM"
    exit 0
fi

cache_root="${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/revisor}"
version_dir="$cache_root/helm/$HELM_VERSION"
binary="$version_dir/helm"

if [[ -x "$binary" ]]; then
    say "Helm $HELM_VERSION (cached) at $binary"
    echo "$binary"
    exit 0
fi

# $GO overrides; otherwise go on PATH, otherwise the usual tarball location.
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "no Helm in $version_dir and no Go toolchain to build it.
  Either install Go and rerun, or set HELM to a Helm $HELM_VERSION binary"

mkdir -p "$cache_root/helm"
# One build at a time per cache; a second caller waits, then finds the cache.
exec 9>"$cache_root/helm/.lock-$HELM_VERSION"
if ! flock -n 9; then
    say "another build of $HELM_VERSION is running; waiting for it"
    flock 9
fi
if [[ -x "$binary" ]]; then
    echo "$binary"
    exit 0
fi

work="$(mktemp -d "$cache_root/helm/.build-$HELM_VERSION.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Never let the go command fetch another toolchain: that is a prebuilt download.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

say "building Helm $HELM_VERSION with $("$GO" version) (first time: 2-3 min on 2 cores)"
started=$SECONDS
"$GO" mod download "helm.sh/helm/v3@$HELM_VERSION" >&2
helm_mod="$("$GO" env GOMODCACHE)/cache/download/helm.sh/helm/v3/@v/$HELM_VERSION.mod"
[[ -f "$helm_mod" ]] || die "missing $helm_mod after go mod download"
# Stamp what Helm's own Makefile stamps through ldflags. Without it `helm
# version` says v3.x-dev, and the Kubernetes version `helm template` and
# `helm lint` assume (Capabilities.KubeVersion, kubeVersion checks) falls
# back to v1.20. Helm derives it from its client-go: v0.X.Y -> 1.X.
client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$helm_mod")"
[[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || die "cannot find k8s.io/client-go in $helm_mod"
kube_minor="${BASH_REMATCH[1]}"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
done
GOBIN="$work" "$GO" install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
[[ -x "$work/helm" ]] || die "go install finished without a helm binary"
found="$(version_of "$work/helm")"
[[ "$found" == "$HELM_VERSION" ]] || die "built helm reports '$found', expected $HELM_VERSION"

# Atomic publish: rename a complete directory into place.
rm -rf "$version_dir.old"
[[ -e "$version_dir" ]] && mv "$version_dir" "$version_dir.old"
chmod 755 "$work"
mv "$work" "$version_dir"
trap - EXIT
rm -rf "$version_dir.old"
say "built in $((SECONDS - started)) s: $binary"
echo "$binary"
