#!/usr/bin/env python3
"""Checks HTTP through a passthrough port: keep-alive, a large download and a large upload.
usage: http_client.py PORT MIB
Prints JSON.
"""
import hashlib, http.client, json, sys, time

port, mib = int(sys.argv[1]), int(sys.argv[2])
n = mib << 20

def pattern_digest(n):
    block = bytes(range(256)) * 256
    d = hashlib.sha256()
    while n > 0:
        chunk = block[: min(n, len(block))]
        d.update(chunk)
        n -= len(chunk)
    return d.hexdigest()

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
result = {}
# Two requests on one connection: keep-alive through the stream.
conn.request("GET", "/hello")
r = conn.getresponse()
result["hello"] = r.read().decode()
conn.request("GET", "/hello")
r = conn.getresponse()
result["hello_again"] = r.read().decode()
sock_before = conn.sock
start = time.time()
conn.request("GET", f"/bytes/{n}")
r = conn.getresponse()
d = hashlib.sha256()
got = 0
while True:
    chunk = r.read(1 << 16)
    if not chunk:
        break
    d.update(chunk)
    got += len(chunk)
result["download_bytes"] = got
result["download_ok"] = d.hexdigest() == pattern_digest(n)
result["download_seconds"] = round(time.time() - start, 2)

def body():
    block = bytes(range(256)) * 256
    left = n
    while left > 0:
        chunk = block[: min(left, len(block))]
        left -= len(chunk)
        yield chunk

start = time.time()
conn.request("POST", "/sha256", body=body(), headers={"Content-Length": str(n)})
r = conn.getresponse()
result["upload_ok"] = r.read().decode() == pattern_digest(n)
result["upload_seconds"] = round(time.time() - start, 2)
result["same_connection"] = conn.sock is sock_before
print(json.dumps(result))
