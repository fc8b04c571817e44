"""A burst in a pod-sized cgroup (scripts/reliability memory): farol in a 256 MiB memory
cgroup, from which it derives its bounds (819 connections, 64 MiB of payloads), then bursts
that once took it past that limit: huge heads, heads at the limit, large bodies, and
clients that never read their large pages. Resident memory must stay within the stated
worst case and be given back, and the binary's allocator must count what threads free
(src/allocator.rs)."""

import collections
import contextlib
import json
import os
import socket
import time

from httpload import Connection, Farol, http_status, run_drill

LIMIT = 256 * 1024 * 1024
CONNECTION_BYTES = 80 * 1024           # src/config/budget.rs
MAX_CONNECTIONS = LIMIT // 4 // CONNECTION_BYTES
PAYLOAD_BUDGET = LIMIT // 4
HEAD_LIMIT = 32 * 1024                 # src/http/server.rs
WRITE_TIMEOUT = 10                     # src/http/write_deadline.rs, seconds
DB_POOL_MAX = 16                       # the default
PAGE_ROWS = 4 * 1000 * 1000            # a page's rows at most: 100 notes of 40 KB of text
# Seconds. Each burst came back within 0.1 s in the runs since 2026-12-05; with the
# allocator's purge delay and no purger thread to act on it (src/allocator.rs), after 1.8
# and 2.9 s. The purger purges at least once a second whatever wakes it: 1.5 s.
GIVEN_BACK_WITHIN = 1.5
PURGER_THREAD = "farol-purger"         # src/allocator.rs
GIVEN_BACK_SLACK = 8 * 1024            # KiB above the baseline that may stay
# A parked worker keeps what other threads freed into its heap until it wakes and parks
# again, and collects then only if it last did at least a second before (src/allocator.rs).
# Idle, that kept up to 10 MiB more after a burst of pages in runs of 2026-12-07, and once
# pushed a CI run past its allowance. So when a burst is not back within GIVEN_BACK_WITHIN,
# the drill wakes the workers as traffic would, up to WAKES times, each a few requests a
# little more than that second after the last, and says that it had to.
WORKER_COLLECTS_EVERY = 1.0
WAKES = 4
# After the large pages the pool keeps the connections it grew to, up to DB_POOL_MAX: once
# the workers had run, +4.4 to +6.1 MiB stayed with 16 in runs of 2026-12-07 (and, idle,
# +1.5 to +7.5 with a pool of 2, +8.8 to +16.4 with 32). Allowed: the 8 MiB of every burst
# and 0.5 MiB a connection. Three bursts, each judged against the level before the first,
# so that a creeping level fails too: the cut-off answers alone are 60 MB a burst.
GIVEN_BACK_SLACK_PAGES = GIVEN_BACK_SLACK + DB_POOL_MAX * 512
PAGE_BURSTS = 3


