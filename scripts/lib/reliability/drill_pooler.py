"""Behind PgBouncer in transaction mode (scripts/reliability pooler).

Debian's PgBouncer 1.18 (scripts/lib/pgbouncer.sh) pools the drill's PostgreSQL with 4
server connections; farol, with DB_PREPARED_STATEMENTS=unnamed and a pool of 32, serves
64 keep-alive connections of writes, reads by id and lists through it. Promises:
  - 64 clients on 4 server connections: not one failure in 6 s of load;
  - PgBouncer stopped under load and started again 1 s later: farol recovers by itself
    (the same process, full service within 2 s of PgBouncer's return), its failures
    meanwhile are 503s with Retry-After (none on a write whose outcome is unknown) and
    fast (p99 under 250 ms), and every note
    acknowledged with 201 is readable afterwards.
Reported, not judged: the same load with named statements (PgBouncer told to ignore the
options start-up parameter so that farol can connect at all), which is why the setting
exists.
"""

import asyncio
import os
import subprocess
import time

from httpload import (
    Farol,
    Load,
    count_by_outcome,
    free_port,
    latency,
    percentile,
    read_back,
    run_drill,
    well_advised_503,
)

CONNECTIONS, POOL_MAX, SERVER_CONNECTIONS = 64, 32, 4
STEADY_S, DOWN_S, AFTER_S = 6, 1, 6
RECOVERY_LIMIT_S = 2
FAST_MS = 250


def pgbouncer(action, directory, *args, ignore=""):
    """pgbouncer_start / pgbouncer_stop of scripts/lib/pgbouncer.sh."""
    repo = os.environ["REPO_ROOT"]
    quoted = " ".join(f'"{a}"' for a in (directory, *args))
    subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{repo}/scripts/lib/common.sh"; . "{repo}/scripts/lib/postgres.sh"; '
                       f'. "{repo}/scripts/lib/pgbouncer.sh"; pgbouncer_{action} {quoted}'],
        check=True, timeout=60, env={**os.environ, "PGBOUNCER_IGNORE": ignore},
    )


def migrate(binary):
    """The schema straight into the database: migrations cannot run through the pooler."""
    subprocess.run([binary, "migrate"], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                              "DATABASE_URL": os.environ["PG_URL"], "LOG_FORMAT": "json"},
                   cwd="/", check=True, timeout=60, stdout=subprocess.DEVNULL)


async def in_thread(function, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))


def through(pooler_port):
    return f"postgres://farol@127.0.0.1:{pooler_port}/farol?sslmode=disable"


async def unnamed(binary, work, verdict):
    directory, port = os.path.join(work, "pgbouncer"), free_port()
    upstream = os.environ["PG_PORT"]
    await in_thread(pgbouncer, "start", directory, port, upstream, SERVER_CONNECTIONS)
    farol = None
    try:
        farol = Farol(binary, work, {"DATABASE_URL": through(port), "DB_PREPARED_STATEMENTS": "unnamed",
                                     "MIGRATE_ON_START": "false", "DB_POOL_MAX": str(POOL_MAX),
                                     "DB_QUERY_TIMEOUT_MS": "1000", "DB_CONNECT_TIMEOUT_MS": "1000"},
                      name="farol-pooler")
        farol.start()
        pid = farol.process.pid
        load = Load("127.0.0.1", farol.port, {"post": 2, "get": 1, "list": 1}, tag="pooler")
        workers = load.start(CONNECTIONS)
        await asyncio.sleep(STEADY_S)
        stopping = time.time()
        await in_thread(pgbouncer, "stop", directory)
        await asyncio.sleep(DOWN_S)
        await in_thread(pgbouncer, "start", directory, port, upstream, SERVER_CONNECTIONS)
        back = time.time()
        await asyncio.sleep(AFTER_S)
        load.stop.set()
        await asyncio.gather(*workers)
        alive = farol.alive() and farol.process.pid == pid
        missing = await read_back("127.0.0.1", farol.port, load.created)
    finally:
        if farol is not None:
            farol.stop()
        await in_thread(pgbouncer, "stop", directory)

    steady = [r for r in load.records if r.ended < stopping]
    steady_failures = [r for r in steady if r.status // 100 != 2]
    verdict.figure("steady", f"{len(steady)} requests in {STEADY_S} s ({count_by_outcome(steady)}), {latency(steady)}")
    verdict.check(steady and not steady_failures,
                  f"{CONNECTIONS} clients on {SERVER_CONNECTIONS} server connections, no failure",
                  f"{len(steady_failures)} failures of {len(steady)}")
    # every failure from the stop on, the requests in flight at that moment included
    window = [r for r in load.records if r.ended >= stopping and r.status // 100 != 2]
    wrong = [r for r in window if not well_advised_503(r)]
    p99 = percentile([r.ms for r in window], .99)
    # an empty window would mean PgBouncer never went away: the promise would be untested
    verdict.check(window and not wrong and p99 < FAST_MS,
                  "while PgBouncer is away: fast 503s with Retry-After (none on outcome-unknown)",
                  f"{len(window)} failures ({count_by_outcome(window)}), p99 {p99:.1f} ms (limit {FAST_MS} ms)")
    later = [r for r in load.records if r.started >= back + RECOVERY_LIMIT_S]
    late_failures = [r for r in later if r.status // 100 != 2]
    last_failure = max((r.ended for r in window), default=back) - back
    verdict.check(alive and later and not late_failures,
                  f"farol recovers by itself within {RECOVERY_LIMIT_S} s of PgBouncer",
                  f"{'the same process' if alive else 'GONE or restarted'}; last failure "
                  f"{last_failure * 1000:.0f} ms after PgBouncer was back; {len(later)} requests later, "
                  f"{len(late_failures)} failed")
    verdict.check(not missing, "every note acknowledged with 201 is readable afterwards",
                  f"{len(load.created)} acknowledged, {len(missing)} missing {missing[:3]}")
    return steady


async def named(binary, work, verdict):
    directory, port = os.path.join(work, "pgbouncer-named"), free_port()
    await in_thread(pgbouncer, "start", directory, port, os.environ["PG_PORT"], SERVER_CONNECTIONS,
                    ignore="options")
    farol = None
    try:
        farol = Farol(binary, work, {"DATABASE_URL": through(port), "MIGRATE_ON_START": "false",
                                     "DB_POOL_MAX": str(POOL_MAX)}, name="farol-pooler-named")
        farol.start()
        load = Load("127.0.0.1", farol.port, {"post": 2, "get": 1, "list": 1}, tag="named")
        workers = load.start(CONNECTIONS)
        await asyncio.sleep(STEADY_S)
        load.stop.set()
        await asyncio.gather(*workers)
    finally:
        if farol is not None:
            farol.stop()
        await in_thread(pgbouncer, "stop", directory)
    failures = [r for r in load.records if r.status // 100 != 2]
    verdict.figure("named statements instead (reported)",
                   f"{len(failures)} failures of {len(load.records)} ({count_by_outcome(load.records)}): "
                   f"a statement prepared on one server connection, run on another")


async def drill(binary, work, verdict):
    await in_thread(migrate, binary)
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections (writes, reads, lists); "
                   f"farol DB_POOL_MAX={POOL_MAX}; PgBouncer 1.18, transaction mode, "
                   f"{SERVER_CONNECTIONS} server connections")
    await unnamed(binary, work, verdict)
    await named(binary, work, verdict)


if __name__ == "__main__":
    run_drill("pooler", drill)
