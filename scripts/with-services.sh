#!/usr/bin/env bash
# Run a command with Redis and PostgreSQL on loopback (for the test suite's production-stack tests).
# Installs them (and Go, for the Modelfile template tests) from Debian packages when missing, starts them in a temporary folder on free ports,
# exports ASSISTANT_TEST_REDIS_URL and ASSISTANT_TEST_POSTGRES_URL, and stops them when the command ends.
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -n "$(pg_bin)" ] || missing+=(postgresql)
command -v go >/dev/null || missing+=(golang-go)  # renders Modelfile templates as Ollama does
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages) for the tests"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
redis_port=$(free_port)
pg_port=$(free_port)
# PostgreSQL refuses to run as root: then its files belong to the postgres user, who runs it.
run_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

stop() {
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    run_pg "$(pg_bin)/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap stop EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --dir "$work" \
    --save '' --appendonly no --logfile "$work/redis.log"
mkdir -p "$work/pg"
[ "$(id -u)" -ne 0 ] || chown -R postgres "$work"
run_pg "$(pg_bin)/initdb -D $work/pg -U assistant -A trust" >/dev/null
run_pg "$(pg_bin)/pg_ctl -D $work/pg -l $work/pg.log -w -o '-h 127.0.0.1 -p $pg_port -k $work' start" >/dev/null
"$(pg_bin)/createdb" -h 127.0.0.1 -p "$pg_port" -U assistant assistant

export ASSISTANT_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export ASSISTANT_TEST_POSTGRES_URL="postgresql+psycopg://assistant@127.0.0.1:$pg_port/assistant"
set +e
"$@"
status=$?
exit $status
