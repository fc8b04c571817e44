"""Shared parts of the reliability drills (scripts/reliability): a small HTTP/1.1
keep-alive client on asyncio, load workers that record every request, figures, and the
farol process under test. Standard library only, so the drills run on a bare machine.

Why not wrk for everything: the drills must know, per request, when it was sent, when
and how it was answered, and which note id a 201 acknowledged; wrk only counts.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

# Answers larger than this are a bug in the drill, not something to buffer.
MAX_BODY = 4 * 1024 * 1024


class NoAnswer(Exception):
    """The connection failed or closed before a complete answer: `kind` says how."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


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
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), timeout)
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
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            self.writer.write(head + (body or b""))
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            raw_headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            await self.close()
            # On a reused connection the server may have closed it before reading this
            # request: the request was never accepted.
            raise NoAnswer("closed-before-answer" if not fresh else "closed-on-new") from None
        status = int(status_line.split(b" ", 2)[1])
        parsed = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                parsed[name.strip().lower()] = value.strip()
        length = int(parsed.get("content-length", "0"))
        if length > MAX_BODY:
            await self.close()
            raise NoAnswer("body-too-large")
        try:
            payload = await self.reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            await self.close()
            raise NoAnswer("truncated") from None
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, parsed, payload)


@dataclass
class Record:
    """One request: what, when (wall clock, seconds), and how it ended."""

    kind: str
    started: float
    ended: float
    status: int = 0  # 0: no answer
    failure: str = ""  # how it failed when there was no answer
    retry_after: bool = False
    problem: str = ""  # a problem answer's type, its last segment
    note_id: str = ""
    title: str = ""
    replayed: bool = False  # a keyed POST answered with the note an earlier try made

    @property
    def ms(self):
        return (self.ended - self.started) * 1000


@dataclass
class Load:
    """Workers that send a weighted mix of requests until `stop` is set, recording each."""

    host: str
    port: int
    # kind -> weight; kinds: post, keyed (a POST with an Idempotency-Key, sent again with
    # the same key and title until it is answered 201), get, list, health
    mix: dict
    records: list = field(default_factory=list)
    created: list = field(default_factory=list)  # ids acknowledged with 201
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tag: str = "load"
    # in every title, so that titles are unique across runs on one database
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # after a failed connect, wait this long before the next try (no hot loop)
    backoff: float = 0.02

    def _kinds(self):
        sequence = []
        for kind, weight in self.mix.items():
            sequence += [kind] * weight
        return sequence

    async def worker(self, number):
        connection = Connection(self.host, self.port)
        kinds = self._kinds()
        sequence = 0
        unanswered_keyed = None  # the title (and key) of a keyed POST not yet answered 201
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
        elif kind == "get":
            if not self.created:
                kind, path = "list", "/api/v1/notes?limit=5"
            else:
                path = f"/api/v1/notes/{self.created[len(self.records) % len(self.created)]}"
        elif kind == "list":
            path = "/api/v1/notes?limit=20"
        record = Record(kind, time.time(), 0.0, title=title if method == "POST" else "")
        try:
            answer = await connection.request(method, path, body, headers)
            record.status = answer.status
            record.retry_after = "retry-after" in answer.headers
            record.problem = problem_type(answer)
            if method == "POST" and answer.status == 201:
                record.note_id = answer.json()["id"]
                record.replayed = answer.headers.get("idempotent-replayed") == "true"
                self.created.append(record.note_id)
        except NoAnswer as error:
            record.failure = error.kind
        record.ended = time.time()
        self.records.append(record)
        if record.status == 0:
            await asyncio.sleep(self.backoff)
        return record

    def start(self, connections):
        return [asyncio.create_task(self.worker(n)) for n in range(connections)]


async def probe(host, port, path, interval, stop, records, kind=None, fresh=False):
    """Requests PATH every INTERVAL seconds until `stop`; `fresh`: a new connection each
    time (so that it also shows whether new connections are still accepted)."""
    connection = Connection(host, port)
    try:
        while not stop.is_set():
            record = Record(kind or path, time.time(), 0.0)
            try:
                answer = await connection.request("GET", path, headers={"Connection": "close"} if fresh else None)
                record.status = answer.status
                record.retry_after = "retry-after" in answer.headers
            except NoAnswer as error:
                record.failure = error.kind
            record.ended = time.time()
            records.append(record)
            if fresh:
                await connection.close()
            await asyncio.sleep(interval)
    finally:
        await connection.close()


async def read_back(host, port, ids, connections=8):
    """GETs every id; returns the ids that did not answer 200 (with what they answered)."""
    missing = []
    queue = list(ids)

    async def reader():
        connection = Connection(host, port)
        try:
            while queue:
                note_id = queue.pop()
                try:
                    answer = await connection.request("GET", f"/api/v1/notes/{note_id}")
                    if answer.status != 200 or answer.json()["id"] != note_id:
                        missing.append((note_id, answer.status))
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
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def latency(records):
    """'p50 x ms, p99 y ms, max z ms' of the records."""
    ms = [r.ms for r in records]
    return f"p50 {percentile(ms, .5):.1f} ms, p99 {percentile(ms, .99):.1f} ms, max {max(ms, default=0):.1f} ms"


def problem_type(answer):
    """The last segment of a problem answer's type ("" for other answers)."""
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        return ""
    try:
        problem = answer.json()
    except ValueError:
        return "unreadable"
    return str(problem.get("type", "")).rsplit("#", 1)[-1] if isinstance(problem, dict) else "unreadable"


