#!/usr/bin/env python3
"""An HTTP/1.1 keep-alive server for passthrough tests: prints its port, then serves
  GET  /bytes/N   N deterministic bytes (streamed, not held in memory)
  POST /sha256    the SHA-256 of the request body (streamed)
  GET  /hello     a short greeting
usage: http_service.py
"""
import hashlib, http.server, socketserver, sys

def pattern(n):
    block = bytes(range(256)) * 256  # 64 KiB
    while n > 0:
        chunk = block[: min(n, len(block))]
        n -= len(chunk)
        yield chunk

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for chunk in pattern(n):
                self.wfile.write(chunk)
        else:
            body = b"hello from site B\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            n -= len(chunk)
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
