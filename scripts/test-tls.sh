#!/usr/bin/env bash
# Runs the e2e suites again with the public listener on TLS (issue 12: every e2e suite passes
# over TLS). Usage: scripts/test-tls.sh [1|h2] [tap args…]; prints tap's own summary.
# Makes a throwaway CA and a certificate for 127.0.0.1/localhost, trusted by the test
# processes through NODE_EXTRA_CA_CERTS (so fetch, ws and https all verify it for real).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-1}"; shift || true
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=portcullis-test-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout "$dir/key.pem" -out "$dir/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/req.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/cert.pem" 2>/dev/null
chmod 644 "$dir"/*.pem
export PORTCULLIS_TEST_TLS="$mode" PORTCULLIS_TEST_TLS_CERT="$dir/cert.pem" PORTCULLIS_TEST_TLS_KEY="$dir/key.pem" NODE_EXTRA_CA_CERTS="$dir/ca.pem"
if [ "$#" -eq 0 ]; then set -- test/e2e/*.test.ts; fi
npx tap "$@"
