#!/bin/sh
# mqbridge at site B: owns broker-b and web-b, offers them to site A, accepts A's relay.
# Every address comes from the environment (defaults: the compose services), so the same
# script runs outside Docker too.
set -eu
STATE=${STATE:-/state}
EXCHANGE=${EXCHANGE:-/exchange}
LAB=${LAB:-/lab}
BROKER=${BROKER:-broker-b:1883}
WEB=${WEB:-web-b:8080}
LINK_LISTEN=${LINK_LISTEN:-0.0.0.0:8883}
LINK_ADDRESS=${LINK_ADDRESS:-bridge-b:8883}
PAIR_LISTEN=${PAIR_LISTEN:-0.0.0.0:7001}
PAIR_ADDRESS=${PAIR_ADDRESS:-bridge-b:7001}
METRICS=${METRICS:-0.0.0.0:9464}

mkdir -p "$STATE" "$EXCHANGE"
[ -f "$STATE/identity/key.pem" ] || mqbridge identity init --dir "$STATE/identity" --name site-b

# Pair once: print a one-time code, hand it to site A, wait for A to join.
if [ ! -f "$STATE/identity/peers.yaml" ]; then
    rm -f "$EXCHANGE/pairing-code"
    mqbridge pair invite --identity "$STATE/identity" --listen "$PAIR_LISTEN" --address "$PAIR_ADDRESS" \
        --link-address "$LINK_ADDRESS" --expires 10m > "$STATE/invite.out" 2>&1 &
    invite=$!
    code=""
    while [ -z "$code" ]; do
        kill -0 "$invite" 2>/dev/null || { cat "$STATE/invite.out"; exit 1; }
        sleep 0.2
        code=$(grep -o 'mqbp1-[a-z2-7]*' "$STATE/invite.out" | head -n 1 || true)
    done
    echo "site B: pairing code for site A: $code"
    echo "$code" > "$EXCHANGE/pairing-code.new" && mv "$EXCHANGE/pairing-code.new" "$EXCHANGE/pairing-code"
    wait "$invite" || { cat "$STATE/invite.out"; exit 1; }
    grep -E '^(paired|comparison)' "$STATE/invite.out" | sed 's/^/site B: /'
fi

cp "$LAB/acl-b.conf" "$STATE/acl.conf"
cat > "$STATE/mqbridge.yaml" <<YAML
identity: identity
acl: acl.conf
metrics: $METRICS
link:
  listen: $LINK_LISTEN
services:
  - {name: broker, kind: mqtt, target: "$BROKER", peers: [site-a]}
  - {name: web, kind: tcp, target: "$WEB", peers: [site-a]}
relay:
  broker: "$BROKER"
  rules:
    - {peer: site-a, filter: "sensors/#", direction: in, remote_prefix: site-a/, local_prefix: from-a/}
    - {peer: site-a, filter: "bench/#", direction: in}
YAML
mqbridge check --config "$STATE/mqbridge.yaml"
exec mqbridge run --config "$STATE/mqbridge.yaml"
