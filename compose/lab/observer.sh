#!/bin/sh
# Prints every message that reaches site B's broker (subscribed there directly), except the
# load generator's bench/#.
BROKER_HOST=${BROKER_HOST:-broker-b}
BROKER_PORT=${BROKER_PORT:-1883}
until mosquitto_sub -h "$BROKER_HOST" -p "$BROKER_PORT" -i observer-b -t '#' -T 'bench/#' -v; do sleep 1; done
