"""Shared parts of the reliability drills: a keep-alive HTTP/1.1 client on asyncio, load
workers that record every request, figures, the farol under test, and the verdict.
Not wrk: the drills need, per request, when it was sent and answered, and which note a 201
acknowledged; wrk only counts. Standard library only."""

import asyncio
import collections
import contextlib
import datetime
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

MAX_BODY = 4 * 1024 * 1024

KEYED = "keyed-"  # the title of a keyed write starts so; its key is its title
LIB = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NoAnswer(Exception):
    """No complete answer; `kind` says how (refused, timeout, closed-before-answer...)."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


class Connection:
    """One keep-alive connection to HOST:PORT; reconnects when the server closed it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method, path, body=None, headers=None, timeout=30.0):
        """(status, headers with lowercase names, body) or NoAnswer."""
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers or {}), timeout)
        except TimeoutError:
            await self.close()
            raise NoAnswer("timeout") from None

    async def _request(self, method, path, body, headers):
        fresh = self.writer is None
        if fresh:
            try:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            except ConnectionRefusedError:
                raise NoAnswer("refused") from None
            except OSError as error:
                raise NoAnswer(f"connect:{error.errno}") from None
        if body is not None:
            headers = {**headers, "Content-Type": "application/json", "Content-Length": len(body)}
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        try:
            self.writer.write(head.encode() + (body or b""))
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            raw_headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, OSError):
            await self.close()
            # a reused connection the server closed before reading this request: never accepted
            raise NoAnswer("closed-on-new" if fresh else "closed-before-answer") from None
        parsed = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                parsed[name.strip().lower()] = value.strip()
        length = int(parsed.get("content-length", "0"))
        if length > MAX_BODY:  # farol never answers this much: a bug to fail on, not to buffer
            await self.close()
            raise NoAnswer("body-too-large")
        try:
            payload = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, OSError):
            await self.close()
            raise NoAnswer("truncated") from None
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split(b" ", 2)[1]), parsed, payload


@dataclass
class Record:
    """One request: what, when (wall clock, seconds), and how it ended."""

    kind: str
    started: float
    ended: float = 0.0
    status: int = 0  # 0: no answer, `failure` says why
    failure: str = ""
    retry_after: bool = False
    problem: str = ""  # a problem answer's type, its last segment
    note_id: str = ""
    title: str = ""
    replayed: bool = False  # a keyed POST answered with the note an earlier try made

    @property
    def ms(self):
        return (self.ended - self.started) * 1000

    @property
    def well_advised_503(self):
        """A 503 with Retry-After, but on `outcome-unknown` (a keyless POST that may have been
        applied), which must not invite a blind retry, and which nothing else may answer."""
        unknown = self.problem == "outcome-unknown"
        return self.status == 503 and self.retry_after != unknown and (self.kind == "post" or not unknown)

    async def send(self, connection, method, path, body=None, headers=None):
        try:
            self.status, answer_headers, payload = await connection.request(method, path, body, headers)
            self.retry_after = "retry-after" in answer_headers
            if answer_headers.get("content-type", "").startswith("application/problem+json"):
                try:
                    self.problem = str(json.loads(payload).get("type", "")).rsplit("#", 1)[-1]
                except (ValueError, AttributeError):
                    self.problem = "unreadable"
            if method == "POST" and self.status == 201:
                self.note_id = json.loads(payload)["id"]
                self.replayed = answer_headers.get("idempotent-replayed") == "true"
        except NoAnswer as error:
            self.failure = error.kind
        self.ended = time.time()
        return self


