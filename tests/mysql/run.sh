#!/usr/bin/env bash
# Runs the `import --from mysql` tests (tests/cli_mysql.rs) against a real
# MariaDB server: installs Debian's mariadb-server if it is missing, starts a
# throw-away server on 127.0.0.1 (data in a temporary directory, removed on
# exit), creates a database and a user, and runs
#   cargo test --features mysql,server-tests --test cli_mysql
# with TOKENSTORE_TEST_MYSQL_URL pointing at it. Extra arguments go to cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    # No server to be had: say so loudly; under CI that is a failure.
    printf '\n%s\n' "**********************************************************************"
    printf 'SKIPPED: MySQL import tests (tests/cli_mysql.rs): %s\n' "$1"
    printf '%s\n\n' "**********************************************************************"
    [ "${CI:-}" = true ] && { echo "CI=true: a skipped suite is a failure"; exit 1; }
    exit 0
}

if ! command -v mariadbd >/dev/null; then
    echo "installing mariadb-server..."
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get install -y -q mariadb-server >/dev/null 2>&1 ||
        { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q mariadb-server >/dev/null; } ||
        skip "mariadb-server is not installed and could not be installed"
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/tokenstore-mariadb.XXXXXX")
port=${TOKENSTORE_MYSQL_PORT:-33306}
user=$(id -un)
mariadb-install-db --no-defaults --datadir="$data/db" --user="$user" \
    --auth-root-authentication-method=socket >"$data/install.log" 2>&1 ||
    { cat "$data/install.log"; rm -rf "$data"; skip "mariadb-install-db failed (log above)"; }
mariadbd --no-defaults --datadir="$data/db" --socket="$data/sock" --port="$port" \
    --bind-address=127.0.0.1 --user="$user" --pid-file="$data/pid" \
    --skip-log-bin >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 120); do
    mariadb-admin --no-defaults --socket="$data/sock" -uroot ping >/dev/null 2>&1 && break
    kill -0 $server 2>/dev/null || { cat "$data/server.log"; skip "the server did not start (log above)"; }
    sleep 0.5
done
mariadb --no-defaults --socket="$data/sock" -uroot <<'SQL'
CREATE DATABASE zoho;
CREATE USER 'tokenstore'@'127.0.0.1' IDENTIFIED BY 'test-only-password';
GRANT ALL ON zoho.* TO 'tokenstore'@'127.0.0.1';
SQL

export TOKENSTORE_TEST_MYSQL_URL="mysql://tokenstore:test-only-password@127.0.0.1:$port/zoho"
cargo test --features mysql,server-tests --test cli_mysql "$@"
