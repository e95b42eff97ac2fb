#!/bin/sh
# Interim demo (issue 2): decode captured sessions between real mosquitto clients and a real
# mosquitto broker, and show that every packet re-encodes to the same bytes. The proxy and
# link issues replace this with a live bridge.
set -eu
cd "$(dirname "$0")/.."
BIN="$(swift build --show-bin-path)/mqbridge"
for session in v311-subscribe v5-publish-qos2-will; do
    echo "=== $session"
    "$BIN" decode --session "Tests/MQTTCodecTests/Fixtures/$session.session"
    echo
done
