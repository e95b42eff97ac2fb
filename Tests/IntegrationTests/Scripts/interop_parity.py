#!/usr/bin/env python3
"""Interoperability scenarios in the spirit of the Eclipse Paho interop suite (client_test.py,
client_test5.py), written for paho-mqtt 2.x: run once against a broker directly and once through
mqbridge, the Swift test requires both runs to observe the same thing.

usage: interop_parity.py PORT RUN_ID [SCENARIO ...]
Prints one JSON object {scenario: observation}. Every topic and client id carries RUN_ID, so the
direct and the proxied run can share one broker at the same time. What varies between runs by
design (an assigned client id's value, timings) is reduced to what must not vary (its presence).
"""
import json, os, socket, struct, sys, threading, time
sys.path.insert(0, os.path.dirname(__file__))
import paho.mqtt.client as mqtt
from mqtt_helpers import Client
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
RUN = sys.argv[2]


local = threading.local()


def tag():
    """This scenario's share of the names: the run id and the protocol version."""
    return local.tag


def t(name):
    """A topic of this scenario."""
    return f"interop/{tag()}/{name}"


def strip(topic, tag):
    return topic.replace(f"interop/{tag}/", "").replace(f"$dollar/{tag}/", "$/")


VERSIONS = {mqtt.MQTTv31: "31", mqtt.MQTTv311: "311", mqtt.MQTTv5: "5"}


class C(Client):
    """The helpers' client, with this scenario's names and what the scenarios compare: the
    v5 properties of each message and whether CONNACK assigned a client id."""

    def __init__(self, cid, protocol=mqtt.MQTTv5, clean=True, will=None, props=None, keepalive=60, manual_ack=False):
        self.tag = tag()
        self.raw = []
        self.unsubacks = {}
        self.pubacks = {}
        super().__init__(PORT, f"{cid}-{self.tag}" if cid else "", VERSIONS[protocol], None, clean, will, props, keepalive, manual_ack)
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish

    def _on_connect(self, c, ud, flags, rc, props):
        p = props.json() if props is not None and hasattr(props, "json") else {}
        self.connack = {"rc": rc.value if hasattr(rc, "value") else int(rc), "session_present": bool(flags.session_present),
                        "assigned_id": "AssignedClientIdentifier" in p}
        self.connected.set()

    def _on_message(self, c, ud, msg):
        p = msg.properties.json() if msg.properties is not None else {}
        entry = {"topic": strip(msg.topic, self.tag), "payload": msg.payload.decode(errors="replace"), "qos": msg.qos,
                 "retain": bool(msg.retain), "dup": bool(msg.dup)}
        for key in ("UserProperty", "ContentType", "PayloadFormatIndicator", "CorrelationData", "SubscriptionIdentifier"):
            if key in p:
                entry[key] = p[key]
        if "ResponseTopic" in p:
            entry["ResponseTopic"] = strip(p["ResponseTopic"], self.tag)
        if "MessageExpiryInterval" in p:
            entry["MessageExpiryInterval"] = "present"
        with self.lock:
            self.messages.append(entry)
            self.raw.append(msg)

    def _on_unsubscribe(self, c, ud, mid, rcs, props):
        with self.lock:
            self.unsubacks[mid] = [r.value if hasattr(r, "value") else int(r) for r in rcs] if rcs else []

    def _on_publish(self, c, ud, mid, rc, props):
        with self.lock:
            self.pubacks[mid] = rc.value if hasattr(rc, "value") else int(rc)

    def sub(self, filters, props=None):
        rc, mid = self.c.subscribe(filters, properties=props)
        return self._wait(self.suback, mid)

    def unsub(self, filters):
        rc, mid = self.c.unsubscribe(filters)
        return self._wait(self.unsubacks, mid)

    def _wait(self, table, mid, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if mid in table:
                    return table[mid]
            time.sleep(0.005)
        raise RuntimeError("no acknowledgement")

    def pub(self, topic, payload, qos=0, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            info.wait_for_publish(10)
        return info

    def got(self, sort=False):
        with self.lock:
            m = list(self.messages)
        return sorted(m, key=lambda e: json.dumps(e, sort_keys=True)) if sort else m

    def leave(self, reason, props=None):
        """DISCONNECT with a v5 reason code (and properties), then stop."""
        self.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=reason), properties=props)
        self.disconnected.wait(5)
        self.c.loop_stop()

    def kill(self):
        """Drop the connection without DISCONNECT (the will must be published)."""
        self.c.loop_stop()
        self.c.socket().close()


