#!/usr/bin/env bash
# Secrets of the compose deployment, made here and never committed (docker/.secrets/ is in
# .gitignore). Idempotent: a file that exists is kept, so tokens and certificates survive
# `make docker-up` runs; delete one (or the directory) to make it again.
#
#   docker/secrets.sh [DIR]      (default: docker/.secrets)
#
#   ingest.tokens    the ingest token: the emitter and the chaos driver POST logs with it
#   admin.tokens     the admin token: the distributor's admin listener, the analyzers' control endpoints
#   analyzer.tokens  the token the distributor sends to the analyzers' /analyze
#   ca.pem           a CA made for this deployment (ca.key, its key, stays on the host)
#   distributor.crt, distributor.key   the distributor's HTTPS certificate (SANs distributor,
#                    localhost, 127.0.0.1), signed by ca.pem
#
# openssl makes the certificates; without it, trustme (in the dev venv: make build-dev). The
# directory is 0700 (only this user on the host); the files are 0644 so that the containers'
# non-root user (uid 10001) can read them where compose bind-mounts them, at /run/secrets/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$ROOT/docker/.secrets}"
mkdir -p "$DIR"
chmod 0700 "$DIR"
cd "$DIR"
umask 022

token() {  # token FILE: one random token line, made once
    [[ -s $1 ]] && return 0
    printf '%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n' | cut -c1-40)" >"$1.tmp"
    mv "$1.tmp" "$1"
    echo "secrets: made $DIR/$1"
}
token ingest.tokens
token admin.tokens
token analyzer.tokens

if [[ ! -s ca.pem || ! -s distributor.crt || ! -s distributor.key ]]; then
    rm -f ca.pem ca.key distributor.crt distributor.key
    if command -v openssl >/dev/null 2>&1; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=logdist compose CA" \
            -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=distributor" \
            -keyout distributor.key -out distributor.csr 2>/dev/null
        printf '%s\n' "subjectAltName=DNS:distributor,DNS:localhost,IP:127.0.0.1" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" >distributor.ext
        openssl x509 -req -in distributor.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
            -extfile distributor.ext -out distributor.crt 2>/dev/null
        rm -f distributor.csr distributor.ext ca.srl
    else
        PY="$ROOT/.venv/bin/python"
        [[ -x $PY ]] || PY=python3
        "$PY" -c 'import trustme
ca = trustme.CA(organization_name="logdist compose CA")
c = ca.issue_cert("distributor", "localhost", "127.0.0.1")
ca.cert_pem.write_to_path("ca.pem"); ca.private_key_pem.write_to_path("ca.key")
c.cert_chain_pems[0].write_to_path("distributor.crt"); c.private_key_pem.write_to_path("distributor.key")'
    fi
    chmod 0600 ca.key   # never mounted into a container
    echo "secrets: made $DIR/ca.pem and distributor.crt/.key (SANs distributor, localhost, 127.0.0.1)"
fi
chmod 0644 ingest.tokens admin.tokens analyzer.tokens ca.pem distributor.crt distributor.key
