#!/usr/bin/env python3
"""Opens N MQTT connections through mqbridge at once and keeps them all open and working.

usage: many_connections.py PROXY_PORT N
Each connection sends CONNECT (3.1.1, user alice) and must get CONNACK 0; then every one sends
PINGREQ and must get PINGRESP while all N are open; finally one QoS 1 PUBLISH per connection,
each acknowledged. Prints JSON counts.
"""
import json, selectors, socket, struct, sys, time

def connect_packet(i):
    cid = f"many-{i}".encode()
    user = b"alice"
    body = b"\x00\x04MQTT\x04\x82\x00\x3c" + struct.pack(">H", len(cid)) + cid + struct.pack(">H", len(user)) + user
    return bytes([0x10, len(body)]) + body

def read_exact(s, n, deadline):
    data = b""
    while len(data) < n:
        s.settimeout(max(0.01, deadline - time.time()))
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data

def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    socks = []
    start = time.time()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(connect_packet(i))
        socks.append(s)
    deadline = time.time() + 60
    connacks = sum(1 for s in socks if read_exact(s, 4, deadline) == b"\x20\x02\x00\x00")
    connect_time = time.time() - start
    for s in socks:
        s.sendall(b"\xc0\x00")
    pings = sum(1 for s in socks if read_exact(s, 2, deadline) == b"\xd0\x00")
    acks = 0
    for i, s in enumerate(socks):
        topic = b"sensors/many"
        body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", 1) + f"m{i}".encode()
        s.sendall(bytes([0x32, len(body)]) + body)
    for s in socks:
        if read_exact(s, 4, deadline) == b"\x40\x02\x00\x01":
            acks += 1
    for s in socks:
        s.sendall(b"\xe0\x00")
        s.close()
    print(json.dumps({"connections": n, "connacks": connacks, "pings": pings, "pubacks": acks, "connect_seconds": round(connect_time, 2)}))

if __name__ == "__main__":
    main()
