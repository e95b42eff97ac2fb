#!/usr/bin/env python3
"""A client that sends and does not read: QoS 1 PUBLISHes to a topic it may not write, each
answered with a PUBACK by mqbridge itself (nothing reaches the broker), while the client reads
none of them. mqbridge must stop reading this client once its answers are not taken, so the
client's sends block instead of mqbridge's memory growing; and once the client reads again,
every PUBLISH must have had its PUBACK, in order.

usage: unread_answers.py PORT USERNAME LIMIT_MB
Prints one JSON object: whether the sends blocked, after how many bytes, how many PUBLISHes
were sent and PUBACKs received, whether their ids came back in order, and whether a PINGREQ
sent last was answered (the connection still works).
"""
import json, socket, struct, sys, threading

PORT, USERNAME, LIMIT = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3]) << 20


def string(b):
    return struct.pack("!H", len(b)) + b


s = socket.socket()
# A small receive buffer (set before connecting, so the window is small too): the answers
# back up into mqbridge quickly.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", PORT))
body = string(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 600) + string(b"unread-answers") + string(USERNAME) + string(b"secret")
s.sendall(bytes([0x10, len(body)]) + body)
connack = s.recv(4)
assert connack == b"\x20\x02\x00\x00", connack.hex()


PER_CHUNK = 1000


def packet_id(n):
    """The n-th PUBLISH's packet id: 1 to 1000 over and over (each is answered long before)."""
    return struct.pack("!H", n % PER_CHUNK + 1)


# QoS 1 PUBLISHes to topic `d`, 7 bytes each.
chunk = b"".join(bytes([0x32, 5]) + string(b"d") + packet_id(n) for n in range(PER_CHUNK))
s.settimeout(5)  # a send that makes no progress for 5 s: the client is blocked
sent, blocked, pending = 0, False, b""
while sent < LIMIT:
    data = pending or chunk[(sent % len(chunk)):]
    try:
        n = s.send(data)
    except socket.timeout:
        blocked = True
        break
    sent += n
    pending = data[n:] if n < len(data) else b""

# Read again: every PUBLISH sent (the last one completed first) must get its PUBACK, in order.
s.settimeout(None)
# With the 4 KB buffer kept, Linux may not announce the space a read frees, and the sender
# then waits for zero-window probes whose interval doubles: twice in seven runs the 1.7
# million answers through the link trickled in at ~2,300 a second and the wait ran out.
# The stop is shown by now; reading with a large buffer only makes the rest arrive.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
rest = (-sent) % 7
answers = bytearray()
done = threading.Event()


def reader():
    while not done.is_set():
        data = s.recv(1 << 16)
        if not data:
            break
        answers.extend(data)
        if answers.endswith(b"\xd0\x00"):  # PINGRESP, after every PUBACK
            break
    done.set()


t = threading.Thread(target=reader, daemon=True)
t.start()
offset = sent % len(chunk)
s.sendall(chunk[offset:offset + rest] + b"\xc0\x00")
published = (sent + rest) // 7
done.wait(300)  # a bound on a hang, not a speed
expected = b"".join(b"\x40\x02" + packet_id(n) for n in range(published))
print(json.dumps({"blocked": blocked, "sent_mb": round(sent / (1 << 20), 1), "publishes": published,
                  "pubacks": (len(answers) - 2) // 4,
                  "in_order": bytes(answers) == expected + b"\xd0\x00", "pingresp": answers.endswith(b"\xd0\x00")}))
