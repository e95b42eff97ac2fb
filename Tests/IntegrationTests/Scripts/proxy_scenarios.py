#!/usr/bin/env python3
"""Real paho clients through mqbridge, with an observer connected directly to the broker.

usage: proxy_scenarios.py SCENARIO PROXY_PORT BROKER_PORT PROTOCOL
Prints one JSON object with what each client saw; the Swift test asserts on it.
"""
import json, os, signal, subprocess, sys, time, uuid
sys.path.insert(0, os.path.dirname(__file__))
from mqtt_helpers import Client

def uid(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"

def observer(broker_port, topics):
    o = Client(broker_port, uid("observer"), "311")
    o.connect()
    o.subscribe([(t, 2) for t in topics])
    return o

def flows(proxy, broker, protocol):
    """Allowed traffic at QoS 0/1/2 and retained; denied publications never reach the broker."""
    obs = observer(broker, ["#"])
    alice = Client(proxy, uid("alice"), protocol, "alice")
    alice.connect()
    granted = alice.subscribe([("sensors/#", 2), ("alerts/#", 1), ("secret/#", 1)])
    bob = Client(proxy, uid("bob"), protocol, "bob")
    bob.connect()
    for qos in (0, 1, 2):
        bob.publish(f"sensors/q{qos}", f"bob-q{qos}", qos=qos)
    bob.publish("alerts/fire", "bob-alert", qos=1)
    bob.publish("secret/plan", "bob-secret", qos=1)
    mallory = Client(proxy, uid("mallory"), protocol, "mallory")
    mallory.connect()
    for qos in (0, 1, 2):
        mallory.publish(f"sensors/m{qos}", f"mallory-q{qos}", qos=qos)
    mallory.publish("mallory/own", "mallory-own", qos=1)
    # Retained: published through the proxy, delivered to a later subscriber with the flag.
    bob.publish("sensors/retained", "bob-retained", qos=1, retain=True)
    time.sleep(0.5)
    late = Client(proxy, uid("alice"), protocol, "alice")
    late.connect()
    late.subscribe([("sensors/retained", 1)])
    late.wait_for(1)
    time.sleep(0.5)
    bob.publish("sensors/retained", b"", qos=1, retain=True)  # clear it
    result = {"granted": granted, "alice": alice.received(), "late": late.received(), "observer": obs.received()}
    for c in (obs, alice, bob, mallory, late):
        c.close()
    return result

def will(proxy, broker, protocol):
    """A client killed without DISCONNECT: its will reaches a subscriber on the broker."""
    obs = observer(broker, ["status/#"])
    code = f"""
import os, sys, signal, time
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from mqtt_helpers import Client
c = Client({proxy}, "mallory-will", {protocol!r}, "mallory", will={{"topic": "status/mallory", "payload": "mallory-died", "qos": 1}})
c.connect()
print("connected", flush=True)
time.sleep(0.3)
os.kill(os.getpid(), signal.SIGKILL)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    obs.wait_for(1)
    denied = Client(proxy, uid("mallory"), protocol, "mallory", will={"topic": "sensors/x", "payload": "nope"})
    denied_connack = denied.connect()
    result = {"child": p.stdout.strip(), "observer": obs.received(), "denied_will_connack": denied_connack}
    obs.close()
    denied.close()
    return result

def session(proxy, broker, protocol):
    """A persistent session: subscribe, go away, messages queue at the broker, resume."""
    cid = uid("alice-persist")
    alice = Client(proxy, cid, protocol, "alice", clean=False,
                   properties=_session_expiry(protocol))
    first = alice.connect()
    alice.subscribe([("sensors/persist", 1)])
    alice.close()
    time.sleep(0.3)
    bob = Client(proxy, uid("bob"), protocol, "bob")
    bob.connect()
    for i in range(3):
        bob.publish("sensors/persist", f"queued-{i}", qos=1)
    bob.close()
    again = Client(proxy, cid, protocol, "alice", clean=False, properties=_session_expiry(protocol))
    second = again.connect()
    again.wait_for(3)
    result = {"first": first, "second": second, "messages": again.received()}
    again.close()
    cleaner = Client(proxy, cid, protocol, "alice", clean=True)
    cleaner.connect()
    cleaner.close()
    return result

def _session_expiry(protocol):
    if protocol != "5":
        return None
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 300
    return p

def oversized(proxy, broker, protocol):
    """Messages larger than the proxy's max_packet_size (4096 in the test), published on the
    broker directly, to a persistent session behind the proxy: skipped, never blocking it."""
    cid = uid("alice-big")
    alice = Client(proxy, cid, protocol, "alice", clean=False, properties=_session_expiry(protocol))
    alice.connect()
    alice.subscribe([("sensors/big", 1)])
    alice.close()
    time.sleep(0.3)
    direct = Client(broker, uid("publisher"), "311")
    direct.connect()
    direct.publish("sensors/big", "x" * 10000, qos=1)   # queued for alice while she is away
    direct.publish("sensors/big", "queued-small", qos=1)
    back = Client(proxy, cid, protocol, "alice", clean=False, properties=_session_expiry(protocol))
    resumed = back.connect()
    back.wait_for(1)
    direct.publish("sensors/big", "y" * 10000, qos=2)   # live, at QoS 2
    direct.publish("sensors/big", "live-small", qos=1)
    back.wait_for(2)
    time.sleep(0.3)
    back.close()
    # Reconnecting again: nothing is redelivered (the skipped ones were acknowledged).
    again = Client(proxy, cid, protocol, "alice", clean=False, properties=_session_expiry(protocol))
    again.connect()
    time.sleep(1)
    result = {"resumed": resumed, "first": back.received(), "again": again.received()}
    again.close()
    direct.close()
    cleaner = Client(proxy, cid, protocol, "alice", clean=True)
    cleaner.connect()
    cleaner.close()
    return result

SCENARIOS = {"flows": flows, "will": will, "session": session, "oversized": oversized}

if __name__ == "__main__":
    name, proxy, broker, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(SCENARIOS[name](proxy, broker, protocol)))
