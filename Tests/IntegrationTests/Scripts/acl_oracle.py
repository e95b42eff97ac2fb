#!/usr/bin/env python3
"""Asks a real mosquitto for ACL decisions by observing what it delivers.

stdin (JSON): {"port": N, "observer": "USERNAME", "queries": [
    {"username": str|null, "client_id": str, "topic": str, "access": "read"|"write"}, ...]}
stdout (JSON): [true|false, ...] in query order.

write: the identity publishes a unique payload (QoS 1); allowed iff the observer (a user whose
       block grants readwrite on everything) receives it.
read:  the identity subscribes to the topic; the observer publishes a unique payload (QoS 1);
       allowed iff the identity receives it. mosquitto applies its read ACL at delivery.
"""
import json, sys, threading, time, uuid
import paho.mqtt.client as mqtt

def main():
    spec = json.load(sys.stdin)
    port, queries = spec["port"], spec["queries"]
    received = {}  # client key -> set(payload)
    lock = threading.Lock()
    clients = {}

    def connect(key, username, client_id):
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if username is not None:
            c.username_pw_set(username)
        done = threading.Event()
        subscribed = set()
        c.on_connect = lambda cl, ud, flags, rc, props: done.set()
        def on_message(cl, ud, msg):
            with lock:
                received.setdefault(key, set()).add(msg.payload.decode())
        c.on_message = on_message
        def on_subscribe(cl, ud, mid, rcs, props):
            with lock:
                subscribed.add(mid)
        c.on_subscribe = on_subscribe
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not done.wait(10):
            raise SystemExit(f"connect timeout for {key}")
        c._subscribed = subscribed
        return c

    def subscribe(c, topic):
        rc, mid = c.subscribe(topic, qos=1)
        deadline = time.time() + 10
        while time.time() < deadline:
            with lock:
                if mid in c._subscribed:
                    return
            time.sleep(0.002)
        raise SystemExit(f"no SUBACK for {topic}")

    observer = connect("__observer", spec["observer"], "__observer-" + uuid.uuid4().hex[:6])
    subscribe(observer, "#")
    for topic in sorted({q["topic"] for q in queries if q["topic"].startswith("$")}):
        subscribe(observer, topic)

    identities = {}
    for q in queries:
        key = (q.get("username"), q["client_id"])
        if key not in identities:
            identities[key] = connect(key, q.get("username"), q["client_id"])

    payloads = []
    for q in queries:
        key = (q.get("username"), q["client_id"])
        if q["access"] == "read":
            subscribe(identities[key], q["topic"])
    time.sleep(0.2)
    infos = []
    for i, q in enumerate(queries):
        key = (q.get("username"), q["client_id"])
        payload = f"q{i}-{uuid.uuid4().hex[:8]}"
        payloads.append(payload)
        sender = identities[key] if q["access"] == "write" else observer
        infos.append(sender.publish(q["topic"], payload, qos=1))
    for info in infos:
        info.wait_for_publish(10)
    time.sleep(1.0)
    results = []
    with lock:
        for q, payload in zip(queries, payloads):
            key = "__observer" if q["access"] == "write" else (q.get("username"), q["client_id"])
            results.append(payload in received.get(key, set()))
    for c in list(identities.values()) + [observer]:
        c.disconnect(); c.loop_stop()
    json.dump(results, sys.stdout)

if __name__ == "__main__":
    main()