def well_advised_503(record):
    """A 503 that tells its client the right thing about retrying: Retry-After, except on
    `outcome-unknown` (a keyless POST that may have been applied), which must not invite a
    blind retry, and which nothing else may answer."""
    unknown = record.problem == "outcome-unknown"
    return record.status == 503 and record.retry_after != unknown and (record.kind == "post" or not unknown)


KEYED = "keyed-"  # the title of a keyed write starts so; its key is its title


def keyed_notes(sql, load):
    """LOAD's keyed titles that have notes, and those whose notes are not one note stored
    under its key: each keyed write, however often sent, must make one. SQL runs a query
    on the database and returns psql's unaligned output."""
    prefix = f"{KEYED}{load.tag}-{load.run_id}-"
    output = sql("SELECT title, count(*), bool_and(idempotency_key IS NOT DISTINCT FROM title) "
                 f"FROM notes WHERE starts_with(title, '{prefix}') GROUP BY title")
    rows = [line.split("|") for line in output.splitlines() if line.strip()]
    return {title for title, _, _ in rows}, [title for title, count, keyed in rows if count != "1" or keyed != "t"]


def count_by_outcome(records):
    counts = {}
    for r in records:
        key = str(r.status) if r.status else r.failure
        if r.problem == "outcome-unknown":
            key += " outcome-unknown"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


class Farol:
    """A farol process under test, listening on 127.0.0.1, logging JSON to a file: the
    defaults of scripts/lib/farol.sh, which the shell harnesses start farol with.

    Its pid is written to WORK/farol.pid so that scripts/reliability can stop it even if
    this process is killed before its own cleanup runs."""

    def __init__(self, binary, work, env, name="farol", cgroup_procs=None):
        """CGROUP_PROCS: a cgroup's procs file to start farol in (it reads its memory
        limit at start, so it must be inside before it runs)."""
        self.binary, self.work, self.name = binary, work, name
        self.cgroup_procs = cgroup_procs
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": os.environ["PG_URL"],
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "MIGRATE_ON_START": "true",
            # as the image sets it (src/allocator.rs): memory figures as in production
            "MIMALLOC_ALLOW_THP": "0",
            **env,
        }
        self.process = None

    def start(self, ready_within=15.0):
        def enter_cgroup():
            with open(self.cgroup_procs, "w") as procs:
                procs.write("0")

        # farol writes to its own copy of the descriptor: this one is only needed to start it
        with open(self.log_path, "ab") as log:
            # from /, as scripts/lib/farol.sh starts it: `farol serve` would read a .env in
            # the working directory, and that may be the repository's, a developer's own
            self.process = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=log, stderr=log, cwd="/",
                                            preexec_fn=enter_cgroup if self.cgroup_procs else None)
        with open(os.path.join(self.work, "farol.pid"), "w") as pidfile:
            pidfile.write(f"{self.process.pid}\n")
        deadline = time.time() + ready_within
        while time.time() < deadline:
            if self.process.poll() is not None:
                fail(f"{self.name} exited with {self.process.returncode} at start (log: {self.log_path})")
            if http_status(self.port, "/readyz") == 200:
                return self
            time.sleep(0.05)
        fail(f"{self.name} not ready after {ready_within:.0f} s (log: {self.log_path})")

    def rss_kib(self, field_name="VmRSS"):
        if not self.alive():
            # a memory cgroup's OOM killer, most likely: say so, not "no such file"
            fail(f"{self.name} is gone (exit status {self.process.returncode}, log: {self.log_path})")
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        return 0

    def alive(self):
        return self.process is not None and self.process.poll() is None

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
                    fail(f"{self.log_path}:{number} is not JSON: {raw[:200]!r}")
                if not isinstance(entry, dict):
                    fail(f"{self.log_path}:{number} is not a JSON object")
                lines.append(entry)
        return lines

    def access_log(self):
        return [e for e in self.log_lines() if e.get("message") == "request"]


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path, timeout=2.0):
    """The status of one GET on a fresh connection, or 0."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def url_path(url):
    return urllib.parse.urlsplit(url).path


class Verdict:
    """Collects the promises of a drill: each printed as it is checked, all of them
    judged at the end, so that one broken promise does not hide the others."""

    def __init__(self, drill, work):
        self.drill = drill
        self.work = work
        self.broken = []

    def check(self, held, promise, figures):
        mark = "held  " if held else "BROKEN"
        print(f"  [{mark}] {promise}: {figures}", flush=True)
        if not held:
            self.broken.append(f"{promise}: {figures}")

    def figure(self, name, value):
        print(f"  {name}: {value}", flush=True)

    def finish(self):
        if self.broken:
            print(f"{self.drill}: {len(self.broken)} promise(s) broken", flush=True)
            # the runner repeats these under its table, where a log's tail will show them
            with open(f"{self.work}/broken.txt", "w") as out:
                out.writelines(f"{self.drill}: {line}\n" for line in self.broken)
            sys.exit(1)
        print(f"{self.drill}: every promise held", flush=True)


def fail(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_drill(name, drill):
    """The main of a drill script: `drill_NAME.py FAROL-BINARY WORK-DIR`."""
    exit_cleanly_on_signals()
    binary, work = sys.argv[1], sys.argv[2]
    verdict = Verdict(name, work)
    asyncio.run(drill(binary, work, verdict))
    verdict.finish()


def exit_cleanly_on_signals():
    """SIGTERM/SIGINT raise SystemExit, so `finally` blocks stop the processes we started."""
    def handler(signum, _frame):
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