def props(kind, **values):
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def basic(version):
    a = C("basic", version)
    a.connect()
    granted = a.sub([(t("basic"), 2)])
    for q in (0, 1, 2):
        a.pub(t("basic"), f"qos {q}", q)
    a.wait_for(3)
    time.sleep(0.2)
    a.close()
    return {"granted": granted, "messages": a.got(sort=True)}


def retained(version):
    a = C("retained", version)
    a.connect()
    up = props(PacketTypes.PUBLISH, UserProperty=[("a", "2"), ("c", "3")]) if version == mqtt.MQTTv5 else None
    for q in (0, 1, 2):
        a.pub(t(f"retained/q{q}"), f"qos {q}", q, retain=True, props=up)
    time.sleep(0.3)
    a.sub([(t("retained/+"), 2)])
    a.wait_for(3)
    time.sleep(0.3)
    for q in (0, 1, 2):
        a.pub(t(f"retained/q{q}"), b"", 1, retain=True)
    time.sleep(0.2)
    a.close()
    return {"messages": a.got(sort=True)}


def will(version):
    """A client that drops its connection: its will is published (in 5.0 with its properties)."""
    b = C("will-b", version)
    b.connect()
    b.sub([(t("will"), 2)])
    wprops = props(PacketTypes.WILLMESSAGE, ContentType="text/plain", PayloadFormatIndicator=1, ResponseTopic=t("will/resp"),
                   CorrelationData=b"c-9", UserProperty=[("site", "a"), ("site", "b")]) if version == mqtt.MQTTv5 else None
    a = C("will-a", version, will={"topic": t("will"), "payload": "client not disconnected", "qos": 1, "props": wprops}, keepalive=2)
    a.connect()
    time.sleep(0.1)
    a.kill()
    b.wait_for(1)
    time.sleep(0.2)
    b.close()
    return {"messages": b.got()}


def zero_length_id(version):
    out = {}
    if version != mqtt.MQTTv5:
        # paho refuses to send this one, so by hand: 3.1.1 requires the server to refuse an
        # empty id without Clean Session with CONNACK 0x02 (MQTT-3.1.3-8); 3.1 any empty id.
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(raw_connect("", version, keepalive=10, clean=False))
        s.settimeout(5)
        out["clean=False"] = list(s.recv(64))
        s.close()
    for clean in ((True,) if version != mqtt.MQTTv5 else (False, True)):
        c = C("", version, clean=clean)
        out[f"clean={clean}"] = c.connect(5)
        time.sleep(0.2)
        c.close()
    return out


def offline_queueing(version):
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=60) if version == mqtt.MQTTv5 else None
    a = C("offline-a", version, clean=False, props=expiry)
    a.connect()
    a.sub([(t("offline/+"), 2)])
    a.close()
    time.sleep(0.2)
    b = C("offline-b", version)
    b.connect()
    for q in (0, 1, 2):
        b.pub(t(f"offline/q{q}"), f"qos {q}", q)
    time.sleep(0.3)
    b.close()
    a2 = C("offline-a", version, clean=False, props=expiry)
    present = a2.connect()["session_present"]
    a2.wait_for(3)
    time.sleep(0.3)
    a2.close()
    # End the session (clean start, then leave).
    end = C("offline-a", version, clean=True)
    end.connect()
    end.close()
    return {"session_present": present, "messages": a2.got(sort=True)}


