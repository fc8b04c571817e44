"""Behind PgBouncer in transaction mode (scripts/reliability pooler): 4 server connections,
farol with DB_PREPARED_STATEMENTS=unnamed and a pool of 32, 64 keep-alive connections of
writes, reads and lists; PgBouncer stopped for 1 s under load. Reported, not judged: the
same load with named statements (PgBouncer ignoring the options start-up parameter, so
that farol can connect at all), which is why the setting exists."""

import asyncio
import os
import subprocess
import time

from httpload import Farol, Load, free_port, latency, outcomes, percentile, read_back, run_drill, shell

CONNECTIONS, POOL_MAX, SERVER_CONNECTIONS = 64, 32, 4
STEADY_S, DOWN_S, AFTER_S = 6, 1, 6
RECOVERY_LIMIT_S = 2
FAST_MS = 250


async def pgbouncer(directory, port=None, ignore=""):
    """pgbouncer_start on PORT, or pgbouncer_stop without one (scripts/lib/pgbouncer.sh)."""
    if port is None:
        await asyncio.to_thread(shell, "pgbouncer_stop", directory, timeout=60)
    else:
        await asyncio.to_thread(shell, "pgbouncer_start", directory, port, os.environ["PG_PORT"], SERVER_CONNECTIONS,
                                timeout=60, PGBOUNCER_IGNORE=ignore)


def through(binary, work, name, port, **env):
    """farol through the PgBouncer on PORT."""
    return Farol(binary, work, {"DATABASE_URL": f"postgres://farol@127.0.0.1:{port}/farol?sslmode=disable",
                                "MIGRATE_ON_START": "false", "DB_POOL_MAX": str(POOL_MAX), **env}, name=name)


async def unnamed(binary, work, verdict):
    directory, port = os.path.join(work, "pgbouncer"), free_port()
    await pgbouncer(directory, port)
    try:
        with through(binary, work, "farol-pooler", port, DB_PREPARED_STATEMENTS="unnamed",
                     DB_QUERY_TIMEOUT_MS="1000", DB_CONNECT_TIMEOUT_MS="1000") as farol:
            load = Load("127.0.0.1", farol.port, {"post": 2, "get": 1, "list": 1}, "pooler")
            workers = load.start(CONNECTIONS)
            await asyncio.sleep(STEADY_S)
            stopping = time.time()
            await pgbouncer(directory)
            await asyncio.sleep(DOWN_S)
            await pgbouncer(directory, port)
            back = time.time()
            await asyncio.sleep(AFTER_S)
            await load.finish(workers)
            alive = farol.alive()  # one process: not exited is not restarted
            missing = await read_back(farol.port, load.created)
    finally:
        await pgbouncer(directory)

    steady = [r for r in load.records if r.ended < stopping]
    steady_failures = [r for r in steady if r.status // 100 != 2]
    verdict.figure("steady", f"{len(steady)} requests in {STEADY_S} s ({outcomes(steady)}), {latency(steady)}")
    verdict.check(steady and not steady_failures,
                  f"{CONNECTIONS} clients on {SERVER_CONNECTIONS} server connections, no failure",
                  f"{len(steady_failures)} failures of {len(steady)}")
    # every failure from the stop on, those in flight then included; none: PgBouncer never went away
    window = [r for r in load.records if r.ended >= stopping and r.status // 100 != 2]
    wrong = [r for r in window if not r.well_advised_503]
    p99 = percentile([r.ms for r in window], .99)
    verdict.check(window and not wrong and p99 < FAST_MS,
                  "while PgBouncer is away: fast 503s with Retry-After (none on outcome-unknown)",
                  f"{len(window)} failures ({outcomes(window)}), p99 {p99:.1f} ms (limit {FAST_MS} ms)")
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


async def named(binary, work, verdict):
    directory, port = os.path.join(work, "pgbouncer-named"), free_port()
    await pgbouncer(directory, port, ignore="options")
    try:
        with through(binary, work, "farol-pooler-named", port) as farol:
            load = Load("127.0.0.1", farol.port, {"post": 2, "get": 1, "list": 1}, "named")
            await load.run(CONNECTIONS, STEADY_S)
    finally:
        await pgbouncer(directory)
    failures = [r for r in load.records if r.status // 100 != 2]
    verdict.figure("named statements instead (reported)",
                   f"{len(failures)} failures of {len(load.records)} ({outcomes(load.records)}): "
                   f"a statement prepared on one server connection, run on another")


async def drill(binary, work, verdict):
    # the schema straight into the database: migrations cannot run through the pooler
    await asyncio.to_thread(subprocess.run, [binary, "migrate"], env={
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": os.environ["PG_URL"], "LOG_FORMAT": "json"},
        cwd="/", check=True, timeout=60, stdout=subprocess.DEVNULL)
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections (writes, reads, lists); "
                   f"farol DB_POOL_MAX={POOL_MAX}; PgBouncer 1.18, transaction mode, "
                   f"{SERVER_CONNECTIONS} server connections")
    await unnamed(binary, work, verdict)
    await named(binary, work, verdict)


if __name__ == "__main__":
    run_drill("pooler", drill)
