#!/bin/sh
# make demo — two sites on loopback, from scratch:
#   legacy MQTT client (site A) → mqbridge A → TLS 1.3, pinned keys → mqbridge B → mosquitto (site B)
#   HTTP client (site A)        → mqbridge A → same link            → mqbridge B → HTTP server (site B)
#   sensor at site A → mosquitto (site A) → relay A → same link → relay B → mosquitto (site B)
# Everything binds 127.0.0.1 on free ports and is stopped by PID on exit.
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
for _ in range(300):
    try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError: time.sleep(0.05)
sys.exit("nothing listening on port " + sys.argv[1])
PY
}
wait_log() { for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "timed out waiting for $2 in $1"; cat "$1"; exit 1; }

echo "== 1. each site creates its identity (P-256 key, self-signed certificate)"
"$BIN" identity init --dir "$WORK/a/identity" --name site-a | sed 's/^/   /'
"$BIN" identity init --dir "$WORK/b/identity" --name site-b | sed 's/^/   /'

BROKER_PORT=$(free_port); LINK_PORT=$(free_port); PAIR_PORT=$(free_port); HTTP_PORT=$(free_port); A_BROKER_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n' "$BROKER_PORT" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 & PIDS="$PIDS $!"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stdout\n' "$A_BROKER_PORT" > "$WORK/mosquitto-a.conf"
mosquitto -c "$WORK/mosquitto-a.conf" > "$WORK/mosquitto-a.log" 2>&1 & PIDS="$PIDS $!"
mkdir -p "$WORK/www" && echo "hello from site B's web server" > "$WORK/www/index.html"
python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$WORK/www" > /dev/null 2>&1 & PIDS="$PIDS $!"
wait_port "$BROKER_PORT"; wait_port "$HTTP_PORT"; wait_port "$A_BROKER_PORT"

echo
echo "== 2. pairing: site B prints a one-time code, site A joins with it"
"$BIN" pair invite --identity "$WORK/b/identity" --listen "127.0.0.1:$PAIR_PORT" --link-address "127.0.0.1:$LINK_PORT" --expires 2m > "$WORK/invite.out" 2>&1 & INVITE=$!
wait_log "$WORK/invite.out" mqbp1-
CODE=$(grep -o 'mqbp1-[a-z2-7]*' "$WORK/invite.out" | head -1)
echo "   site B: $(echo "$CODE" | cut -c1-40)…"
"$BIN" pair join --identity "$WORK/a/identity" --code "$CODE" | sed 's/^/   site A: /'
wait $INVITE || true
grep -E '^(paired|comparison)' "$WORK/invite.out" | sed 's/^/   site B: /'

echo
echo "== 3. configuration: B offers its broker (ACL enforced at B) and its web server to A;"
echo "      A relays its sensors/# topics to B, which accepts them as from-a/sensors/#"
cat > "$WORK/b/acl.conf" <<'ACL'
user plc
topic write plant/+/telemetry
topic deny plant/safety/#
peer site-a
topic write from-a/sensors/#
ACL
cat > "$WORK/b/mqbridge.yaml" <<YAML
identity: identity
acl: acl.conf
link:
  listen: 127.0.0.1:$LINK_PORT
services:
  - name: broker
    kind: mqtt
    target: 127.0.0.1:$BROKER_PORT
    peers: [site-a]
  - name: web
    kind: tcp
    target: 127.0.0.1:$HTTP_PORT
    peers: [site-a]
relay:
  broker: 127.0.0.1:$BROKER_PORT
  rules:
    - {peer: site-a, filter: "sensors/#", direction: in, remote_prefix: site-a/, local_prefix: from-a/}
YAML
MQTT_A=$(free_port); WEB_A=$(free_port)
cat > "$WORK/a/mqbridge.yaml" <<YAML
identity: identity
remote:
  - listen: 127.0.0.1:$MQTT_A
    peer: site-b
    service: broker
  - listen: 127.0.0.1:$WEB_A
    peer: site-b
    service: web
relay:
  broker: 127.0.0.1:$A_BROKER_PORT
  rules:
    - {peer: site-b, filter: "sensors/#", direction: out, remote_prefix: site-a/}
YAML
sed 's/^/   B: /' "$WORK/b/mqbridge.yaml"
sed 's/^/   A: /' "$WORK/a/mqbridge.yaml"
"$BIN" run --config "$WORK/b/mqbridge.yaml" > "$WORK/b.log" 2>&1 & PIDS="$PIDS $!"
wait_log "$WORK/b.log" link_listening
"$BIN" run --config "$WORK/a/mqbridge.yaml" > "$WORK/a.log" 2>&1 & PIDS="$PIDS $!"
wait_log "$WORK/a.log" '"event":"link_up"'
wait_log "$WORK/a.log" '"event":"relay_stream_up"'
wait_port "$MQTT_A"

echo
echo "== 4. the link"
python3 - "$WORK/a.log" "$WORK/b.log" <<'PY'
import json, sys
for side, path in (("A", sys.argv[1]), ("B", sys.argv[2])):
    for line in open(path):
        e = json.loads(line)
        if e.get("event") == "link_up":
            print(f"   site {side}: link up with {e['peer']} over {e['tls']}, peer key pinned: {e['peer_fingerprint']}")
PY

echo
echo "== 5. a legacy MQTT client at site A publishes through mqbridge A"
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t '#' -v -W 4 > "$WORK/observed.txt" 2>/dev/null & PIDS="$PIDS $!"
sleep 0.5
for msg in "plant/line1/telemetry:SECRET-MARKER temp=21.5" "plant/safety/override:OPEN-ALL-VALVES"; do
    topic=${msg%%:*}; payload=${msg#*:}
    printf '   client (user plc) → %-24s %s\n' "$topic" "$payload"
    mosquitto_pub -h 127.0.0.1 -p "$MQTT_A" -u plc -t "$topic" -m "$payload" -q 1 || true
done
printf '   sensor → site A broker  %-24s %s   (relayed by mqbridge A, durable until B has it)\n' "sensors/boiler/temp" "88.1"
mosquitto_pub -h 127.0.0.1 -p "$A_BROKER_PORT" -t sensors/boiler/temp -m 88.1 -q 1
echo
echo "== 6. an HTTP client at site A asks site B's web server through the same link"
printf '   GET http://127.0.0.1:%s/ → %s\n' "$WEB_A" "$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$WEB_A/').read().decode().strip())")"
sleep 4
echo
echo "== 7. what reached site B's broker (observer subscribed to # directly on mosquitto):"
sed 's/^/   /' "$WORK/observed.txt"
echo
echo "== 8. what site B refused (its ACL decides for its broker):"
grep '"event":"denied"' "$WORK/b.log" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print("   DENY %s %s user=%s rule=%s" % (e["kind"], e["topic"], e["username"], e["rule"].split("/")[-1]))'