def memory_cgroup():
    """A fresh memory cgroup limited to LIMIT: (its procs file, a remover), or (None, why)."""
    name = f"farol-drill-{os.getpid()}"
    for root, limit_file in (("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
                             ("/sys/fs/cgroup", "memory.max")):
        path = os.path.join(root, name)
        try:
            os.mkdir(path)
        except OSError:
            continue
        try:
            with open(os.path.join(path, limit_file), "w") as limit:
                limit.write(str(LIMIT))
            return os.path.join(path, "cgroup.procs"), lambda p=path: os.rmdir(p)
        except OSError:
            os.rmdir(path)
    return None, "no writable memory cgroup (v1 at /sys/fs/cgroup/memory, or v2 with the memory controller)"


def hold(port, count, payload, receive_buffer=None):
    """COUNT sockets, each having sent PAYLOAD (RECEIVE_BUFFER: a tiny one, never read)."""
    held = []
    for _ in range(count):
        s = socket.socket()
        if receive_buffer:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        with contextlib.suppress(OSError):
            s.send(payload)
        held.append(s)
    return held


def status_of(s, flags=0):
    """The status a socket was answered, "closed", or None while nothing has arrived."""
    try:
        data = s.recv(64, flags)
    except BlockingIOError:
        return None
    except OSError:
        data = b""
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def answers(sockets, wait):
    """The status of each answer received within WAIT seconds, counted."""
    deadline, counts, pending = time.time() + wait, collections.Counter(), list(sockets)
    while pending and time.time() < deadline:
        statuses = [(s, status_of(s)) for s in pending]
        counts.update(status for _, status in statuses if status)
        pending = [s for s, status in statuses if status is None]
        time.sleep(0.05)
    if pending:
        counts["no answer"] = len(pending)
    return dict(counts)


async def large_notes(farol, count):
    """COUNT notes of 10 000 control characters: 60 KB each in JSON (\\u0001), 6 MB a page of 100."""
    connection = Connection("127.0.0.1", farol.port)
    body = json.dumps({"title": "large", "body": "\u0001" * 10_000})
    for _ in range(count):
        status, _, _ = await connection.request("POST", "/api/v1/notes", body=body.encode())
        assert status == 201, status
    await connection.close()


def given_back(farol, baseline, slack):
    """(Seconds until RSS is back within SLACK KiB of BASELINE or None if it is not, and how
    many times the workers were woken first)."""
    started = time.monotonic()
    while farol.rss_kib() > baseline + slack:
        if time.monotonic() - started >= GIVEN_BACK_WITHIN:
            break
        time.sleep(0.1)
    else:
        return time.monotonic() - started, 0
    for wake in range(1, WAKES + 1):
        time.sleep(WORKER_COLLECTS_EVERY + 0.1)
        for _ in range(20):
            http_status(farol.port, "/livez")
        time.sleep(0.3)   # the purge delay is 10 ms; the purger wakes on a collection
        if farol.rss_kib() <= baseline + slack:
            return time.monotonic() - started, wake
    return None, WAKES


def thread_names(pid):
    """The names of a process's threads, from /proc."""
    names = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/comm") as comm:
            names.add(comm.read().strip())
    return names


def peek_status(sockets):
    """The status each socket has received so far, counted, without reading it."""
    return dict(collections.Counter(status_of(s, socket.MSG_PEEK) or "no answer" for s in sockets))


def cut_off(sockets, within):
    """How many of SOCKETS the server closed within WITHIN seconds (what it sent discarded)."""
    deadline, closed, pending = time.time() + within, 0, list(sockets)
    while pending and time.time() < deadline:
        still = []
        for s in pending:
            try:
                while True:
                    if not s.recv(1 << 20):
                        closed += 1
                        break
            except BlockingIOError:
                still.append(s)
            except OSError:
                closed += 1
        pending = still
        time.sleep(0.2)
    return closed


def burst(farol, verdict, name, count, payload, bound_kib, expect, receive_buffer=None,
          slack=GIVEN_BACK_SLACK, baseline=None):
    """One burst, judged: memory given back to within SLACK KiB of BASELINE (default: the level before)."""
    before = farol.rss_kib()
    level = "the level before" if baseline is None else f"the level before the first, {baseline / 1024:.1f} MiB"
    baseline = before if baseline is None else baseline
    sockets = hold(farol.port, count, payload, receive_buffer)
    time.sleep(2)
    during = farol.rss_kib()
    seen = {}
    if expect == "answers":
        seen = answers(sockets, wait=1.0)
    elif expect == "peek":
        seen = peek_status(sockets)
        verdict.check(cut_off(sockets, WRITE_TIMEOUT + 5) == count,
                      f"{name}: the server cuts off clients that stop reading",
                      f"every connection closed by the server within {WRITE_TIMEOUT + 5} s")
    for s in sockets:
        s.close()
    back, wakes = given_back(farol, baseline, slack)
    woken = f" and {wakes} wake{'s' if wakes > 1 else ''} of the workers" if wakes else ""
    verdict.figure(f"{name}: RSS before, during, after",
                   f"{before / 1024:.1f}, {during / 1024:.1f}, {farol.rss_kib() / 1024:.1f} MiB;"
                   f" answers {seen or 'none yet'}")
    verdict.check(farol.alive() and during - before <= bound_kib,
                  f"{name}: memory stays within the stated bound",
                  f"{(during - before) / 1024:+.1f} MiB of at most +{bound_kib / 1024:.0f} MiB;"
                  f" alive {farol.alive()}")
    stayed = (farol.rss_kib() - baseline) / 1024
    verdict.check(back is not None, f"{name}: the memory is given back",
                  (f"{stayed:+.1f} MiB over {level}, {back:.1f} s after, idle{woken} (at most +{slack >> 10} MiB"
                   f" within {GIVEN_BACK_WITHIN} s, or once the workers run again)" if back is not None
                   else f"still {stayed:+.1f} MiB over {level} after {GIVEN_BACK_WITHIN} s idle{woken}"
                        f" (at most +{slack >> 10} MiB)"))
    return seen


async def drill(binary, work, verdict):
    procs, remove = memory_cgroup()
    if procs is None:
        verdict.check(False, "a memory cgroup of 256 MiB to run farol in", remove)
        return
    farol = Farol(binary, work, {"LOG_LEVEL": "warn"}, name="farol-memory", cgroup_procs=procs)
    try:
        farol.start()
        # src/allocator.rs warns at start when the allocator does not count what threads
        # free, which decides when an idle worker gives memory back
        uncounted = [e for e in farol.log_lines()
                     if str(e.get("message", "")).startswith("the global allocator does not count")]
        verdict.check(not uncounted, "the release binary's allocator counts what threads free",
                      "no start-up warning" if not uncounted else uncounted[0]["message"])
        threads = thread_names(farol.pid)
        verdict.check(PURGER_THREAD in threads, "the allocator's purger thread runs",
                      f"threads: {', '.join(sorted(threads))}")
        verdict.figure("farol in a memory cgroup of", f"{LIMIT >> 20} MiB: {MAX_CONNECTIONS} connections, "
                       f"{PAYLOAD_BUDGET >> 20} MiB of payloads (derived)")
        seen = burst(farol, verdict, "600 heads of 350 KB", 600,
                     b"GET /livez HTTP/1.1\r\nHost: farol\r\nX-Big: " + b"a" * (350 * 1024), 8 * 1024, "answers")
        verdict.check(seen.get("431") == 600, "a head over 32 KiB is answered 431 at once", str(seen))
        burst(farol, verdict, f"{MAX_CONNECTIONS + 76} heads just under 32 KiB", MAX_CONNECTIONS + 76,
              b"GET /livez HTTP/1.1\r\nHost: farol\r\nX-Big: " + b"a" * (HEAD_LIMIT - 64),
              MAX_CONNECTIONS * CONNECTION_BYTES // 1024, None)
        body = b'{"title":"big","body":"' + b"b" * (1000 * 1024)
        seen = burst(farol, verdict, "200 bodies of 1 MiB", 200,
                     b"POST /api/v1/notes HTTP/1.1\r\nHost: farol\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1048576\r\n\r\n" + body,
                     (PAYLOAD_BUDGET + 200 * CONNECTION_BYTES) * 5 // 4 // 1024, "answers")
        held = PAYLOAD_BUDGET // (2 * 1000 * 1024)   # each charged twice what it sent
        verdict.check(seen.get("503", 0) >= 200 - held - 2 and seen.get("no answer", 0) <= held,
                      "bodies past the budget are shed at once", f"{seen} (about {held} fit in the budget)")
        await large_notes(farol, 100)
        before_pages = farol.rss_kib()
        for round_ in range(1, PAGE_BURSTS + 1):
            seen = burst(farol, verdict, f"40 clients not reading 6 MB pages ({round_} of {PAGE_BURSTS})", 40,
                         b"GET /api/v1/notes?limit=100 HTTP/1.1\r\nHost: farol\r\n\r\n",
                         (PAYLOAD_BUDGET + 40 * CONNECTION_BYTES + DB_POOL_MAX * PAGE_ROWS) // 1024, "peek",
                         receive_buffer=4096, slack=GIVEN_BACK_SLACK_PAGES,
                         baseline=None if round_ == 1 else before_pages)
            verdict.check(seen.get("503", 0) >= 40 - PAYLOAD_BUDGET // (6 * 1000 * 1000) - 1
                          and seen.get("200", 0) >= 1,
                          f"pages past the budget are shed; those that fit are answered ({round_} of {PAGE_BURSTS})",
                          str(seen))
        health = farol.health()
        peak = farol.rss_kib("VmHWM")
        verdict.check(farol.alive() and health == 200, "alive and healthy afterwards",
                      f"/health {health}, peak RSS {peak / 1024:.1f} MiB of the {LIMIT >> 20} MiB limit")
    finally:
        farol.stop()
        remove()


if __name__ == "__main__":
    run_drill("memory", drill)
