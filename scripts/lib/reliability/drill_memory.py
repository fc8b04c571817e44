"""A burst in a pod-sized cgroup (scripts/reliability memory): farol in a 256 MiB memory
cgroup, from which it derives its bounds (819 connections, 64 MiB of payloads), then bursts
that once took it past that limit: huge heads, heads at the limit, large bodies, and
clients that never read their large pages. Resident memory must stay within the stated
worst case and be given back, and the binary's allocator must count what threads free
(src/allocator.rs)."""

import collections
import concurrent.futures
import contextlib
import dataclasses
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
DB_POOL_MAX = 16                       # the default, set for farol below
PAGE_ROWS = 4 * 1000 * 1000            # a page's rows at most: 100 notes of 40 KB of text
# Seconds. Each burst came back within 0.1 s in the runs since 2026-12-05; with the
# allocator's purge delay and no purger thread to act on it (src/allocator.rs), after 1.8
# and 2.9 s. The purger purges at least once a second whatever wakes it: 1.5 s.
GIVEN_BACK_WITHIN = 1.5
PURGER_THREAD = "farol-purger"         # src/allocator.rs
GIVEN_BACK_SLACK = 8 * 1024            # KiB above the baseline that may stay
# After the large pages the pool keeps the connections it grew to, up to DB_POOL_MAX. By
# hand on 2026-12-07, idle, +1.5 to +7.5 MiB stayed with a pool of 2 (two runs), +8.8 to +16.4
# with 32 (one run): about 0.3 MiB a connection, over a floor that swung by 6 MiB. Allowed: 16 MiB
# as before, written as the 8 MiB of every burst and 0.5 MiB a connection. Three bursts,
# each judged against the level before the first, so that a creeping level fails too: the
# cut-off answers alone are 60 MB a burst.
GIVEN_BACK_SLACK_PAGES = GIVEN_BACK_SLACK + DB_POOL_MAX * 512
PAGE_BURSTS = 3
# A parked worker keeps what other threads freed into its heap until it wakes and parks
# again, and collects then only if it last did at least a second before (src/allocator.rs).
# After the pages that is several MiB more, idle, and it pushed a CI run of 2026-12-07 to
# +16.8 MiB. So a burst of pages not back within GIVEN_BACK_WITHIN is judged once the
# workers have run, as traffic would make them: up to PAGE_WAKES times, a little more than
# that second apart, WAKE_REQUESTS requests at once each. What stayed idle is printed and
# held to IDLE_SLACK_PAGES. The other bursts get no wakes: their 1.5 s is what proves the
# purger (above).
WORKER_COLLECTS_EVERY = 1.0
PAGE_WAKES = 4
WAKE_REQUESTS = 20
IDLE_SLACK_PAGES = 2 * GIVEN_BACK_SLACK_PAGES


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


def answers(sockets, wait, flags=0):
    """The status of each answer received within WAIT seconds, counted (with MSG_PEEK in
    FLAGS, left unread)."""
    deadline, counts, pending = time.time() + wait, collections.Counter(), list(sockets)
    while pending and time.time() < deadline:
        statuses = [(s, status_of(s, flags)) for s in pending]
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


@dataclasses.dataclass
class GivenBack:
    seconds: float | None   # until RSS was back within the slack; None: it was not
    rss: int                # KiB, as judged
    idle: int               # KiB, when the idle wait ended
    wakes: int = 0          # times the workers were woken before
    answered: int = 0       # wake requests answered 200


def wake_workers(port):
    """WAKE_REQUESTS requests to /livez at once, so that each worker has some: their statuses."""
    with concurrent.futures.ThreadPoolExecutor(WAKE_REQUESTS) as pool:
        return list(pool.map(lambda _: http_status(port, "/livez", timeout=0.5), range(WAKE_REQUESTS)))