def overlapping(version):
    a = C("overlap", version)
    a.connect()
    a.sub([(t("overlap/#"), 2), (t("overlap/+"), 1)])
    a.pub(t("overlap/x"), "overlapping topic filters", 2)
    time.sleep(0.6)
    a.close()
    return {"messages": a.got(sort=True)}


def keepalive(version):
    b = C("ka-b", version)
    b.connect()
    b.sub([(t("keepalive"), 2)])
    # A raw client that connects with keep-alive 2 s and a will, then goes silent.
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(raw_connect(f"ka-a-{tag()}", version, keepalive=2, will_topic=t("keepalive"), will_payload=b"keepalive expiry"))
    s.recv(64)
    b.wait_for(1)  # mosquitto checks keep-alives every few seconds: 3 to 6 s here
    s.close()
    b.close()
    return {"messages": b.got()}


def redelivery(version):
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=60) if version == mqtt.MQTTv5 else None
    b = C("redeliver", version, clean=False, props=expiry, manual_ack=True)
    b.connect()
    b.sub([(t("redeliver/#"), 2)])
    b.pub(t("redeliver/q1"), "q1", 1)
    b.pub(t("redeliver/q2"), "q2", 2)
    b.wait_for(2)
    first = b.got(sort=True)
    b.kill()
    time.sleep(0.3)
    b2 = C("redeliver", version, clean=False, props=expiry)
    present = b2.connect()["session_present"]
    b2.wait_for(2)
    time.sleep(0.3)
    b2.close()
    end = C("redeliver", version, clean=True)
    end.connect()
    end.close()
    return {"first": first, "session_present": present, "again": b2.got(sort=True)}


def dollar(version):
    """A filter that starts with a wildcard does not match a topic that starts with $."""
    b = C("dollar", version)
    b.connect()
    b.sub([(f"+/{tag()}/dollarx", 2), (f"$dollar/{tag()}/+", 2)])
    b.pub(f"$dollar/{tag()}/dollarx", "dollar", 1)
    time.sleep(0.5)
    b.close()
    return {"messages": b.got()}


def unsubscribe(version):
    b = C("unsub-b", version)
    b.connect()
    for n in (0, 1, 2):
        b.sub([(t(f"unsub/{n}"), 2)])
    unsub = b.unsub([t("unsub/0")])
    a = C("unsub-a", version)
    a.connect()
    for n in (0, 1, 2):
        a.pub(t(f"unsub/{n}"), f"topic {n}", 1)
    b.wait_for(2)
    time.sleep(0.3)
    a.close()
    b.close()
    return {"unsuback": unsub if version == mqtt.MQTTv5 else "n/a", "messages": b.got(sort=True)}


def session_expiry(version):
    a = C("expiry", version, clean=True, props=props(PacketTypes.CONNECT, SessionExpiryInterval=1))
    a.connect()
    a.sub([(t("expiry"), 1)])
    a.close()
    time.sleep(2.5)
    a2 = C("expiry", version, clean=False, props=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
    gone = a2.connect()["session_present"]
    a2.close()
    a3 = C("expiry", version, clean=False, props=props(PacketTypes.CONNECT, SessionExpiryInterval=0))
    kept = a3.connect()["session_present"]
    a3.close()
    return {"after expiry": gone, "within expiry": kept}


def shared(version):
    subs = [C(f"shared-{n}", version) for n in range(2)]
    for s in subs:
        s.connect()
        s.sub([(f"$share/g{tag()}/" + t("shared"), 1)])
    p = C("shared-p", version)
    p.connect()
    for n in range(10):
        p.pub(t("shared"), f"m{n}", 1)
    time.sleep(0.6)
    for c in subs + [p]:
        c.close()
    everything = sorted(m["payload"] for s in subs for m in s.got())
    return {"delivered once each": everything, "both got some": all(len(s.got()) > 0 for s in subs)}


def relayed(name, version, publications, count, sub_props=None):
    """A subscriber to `name`/#, a publisher sending `publications` (topic, payload,
    properties) at QoS 1: what the subscriber got."""
    b = C(f"{name}-sub", version)
    b.connect()
    b.sub([(t(f"{name}/#"), 2)], props=sub_props)
    a = C(f"{name}-pub", version)
    a.connect()
    for topic, payload, p in publications:
        a.pub(topic, payload, 1, props=p)
    b.wait_for(count)
    time.sleep(0.2)
    a.close()
    b.close()
    return {"messages": b.got()}


def topic_alias(version):
    alias = props(PacketTypes.PUBLISH, TopicAlias=1)
    return relayed("alias", version, [(t("alias/one"), "set", alias), ("", "used", alias),
                                      (t("alias/two"), "re-pointed", alias), ("", "used again", alias)], 4)


def properties(version):
    p = props(PacketTypes.PUBLISH, ResponseTopic=t("props/resp"), CorrelationData=b"corr-1", ContentType="text/plain",
              PayloadFormatIndicator=1, MessageExpiryInterval=60, UserProperty=[("k", "v"), ("k", "v2")])
    return relayed("props", version, [(t("props/req"), "request", p)], 1, sub_props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))


