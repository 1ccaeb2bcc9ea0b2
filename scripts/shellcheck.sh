#!/usr/bin/env bash
# Lint the project's shell scripts with shellcheck. Installs Debian's
# package of that name first when it is missing and this runs as root (CI);
# otherwise says how to get it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "shellcheck: installing Debian's shellcheck (apt-get install shellcheck)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  else
    echo "shellcheck: not found; install it (Debian/Ubuntu: sudo apt-get install shellcheck)" >&2
    exit 1
  fi
fi
shellcheck scripts/*.sh .ci/run