@dataclass
class Load:
    """Workers that send a weighted mix of requests until `stop` is set, recording each.
    Kinds: post, keyed (a POST with an Idempotency-Key, sent again with the same key and
    title until answered 201), get, list, health."""

    host: str
    port: int
    mix: dict  # kind -> weight
    tag: str = "load"
    records: list = field(default_factory=list)
    created: list = field(default_factory=list)  # ids acknowledged with 201
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # in every title, so that titles are unique across runs on one database
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    async def worker(self, number):
        connection = Connection(self.host, self.port)
        kinds = [kind for kind, weight in self.mix.items() for _ in range(weight)]
        sequence, unanswered_keyed = 0, None
        try:
            while not self.stop.is_set():
                kind = kinds[sequence % len(kinds)]
                sequence += 1
                title = f"{self.tag}-{self.run_id}-{number}-{sequence}"
                if kind == "keyed":
                    title = unanswered_keyed or f"{KEYED}{title}"
                record = await self.one(connection, kind, title)
                if kind == "keyed":
                    unanswered_keyed = None if record.status == 201 else title
        finally:
            await connection.close()

    async def one(self, connection, kind, title):
        body, path, method, headers = None, "/health", "GET", None
        if kind in ("post", "keyed"):
            method, path = "POST", "/api/v1/notes"
            body = json.dumps({"title": title, "body": "acknowledged notes must survive"}).encode()
            headers = {"Idempotency-Key": title} if kind == "keyed" else None
        elif kind == "get" and not self.created:
            kind, path = "list", "/api/v1/notes?limit=5"
        elif kind == "get":
            path = f"/api/v1/notes/{self.created[len(self.records) % len(self.created)]}"
        elif kind == "list":
            path = "/api/v1/notes?limit=20"
        record = await Record(kind, time.time(), title=title if method == "POST" else "").send(
            connection, method, path, body, headers)
        if record.note_id:
            self.created.append(record.note_id)
        self.records.append(record)
        if record.status == 0:
            await asyncio.sleep(0.02)  # no hot loop of failed connects
        return record

    def start(self, connections):
        return [asyncio.create_task(self.worker(n)) for n in range(connections)]

    async def run(self, connections, seconds):
        workers = self.start(connections)
        await asyncio.sleep(seconds)
        await self.finish(workers)
        return self

    async def finish(self, tasks):
        self.stop.set()
        await asyncio.gather(*tasks)


async def probe(port, path, interval, stop, records, kind=None, fresh=False):
    """GETs PATH every INTERVAL seconds until `stop`; `fresh`: on a new connection each
    time (showing whether new connections are still accepted)."""
    connection = Connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            headers = {"Connection": "close"} if fresh else None
            records.append(await Record(kind or path, time.time()).send(connection, "GET", path, headers=headers))
            if fresh:
                await connection.close()
            await asyncio.sleep(interval)
    finally:
        await connection.close()


async def read_back(port, ids, connections=8):
    """GETs every id; returns those not answered 200, with what they were answered."""
    missing, queue = [], list(ids)

    async def reader():
        connection = Connection("127.0.0.1", port)
        try:
            while queue:
                note_id = queue.pop()
                try:
                    status, _, payload = await connection.request("GET", f"/api/v1/notes/{note_id}")
                    if status != 200 or json.loads(payload)["id"] != note_id:
                        missing.append((note_id, status))
                except NoAnswer as error:
                    missing.append((note_id, error.kind))
        finally:
            await connection.close()

    await asyncio.gather(*(reader() for _ in range(connections)))
    return missing


def percentile(values, fraction):
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    return sorted(values)[max(1, math.ceil(fraction * len(values))) - 1]


def latency(records):
    ms = [r.ms for r in records]
    return f"p50 {percentile(ms, .5):.1f} ms, p99 {percentile(ms, .99):.1f} ms, max {max(ms, default=0):.1f} ms"


