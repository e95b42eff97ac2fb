#!/bin/sh
# Certificates for the stunnel pair (sa, sb) and mosquitto's bridge (ma, mb), made once into
# the shared volume. A lab shortcut: in real life each site makes its own key and only the
# certificates travel. Readable by all because mosquitto drops to its own user.
set -eu
cd "${EXCHANGE:-/exchange}"
issue() {
    [ -f "$1.pem" ] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -keyout "$1.key" -out "$1.pem" -subj "/CN=$2" -addext "subjectAltName=DNS:$2" 2>/dev/null
    echo "certs: made $1 for $2"
}
issue sa stunnel-a
issue sb stunnel-b
issue ma broker-a
issue mb broker-b
chmod 644 ./*.key ./*.pem
