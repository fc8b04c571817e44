"""SIGTERM under load (scripts/reliability shutdown): 32 keep-alive connections, each API
request held 100 ms (CHAOS_LATENCY_MS) so that some are surely in flight when the
listener closes. The promises are the checks below."""

import asyncio
import os
import signal
import subprocess
import time

from httpload import Farol, Load, latency, outcomes, probe, read_back, run_drill

DELAY_MS, TIMEOUT_MS, CHAOS_LATENCY_MS = 2000, 5000, 100
CONNECTIONS = 32
READY_FLIP_LIMIT_MS = 100


def titles_in_database(titles):
    if not titles:
        return set()
    values = ",".join("'" + t.replace("'", "''") + "'" for t in titles)
    query = f"SELECT title FROM notes WHERE title IN ({values})"
    return set(subprocess.run(["psql", os.environ["PG_URL"], "-qtAc", query], check=True, capture_output=True,
                              text=True, timeout=30).stdout.split())


async def drill(binary, work, verdict):
    with Farol(binary, work, {"SHUTDOWN_DELAY_MS": str(DELAY_MS), "SHUTDOWN_TIMEOUT_MS": str(TIMEOUT_MS),
                              "CHAOS_ENABLED": "true", "CHAOS_LATENCY_MS": str(CHAOS_LATENCY_MS)},
               name="farol-shutdown") as farol:
        load, probes = Load("127.0.0.1", farol.port, {"post": 2, "get": 2, "list": 1, "health": 1}, "shutdown"), []
        workers = load.start(CONNECTIONS)
        readyz = asyncio.create_task(probe(farol.port, "/readyz", 0.01, load.stop, probes, fresh=True))
        await asyncio.sleep(3)
        signalled = time.time()
        farol.process.send_signal(signal.SIGTERM)
        while farol.process.poll() is None and time.time() - signalled < (DELAY_MS + TIMEOUT_MS) / 1000 + 5:
            await asyncio.sleep(0.005)
        exited = time.time()
        if farol.process.poll() is None:
            farol.process.kill()
        code = farol.process.wait()
        await asyncio.sleep(0.3)  # the workers see the closed port for a moment: the end of the load
        await load.finish([*workers, readyz])

    records = load.records
    delay_end = signalled + DELAY_MS / 1000
    before = [r for r in records if r.ended < signalled]
    after = [r for r in records if r.ended >= signalled]
    answered = [r for r in records if r.status]
    unanswered = [r for r in records if not r.status]
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections, API requests held {CHAOS_LATENCY_MS} ms; "
                   f"SHUTDOWN_DELAY_MS={DELAY_MS}, SHUTDOWN_TIMEOUT_MS={TIMEOUT_MS}")
    verdict.figure("requests before SIGTERM", f"{len(before)} ({outcomes(before)}), {latency(before)}")
    verdict.figure("requests ending after SIGTERM", f"{len(after)} ({outcomes(after)})")

    first_unready = next((p for p in probes if p.started >= signalled and p.status == 503), None)
    flip_ms = (first_unready.ended - signalled) * 1000 if first_unready else float("inf")
    ready_after = [p for p in probes
                   if p.started > (first_unready.ended if first_unready else signalled) and p.status == 200]
    verdict.check(flip_ms <= READY_FLIP_LIMIT_MS and not ready_after, "/readyz turns 503 at once and stays so",
                  f"first 503 {flip_ms:.0f} ms after SIGTERM (limit {READY_FLIP_LIMIT_MS}),"
                  f" {len(ready_after)} 200s after it")

    served_in_delay = [r for r in records if r.started >= signalled and r.ended <= delay_end and r.status // 100 == 2]
    fresh_in_delay = [p for p in probes if p.started >= signalled and p.ended <= delay_end and p.status]
    last_served = max((r.ended for r in served_in_delay), default=signalled)
    verdict.check(served_in_delay and fresh_in_delay and last_served >= delay_end - 0.5,
                  "keeps serving for SHUTDOWN_DELAY_MS, new connections too",
                  f"{len(served_in_delay)} requests sent and answered 2xx within the delay, the last "
                  f"{(last_served - signalled) * 1000:.0f} ms after SIGTERM; "
                  f"{len(fresh_in_delay)} /readyz probes on new connections answered in it")

    bad = [r for r in answered if r.status // 100 != 2]
    drained = [r for r in answered if r.started < delay_end < r.ended]
    verdict.check(not bad, "every request answered, answered normally",
                  f"{len(answered)} answered, {len(bad)} non-2xx ({outcomes(bad)}); "
                  f"{len(drained)} of them were in flight when the delay ended and drained"
                  f" ({outcomes(drained)})")

    unanswered_writes = [r.title for r in unanswered if r.kind == "post"]
    lost = titles_in_database(unanswered_writes)
    verdict.check(not lost, "no request processed without an answer",
                  f"{len(unanswered)} requests got no answer ({outcomes(unanswered)}), all after SIGTERM: "
                  f"{all(r.started >= signalled for r in unanswered)}; of their {len(unanswered_writes)} writes, "
                  f"{len(lost)} reached the database")
    early = [r for r in unanswered if r.started < delay_end - 0.05 and r.failure == "refused"]
    verdict.check(not early, "no connection refused before the delay ends",
                  f"{len(early)} refused before {DELAY_MS} ms")

    drain_ms = (exited - delay_end) * 1000
    verdict.check(code == 0 and drain_ms <= TIMEOUT_MS, "exits 0 within SHUTDOWN_TIMEOUT_MS after the delay",
                  f"exit code {code}, {(exited - signalled) * 1000:.0f} ms after SIGTERM, "
                  f"{drain_ms:.0f} ms after the delay (limit {TIMEOUT_MS})")

    with Farol(binary, work, {}, name="farol-shutdown-verify") as reader:
        missing = await read_back(reader.port, load.created)
    verdict.check(not missing, "every note acknowledged with 201 is readable afterwards",
                  f"{len(load.created)} acknowledged, {len(missing)} missing {missing[:3]}")


if __name__ == "__main__":
    run_drill("shutdown", drill)
