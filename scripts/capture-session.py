#!/usr/bin/env python3
"""Capture real MQTT sessions between mosquitto clients and a real mosquitto broker.

Starts mosquitto on a free loopback port, puts a recording TCP relay in front of it, runs
mosquitto_pub / mosquitto_sub through the relay, and writes one fixture file per scenario:

    # comment lines
    = connection 1
    C <hex of a chunk the client sent>
    S <hex of a chunk the server sent>

Chunks are what recv() returned, not packets: the codec tests frame them themselves.
Usage: scripts/capture-session.py OUTPUT_DIR
"""
import os, shutil, socket, subprocess, sys, tempfile, threading, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Relay:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.sock = socket.socket(); self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0)); self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = []; self.lock = threading.Lock()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try: client, _ = self.sock.accept()
            except OSError: return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            record = []
            with self.lock: self.connections.append(record)
            for src, dst, tag in ((client, upstream, "C"), (upstream, client, "S")):
                threading.Thread(target=self.pump, args=(src, dst, tag, record), daemon=True).start()

    def pump(self, src, dst, tag, record):
        while True:
            try: data = src.recv(65536)
            except OSError: data = b""
            if not data:
                try: dst.shutdown(socket.SHUT_WR)
                except OSError: pass
                return
            with self.lock: record.append((tag, data))
            try: dst.sendall(data)
            except OSError: return

    def take(self):
        time.sleep(0.3)
        with self.lock:
            taken, self.connections = self.connections, []
        return taken

def main():
    out = sys.argv[1]; os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="mqcapture-")
    port = free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stdout\npersistence false\n")
    broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try: socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError: time.sleep(0.05)
        relay = Relay(port)
        r = ["-h", "127.0.0.1", "-p", str(relay.port)]
        version = mosquitto_version()

        def pub(*args): subprocess.run(["mosquitto_pub", *r, *args], check=True, timeout=10)
        def scenario(name, description, body):
            body()
            conns = relay.take()
            with open(os.path.join(out, name + ".session"), "w") as f:
                f.write(f"# {description}\n# captured from {version} by scripts/capture-session.py\n")
                for i, conn in enumerate(conns, 1):
                    f.write(f"= connection {i}\n")
                    for tag, data in conn: f.write(f"{tag} {data.hex()}\n")
            print(f"{name}: {len(conns)} connection(s)")

        def subscriber_then(version_args, sub_args, count, publishes):
            sub = subprocess.Popen(["mosquitto_sub", *r, *version_args, "-C", str(count), "-W", "10", *sub_args],
                                   stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            for p in publishes: pub(*p)
            sub.wait(timeout=15)

        for v, tag in (("mqttv31", "v31"), ("mqttv311", "v311"), ("mqttv5", "v5")):
            va = ["-V", v]
            props5 = []
            if v == "mqttv5":
                props5 = ["-D", "connect", "session-expiry-interval", "300", "-D", "connect", "user-property", "site", "a",
                          "-D", "publish", "content-type", "text/plain", "-D", "publish", "correlation-data", "c0rr",
                          "-D", "publish", "response-topic", "reply/to", "-D", "publish", "message-expiry-interval", "60",
                          "-D", "publish", "payload-format-indicator", "1", "-D", "publish", "user-property", "k", "v"]
            scenario(f"{tag}-publish-qos0", f"mosquitto_pub -V {v} QoS 0",
                     lambda: pub(*va, "-t", "sensors/temp", "-m", "21.5", "-q", "0", *props5))
            scenario(f"{tag}-publish-qos1-retained", f"mosquitto_pub -V {v} QoS 1 retained, credentials",
                     lambda: pub(*va, "-t", "sensors/hum", "-m", "40%", "-q", "1", "-r", "-u", "alice", "-P", "s3cret", *props5))
            will5 = ["-D", "will", "will-delay-interval", "5", "-D", "will", "content-type", "text/plain"] if v == "mqttv5" else []
            scenario(f"{tag}-publish-qos2-will", f"mosquitto_pub -V {v} QoS 2 with a will",
                     lambda: pub(*va, "-t", "cmd/valve", "-m", "open", "-q", "2", "--will-topic", "status/pub",
                                 "--will-payload", "gone", "--will-qos", "1", "--will-retain", "-k", "30", *will5, *props5))
            sub5 = ["-D", "subscribe", "subscription-identifier", "7"] if v == "mqttv5" else []
            scenario(f"{tag}-subscribe", f"mosquitto_sub -V {v} on two filters receiving QoS 0/1/2, then retained clear",
                     lambda: subscriber_then(va, ["-t", "sensors/#", "-t", "alerts/+", "-q", "2", "-U", "old/#", *sub5], 4,
                                             [[*va, "-t", "sensors/a", "-m", "x", "-q", "0"],
                                              [*va, "-t", "alerts/fire", "-m", "y" * 200, "-q", "1"],
                                              [*va, "-t", "sensors/b/c", "-m", "z" * 20000, "-q", "2"]]))
        # Clear the retained message so nothing lingers.
        pub("-t", "sensors/hum", "-n", "-r")
        relay.take()
    finally:
        broker.kill(); broker.wait(); shutil.rmtree(work, ignore_errors=True)

def mosquitto_version():
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
        return out[0].strip() if out else "mosquitto"
    except OSError:
        return "mosquitto"

if __name__ == "__main__":
    main()
