#!/usr/bin/env python3
"""Publishes COUNT QoS 1 (or QOS) messages m000001…, with at most WINDOW unacknowledged at a time.

Usage: bulk_publish.py PORT TOPIC COUNT [WINDOW [QOS [SIZE]]]. Payloads are padded with dots
to SIZE bytes when given. Prints "done N" once the broker has acknowledged all of them (QoS 0:
once they are written). (mosquitto_pub -l does not wait for acknowledgements and is
disconnected by the broker when it outruns it.)
"""
import sys
import threading

import paho.mqtt.client as mqtt

port, topic, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
window = int(sys.argv[4]) if len(sys.argv) > 4 else 200
qos = int(sys.argv[5]) if len(sys.argv) > 5 else 1
size = int(sys.argv[6]) if len(sys.argv) > 6 else 0

slots = threading.Semaphore(window)
acked = 0
lock = threading.Lock()
finished = threading.Event()


def on_publish(client, userdata, mid, reason_code, properties):
    global acked
    with lock:
        acked += 1
        if acked == count:
            finished.set()
    slots.release()


client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bulk-publisher")
client.max_inflight_messages_set(window)
client.max_queued_messages_set(0)
client.on_publish = on_publish
client.connect("127.0.0.1", port)
client.loop_start()
for i in range(1, count + 1):
    slots.acquire()
    client.publish(topic, ("m%06d" % i).ljust(size, "."), qos=qos)
if not finished.wait(600):
    sys.exit("only %d of %d acknowledged" % (acked, count))
print("done", count, flush=True)
client.loop_stop()
client.disconnect()
