#!/usr/bin/env bash
# Runs the MySQL/MariaDB tests against a real MariaDB server: installs
# Debian's mariadb-server if it is missing, makes a throw-away CA, a server
# certificate for localhost and a second CA that signed nothing, starts a
# throw-away server on 127.0.0.1 with that certificate (data in a temporary
# directory, removed on exit), creates a database and a user who may create
# databases, and runs
#   cargo test --features mysql,server-tests --test conformance -- mysql
#   cargo test --features mysql,server-tests --test mysql_store --test mysql_processes --test cli_mysql
# with TOKENSTORE_TEST_MYSQL_URL (and the CA files) pointing at it. Extra
# arguments go to every cargo test.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    # No server to be had: say so loudly; under CI that is a failure.
    printf '\n%s\n' "**********************************************************************"
    printf 'SKIPPED: MySQL tests (conformance, mysql_store, mysql_processes, cli_mysql): %s\n' "$1"
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

# The test CA, a certificate for localhost signed by it, and a wrong CA.
tls="$data/tls"; mkdir "$tls"
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" \
        -keyout "$tls/$1.key" -out "$tls/$1.pem" >/dev/null 2>&1
}
make_ca ca "tokenstore test CA" && make_ca wrong-ca "tokenstore wrong CA" &&
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1 &&
printf 'subjectAltName=DNS:localhost\n' >"$tls/san.ext" &&
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$tls/san.ext" -out "$tls/server.pem" >/dev/null 2>&1 ||
    { rm -rf "$data"; skip "openssl could not make the test certificates"; }

mariadb-install-db --no-defaults --datadir="$data/db" --user="$user" \
    --auth-root-authentication-method=socket >"$data/install.log" 2>&1 ||
    { cat "$data/install.log"; rm -rf "$data"; skip "mariadb-install-db failed (log above)"; }
mariadbd --no-defaults --datadir="$data/db" --socket="$data/sock" --port="$port" \
    --bind-address=127.0.0.1 --user="$user" --pid-file="$data/pid" \
    --ssl-ca="$tls/ca.pem" --ssl-cert="$tls/server.pem" --ssl-key="$tls/server.key" \
    --skip-log-bin >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 120); do
    mariadb-admin --no-defaults --socket="$data/sock" -uroot ping >/dev/null 2>&1 && break
    kill -0 $server 2>/dev/null || { cat "$data/server.log"; skip "the server did not start (log above)"; }
    sleep 0.5
done
# Tests make a database each (tests/support/mysql.rs); the user may.
mariadb --no-defaults --socket="$data/sock" -uroot <<'SQL'
CREATE DATABASE zoho;
CREATE USER 'tokenstore'@'127.0.0.1' IDENTIFIED BY 'test-only-password';
GRANT ALL ON *.* TO 'tokenstore'@'127.0.0.1';
SQL

export TOKENSTORE_TEST_MYSQL_URL="mysql://tokenstore:test-only-password@127.0.0.1:$port/zoho"
export TOKENSTORE_TEST_MYSQL_CA="$tls/ca.pem"
export TOKENSTORE_TEST_MYSQL_WRONG_CA="$tls/wrong-ca.pem"
cargo test --features mysql,server-tests --test conformance "$@" -- mysql
cargo test --features mysql,server-tests --test mysql_store --test mysql_processes --test cli_mysql "$@"