def subscribe_options(version):
    a = C("subopts", version)
    a.connect()
    a.pub(t("opts/retained"), "kept", 1, retain=True)
    time.sleep(0.2)
    granted = a.sub([(t("opts/nolocal"), SubscribeOptions(qos=1, noLocal=True)),
                     (t("opts/rap"), SubscribeOptions(qos=1, retainAsPublished=True)),
                     (t("opts/retained"), SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))])
    a.pub(t("opts/nolocal"), "own", 1)
    a.pub(t("opts/rap"), "rap", 1, retain=True)
    time.sleep(0.5)
    a.pub(t("opts/rap"), b"", 1, retain=True)
    a.pub(t("opts/retained"), b"", 1, retain=True)
    time.sleep(0.2)
    a.close()
    return {"granted": granted, "messages": a.got(sort=True)}


def flow_control(version):
    """The client allows 2 unacknowledged QoS 1 messages: the broker must not send a third."""
    b = C("flow", version, props=props(PacketTypes.CONNECT, ReceiveMaximum=2), manual_ack=True)
    b.connect()
    b.sub([(t("flow"), 1)])
    a = C("flow-a", version)
    a.connect()
    for n in range(5):
        a.pub(t("flow"), f"m{n}", 1)
    b.wait_for(2)
    time.sleep(0.5)  # a third would have arrived by now
    before = len(b.got())
    for m in list(b.raw):
        b.c.ack(m.mid, m.qos)
    b.wait_for(5)
    time.sleep(0.2)
    a.close()
    b.close()
    return {"before acknowledging": before, "in the end": sorted(m["payload"] for m in b.got())}


def max_packet_size(version):
    """A client that accepts at most 128-byte packets: the broker drops the larger message."""
    b = C("maxpkt", version, props=props(PacketTypes.CONNECT, MaximumPacketSize=128))
    b.connect()
    b.sub([(t("maxpkt"), 1)])
    a = C("maxpkt-a", version)
    a.connect()
    a.pub(t("maxpkt"), "x" * 400, 1)
    a.pub(t("maxpkt"), "small", 1)
    b.wait_for(1)
    time.sleep(0.3)
    a.close()
    b.close()
    return {"messages": [m["payload"] for m in b.got()]}


def will_delay(version):
    b = C("wd-b", version)
    b.connect()
    b.sub([(t("willdelay/#"), 1)])
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=30)
    wprops = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    a = C("wd-a", version, clean=True, props=expiry, will={"topic": t("willdelay/back"), "payload": "should not", "qos": 1, "props": wprops})
    a.connect()
    a.kill()
    time.sleep(0.5)
    a2 = C("wd-a", version, clean=False, props=expiry)  # back within the delay: no will
    a2.connect()
    a2.close()
    c = C("wd-c", version, clean=True, props=expiry, will={"topic": t("willdelay/late"), "payload": "delayed will", "qos": 1, "props": wprops})
    c.connect()
    c.kill()
    b.wait_for(1)
    time.sleep(0.3)
    b.close()
    for cid in ("wd-a", "wd-c"):
        e = C(cid, version, clean=True)
        e.connect()
        e.close()
    return {"messages": [m["payload"] for m in b.got()]}


