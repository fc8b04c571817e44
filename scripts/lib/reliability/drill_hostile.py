"""Hostile clients (scripts/reliability hostile): slow clients must not slow /health for
others, and forged X-Request-Id values must never reach the log. What each hostile request
is answered is tests/api/hostile.rs, run by `cargo test`."""

import asyncio
import json
import re
import socket
import time

from httpload import Connection, Farol, percentile, run_drill

SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SLOW_CLIENTS, SLOW_SECONDS = 300, 12
REQUEST_TIMEOUT_MS = 5000
# tests/api/hostile.rs's forged ids, sent to /version: /livez is logged at debug, below info
FORGED_PATH = "/version"
FORGED_IDS = [
    b'x" ,"level":"ERROR","message":"forged',
    b"x} {\"level\":\"ERROR\"}",
    b"\xff\xfe invalid utf-8",
    b"a" * 129,
    b"id with spaces",
    b"tab\tinside",
    b"<script>alert(1)</script>",
    b"'; DROP TABLE notes; -- \" OR 1=1 /* ` \\ %_ $1",
]


def send_forged_ids(port):
    """The status of a GET with each forged id, on raw connections (an HTTP client would
    refuse or re-encode some of them)."""
    statuses = []
    for forged in FORGED_IDS:
        raw = b"GET %s HTTP/1.1\r\nHost: farol\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n" % (
            FORGED_PATH.encode(), forged)
        answer = b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(raw)
                while chunk := s.recv(65536):
                    answer += chunk
        except OSError as error:
            print(f"    {FORGED_PATH} with a forged id: {error}", flush=True)
        statuses.append(int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0)
    return statuses


async def slow_clients(port, count, seconds, prefix, drip):
    """COUNT connections each sending PREFIX, then DRIP a byte a second for SECONDS or until
    the server answers or closes: (how many the server ended, their answers counted)."""
    ended, answers = 0, {}

    async def one():
        nonlocal ended
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            answers["connect failed"] = answers.get("connect failed", 0) + 1
            return
        try:
            writer.write(prefix)
            deadline = time.time() + seconds
            for byte in drip:
                if time.time() >= deadline:
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(200), 1.0)
                except TimeoutError:
                    continue
                if data:
                    status = data.split(b" ", 2)[1].decode()
                    answers[status] = answers.get(status, 0) + 1
                ended += 1
                return
        except (ConnectionError, OSError):
            ended += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return ended, answers


async def health_latency(port, seconds, rate=50):
    """/health RATE times a second for SECONDS: (ms of the 200s, count of other answers)."""
    connection, ms, other = Connection("127.0.0.1", port), [], 0
    end = time.time() + seconds
    while time.time() < end:
        started = time.perf_counter()
        status, _, _ = await connection.request("GET", "/health")
        elapsed = (time.perf_counter() - started) * 1000
        if status == 200:
            ms.append(elapsed)
        else:
            other += 1
        await asyncio.sleep(max(0.0, 1 / rate - elapsed / 1000))
    await connection.close()
    return ms, other


def summary(ms):
    return f"p50 {percentile(ms, .5):.2f} ms, p99 {percentile(ms, .99):.2f} ms ({len(ms)} requests)"


async def slow_client_checks(farol, verdict):
    """/health alone, then with each kind of slow client. Starved, it would answer in
    seconds; the limits sit far below that and far above a shared two-core machine's noise
    (the 300 body clients time out in one instant, and their answers land in a few samples)."""
    slow = {
        "headers": (b"GET /health HTTP/1.1\r\nHost: farol\r\nX-Slow: ", b"a" * 1000),
        "a body": (b"POST /api/v1/notes HTTP/1.1\r\nHost: farol\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000\r\n\r\n", b'{"title":"slow","body":"' + b"b" * 1000),
    }
    quiet, quiet_other = await health_latency(farol.port, 6)
    verdict.figure("/health without slow clients", summary(quiet))
    p50_limit = 2 * percentile(quiet, .5) + 2
    p99_limit = 2 * percentile(quiet, .99) + 100
    for name, (prefix, drip) in slow.items():
        drips = asyncio.create_task(slow_clients(farol.port, SLOW_CLIENTS, SLOW_SECONDS, prefix, drip))
        await asyncio.sleep(2)  # every connection open and dripping
        busy, busy_other = await health_latency(farol.port, SLOW_SECONDS - 4)
        ended, answers = await drips
        verdict.check(
            busy and not busy_other and not quiet_other
            and percentile(busy, .5) <= p50_limit and percentile(busy, .99) <= p99_limit,
            f"{SLOW_CLIENTS} clients sending {name} a byte a second do not slow /health",
            f"{summary(busy)}, {busy_other} not 200 (limits p50 {p50_limit:.2f} ms, p99 {p99_limit:.2f} ms)")
        verdict.figure(f"  slow clients sending {name} that farol ended within {SLOW_SECONDS} s",
                       f"{ended} of {SLOW_CLIENTS} {answers or ''}")
        if name == "a body":
            # the client's slowness: a 4xx, which no availability alert counts
            verdict.check(answers == {"408": SLOW_CLIENTS}, "every client dripping a body is answered 408",
                          f"answers {answers}")


async def drill(binary, work, verdict):
    with Farol(binary, work, {"REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_MS)}, name="farol-hostile") as farol:
        statuses = send_forged_ids(farol.port)
        verdict.check(statuses == [200] * len(FORGED_IDS), "requests with a forged X-Request-Id are served",
                      f"statuses {statuses}")
        await slow_client_checks(farol, verdict)
        healthy = farol.health() == 200
        peak = farol.rss_kib("VmHWM") if farol.alive() else 0
        verdict.check(healthy, "healthy afterwards",
                      f"alive {farol.alive()}, /health {'200' if healthy else 'not 200'},"
                      f" peak RSS {peak / 1024:.1f} MiB")
    entries = farol.log_lines()  # fails on a line that is not one JSON object
    with open(farol.log_path, "rb") as log:
        text = log.read()
    requests_logged = [e for e in entries if e.get("message") == "request"]
    forged_logged = [e for e in requests_logged if e.get("route") == FORGED_PATH]
    insane = [e["request_id"] for e in requests_logged if not SANE_ID.match(e.get("request_id", ""))]
    # as sent, and as a JSON string would carry it (quotes, backslashes and tabs escaped)
    verbatim = [forged[:40] for forged in FORGED_IDS
                if forged in text or json.dumps(forged.decode("utf-8", "replace"))[1:-1].encode() in text]
    fresh_ids = {e.get("request_id") for e in forged_logged}
    errors = [e for e in entries if e.get("level") == "ERROR"]
    verdict.check(len(forged_logged) == len(fresh_ids) == len(FORGED_IDS) and not insane and not verbatim
                  and not errors,
                  "the log is intact",
                  f"{len(entries)} lines, each one JSON object; {len(requests_logged)} request lines, "
                  f"{len(forged_logged)} of {len(FORGED_IDS)} with a forged id logged, under "
                  f"{len(fresh_ids)} distinct ids, "
                  f"{len(insane)} with an unsafe request id, forged ids found verbatim {verbatim}; "
                  f"{len(errors)} ERROR lines")


if __name__ == "__main__":
    run_drill("hostile", drill)
