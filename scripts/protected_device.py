#!/usr/bin/env python3
"""A reference device for Roost's payload protection (README, "Payload protection").

MQTT 3.1.1 over plain TCP with the standard library, and AES-GCM / AES-CCM from the
`cryptography` package: nothing else. It is what a microcontroller client does, written
out so that others can port it and the tests can run it.

  protected_device.py publish   --port P --id sensor-1 --key-id 1 --key HEX \\
                                --topic t --message hello [--qos 1] [--state FILE]
  protected_device.py subscribe --port P --id sensor-1 --key-id 1 --key HEX \\
                                --topic 't/#' --count 2 [--state FILE]
  protected_device.py seal      --key-id 1 --key HEX --seq 7 --topic t --message hello

The sequence numbers a device sends must grow across restarts: `--state FILE` keeps the
last one sent (and the last one received from the broker) in FILE, as a device keeps them
in flash. `subscribe` prints one JSON line per message: topic, plaintext, sequence
number, and whether it was accepted (a sequence number not above the last one is a replay).
"""

import argparse
import json
import os
import socket
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

VERSION = 1
UP, DOWN = 1, 2
HEADER_LEN, TAG_LEN, NONCE_LEN = 22, 16, 12


# --- the envelope -------------------------------------------------------------------------

def aead(alg, key):
    if alg.endswith("gcm"):
        return AESGCM(key)
    return AESCCM(key, tag_length=TAG_LEN)


def seal(alg, key, key_id, seq, topic, plaintext, direction=UP, nonce=None):
    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    header = bytes([VERSION, key_id]) + struct.pack(">Q", seq) + nonce
    aad = bytes([direction]) + header + topic.encode()
    return header + aead(alg, key).encrypt(nonce, plaintext, aad)


def open_envelope(alg, keys, topic, envelope, direction=DOWN):
    """Returns (seq, plaintext); raises ValueError if it does not verify."""
    if len(envelope) < HEADER_LEN + TAG_LEN or envelope[0] != VERSION:
        raise ValueError("not an envelope")
    key_id = envelope[1]
    if key_id not in keys:
        raise ValueError(f"unknown key id {key_id}")
    seq = struct.unpack(">Q", envelope[2:10])[0]
    nonce = envelope[10:HEADER_LEN]
    aad = bytes([direction]) + envelope[:HEADER_LEN] + topic.encode()
    try:
        return seq, aead(alg, keys[key_id]).decrypt(nonce, envelope[HEADER_LEN:], aad)
    except InvalidTag:
        raise ValueError("authentication failed") from None


# --- a minimal MQTT 3.1.1 client ----------------------------------------------------------

def utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def packet(kind, flags, body):
    out, n = bytearray([kind << 4 | flags]), len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def read_packet(sock):
    first = read_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:
        b = read_exact(sock, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first >> 4, first & 0x0F, read_exact(sock, length)


def connect(port, client_id, will=None, host="127.0.0.1"):
    sock = socket.create_connection((host, port), timeout=10)
    flags = 0x02  # clean session
    payload = utf8(client_id)
    if will:
        topic, message, qos = will
        flags |= 0x04 | (qos << 3)
        payload += utf8(topic) + utf8(message)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + payload
    sock.sendall(packet(1, 0, body))
    kind, _, body = read_packet(sock)
    if kind != 2 or body[1] != 0:
        raise ConnectionError(f"CONNACK refused: return code {body[1] if len(body) > 1 else '?'}")
    return sock


def publish(sock, topic, payload, qos, packet_id=1):
    body = utf8(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload
    sock.sendall(packet(3, qos << 1, body))
    if qos == 1:
        kind, _, ack = read_packet(sock)
        assert kind == 4 and ack[:2] == struct.pack(">H", packet_id), (kind, ack)


def subscribe(sock, topic_filter, qos=1):
    sock.sendall(packet(8, 0x02, struct.pack(">H", 1) + utf8(topic_filter) + bytes([qos])))
    kind, _, body = read_packet(sock)
    if kind != 9 or body[2] == 0x80:
        raise ConnectionError("SUBSCRIBE refused")


def next_publish(sock):
    while True:
        kind, flags, body = read_packet(sock)
        if kind != 3:
            continue
        qos = (flags >> 1) & 3
        n = struct.unpack(">H", body[:2])[0]
        topic, rest = body[2:2 + n].decode(), body[2 + n:]
        if qos:
            packet_id, rest = rest[:2], rest[2:]
            sock.sendall(packet(4 if qos == 1 else 5, 0, packet_id))
            if qos == 2:
                read_packet(sock)  # PUBREL
                sock.sendall(packet(7, 0, packet_id))
        return topic, rest


# --- the device's counters ----------------------------------------------------------------

def load_state(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"sent": 0, "received": 0}


def save_state(path, state):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["publish", "subscribe", "seal"])
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--id", default="device")
    p.add_argument("--alg", default="aes-128-gcm")
    p.add_argument("--key-id", type=int, default=1)
    p.add_argument("--key", required=True, help="hex; several as id:hex,id:hex for subscribe")
    p.add_argument("--topic", default="t")
    p.add_argument("--message", default="")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--seq", type=int, help="sequence number (default: the next one)")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--state", help="file keeping the device's sequence numbers")
    p.add_argument("--will-topic")
    p.add_argument("--will-message", default="")
    a = p.parse_args()

    state = load_state(a.state)
    if ":" in a.key:
        keys = {int(i): bytes.fromhex(k) for i, k in (kv.split(":") for kv in a.key.split(","))}
    else:
        keys = {a.key_id: bytes.fromhex(a.key)}
    key = keys[a.key_id]

    def next_seq():
        seq = a.seq if a.seq is not None else state["sent"] + 1
        state["sent"] = max(state["sent"], seq)
        save_state(a.state, state)  # before sending: a restart never reuses it
        return seq

    if a.command == "seal":
        print(seal(a.alg, key, a.key_id, next_seq(), a.topic, a.message.encode()).hex())
        return
    will = None
    if a.will_topic:
        will = (a.will_topic, seal(a.alg, key, a.key_id, next_seq(), a.will_topic,
                                   a.will_message.encode()), 0)
    sock = connect(a.port, a.id, will, a.host)
    if a.command == "publish":
        envelope = seal(a.alg, key, a.key_id, next_seq(), a.topic, a.message.encode())
        publish(sock, a.topic, envelope, a.qos)
        sock.sendall(packet(14, 0, b""))  # DISCONNECT
        print(json.dumps({"published": a.topic, "seq": state["sent"]}), flush=True)
    else:
        subscribe(sock, a.topic, a.qos)
        print(json.dumps({"subscribed": a.topic}), flush=True)
        for _ in range(a.count):
            topic, envelope = next_publish(sock)
            try:
                seq, plaintext = open_envelope(a.alg, keys, topic, envelope)
            except ValueError as e:
                print(json.dumps({"topic": topic, "error": str(e)}), flush=True)
                continue
            fresh = seq > state["received"]
            if fresh:
                state["received"] = seq
                save_state(a.state, state)
            print(json.dumps({"topic": topic, "message": plaintext.decode(errors="replace"),
                              "seq": seq, "accepted": fresh}), flush=True)
        sock.sendall(packet(14, 0, b""))
    sock.close()


if __name__ == "__main__":
    sys.exit(main())
