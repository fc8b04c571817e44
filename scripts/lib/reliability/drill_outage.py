"""PostgreSQL stopped for 10 s under load (scripts/reliability outage): 16 keep-alive
connections of writes, reads and lists, and /health every 50 ms."""

import asyncio
import math
import os
import time

from httpload import Farol, Load, failed, latency, outcomes, percentile, probe, read_back, run_drill, shell

QUERY_TIMEOUT_MS = 1000
OUTAGE_S, BEFORE_S, AFTER_S = 10, 4, 8
RECOVERY_LIMIT_S = 5
CONNECTIONS = 16


async def drill(binary, work, verdict):
    with Farol(binary, work, {"DB_QUERY_TIMEOUT_MS": str(QUERY_TIMEOUT_MS),
                              "DB_CONNECT_TIMEOUT_MS": str(QUERY_TIMEOUT_MS)}, name="farol-outage") as farol:
        load, health = Load("127.0.0.1", farol.port, {"post": 2, "get": 2, "list": 1}, "outage"), []
        workers = load.start(CONNECTIONS)
        prober = asyncio.create_task(probe(farol.port, "/health", 0.05, load.stop, health))
        await asyncio.sleep(BEFORE_S)
        stopping = time.time()
        await asyncio.to_thread(shell, "pg_stop", os.environ["PG_DIR"], timeout=60)
        stopped = time.time()
        await asyncio.sleep(OUTAGE_S)
        resuming = time.time()
        await asyncio.to_thread(shell, "pg_resume", os.environ["PG_DIR"], timeout=60)
        resumed = time.time()
        await asyncio.sleep(AFTER_S)
        await load.finish([*workers, prober])
        alive = farol.alive()
        rss = (farol.rss_kib(), farol.rss_kib("VmHWM")) if alive else (0, 0)
        missing = await read_back(farol.port, load.created)

    api = load.records
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections (writes, reads, lists) and /health every 50 ms; "
                   f"DB_QUERY_TIMEOUT_MS={QUERY_TIMEOUT_MS}")
    verdict.figure("PostgreSQL", f"stop took {(stopped - stopping) * 1000:.0f} ms, down {resuming - stopped:.1f} s, "
                   f"start took {(resumed - resuming) * 1000:.0f} ms")

    def window(records, start, end):
        return [r for r in records if start <= r.started < end]

    for name, start, end in (("before", 0, stopping), ("outage", stopped, resuming), ("after", resumed, math.inf)):
        for what, records in (("API", api), ("/health", health)):
            part = window(records, start, end)
            verdict.figure(f"{what} {name}", f"{len(part)} ({outcomes(part)}), {latency(part)}")

    verdict.check(alive, "farol never crashes", f"pid {farol.pid} {'still serving' if alive else 'gone'} at the end, "
                  f"RSS {rss[0] / 1024:.1f} MiB (peak {rss[1] / 1024:.1f} MiB)")

    early = [r for r in api + health if r.ended < stopping and r.status // 100 != 2]
    verdict.check(not early, "no failure before the outage", f"{len(early)} ({outcomes(early)})")

    down_api, down_health = failed(api, stopped, resuming), failed(health, stopped, resuming)
    p99_api = percentile([r.ms for r in down_api], .99)
    p99_health = percentile([r.ms for r in down_health], .99)
    verdict.check(down_api and down_health and p99_api < QUERY_TIMEOUT_MS and p99_health < QUERY_TIMEOUT_MS,
                  "errors during the outage are fast",
                  f"API failures p99 {p99_api:.1f} ms ({len(down_api)}), /health failures p99 {p99_health:.1f} ms "
                  f"({len(down_health)}), limit {QUERY_TIMEOUT_MS} ms")
    wrong = [r for r in down_api if not r.well_advised_503] + [r for r in down_health if r.status != 503]
    verdict.check(not wrong, "outage failures are 503 (API with Retry-After, none on outcome-unknown)",
                  f"{len(wrong)} otherwise ({outcomes(wrong)})")

    late_failures = failed(api + health, resumed)
    back_after = max((r.ended for r in late_failures), default=resumed) - resumed
    first_ok = min((r.ended for r in api if r.started >= resumed and r.status // 100 == 2), default=math.inf)
    verdict.check(back_after <= RECOVERY_LIMIT_S and first_ok - resumed <= RECOVERY_LIMIT_S,
                  "full service within 5 s of PostgreSQL",
                  f"first 2xx {(first_ok - resumed) * 1000:.0f} ms and last failure {back_after * 1000:.0f} ms "
                  f"after PostgreSQL was back ({len(late_failures)} failures after it: {outcomes(late_failures)})")

    by_phase = {name: sum(1 for r in window(api, start, end) if r.note_id)
                for name, start, end in (("before", 0, stopping), ("during", stopping, resumed),
                                         ("after", resumed, math.inf))}
    verdict.check(not missing, "every note acknowledged with 201 is readable afterwards",
                  f"{len(load.created)} acknowledged ({by_phase}), {len(missing)} missing {missing[:3]}")


if __name__ == "__main__":
    run_drill("outage", drill)
