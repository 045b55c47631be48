#!/usr/bin/env bash
# The production topology on loopback, without Docker: PostgreSQL and Redis for the test suite
# and for local development. Idempotent: `start` reuses servers that are already up.
#
#   scripts/services.sh start|stop|status|env
#
# `env` prints the variables that point Django and Celery at these servers.
set -euo pipefail

STATE_DIR="${SYNCMOS_SERVICES_DIR:-${TMPDIR:-/tmp}/syncmos-services-$(id -u)}"
PG_PORT="${SYNCMOS_PG_PORT:-55432}"
REDIS_PORT="${SYNCMOS_REDIS_PORT:-56379}"
PG_DB="${SYNCMOS_PG_DB:-syncmos}"
PG_DATA="$STATE_DIR/pg"

pg_bin() {
  local dir
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || { echo "services: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
  echo "$dir"
}

# initdb and postgres refuse to run as root: run them as the 'postgres' system user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_pg() {
  local bin; bin=$(pg_bin)
  mkdir -p "$STATE_DIR"; chmod 755 "$STATE_DIR"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 >"$STATE_DIR/initdb.log" 2>&1 \
      || { cat "$STATE_DIR/initdb.log" >&2; exit 1; }
  fi
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -w -t 30 -l "$PG_DATA/server.log" \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DATA -c fsync=off -c max_connections=300" start >/dev/null \
      || { tail -n 20 "$PG_DATA/server.log" >&2; exit 1; }
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='$PG_DB'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$PG_DB"
  fi
}

stop_pg() {
  local bin; bin=$(pg_bin)
  [ -f "$PG_DATA/PG_VERSION" ] || return 0
  as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

start_redis() {
  command -v redis-server >/dev/null || { echo "services: redis-server not found (apt-get install redis-server)" >&2; exit 1; }
  mkdir -p "$STATE_DIR"
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$STATE_DIR" --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/redis.log"
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "services: redis did not start (see $STATE_DIR/redis.log)" >&2; exit 1
}

stop_redis() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
  echo "export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

case "${1:-}" in
  start) start_pg; start_redis; print_env ;;
  stop) stop_redis; stop_pg ;;
  status)
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status || true
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping || true ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
