"""Database outage under load (scripts/reliability outage).

farol serves steady load (writes, reads by id, lists on keep-alive connections, and a
/health probe every 50 ms); PostgreSQL is stopped for 10 s, then started again. Promises:
  - farol never crashes (still running at the end, never restarted);
  - during the outage, API and /health failures are fast: p99 under DB_QUERY_TIMEOUT_MS,
    and they are 503s (with Retry-After on the API, but on a write whose outcome is
    unknown), never another status;
  - full service returns within 5 s of PostgreSQL being back: every request that started
    later than that is answered 2xx;
  - no failure at all before the outage;
  - every note acknowledged with 201, before, during or after, is readable afterwards.
"""

import asyncio
import os
import subprocess
import time

from httpload import Farol, Load, count_by_outcome, latency, percentile, probe, read_back, run_drill, well_advised_503

QUERY_TIMEOUT_MS = 1000
OUTAGE_S, BEFORE_S, AFTER_S = 10, 4, 8
RECOVERY_LIMIT_S = 5
CONNECTIONS = 16


def postgres(action):
    """pg_stop / pg_resume of scripts/lib/postgres.sh on the drill's cluster."""
    repo = os.environ["REPO_ROOT"]
    subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{repo}/scripts/lib/common.sh"; . "{repo}/scripts/lib/postgres.sh"; '
                       f'pg_{action} "$PG_DIR"'],
        check=True, timeout=60,
    )


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def drill(binary, work, verdict):
    farol = Farol(binary, work, {
        "DB_QUERY_TIMEOUT_MS": str(QUERY_TIMEOUT_MS),
        "DB_CONNECT_TIMEOUT_MS": str(QUERY_TIMEOUT_MS),
    }, name="farol-outage").start()
    pid = farol.process.pid
    try:
        load = Load("127.0.0.1", farol.port, {"post": 2, "get": 2, "list": 1}, tag="outage")
        health = []
        workers = load.start(CONNECTIONS)
        prober = asyncio.create_task(probe("127.0.0.1", farol.port, "/health", 0.05, load.stop, health))
        await asyncio.sleep(BEFORE_S)
        stopping = time.time()
        await in_thread(postgres, "stop")
        stopped = time.time()
        await asyncio.sleep(OUTAGE_S)
        resuming = time.time()
        await in_thread(postgres, "resume")
        resumed = time.time()
        await asyncio.sleep(AFTER_S)
        load.stop.set()
        await asyncio.gather(*workers, prober)
        alive = farol.alive() and farol.process.pid == pid
        rss = (farol.rss_kib(), farol.rss_kib("VmHWM")) if alive else (0, 0)
        missing = await read_back("127.0.0.1", farol.port, load.created)
    finally:
        farol.stop()

    api = load.records
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections (writes, reads, lists) and /health every 50 ms; "
                   f"DB_QUERY_TIMEOUT_MS={QUERY_TIMEOUT_MS}")
    verdict.figure("PostgreSQL", f"stop took {(stopped - stopping) * 1000:.0f} ms, down {resuming - stopped:.1f} s, "
                   f"start took {(resumed - resuming) * 1000:.0f} ms")

    def window(records, start, end):
        return [r for r in records if start <= r.started < end]

    for name, start, end in (("before", 0, stopping), ("outage", stopped, resuming),
                             ("after", resumed, float("inf"))):
        verdict.figure(f"API {name}", f"{len(window(api, start, end))} ({count_by_outcome(window(api, start, end))}), "
                       f"{latency(window(api, start, end))}")
        verdict.figure(f"/health {name}",
                       f"{len(window(health, start, end))} ({count_by_outcome(window(health, start, end))}), "
                       f"{latency(window(health, start, end))}")

    verdict.check(alive, "farol never crashes", f"pid {pid} {'still serving' if alive else 'gone'} at the end, "
                  f"RSS {rss[0] / 1024:.1f} MiB (peak {rss[1] / 1024:.1f} MiB)")

    early = [r for r in api + health if r.ended < stopping and r.status // 100 != 2]
    verdict.check(not early, "no failure before the outage", f"{len(early)} ({count_by_outcome(early)})")

    down_api = [r for r in window(api, stopped, resuming) if r.status // 100 != 2]
    down_health = [r for r in window(health, stopped, resuming) if r.status // 100 != 2]
    p99_api = percentile([r.ms for r in down_api], .99)
    p99_health = percentile([r.ms for r in down_health], .99)
    verdict.check(down_api and down_health and p99_api < QUERY_TIMEOUT_MS and p99_health < QUERY_TIMEOUT_MS,
                  "errors during the outage are fast",
                  f"API failures p99 {p99_api:.1f} ms ({len(down_api)}), /health failures p99 {p99_health:.1f} ms "
                  f"({len(down_health)}), limit {QUERY_TIMEOUT_MS} ms")
    wrong = [r for r in down_api if not well_advised_503(r)] + [r for r in down_health if r.status != 503]
    verdict.check(not wrong, "outage failures are 503 (API with Retry-After, none on outcome-unknown)",
                  f"{len(wrong)} otherwise ({count_by_outcome(wrong)})")

    late_failures = [r for r in api + health if r.started >= resumed and r.status // 100 != 2]
    back_after = max((r.ended for r in late_failures), default=resumed) - resumed
    first_ok = min((r.ended for r in api if r.started >= resumed and r.status // 100 == 2), default=float("inf"))
    verdict.check(back_after <= RECOVERY_LIMIT_S and first_ok - resumed <= RECOVERY_LIMIT_S,
                  "full service within 5 s of PostgreSQL",
                  f"first 2xx {(first_ok - resumed) * 1000:.0f} ms and last failure {back_after * 1000:.0f} ms "
                  f"after PostgreSQL was back "
                  f"({len(late_failures)} failures after it: {count_by_outcome(late_failures)})")

    by_phase = {name: sum(1 for r in api if r.note_id and start <= r.started < end)
                for name, start, end in (("before", 0, stopping), ("during", stopping, resumed),
                                         ("after", resumed, float("inf")))}
    verdict.check(not missing, "every note acknowledged with 201 is readable afterwards",
                  f"{len(load.created)} acknowledged ({by_phase}), {len(missing)} missing {missing[:3]}")


if __name__ == "__main__":
    run_drill("outage", drill)
