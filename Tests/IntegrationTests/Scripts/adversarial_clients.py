#!/usr/bin/env python3
"""MQTT packets a careless or hostile client sends, each on a fresh connection: 5.0 cases,
and 3.1.1 cases (names starting "311/"), where a broken packet can only be answered by a close.

usage: adversarial_clients.py CLIENT_PORT BROKER_PORT TAG

Each case connects to CLIENT_PORT (mosquitto itself, or mqbridge in front of it), sends one
packet after CONNECT and records what comes back (hex), with "|EOF" when the connection
was closed. PUBLISH cases use the topic adv/TAG/<case>; a witness subscribed to adv/TAG/#
directly on BROKER_PORT reports which of them reached the broker. Prints one JSON object.
"""
import json
import socket
import struct
import sys
import time

CLIENT_PORT, BROKER_PORT, TAG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def vbi(n):
    out = b''
    while True:
        digit, n = n % 128, n // 128
        out += bytes([digit | (0x80 if n else 0)])
        if not n:
            return out


def string(b):
    return struct.pack('>H', len(b)) + b


def packet(first, body):
    return bytes([first]) + vbi(len(body)) + body


def receive(sock, seconds):
    sock.settimeout(seconds)
    got = b''
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got.hex() + '|EOF'
            got += chunk
    except socket.timeout:
        return got.hex()
    except ConnectionResetError:
        return got.hex() + '|EOF'


def connect(port, client_id, level=5):
    sock = socket.create_connection(('127.0.0.1', port))
    properties = vbi(0) if level == 5 else b''
    body = string(b'MQTT') + bytes([level, 0x82]) + struct.pack('>H', 60) + properties + string(client_id) + string(b'bench')
    sock.sendall(packet(0x10, body))
    connack = receive_exactly(sock, 2)
    rest = receive_exactly(sock, connack[1])
    if connack[0] != 0x20 or rest[1] != 0:
        raise SystemExit(f'CONNACK refused: {(connack + rest).hex()}')
    return sock


def receive_exactly(sock, count):
    sock.settimeout(5)
    data = b''
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise SystemExit('closed during CONNACK')
        data += chunk
    return data


def publish(case, props=b'', qos=1, packet_id=1, payload=b'x', first=None, topic=None, level=5):
    name = f'adv/{TAG}/{case}'.encode() if topic is None else topic
    properties = vbi(len(props)) + props if level == 5 else b''
    body = string(name) + (struct.pack('>H', packet_id) if qos else b'') + properties + payload
    return packet(first if first is not None else 0x30 | (qos << 1), body)


def alias(value):
    return bytes([0x23]) + struct.pack('>H', value)


CASES = {
    # Topic aliases: 0 is never valid; above the maximum; never set with an empty topic.
    'alias_zero': publish('alias_zero', props=alias(0)),
    'alias_above_maximum': publish('alias_above_maximum', props=alias(500)),
    'alias_unset_empty_topic': publish('x', props=alias(3), topic=b''),
    'empty_topic_no_alias': publish('x', topic=b''),
    # Properties a client must not send, or must not repeat, or with invalid values.
    'subscription_id_in_publish': publish('subscription_id_in_publish', props=bytes([0x0B, 5])),
    'payload_format_2': publish('payload_format_2', props=bytes([0x01, 2])),
    'content_type_twice': publish('content_type_twice', props=bytes([0x03]) + string(b'a') + bytes([0x03]) + string(b'b')),
    'response_topic_wildcard': publish('response_topic_wildcard', props=bytes([0x08]) + string(b'adv/#')),
    'maximum_packet_size_in_publish': publish('maximum_packet_size_in_publish', props=bytes([0x27]) + struct.pack('>I', 100)),
    'unknown_property': publish('unknown_property', props=bytes([0x7F, 1])),
    # Fixed header and packet identifier rules.
    'qos1_packet_id_zero': publish('qos1_packet_id_zero', packet_id=0),
    'qos0_with_dup': publish('qos0_with_dup', qos=0, first=0x38),
    'pubrel_flags_zero': packet(0x60, struct.pack('>H', 77)),
    # Valid but odd: forwarded, answered by the broker.
    'payload_format_1_not_utf8': publish('payload_format_1_not_utf8', props=bytes([0x01, 1]), payload=b'\xff\xfe'),
    'pubrel_unknown_id': packet(0x62, struct.pack('>H', 77)),
    'puback_unknown_id': packet(0x40, struct.pack('>H', 78)),
    # SUBSCRIBE / UNSUBSCRIBE rules.
    'subscribe_reserved_options': packet(0x82, struct.pack('>H', 5) + vbi(0) + string(b'adv/#') + bytes([0xC0])),
    'subscribe_no_local_shared': packet(0x82, struct.pack('>H', 5) + vbi(0) + string(b'$share/g/adv/#') + bytes([0x05])),
    'subscribe_no_filters': packet(0x82, struct.pack('>H', 5) + vbi(0)),
    'unsubscribe_no_filters': packet(0xA2, struct.pack('>H', 6) + vbi(0)),
    # AUTH without an authentication method in CONNECT; DISCONNECT with will.
    'auth_unexpected': packet(0xF0, bytes([0x18, 0])),
    'disconnect_with_will': packet(0xE0, bytes([0x04, 0])),
}