def failed(records, start=0.0, end=math.inf):
    """The records not answered 2xx that started in [start, end)."""
    return [r for r in records if start <= r.started < end and r.status // 100 != 2]


def keyed_notes(sql, load):
    """LOAD's keyed titles that have notes, and those not stored as one note under their
    key. SQL runs a query and returns psql's unaligned output."""
    prefix = f"{KEYED}{load.tag}-{load.run_id}-"
    output = sql("SELECT title, count(*), bool_and(idempotency_key IS NOT DISTINCT FROM title) "
                 f"FROM notes WHERE starts_with(title, '{prefix}') GROUP BY title")
    rows = [line.split("|") for line in output.splitlines() if line.strip()]
    return {title for title, _, _ in rows}, [title for title, count, keyed in rows if count != "1" or keyed != "t"]


def outcomes(records):
    counts = collections.Counter((str(r.status) if r.status else r.failure)
                                 + (" outcome-unknown" if r.problem == "outcome-unknown" else "") for r in records)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


class Farol:
    """farol under test on 127.0.0.1, logging JSON to WORK/NAME.log, with farol.sh's
    defaults; its pid in WORK/farol.pid, for scripts/reliability to stop should we die.
    CGROUP_PROCS: a cgroup to start it in (it reads its memory limit at start).
    As a context manager it is started, and stopped at the end."""

    def __init__(self, binary, work, env, name, cgroup_procs=None):
        self.binary, self.work, self.name, self.cgroup_procs = binary, work, name, cgroup_procs
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": "127.0.0.1", "PORT": str(self.port),
                    "DATABASE_URL": os.environ["PG_URL"], "LOG_FORMAT": "json", "LOG_LEVEL": "info",
                    "MIGRATE_ON_START": "true",
                    # as the image sets it (src/allocator.rs): memory figures as in production
                    "MIMALLOC_ALLOW_THP": "0", **env}
        self.process = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:  # not ready in time: __exit__ would not run
            self.stop()
            raise

    def __exit__(self, *_):
        self.stop()

    def start(self):
        def enter_cgroup():
            with open(self.cgroup_procs, "w") as procs:
                procs.write("0")

        # from /, as farol.sh starts it: `farol serve` would read a .env in its working directory
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=log, stderr=log, cwd="/",
                                            preexec_fn=enter_cgroup if self.cgroup_procs else None)
        with open(os.path.join(self.work, "farol.pid"), "w") as pidfile:
            pidfile.write(f"{self.process.pid}\n")
        self.pid = self.process.pid
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.process.poll() is not None:
                fail(f"{self.name} exited with {self.process.returncode} at start (log: {self.log_path})")
            if http_status(self.port, "/readyz") == 200:
                return self
            time.sleep(0.05)
        fail(f"{self.name} not ready after 15 s (log: {self.log_path})")

    def rss_kib(self, field_name="VmRSS"):
        if not self.alive():  # a memory cgroup's OOM killer, most likely: say so
            fail(f"{self.name} is gone (exit status {self.process.returncode}, log: {self.log_path})")
        with open(f"/proc/{self.process.pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith(field_name + ":")), 0)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def health(self):
        """/health's status now (0: no answer, or farol gone)."""
        return http_status(self.port, "/health", timeout=10) if self.alive() else 0

    def stop(self):
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_lines(self):
        """Every log line as a dict; a line that is not a JSON object is a failure."""
        lines = []
        with open(self.log_path, "rb") as log:
            for number, raw in enumerate(log, 1):
                try:
                    entry = json.loads(raw)
                except ValueError:
                    entry = None
                if not isinstance(entry, dict):
                    fail(f"{self.log_path}:{number} is not a JSON object: {raw[:200]!r}")
                lines.append(entry)
        return lines

    def server_durations(self, start, end):
        """duration_ms by status of the API requests logged in [start, end)."""
        by_status = {}
        for entry in (e for e in self.log_lines() if e.get("message") == "request"):
            when = datetime.datetime.fromisoformat(entry["timestamp"]).timestamp()
            if start <= when < end and entry["route"].startswith("/api/"):
                by_status.setdefault(entry["status"], []).append(entry["duration_ms"])
        return by_status


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path, timeout=2.0):
    """The status of one GET on a fresh connection, or 0."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def shell(*call, timeout=240, **env):
    """CALL, a function of scripts/lib/postgres.sh or pgbouncer.sh and its arguments, in bash."""
    script = f'set -euo pipefail; for f in common postgres pgbouncer; do . "{LIB}/$f.sh"; done; "$@"'
    subprocess.run(["bash", "-c", script, "bash", *map(str, call)], check=True, timeout=timeout,
                   env={**os.environ, **env})


class Verdict:
    """Each promise printed as it is checked, all judged at the end, so that one broken
    promise does not hide the others."""

    def __init__(self, drill, work):
        self.drill, self.work, self.broken = drill, work, []

    def check(self, held, promise, figures):
        print(f"  [{'held  ' if held else 'BROKEN'}] {promise}: {figures}", flush=True)
        if not held:
            self.broken.append(f"{promise}: {figures}")

    def figure(self, name, value):
        print(f"  {name}: {value}", flush=True)

    def finish(self):
        if self.broken:
            print(f"{self.drill}: {len(self.broken)} promise(s) broken", flush=True)
            # the runner repeats these under its table
            with open(f"{self.work}/broken.txt", "w") as out:
                out.writelines(f"{self.drill}: {line}\n" for line in self.broken)
            sys.exit(1)
        print(f"{self.drill}: every promise held", flush=True)


def fail(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_drill(name, drill):
    """The main of a drill script: `drill_NAME.py FAROL-BINARY WORK-DIR`."""
    # SIGTERM and SIGINT raise SystemExit, so that `finally` blocks stop what we started
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))
    binary, work = sys.argv[1], sys.argv[2]
    verdict = Verdict(name, work)
    asyncio.run(drill(binary, work, verdict))
    verdict.finish()
