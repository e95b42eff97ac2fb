"""Small synchronous wrappers over paho-mqtt 2.x for the integration tests."""
import threading, time
import paho.mqtt.client as mqtt

PROTOCOLS = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311, "5": mqtt.MQTTv5}


class Client:
    """A paho client whose connect / subscribe / publish wait for their acknowledgements."""

    def __init__(self, port, client_id, protocol="311", username=None, clean=True, will=None, properties=None, keepalive=60, manual_ack=False):
        self.protocol = protocol
        self.keepalive = keepalive
        kwargs = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2, "client_id": client_id, "protocol": PROTOCOLS[protocol],
                  "manual_ack": manual_ack}
        if protocol != "5":
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(**kwargs)
        self.clean = clean
        self.port = port
        if username is not None:
            self.c.username_pw_set(username, "secret")
        if will:
            self.c.will_set(will["topic"], will.get("payload", "gone"), qos=will.get("qos", 0), retain=will.get("retain", False),
                            properties=will.get("props"))
        self.lock = threading.Lock()
        self.messages = []
        self.connack = None
        self.suback = {}
        self.disconnect_reason = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect
        self.properties = properties

    def _on_connect(self, c, ud, flags, rc, props):
        self.connack = {"rc": rc.value if hasattr(rc, "value") else int(rc), "session_present": bool(flags.session_present)}
        self.connected.set()

    def _on_message(self, c, ud, msg):
        with self.lock:
            self.messages.append({"topic": msg.topic, "payload": msg.payload.decode(errors="replace"), "qos": msg.qos, "retain": bool(msg.retain)})

    def _on_subscribe(self, c, ud, mid, rcs, props):
        with self.lock:
            self.suback[mid] = [r.value if hasattr(r, "value") else int(r) for r in rcs]

    def _on_disconnect(self, c, ud, flags, rc, props):
        self.disconnect_reason = rc.value if hasattr(rc, "value") else int(rc)
        self.disconnected.set()

    def connect(self, timeout=10):
        if self.protocol == "5":
            self.c.connect("127.0.0.1", self.port, keepalive=self.keepalive, clean_start=self.clean, properties=self.properties)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.c.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("no CONNACK")
        return self.connack

    def subscribe(self, topics, timeout=10):
        rc, mid = self.c.subscribe(topics)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if mid in self.suback:
                    return self.suback[mid]
            time.sleep(0.005)
        raise RuntimeError("no SUBACK")

    def publish(self, topic, payload, qos=0, retain=False, timeout=10):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            info.wait_for_publish(timeout)
        return info

    def received(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, count, timeout=30):
        # Returns as soon as `count` messages are in; the limit is only for a run that fails,
        # and generous because `make test` runs every suite at once.
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.received()) >= count:
                return True
            time.sleep(0.01)
        return False

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()
