#!/usr/bin/env bash
# Runs the PostgreSQL suites (the conformance suite against PostgresStore,
# tests/postgres_*.rs, tests/cli_postgres.rs) against a real, throw-away
# PostgreSQL server: uses the installed server (Debian's postgresql),
# installing it if missing and possible; initdb in a temporary directory (as
# the `postgres` user when run as root: PostgreSQL refuses root), a free port
# on 127.0.0.1, trust authentication, and removes everything on exit. It
# exports
#   TOKENSTORE_TEST_PG_URL      admin URL (each test creates its own database)
#   TOKENSTORE_TEST_PG_RESTART  a command that restarts the server
#   TOKENSTORE_TEST_PG_DUMP     the pg_dump binary
# and runs
#   cargo test --features postgres,server-tests --test conformance -- postgres
#   cargo test --features postgres,server-tests --test cli_postgres
#   cargo test --features postgres,server-tests --test postgres_store
#   cargo test --features postgres,server-tests --test postgres_processes
#   cargo test --features postgres,server-tests --test postgres_logs
#   cargo test --features postgres,server-tests --test postgres_restart   (alone)
# and then, on a second cluster that takes only TLS (tests/postgres/tls.sh),
#   cargo test --features postgres,server-tests --test postgres_tls
#   cargo test --features postgres,server-tests --test conformance -- postgres   (verify-full)
#   cargo test --features postgres,server-tests --test postgres_processes        (verify-full)
# Extra arguments go to each cargo command (cargo's options, before `--`;
# RUST_TEST_NOCAPTURE=1 shows the tests' FIGURES lines).
# Where no server can be had it prints SKIPPED and exits 0; with CI=true it
# fails instead.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    echo "=================================================================="
    echo "SKIPPED: PostgreSQL tests: $1"
    echo "=================================================================="
    if [ "${CI:-}" = true ]; then
        echo "CI=true: PostgreSQL tests must run" >&2
        exit 1
    fi
    exit 0
}

find_bindir() {
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bindir=$(find_bindir || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "installing postgresql..."
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    if command -v apt-get >/dev/null; then
        $sudo_ apt-get install -y -q postgresql >/dev/null 2>&1 ||
            { $sudo_ apt-get update -q >/dev/null 2>&1 &&
              $sudo_ apt-get install -y -q postgresql >/dev/null 2>&1; } || true
    fi
    bindir=$(find_bindir || true)
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] || skip "no PostgreSQL server could be installed"
fi

# PostgreSQL refuses to run as root: run it as `postgres` then.
as_server=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_server=(runuser -u postgres --)
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/tokenstore-pg.XXXXXX")
chmod 755 "$data"
[ "$(id -u)" = 0 ] && chown postgres "$data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
       echo $((20000 + RANDOM % 20000)))

stop() {
    "${as_server[@]}" "$bindir/pg_ctl" -D "$data/db" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap stop EXIT

"${as_server[@]}" "$bindir/initdb" -D "$data/db" -A trust -U postgres --no-sync \
    >"$data/initdb.log" 2>&1 || { cat "$data/initdb.log"; skip "initdb failed"; }
"${as_server[@]}" "$bindir/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null ||
    { cat "$data/server.log"; skip "the server did not start"; }

export TOKENSTORE_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
export TOKENSTORE_TEST_PG_RESTART="${as_server[*]} $bindir/pg_ctl -D $data/db -m fast -w -t 60 restart -l $data/server.log"
export TOKENSTORE_TEST_PG_DUMP="$bindir/pg_dump"
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($data)"

cargo test --features postgres,server-tests --test conformance "$@" -- postgres
cargo test --features postgres,server-tests --test cli_postgres "$@"
cargo test --features postgres,server-tests --test postgres_store "$@"
cargo test --features postgres,server-tests --test postgres_processes "$@"
cargo test --features postgres,server-tests --test postgres_logs "$@"
# The restart test restarts the server under every connection: alone.
cargo test --features postgres,server-tests --test postgres_restart "$@"

# TLS: a second cluster, certificates made here; this one stays up as the
# server without TLS.
. tests/postgres/tls.sh "$@"
