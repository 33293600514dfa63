# TLS to PostgreSQL (sourced by tests/postgres/run.sh, after the plaintext
# suites, with its $bindir, $data, $as_server and the plaintext server's
# TOKENSTORE_TEST_PG_URL).
#
# Makes a throw-away CA and a server certificate for DNS:localhost only (so
# that 127.0.0.1 is a wrong host name under verify-full), a second, unrelated
# CA, a client certificate for the role `certuser` from the CA and another
# from the unrelated CA; starts a second cluster on 127.0.0.1 with ssl=on and
# only `hostssl` lines for TCP in pg_hba.conf (scram-sha-256 for postgres,
# cert for certuser; the Unix socket trusted, for the tests' direct clients),
# and runs
#   cargo test --features postgres,server-tests --test postgres_tls
#   cargo test --features postgres,server-tests --test conformance -- postgres   } over
#   cargo test --features postgres,server-tests --test postgres_processes        } verify-full
# The plaintext server started by run.sh is the "server without TLS".

tls=$data/tls
mkdir -p "$tls"
certs=$tls/certs
mkdir -p "$certs"

# make_ca NAME: $certs/NAME.pem and NAME.key
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tokenstore test $1" \
        -keyout "$certs/$1.key" -out "$certs/$1.pem" >/dev/null 2>&1
}
# sign NAME CA CN EXTENSIONS: $certs/NAME.crt and NAME.key, signed by CA
sign() {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$3" \
        -keyout "$certs/$1.key" -out "$certs/$1.csr" >/dev/null 2>&1
    printf '%s\n' "$4" >"$certs/$1.ext"
    openssl x509 -req -in "$certs/$1.csr" -CA "$certs/$2.pem" -CAkey "$certs/$2.key" \
        -CAcreateserial -days 2 -extfile "$certs/$1.ext" -out "$certs/$1.crt" >/dev/null 2>&1
    chmod 600 "$certs/$1.key"
}
command -v openssl >/dev/null || skip "openssl is needed to make the test certificates"
make_ca ca
make_ca wrong-ca
sign server ca localhost "$(printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth')"
sign client ca certuser "$(printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth')"
sign wrong-client wrong-ca certuser "$(printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth')"

tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
           echo $((20000 + RANDOM % 20000)))
tls_password=tls-test-$RANDOM$RANDOM
[ "$(id -u)" = 0 ] && chown postgres "$tls"

"${as_server[@]}" "$bindir/initdb" -D "$tls/db" -A trust -U postgres --no-sync \
    >"$tls/initdb.log" 2>&1 || { cat "$tls/initdb.log"; skip "initdb (TLS cluster) failed"; }
cp "$certs/server.crt" "$certs/server.key" "$certs/ca.pem" "$tls/db/"
[ "$(id -u)" = 0 ] && chown postgres "$tls/db/server.crt" "$tls/db/server.key" "$tls/db/ca.pem"
chmod 600 "$tls/db/server.key"
cat >"$tls/db/pg_hba.conf" <<EOF
local   all all                 trust
hostssl all certuser 127.0.0.1/32 cert
hostssl all all      127.0.0.1/32 scram-sha-256
EOF
cat >>"$tls/db/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.pem'
password_encryption = 'scram-sha-256'
EOF
"${as_server[@]}" "$bindir/pg_ctl" -D "$tls/db" -l "$tls/server.log" -w -t 60 \
    -o "-p $tls_port -k $tls -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null ||
    { cat "$tls/server.log"; skip "the TLS server did not start"; }
stop_tls() {
    "${as_server[@]}" "$bindir/pg_ctl" -D "$tls/db" -m immediate stop >/dev/null 2>&1 || true
}
trap 'stop_tls; stop' EXIT
"$bindir/psql" -q -h "$tls" -p "$tls_port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "ALTER ROLE postgres PASSWORD '$tls_password'" \
    -c "CREATE ROLE certuser LOGIN SUPERUSER" >/dev/null

socket_dir=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tls")
export TOKENSTORE_TEST_PG_PLAIN_URL="$TOKENSTORE_TEST_PG_URL"
export TOKENSTORE_TEST_PG_TLS_DIR="$certs"
export TOKENSTORE_TEST_PG_TLS_PORT="$tls_port"
export TOKENSTORE_TEST_PG_TLS_PASSWORD="$tls_password"
export TOKENSTORE_TEST_PG_ADMIN_URL="postgres://postgres@$socket_dir:$tls_port/postgres"
echo "PostgreSQL with TLS only on 127.0.0.1:$tls_port (certificate for DNS:localhost; $tls)"

cargo test --features postgres,server-tests --test postgres_tls "$@"

# The shared suites again, over verify-full with channel binding required.
export TOKENSTORE_TEST_PG_URL="postgres://postgres:$tls_password@localhost:$tls_port/postgres?sslmode=verify-full&sslrootcert=$certs/ca.pem&channel_binding=require"
unset TOKENSTORE_TEST_PG_RESTART
cargo test --features postgres,server-tests --test conformance "$@" -- postgres
cargo test --features postgres,server-tests --test postgres_processes "$@"
