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

failed=0
problems=""
fail() { problems="$problems
  - $1"; }

# The lines a service printed, without Compose's "name-1 | " prefix (v1 writes "name_1").
output() { $L logs --no-color "$1" 2>/dev/null | sed -n 's/^[^|]*| //p'; }

# The variant's rows of lab/expected, as "service|check|text".
expectations() { grep -v '^#' lab/expected | sed -n "s/^$1 *| *\([^|]*[^ |]\) *| *\([a-z]*\) *| *\(.*\)\$/\1|\2|\3/p"; }

# The checks of lab/expected (what each means is written there).
check() {  # variant
    rows=$(expectations "$1")
    [ -n "$rows" ] || { fail "lab/expected lists nothing for $1"; return; }
    for service in $(echo "$rows" | awk -F'|' '$2 == "exactly" { print $1 }' | sort -u); do
        want=$(echo "$rows" | awk -F'|' -v s="$service" '$1 == s && $2 == "exactly" { print $3 }' | sort)
        got=$(output "$service" | sort)
        [ "$got" = "$want" ] || fail "$service printed [$(echo "$got" | paste -sd '|' -)], expected [$(echo "$want" | paste -sd '|' -)]"
    done
    while IFS='|' read -r service kind text; do
        case $kind in
            line)
                matches=$(output "$service") rest=$text
                while :; do
                    part=${rest%% && *}
                    matches=$(printf '%s\n' "$matches" | grep -F -- "$part")
                    [ "$part" = "$rest" ] && break
                    rest=${rest#* && }
                done
                [ -n "$matches" ] || fail "$service printed no line with: $text" ;;
            pairing)
                seen="" all=""
                for site in $service; do
                    digits=$(output "$site" | sed -n 's/.*comparison: \([0-9 ]*[0-9]\).*/\1/p' | head -1)
                    all="$all $site: \"$digits\""
                    [ -n "$digits" ] && { [ -z "$seen" ] || [ "$seen" = "$digits" ]; } && seen=$digits || seen=MISMATCH
                done
                [ "$seen" != MISMATCH ] && [ -n "$seen" ] || fail "pairing comparison digits differ or are missing:$all" ;;
        esac
    done <<ROWS
$(echo "$rows" | grep -v '|exactly|')
ROWS
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
    check "$variant"
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
