#!/usr/bin/env bash
# Print a PostgreSQL admin URL the test suite may use to create and drop its own databases.
# Uses the server on 127.0.0.1:5432 when one answers; otherwise installs PostgreSQL from
# Debian packages (if needed) and starts a throwaway cluster owned by this test run, whose
# directory is printed on fd 3 so the caller can stop it.
set -euo pipefail

log() { echo "[postgres] $*" >&2; }

# IRMSIA_THROWAWAY_POSTGRES=1 skips the shared server (to exercise the fallback path).
if [ -z "${IRMSIA_THROWAWAY_POSTGRES:-}" ] && command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 \
    && psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  log "using the server on 127.0.0.1:5432"
  echo "postgresql://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  log "no PostgreSQL server answers and none is installed: installing it from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

dir=$(mktemp -d /tmp/irmsia-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_as=()
if [ "$(id -u)" = "0" ]; then
  # initdb refuses to run as root; the Debian package creates the postgres account.
  id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
  chown postgres "$dir"
  run_as=(runuser -u postgres --)
fi
"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-h 127.0.0.1 -p $port -k $dir -F" start >/dev/null
log "started a throwaway cluster on 127.0.0.1:$port ($dir)"
echo "$dir" >&3
echo "postgresql://postgres@127.0.0.1:$port/postgres"
