#!/bin/sh
# mqbridge at site A: joins site B with its pairing code, then offers B's broker and web
# server to site A's clients and relays sensors/# from broker-a to B. Addresses come from the
# environment (defaults: the compose services).
set -eu
STATE=${STATE:-/state}
EXCHANGE=${EXCHANGE:-/exchange}
BROKER=${BROKER:-broker-a:1883}
MQTT_LISTEN=${MQTT_LISTEN:-0.0.0.0:1883}
WEB_LISTEN=${WEB_LISTEN:-0.0.0.0:8080}
METRICS=${METRICS:-0.0.0.0:9464}

mkdir -p "$STATE"
[ -f "$STATE/identity/key.pem" ] || mqbridge identity init --dir "$STATE/identity" --name site-a

if [ ! -f "$STATE/identity/peers.yaml" ]; then
    echo "site A: waiting for site B's pairing code"
    while [ ! -s "$EXCHANGE/pairing-code" ]; do sleep 0.2; done
    mqbridge pair join --identity "$STATE/identity" --code "$(cat "$EXCHANGE/pairing-code")" | sed 's/^/site A: /'
    [ -f "$STATE/identity/peers.yaml" ] || exit 1
fi

cat > "$STATE/mqbridge.yaml" <<YAML
identity: identity
metrics: $METRICS
remote:
  - {listen: "$MQTT_LISTEN", peer: site-b, service: broker}
  - {listen: "$WEB_LISTEN", peer: site-b, service: web}
relay:
  broker: "$BROKER"
  rules:
    - {peer: site-b, filter: "sensors/#", direction: out, remote_prefix: site-a/}
    - {peer: site-b, filter: "bench/#", direction: out}
YAML
mqbridge check --config "$STATE/mqbridge.yaml"
exec mqbridge run --config "$STATE/mqbridge.yaml"
