#!/bin/sh
# Site A: a legacy MQTT client (user plc) publishing to MQTT_HOST:MQTT_PORT, an HTTP client
# fetching HTTP_URL, and a sensor publishing to its own site's broker (SENSOR_BROKER), which
# a relay may carry to site B. observer-b shows what arrived at B.
set -u
MQTT_PORT=${MQTT_PORT:-1883}
SENSOR_PORT=${SENSOR_PORT:-1883}

wait_for() {  # host port
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
for _ in range(600):
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(f"nothing listening at {sys.argv[1]}:{sys.argv[2]}")
PY
}

publish() {  # topic payload: retried while the path comes up; retained, so that an
              # observer-b that subscribes late (a loaded machine) still sees what arrived
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if mosquitto_pub -h "$MQTT_HOST" -p "$MQTT_PORT" -u plc -i "client-a" -q 1 -r -t "$1" -m "$2" 2>/dev/null; then
            echo "client-a: published $1: $2"
            return 0
        fi
        sleep 1
    done
    echo "client-a: could not publish $1"
}

sleep 2  # observer-b subscribes at site B meanwhile
if [ -n "${MQTT_HOST:-}" ]; then
    wait_for "$MQTT_HOST" "$MQTT_PORT" || exit 1
    publish plant/line1/telemetry "SECRET-MARKER temp=21.5"
    publish plant/safety/override "OPEN-ALL-VALVES"
fi

if [ -n "${HTTP_URL:-}" ]; then
    python3 - "$HTTP_URL" <<'PY'
import sys, time, urllib.request
for _ in range(20):
    try:
        print("client-a: GET", sys.argv[1], "->", urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())
        break
    except OSError as error:
        last = error
        time.sleep(1)
else:
    print("client-a: GET", sys.argv[1], "failed:", last)
PY
fi

if [ -n "${SENSOR_BROKER:-}" ]; then
    wait_for "$SENSOR_BROKER" "$SENSOR_PORT" || exit 1
    # Retained, so that a relay (or bridge) that subscribes after this still gets it.
    sleep 2
    mosquitto_pub -h "$SENSOR_BROKER" -p "$SENSOR_PORT" -i sensor-a -q 1 -r -t sensors/boiler/temp -m "88.1" \
        && echo "client-a: sensor published sensors/boiler/temp: 88.1 to its own broker"
fi
sleep 3
echo "client-a: done; observer-b shows what reached site B's broker"
