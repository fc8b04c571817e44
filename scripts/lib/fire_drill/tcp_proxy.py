#!/usr/bin/env python3
"""A TCP forwarder for the fire drill: farol reaches PostgreSQL through it, so that
stopping it cuts farol off from a database that is up (the exporter still reaches it
directly). Standard library only.

    tcp_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT

Listens on 127.0.0.1 only; on SIGTERM it closes every connection and exits.
"""

import asyncio
import signal
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen_port, host, port):
    # every open socket, closed on SIGTERM: the server's own close waits for its
    # connections (Python 3.12 and later), and farol's pooled ones never end by themselves
    writers = set()

    async def handle(client_reader, client_writer):
        writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            writers.discard(client_writer)
            return
        writers.add(server_writer)
        try:
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        finally:
            writers.difference_update((client_writer, server_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        server.close()
        for writer in list(writers):
            writer.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