def large(version):
    """Payloads around the proxy's batching threshold (4 KiB) and far above it, each alone."""
    a = C("large", version)
    a.connect()
    a.sub([(t("large"), 1)])
    sizes = [4000, 4096, 70000, 524288]  # 512 KiB stays under mqbridge's default limit (1 MiB)
    for size in sizes:
        a.pub(t("large"), bytes([size % 251]) * size, 1)
        time.sleep(0.1)
    a.wait_for(len(sizes))
    a.close()
    return {"received": [(len(m.payload), m.payload == bytes([len(m.payload) % 251]) * len(m.payload)) for m in a.raw]}


def message_expiry(version):
    """Messages queued for an offline session: the one whose expiry passed is not delivered."""
    expiry = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    a = C("msgexp", version, clean=False, props=expiry)
    a.connect()
    a.sub([(t("msgexp/+"), 1)])
    a.close()
    b = C("msgexp-b", version)
    b.connect()
    b.pub(t("msgexp/short"), "expires", 1, props=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    b.pub(t("msgexp/long"), "kept", 1, props=props(PacketTypes.PUBLISH, MessageExpiryInterval=60))
    b.close()
    time.sleep(2.5)
    a2 = C("msgexp", version, clean=False, props=expiry)
    a2.connect()
    a2.wait_for(1)
    time.sleep(0.3)
    a2.close()
    remaining = [m.properties.MessageExpiryInterval for m in a2.raw if hasattr(m.properties, "MessageExpiryInterval")]
    end = C("msgexp", version, clean=True)
    end.connect()
    end.close()
    return {"messages": a2.got(), "remaining below 60": [r < 60 for r in remaining]}


def subscription_ids(version):
    """Two subscriptions with their own identifiers that both match one publication."""
    a = C("subid", version)
    a.connect()
    a.sub([(t("subid/#"), 1)], props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    a.sub([(t("subid/+"), 1)], props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=268435455))
    a.pub(t("subid/x"), "both", 1)
    a.wait_for(1)
    time.sleep(0.5)
    a.close()
    return {"messages": a.got(sort=True)}


def disconnect_reasons(version):
    """DISCONNECT 0x04 publishes the will; DISCONNECT 0x00 does not."""
    b = C("dwill-b", version)
    b.connect()
    b.sub([(t("dwill/#"), 1)])
    for reason, name in ((0x00, "normal"), (0x04, "with will")):
        a = C(f"dwill-{reason}", version, will={"topic": t(f"dwill/{reason}"), "payload": name, "qos": 1})
        a.connect()
        a.leave(reason)
    b.wait_for(1)
    time.sleep(0.5)
    b.close()
    return {"messages": b.got()}


def disconnect_expiry(version):
    """A session expiry set on DISCONNECT is the one the broker keeps the session for."""
    out = {}
    for label, leaving in (("kept", None), ("ended on DISCONNECT", props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))):
        cid = f"dexp-{len(out)}"
        a = C(cid, version, clean=True, props=props(PacketTypes.CONNECT, SessionExpiryInterval=60))
        a.connect()
        a.sub([(t("dexp"), 1)])
        a.leave(0x00, leaving)
        time.sleep(0.2)
        a2 = C(cid, version, clean=False, props=props(PacketTypes.CONNECT, SessionExpiryInterval=0))
        out[label] = a2.connect()["session_present"]
        a2.close()
    return out


def unsubscribe_missing(version):
    """v5 UNSUBACK: 0x11 for a filter that had no subscription, 0x00 for one that had."""
    a = C("unsubm", version)
    a.connect()
    a.sub([(t("unsubm/yes"), 1)])
    codes = a.unsub([t("unsubm/no"), t("unsubm/yes")])
    a.close()
    return {"unsuback": codes}


