#!/usr/bin/env bash
# Pin the charts to the image a release pushed: set charts/revisor's image.digest and
# charts/revisor-migration's hook.digest, then re-render manifests/.
#
#   scripts/pin-image-digest.sh sha256:<64 hex>    after pushing ghcr.io/revisor-dev/revisor:<appVersion>
#   scripts/pin-image-digest.sh ""                 back to the tag alone (development)
#
# The digest is what the registry answered the push with (`docker buildx build --push
# --metadata-file m.json`, then .["containerimage.digest"]; or `crane digest IMAGE:TAG`).
# With it the operator, its runner Jobs (which default to the operator's image) and the
# hook Jobs run exactly the image that was built, whatever later happens to the tag.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

if [[ $# -ne 1 ]] || ! [[ "$1" =~ ^(sha256:[0-9a-f]{64})?$ ]]; then
    echo "usage: $0 sha256:<64 hex digits> | \"\"" >&2
    exit 2
fi
digest="$1"

pin() {  # pin FILE: the one `  digest: ...` line of FILE (image.digest, hook.digest)
    local file="$1" count
    count="$(grep -c '^  digest: ' "$file")"
    if [[ "$count" != 1 ]]; then
        echo "$file: expected exactly one '  digest:' line, found $count" >&2
        exit 1
    fi
    sed -i -E "s|^  digest: .*$|  digest: \"$digest\"|" "$file"
    echo "$file: digest \"$digest\"" >&2
}

pin "$root/charts/revisor/values.yaml"
pin "$root/charts/revisor-migration/values.yaml"
"$here/render-manifests.sh"
