#!/bin/sh
# make demo — one site: a legacy MQTT client → mqbridge (topic ACL) → a plaintext mosquitto.
# Everything runs on 127.0.0.1 with free ports and is stopped by PID on exit.
set -eu
cd "$(dirname "$0")/.."
BIN="$(swift build --show-bin-path)/mqbridge"
WORK="$(mktemp -d)"
chmod 777 "$WORK"   # mosquitto started as root drops to its own user
PIDS=""
cleanup() { for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(200):
    try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError: time.sleep(0.05)
sys.exit("nothing listening on port " + sys.argv[1])
PY
}

BROKER_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n' "$BROKER_PORT" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 & PIDS="$PIDS $!"
wait_port "$BROKER_PORT"

cat > "$WORK/acl.conf" <<'ACL'
user plc
topic write plant/+/telemetry
topic read plant/+/setpoint
topic deny plant/safety/#
ACL

BRIDGE_PORT=$(free_port)
"$BIN" run --listen "127.0.0.1:$BRIDGE_PORT" --broker "127.0.0.1:$BROKER_PORT" --acl "$WORK/acl.conf" > "$WORK/bridge.log" 2>&1 & PIDS="$PIDS $!"
wait_port "$BRIDGE_PORT"

echo "== mosquitto (plaintext broker) on 127.0.0.1:$BROKER_PORT; mqbridge on 127.0.0.1:$BRIDGE_PORT"
echo "== acl.conf:"; sed 's/^/   /' "$WORK/acl.conf"
echo
# An observer connected straight to the broker sees exactly what crossed the bridge.
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t '#' -v -W 4 > "$WORK/observed.txt" 2>/dev/null & PIDS="$PIDS $!"
sleep 0.5
publish() {
    printf '   legacy client (user plc) → %-24s %s\n' "$1" "$2"
    mosquitto_pub -h 127.0.0.1 -p "$BRIDGE_PORT" -u plc -V mqttv311 -t "$1" -m "$2" -q 1 || true
}
echo "== the legacy client publishes through mqbridge:"
publish plant/line1/telemetry '{"temp":21.5}'
publish plant/line1/setpoint '{"temp":99}'
publish plant/safety/override 'OPEN-ALL-VALVES'
publish other/topic 'hello'
sleep 4
echo
echo "== what reached the broker (observer subscribed to # directly on mosquitto):"
sed 's/^/   /' "$WORK/observed.txt"
echo
echo "== what mqbridge refused (JSON audit lines, deciding rule file:line):"
grep '"event":"denied"' "$WORK/bridge.log" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    rule = e["rule"].split("/")[-1]
    print("   DENY %-8s %-24s user=%s rule=%s  (%s)" % (e["kind"], e["topic"], e["username"], rule, e["reason"]))'
echo
echo "== ask the ACL directly:"
"$BIN" acl check --acl "$WORK/acl.conf" --username plc --topic plant/safety/override --access write | sed 's/^/   /' || true