def payload_format(version):
    """PUBLISH that says its payload is UTF-8 but is not: what the publisher and a subscriber see."""
    b = C("pfi-b", version)
    b.connect()
    b.sub([(t("pfi"), 1)])
    a = C("pfi-a", version)
    a.connect()
    info = a.c.publish(t("pfi"), b"ok \xff\xfe", qos=1, properties=props(PacketTypes.PUBLISH, PayloadFormatIndicator=1))
    info.wait_for_publish(5)
    time.sleep(0.3)
    after = a.c.is_connected()
    if after:
        a.pub(t("pfi"), "valid", 1, props=props(PacketTypes.PUBLISH, PayloadFormatIndicator=1))
    b.wait_for(1)
    time.sleep(0.3)
    a.close()
    b.close()
    with a.lock:
        acks = [a.pubacks.get(mid) for mid in sorted(a.pubacks)]
    return {"pubacks": acks, "publisher connected": after, "disconnect": a.disconnect_reason if not after else None,
            "messages": b.got()}


def raw_connect(cid, version, keepalive, will_topic=None, will_payload=b"", clean=True):
    """A CONNECT packet built by hand (3.1, 3.1.1 or 5), for a client that must stay silent."""
    def s(b):
        b = b if isinstance(b, bytes) else b.encode()
        return struct.pack("!H", len(b)) + b
    v5 = version == mqtt.MQTTv5
    flags = (0x02 if clean else 0) | (0x04 | 0x08 if will_topic else 0)  # will at QoS 1
    name, level = ("MQIsdp", 3) if version == mqtt.MQTTv31 else ("MQTT", 5 if v5 else 4)
    body = s(name) + bytes([level, flags]) + struct.pack("!H", keepalive) + (b"\x00" if v5 else b"")
    body += s(cid)
    if will_topic:
        body += (b"\x00" if v5 else b"") + s(will_topic) + s(will_payload)
    return bytes([0x10, len(body)]) + body


SCENARIOS = {
    "basic": basic, "retained": retained, "will": will, "zero_length_id": zero_length_id, "offline_queueing": offline_queueing,
    "overlapping": overlapping, "keepalive": keepalive, "redelivery": redelivery, "dollar": dollar, "unsubscribe": unsubscribe,
    "session_expiry": session_expiry, "shared": shared, "topic_alias": topic_alias, "properties": properties,
    "subscribe_options": subscribe_options, "flow_control": flow_control, "max_packet_size": max_packet_size,
    "will_delay": will_delay, "large": large, "message_expiry": message_expiry, "subscription_ids": subscription_ids,
    "disconnect_reasons": disconnect_reasons, "disconnect_expiry": disconnect_expiry,
    "unsubscribe_missing": unsubscribe_missing, "payload_format": payload_format,
}
V5_ONLY = {"session_expiry", "shared", "topic_alias", "properties", "subscribe_options", "flow_control", "max_packet_size", "will_delay",
           "message_expiry", "subscription_ids", "disconnect_reasons", "disconnect_expiry", "unsubscribe_missing",
           "payload_format"}

if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor
    names = sys.argv[3:] or list(SCENARIOS)
    jobs = [(f"{name}/{label}", name, version) for name in names
            for label, version in (("31", mqtt.MQTTv31), ("311", mqtt.MQTTv311), ("5", mqtt.MQTTv5)) if not (label != "5" and name in V5_ONLY)]

    def run(job):
        key, name, version = job
        local.tag = f"{RUN}-{key.split('/')[1]}"
        try:
            return key, SCENARIOS[name](version)
        except Exception as e:
            return key, {"error": f"{type(e).__name__}: {e}"}

    # Scenarios share nothing (own topics and client ids), so a few run at once.
    with ThreadPoolExecutor(max_workers=4) as pool:
        result = dict(pool.map(run, jobs))
    print(json.dumps(result, sort_keys=True))
