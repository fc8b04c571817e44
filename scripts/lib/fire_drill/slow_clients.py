#!/usr/bin/env python3
"""COUNT slow clients of 127.0.0.1:PORT, each the start of a request head and then nothing;
one cut off at farol's head timeout is opened again at once. Ends after MAX_SECONDS or on
SIGTERM or SIGINT, printing how many it opened and how many farol cut off.

    slow_clients.py PORT COUNT MAX_SECONDS
"""

import asyncio
import contextlib
import signal
import sys

HEAD = b"GET /livez HTTP/1.1\r\nHost: drill\r\nX-Slow: "
# starts spread out, so that the cuts do not all come at once and the count dip
SPREAD_SECONDS = 2.0


async def hold(port, delay, counts):
    await asyncio.sleep(delay)
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        counts["opened"] += 1
        try:
            writer.write(HEAD)
            await writer.drain()
            await reader.read()   # nothing comes but the end: farol's cut
            counts["cut"] += 1
        except OSError:
            pass
        finally:
            writer.close()


async def main(port, count, seconds):
    counts = {"opened": 0, "cut": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(hold(port, SPREAD_SECONDS * i / count, counts)) for i in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"slow clients: {count} held, {counts['opened']} opened in all, {counts['cut']} cut off by farol",
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
