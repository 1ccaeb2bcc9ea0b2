#!/usr/bin/env bash
# Make sure MariaDB's server binaries (mariadb-install-db, mariadbd) exist for the
# test suite, which starts its own throwaway server as an unprivileged user, and
# the client library's headers (mariadb_config, pkg-config) that tests/realworld
# builds mysqlclient with (Airflow's MySQL driver, for its MariaDB runs).
# Idempotent: does nothing when they are already there. Installs Debian's
# packages when run as root on a machine without them, without leaving the
# server package's own system service running or enabled; otherwise says how.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
if have mariadb-install-db && have mariadbd && have mariadb_config && have pkg-config; then
  exit 0
fi
if [ -n "${REVISOR_TEST_MYSQL_URL:-}" ]; then
  exit 0  # the suite uses that server instead
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-mariadb: installing MariaDB server binaries and client headers (apt-get install mariadb-server libmariadb-dev pkg-config)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The suite starts its own server; the package's service must not start (and
  # hold port 3306) while installing. policy-rc.d says so to invoke-rc.d and
  # deb-systemd-invoke; one already there is respected and left alone.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  # Another apt-get (make -j, a fresh machine's apt-daily) may hold apt's locks:
  # install waits for dpkg's; update has no such option, so it is retried.
  lock=(-o DPkg::Lock::Timeout=300)
  tries=1
  until apt-get "${lock[@]}" update -qq >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
      apt-get "${lock[@]}" update -qq >/dev/null  # the last try says why it fails
      break
    fi
    sleep 5
  done
  apt-get "${lock[@]}" install -y -qq --no-install-recommends \
    mariadb-server libmariadb-dev pkg-config >/dev/null
  # Stopped, and not started at boot either.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now mariadb.service >/dev/null 2>&1 || true
  else
    if command -v service >/dev/null && service mariadb status >/dev/null 2>&1; then
      service mariadb stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null; then
      update-rc.d mariadb disable >/dev/null 2>&1 || true
    fi
  fi
  have mariadbd || { echo "ensure-mariadb: mariadb-server installed but mariadbd not found" >&2; exit 1; }
  exit 0
fi
cat >&2 <<'MSG'
ensure-mariadb: MariaDB's mariadb-install-db/mariadbd (or the client headers:
  mariadb_config, pkg-config) were not found. Install them (Debian/Ubuntu: sudo
  apt-get install mariadb-server libmariadb-dev pkg-config), or point the suite at a
  server whose user may create databases (tests/realworld's Airflow-on-MariaDB runs
  still need the headers):
    export REVISOR_TEST_MYSQL_URL=mysql+pymysql://user:pass@127.0.0.1:3306/mysql
MSG
exit 1
