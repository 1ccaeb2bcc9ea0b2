#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) exist for the
# test suite, which starts its own throwaway cluster as an unprivileged user.
# Idempotent: does nothing when they are already there. Installs Debian's
# package when run as root on a machine without them; otherwise says how.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null; }
if have initdb && have pg_ctl; then
  exit 0
fi
if [ -n "${REVISOR_TEST_POSTGRES_URL:-}" ]; then
  exit 0  # the suite uses that server instead
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-postgres: installing PostgreSQL server binaries (apt-get install postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  have initdb || { echo "ensure-postgres: postgresql installed but initdb not found" >&2; exit 1; }
  exit 0
fi
cat >&2 <<'MSG'
ensure-postgres: PostgreSQL's initdb/pg_ctl were not found.
  Install them (Debian/Ubuntu: sudo apt-get install postgresql), or point the
  suite at a server whose user may create databases:
    export REVISOR_TEST_POSTGRES_URL=postgresql+psycopg://user:pass@127.0.0.1:5432/postgres
MSG
exit 1
