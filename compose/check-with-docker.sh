#!/bin/sh
# Runs the compose labs under Docker and checks, for each variant, what reached site B's
# broker (observer-b) and what the client, the bridges and the web server said: the same
# checks `make test` makes on run-without-docker.py (Tests/IntegrationTests/ComposeLabTests.swift).
#
#   compose/check-with-docker.sh                     all four variants, image built first
#   compose/check-with-docker.sh mqbridge stunnel    some of them
#   BUILD=--no-build compose/check-with-docker.sh    use the image mqbridge-lab:latest as it is
#   COMPOSE=docker-compose compose/check-with-docker.sh   Compose v1 (Debian's docker-compose)
#
# Exit status: 0 all passed, 1 a check failed, 77 no Docker here.
set -u
cd "$(dirname "$0")"

if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then COMPOSE=docker-compose
    else echo "no docker compose (nor docker-compose) here"; exit 77; fi
fi
docker info >/dev/null 2>&1 || { echo "no Docker engine answers here"; exit 77; }
BUILD=${BUILD:---build}

TELEMETRY="plant/line1/telemetry SECRET-MARKER temp=21.5"
FORBIDDEN="plant/safety/override OPEN-ALL-VALVES"
RELAYED="from-a/sensors/boiler/temp 88.1"

failed=0
problems=""
fail() { problems="$problems
  - $1"; }

# The lines a service printed, without Compose's "name-1 | " prefix (v1 writes "name_1").
output() { $L logs --no-color "$1" 2>/dev/null | sed -n 's/^[^|]*| //p'; }

# observer-b printed exactly these lines, in any order, each once.
expect_observer() {
    want=$(for line in "$@"; do echo "$line"; done | sort)
    got=$(output observer-b | sort)
    [ "$got" = "$want" ] || fail "observer-b printed [$(echo "$got" | paste -sd '|' -)], expected [$(echo "$want" | paste -sd '|' -)]"
}

expect_page() {  # host:port the client fetched the page through
    output client-a | grep -qF "client-a: GET http://$1/ -> hello from site B's web server" \
        || fail "client-a did not get the page through $1"
}

for variant in ${*:-plain stunnel mqbridge mosquitto-bridge}; do
    [ -f "$variant.yaml" ] || { echo "no variant $variant (no $variant.yaml)"; exit 2; }
    L="$COMPOSE -f compose.yaml -f $variant.yaml"
    problems=""
    $L down -v >/dev/null 2>&1
    if ! started=$($L up -d $BUILD 2>&1); then
        echo "FAIL $variant: the lab did not start"
        echo "$started" | tail -30
        failed=1
        continue
    fi
    waited=0
    until output client-a | grep -q "client-a: done"; do
        waited=$((waited + 1))
        if [ $waited -gt 180 ]; then fail "client-a did not finish in 180 s"; break; fi
        sleep 1
    done
    sleep 1  # observer-b prints what the last publication delivered
    case $variant in
        plain) expect_observer "$TELEMETRY" "$FORBIDDEN"; expect_page web-b:8080 ;;
        stunnel) expect_observer "$TELEMETRY" "$FORBIDDEN"; expect_page stunnel-a:8080 ;;
        mqbridge)
            expect_observer "$TELEMETRY" "$RELAYED"
            expect_page bridge-a:8080
            a=$(output bridge-a | sed -n 's/.*comparison: \([0-9 ]*\).*/\1/p' | head -1)
            b=$(output bridge-b | sed -n 's/.*comparison: \([0-9 ]*\).*/\1/p' | head -1)
            [ -n "$a" ] && [ "$a" = "$b" ] || fail "pairing comparison digits differ or missing: site A \"$a\", site B \"$b\""
            output bridge-b | grep '"event":"denied"' | grep '"topic":"plant/safety/override"' | grep -q 'acl.conf:5"' \
                || fail "bridge-b logged no denial of plant/safety/override by acl.conf:5"
            ;;
        mosquitto-bridge) expect_observer "$RELAYED" ;;
        *) expect_observer "$TELEMETRY" ;;
    esac
    if [ -z "$problems" ]; then
        echo "PASS $variant"
    else
        echo "FAIL $variant:$problems"
        $L logs --no-color 2>&1 | tail -60
        failed=1
    fi
    [ -n "${KEEP:-}" ] || $L down -v >/dev/null 2>&1
done
exit $failed