def publish311(case, **arguments):
    return publish(case.replace('311/', '311_'), level=4, **arguments)


CASES_311 = {
    '311/wildcard_topic': publish311('x', topic=f'adv/{TAG}/#'.encode()),
    '311/nul_in_topic': publish311('x', topic=f'adv/{TAG}/nul\0'.encode()),
    '311/invalid_utf8_topic': publish311('x', topic=f'adv/{TAG}/'.encode() + b'\xc3\x28'),
    '311/qos3': publish311('311/qos3', first=0x36),
    '311/qos1_packet_id_zero': publish311('311/qos1_packet_id_zero', packet_id=0),
    '311/second_connect': packet(0x10, string(b'MQTT') + bytes([4, 0x02]) + struct.pack('>H', 60) + string(b'again')),
    '311/pubrel_flags_zero': packet(0x60, struct.pack('>H', 77)),
    '311/subscribe_flags_zero': packet(0x80, struct.pack('>H', 5) + string(b'adv/#') + bytes([0x00])),
    '311/subscribe_qos3': packet(0x82, struct.pack('>H', 5) + string(b'adv/#') + bytes([0x03])),
    '311/subscribe_no_filters': packet(0x82, struct.pack('>H', 5)),
    '311/unsubscribe_no_filters': packet(0xA2, struct.pack('>H', 6)),
    '311/five_byte_length': bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    '311/reserved_type_0': bytes([0x00, 0x00]),
    '311/connack_from_client': bytes([0x20, 0x02, 0x00, 0x00]),
    '311/valid_qos1': publish311('311/valid_qos1'),
}


def main():
    witness = connect(BROKER_PORT, f'witness-{TAG}-{CLIENT_PORT}'.encode())
    witness.sendall(packet(0x82, struct.pack('>H', 1) + vbi(0) + string(f'adv/{TAG}/#'.encode()) + bytes([0x00])))
    suback = receive(witness, 1.0)
    if not suback.startswith('9004'):
        raise SystemExit(f'witness SUBACK: {suback}')
    observations = {}
    for index, (name, data) in enumerate(list(CASES.items()) + list(CASES_311.items())):
        sock = connect(CLIENT_PORT, f'adv-{TAG}-{index}'.encode(), level=4 if name.startswith('311/') else 5)
        sock.sendall(data)
        observations[name] = receive(sock, 0.4)
        sock.close()
    time.sleep(0.3)
    delivered = receive(witness, 0.5)
    witness.close()
    # Topics the witness got (QoS 0 PUBLISHes: 0x30, remaining length, topic).
    raw, topics, i = bytes.fromhex(delivered.split('|')[0]), [], 0
    while i < len(raw):
        first, length, shift, j = raw[i], 0, 0, i + 1
        while True:
            byte = raw[j]
            length |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if not byte & 0x80:
                break
        if first >> 4 == 3:
            size = struct.unpack('>H', raw[j:j + 2])[0]
            topics.append(raw[j + 2:j + 2 + size].decode().rsplit('/', 1)[-1])
        i = j + length
    observations['witness'] = sorted(topics)
    print(json.dumps(observations, sort_keys=True))


main()
