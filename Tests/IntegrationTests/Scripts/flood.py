#!/usr/bin/env python3
"""Malformed-packet flood against mqbridge while a well-behaved client keeps working.

usage: flood.py PROXY_PORT SECONDS
Prints JSON: round trips completed / failed by the good client, and how each kind of bad
connection ended (closed with no reply, a DISCONNECT reason code, a CONNACK code).
"""
import json, os, random, socket, struct, sys, threading, time, uuid
sys.path.insert(0, os.path.dirname(__file__))
from mqtt_helpers import Client

def connect_packet(version=4, client_id=b"flood"):
    name = b"\x00\x04MQTT"
    body = name + bytes([version, 0x02, 0, 60]) + (b"\x00" if version == 5 else b"") + struct.pack(">H", len(client_id)) + client_id
    return bytes([0x10, len(body)]) + body

def publish(topic, payload, version):
    body = struct.pack(">H", len(topic)) + topic + (b"\x00" if version == 5 else b"") + payload
    return bytes([0x30, len(body)]) + body

BAD = {
    "garbage": lambda: os.urandom(random.randint(1, 300)),
    "reserved_type": lambda: b"\x00\x00",
    "overlong_length": lambda: b"\x10\x80\x80\x80\x80\x01",
    "huge_first_packet": lambda: b"\x30\xff\xff\xff\x7f" + b"A" * 1000,
    "publish_before_connect": lambda: publish(b"a/b", b"x", 4),
    "bad_protocol_name": lambda: b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00",
    "v5_invalid_utf8_topic": lambda: connect_packet(5) + publish(b"a\xffb", b"x", 5),
    "v5_wildcard_topic": lambda: connect_packet(5) + publish(b"a/#", b"x", 5),
    "v5_second_connect": lambda: connect_packet(5) + connect_packet(5),
    "v311_nul_in_topic": lambda: connect_packet(4) + publish(b"a\x00b", b"x", 4),
    "v5_truncated_properties": lambda: connect_packet(5) + b"\x30\x05\x00\x01a\x09\x01",
}

def attack(port, kind, outcomes, lock):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(BAD[kind]())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        data = b"error"
    finally:
        s.close()
    # Summarize the reply: a CONNACK and/or DISCONNECT code, or nothing.
    summary = "closed"
    if data.startswith(b"\x20\x02"):
        summary = f"connack {data[3]:#04x}"
    elif data.startswith(b"\x20"):
        summary = f"connack {data[3]:#04x}"
    marker = b"\xe0\x01"
    if marker in data:
        reason = data[data.index(marker) + 2]
        summary += f" disconnect {reason:#04x}"
    with lock:
        outcomes.setdefault(kind, {}).setdefault(summary, 0)
        outcomes[kind][summary] += 1

def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    outcomes, lock = {}, threading.Lock()
    stop = time.time() + seconds
    good = Client(port, "good-" + uuid.uuid4().hex[:6], "311", "alice")
    good.connect()
    good.subscribe([("sensors/good", 1)])
    pub = Client(port, "goodpub-" + uuid.uuid4().hex[:6], "311", "bob")
    pub.connect()
    stats = {"sent": 0, "attacks": 0}

    def attacker():
        while time.time() < stop:
            kind = random.choice(list(BAD))
            try:
                attack(port, kind, outcomes, lock)
                stats["attacks"] += 1
            except OSError as e:
                with lock:
                    outcomes.setdefault(kind, {}).setdefault("connect failed", 0)
                    outcomes[kind]["connect failed"] += 1
    threads = [threading.Thread(target=attacker) for _ in range(8)]
    for t in threads:
        t.start()
    while time.time() < stop:
        pub.publish("sensors/good", f"m{stats['sent']}", qos=1)
        stats["sent"] += 1
        time.sleep(0.02)
    for t in threads:
        t.join()
    good.wait_for(stats["sent"])
    got = {m["payload"] for m in good.received()}
    missing = [i for i in range(stats["sent"]) if f"m{i}" not in got]
    print(json.dumps({"sent": stats["sent"], "received": len(got), "missing": missing[:20], "attacks": stats["attacks"], "outcomes": outcomes}))
    good.close()
    pub.close()

if __name__ == "__main__":
    main()
