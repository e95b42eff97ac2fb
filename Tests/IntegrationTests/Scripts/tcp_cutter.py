#!/usr/bin/env python3
"""A TCP forwarder whose connections a test can cut: the link between two bridges.

Usage: tcp_cutter.py TARGET_PORT. Prints the port it listens on (127.0.0.1), then forwards
each connection to 127.0.0.1:TARGET_PORT. SIGUSR1 cuts every connection (reset) and refuses
new ones; SIGUSR2 accepts again. Each state change is printed.
"""
import asyncio
import signal
import socket
import struct
import sys

target_port = int(sys.argv[1])
down = False
connections = set()


def cut():
    global down
    down = True
    for writer in list(connections):
        sock = writer.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()
    connections.clear()
    print("down", flush=True)


def restore():
    global down
    down = False
    print("up", flush=True)


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
        connections.discard(writer)


async def handle(client_reader, client_writer):
    if down:
        client_writer.transport.abort()
        return
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.transport.abort()
        return
    connections.add(client_writer)
    connections.add(upstream_writer)
    await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


try:
    asyncio.run(main())
except RuntimeError:
    pass