def given_back(farol, baseline, slack, wakes=0):
    """How RSS came back within SLACK KiB of BASELINE: idle within GIVEN_BACK_WITHIN, or
    after up to WAKES wakes of the workers (none once farol stops answering them)."""
    started, limit = time.monotonic(), baseline + slack
    while (rss := farol.rss_kib()) > limit and time.monotonic() - started < GIVEN_BACK_WITHIN:
        time.sleep(0.1)
    result = GivenBack(None, rss, rss)
    while rss > limit and result.wakes < wakes:
        time.sleep(WORKER_COLLECTS_EVERY + 0.1)
        answered = wake_workers(farol.port).count(200)
        result.wakes, result.answered = result.wakes + 1, result.answered + answered
        time.sleep(0.3)   # the purge delay is 10 ms; the purger wakes on a collection
        rss = result.rss = farol.rss_kib()
        if not answered:
            break
    if rss <= limit:
        result.seconds = time.monotonic() - started
    return result


def thread_names(pid):
    """The names of a process's threads, from /proc."""
    names = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/comm") as comm:
            names.add(comm.read().strip())
    return names


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
          slack=GIVEN_BACK_SLACK, baseline=None, wakes=0, idle_slack=None):
    """One burst, judged: memory given back to within SLACK KiB of BASELINE (default: the level
    before), idle or after up to WAKES wakes of the workers, and idle within IDLE_SLACK if set."""
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
        # on a busy machine, pages still being read from the database 2 s in (seen once: 25
        # of 40 unanswered, none past the budget's bound); their answers come later
        seen = answers(sockets, wait=5.0, flags=socket.MSG_PEEK)
        verdict.check(cut_off(sockets, WRITE_TIMEOUT + 5) == count,
                      f"{name}: the server cuts off clients that stop reading",
                      f"every connection closed by the server within {WRITE_TIMEOUT + 5} s")
    for s in sockets:
        s.close()
    back = given_back(farol, baseline, slack, wakes)
    verdict.figure(f"{name}: RSS before, during, after",
                   f"{before / 1024:.1f}, {during / 1024:.1f}, {back.rss / 1024:.1f} MiB;"
                   f" answers {seen or 'none yet'}")
    verdict.check(farol.alive() and during - before <= bound_kib,
                  f"{name}: memory stays within the stated bound",
                  f"{(during - before) / 1024:+.1f} MiB of at most +{bound_kib / 1024:.0f} MiB;"
                  f" alive {farol.alive()}")
    stayed, idle = (back.rss - baseline) / 1024, (back.idle - baseline) / 1024
    allowed = (f"at most +{slack / 1024:g} MiB within {GIVEN_BACK_WITHIN} s"
               + (", or once the workers have run" if wakes else ""))
    how = (f"{idle:+.1f} MiB at {GIVEN_BACK_WITHIN} s idle, then {back.wakes} wake{'s' if back.wakes > 1 else ''}"
           f" of the workers ({back.answered} of {back.wakes * WAKE_REQUESTS} requests answered)"
           if back.wakes else f"idle {GIVEN_BACK_WITHIN} s")
    verdict.check(back.seconds is not None, f"{name}: the memory is given back",
                  (f"{stayed:+.1f} MiB over {level}, {back.seconds:.1f} s after"
                   + (f"; {how}" if back.wakes else "") + f" ({allowed})") if back.seconds is not None
                  else f"still {stayed:+.1f} MiB over {level}; {how} ({allowed})")
    if idle_slack is not None:
        verdict.check(back.idle - baseline <= idle_slack, f"{name}: what parked workers hold idle stays bounded",
                      f"{idle:+.1f} MiB over {level} at {GIVEN_BACK_WITHIN} s idle"
                      f" (at most +{idle_slack / 1024:g} MiB)")
    return seen


async def drill(binary, work, verdict):
    procs, remove = memory_cgroup()
    if procs is None:
        verdict.check(False, "a memory cgroup of 256 MiB to run farol in", remove)
        return
    farol = Farol(binary, work, {"LOG_LEVEL": "warn", "DB_POOL_MAX": str(DB_POOL_MAX)}, name="farol-memory",
                  cgroup_procs=procs)
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
                         receive_buffer=4096, slack=GIVEN_BACK_SLACK_PAGES, wakes=PAGE_WAKES,
                         idle_slack=IDLE_SLACK_PAGES,
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
