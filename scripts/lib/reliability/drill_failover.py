"""Failover, switchover and asynchronous loss under write load (scripts/reliability
failover; the scenarios and their table in docs/database.md). A primary and a streaming
standby; farol given both hosts with target_session_attrs=read-write, 16 keep-alive
connections of writes (some keyed) and reads, /livez every 50 ms. Each scenario on a fresh pair:
  failover    synchronous standby; its link stalls 2 s (WAL receiver stopped), then the
              primary is killed, and the link with it; 2 s later the standby is promoted
  switchover  the primary shut down cleanly, the standby promoted, the old primary follows
  async       as failover with an asynchronous standby: the control, it must lose notes
"""

import asyncio
import contextlib
import os
import signal
import time

from httpload import Farol, Load, keyed_notes, latency, outcomes, percentile, probe, read_back, run_drill
from pg_servers import database_url, replicated_pair, stop_all

QUERY_TIMEOUT_MS = 1000
CONNECTIONS = 16
BEFORE_S, STALL_S, DETECT_S, AFTER_S = 4, 2, 2, 6
WRITES_AGAIN_WITHIN_S = 1.0  # a request finding no pooled connection opens one, trying the hosts in order
FAST_AFTER_CUT_MS = 250
# two waits of DB_QUERY_TIMEOUT_MS (a pool slot, held by writes waiting for the stalled
# standby, then the round trip), plus an answer's time on a loaded 2-core machine
NEVER_HANGS_MS = 2 * QUERY_TIMEOUT_MS + 250


async def scenario(name, binary, work, synchronous, planned):
    """Runs one scenario; returns its figures."""
    directory = os.path.join(work, name)
    os.makedirs(directory, exist_ok=True)
    servers, farol, stopped_receiver = [], None, None
    try:
        primary, standby = await asyncio.to_thread(replicated_pair, directory, synchronous, servers)
        farol = Farol(binary, directory, {"DATABASE_URL": database_url(primary, standby),
                                          "DB_QUERY_TIMEOUT_MS": str(QUERY_TIMEOUT_MS),
                                          "DB_CONNECT_TIMEOUT_MS": str(QUERY_TIMEOUT_MS)}, name=f"farol-{name}")
        farol.start()
        load, livez = Load("127.0.0.1", farol.port, {"post": 2, "keyed": 1, "get": 1}, name), []
        workers = load.start(CONNECTIONS)
        prober = asyncio.create_task(probe(farol.port, "/livez", 0.05, load.stop, livez))
        await asyncio.sleep(BEFORE_S)
        trouble = time.time()  # the stall, or the clean shutdown
        if planned:
            await asyncio.to_thread(primary.stop)
            cut = time.time()
        else:
            receiver = int(await asyncio.to_thread(standby.sql, "SELECT pid FROM pg_stat_wal_receiver"))
            stopped_receiver = receiver
            os.kill(receiver, signal.SIGSTOP)
            await asyncio.sleep(STALL_S)
            cut = time.time()
            primary.kill()
            # the link is gone with the primary: what it still held (the stopped receiver's
            # socket buffers) must never arrive; the standby recovers from the WAL it wrote
            os.kill(receiver, signal.SIGKILL)
            stopped_receiver = None
            await asyncio.sleep(DETECT_S)
        promoting = time.time()
        await asyncio.to_thread(standby.promote)
        promoted = time.time()
        follows = None
        if planned:
            await asyncio.to_thread(primary.follow, standby)
            deadline = time.time() + 20
            while time.time() < deadline:
                state = await asyncio.to_thread(
                    standby.sql, "SELECT state FROM pg_stat_replication WHERE application_name = 'primary'")
                if state == "streaming":
                    follows = time.time() - promoted
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(AFTER_S)
        await load.finish([*workers, prober])
        alive = farol.alive()  # one process: not exited is not restarted
        missing = await read_back(farol.port, load.created)
        keyed_found, keyed_wrong = await asyncio.to_thread(keyed_notes, lambda q: standby.sql(q, "farol"), load)
    finally:
        if stopped_receiver is not None:
            # interrupted during the stall: a stopped process ignores all but SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped_receiver, signal.SIGKILL)
        if farol is not None:
            farol.stop()
        await asyncio.to_thread(stop_all, *servers)

    api = load.records
    # lost: read back as 404; a read that failed otherwise is not evidence of a loss
    lost = [m for m in missing if m[1] == 404]
    # from when the promotion was asked for: pg_ctl promote -w polls every 100 ms
    first_write = min((r.ended for r in api if r.note_id and r.ended >= promoting), default=float("inf"))
    failures = [r for r in api if r.status // 100 != 2]
    return {
        "name": name, "api": api, "livez": livez, "failures": failures, "alive": alive,
        "trouble": trouble, "cut": cut, "promoting": promoting, "promoted": promoted,
        "first_write": first_write, "follows": follows,
        "acknowledged": len(load.created), "missing": missing, "lost": lost,
        "keyed_found": keyed_found, "keyed_wrong": keyed_wrong,
        "before": [r for r in api if r.ended < trouble and r.status // 100 != 2],
    }


def judge(verdict, s, planned):
    name = s["name"]
    verdict.figure(f"{name}: timeline", f"promotion took {(s['promoted'] - s['promoting']) * 1000:.0f} ms "
                   f"(pg_ctl promote -w); "
                   f"primary gone to first acknowledged write {(s['first_write'] - s['cut']):.2f} s")
    verdict.figure(f"{name}: failures", f"{len(s['failures'])} ({outcomes(s['failures'])}), "
                   f"{latency(s['failures'])}")
    after_cut = [r for r in s["failures"] if r.started >= s["cut"]]
    verdict.check(s["first_write"] - s["promoting"] <= WRITES_AGAIN_WITHIN_S and s["alive"],
                  f"{name}: writes again within {WRITES_AGAIN_WITHIN_S:.0f} s of the promotion, no restart",
                  f"first acknowledged write {(s['first_write'] - s['promoting']) * 1000:.0f} ms after it "
                  f"was asked for (it took {(s['promoted'] - s['promoting']) * 1000:.0f} ms); "
                  f"farol {'the same process' if s['alive'] else 'GONE or restarted'}")
    verdict.check(not s["missing"], f"{name}: every acknowledged note is on the new primary",
                  f"{s['acknowledged']} acknowledged, {len(s['missing'])} lost {s['missing'][:3]}")
    judge_keyed(verdict, s, every_acknowledged_found=True)
    wrong = [r for r in s["failures"] if not r.well_advised_503]
    slowest = max((r.ms for r in s["failures"]), default=0.0)
    verdict.check(not wrong and slowest <= NEVER_HANGS_MS and not s["before"],
                  f"{name}: no hang, every failure a 503 with Retry-After (none on outcome-unknown)",
                  f"{len(wrong)} otherwise ({outcomes(wrong)}), slowest {slowest:.0f} ms "
                  f"(limit {NEVER_HANGS_MS} ms), {len(s['before'])} before the trouble")
    p99 = percentile([r.ms for r in after_cut], .99)
    verdict.check(p99 < FAST_AFTER_CUT_MS, f"{name}: failures fast once the primary is gone",
                  f"{len(after_cut)} failures, p99 {p99:.1f} ms (limit {FAST_AFTER_CUT_MS} ms)")
    bad_livez = [r for r in s["livez"] if r.status != 200]
    verdict.check(s["livez"] and not bad_livez, f"{name}: /livez 200 throughout",
                  f"{len(s['livez'])} probes, {len(bad_livez)} otherwise ({outcomes(bad_livez)})")
    if planned:
        verdict.check(s["follows"] is not None, f"{name}: the old primary follows the new one",
                      f"streaming {s['follows']:.1f} s after the promotion" if s["follows"] is not None
                      else "not streaming within 20 s")


def judge_keyed(verdict, s, every_acknowledged_found):
    """Each keyed write, sent again until answered 201, made one note under its key; with a
    synchronous standby every acknowledged one must also be found (an asynchronous one
    loses some: counted, not judged)."""
    name = s["name"]
    keyed = [r for r in s["api"] if r.kind == "keyed" and r.status == 201]
    not_found = [r.title for r in keyed if r.title not in s["keyed_found"]]
    verdict.check(keyed and not s["keyed_wrong"] and (not not_found or not every_acknowledged_found),
                  f"{name}: keyed writes, sent again until answered 201, make one note each",
                  f"{len(keyed)} acknowledged, {len(not_found)} of them not found {not_found[:3]}; "
                  f"{sum(r.replayed for r in keyed)} acknowledged on a retry that found the note a try answered "
                  f"with a failure had made; {len(s['keyed_wrong'])} titles not one note under the key "
                  f"{s['keyed_wrong'][:3]}")


def table_row(s):
    window = [r for r in s["failures"] if r.started >= s["trouble"]]
    return (f"| {s['name']} | {(s['first_write'] - s['promoting']) * 1000:.0f} ms | "
            f"{s['first_write'] - s['cut']:.2f} s | {s['acknowledged']} | {len(s['lost'])} | "
            f"{len(window)} ({outcomes(window)}) | "
            f"{percentile([r.ms for r in window], .99):.0f} ms | "
            f"{sum(1 for r in s['livez'] if r.status != 200)} of {len(s['livez'])} |")


async def drill(binary, work, verdict):
    verdict.figure("load", f"{CONNECTIONS} keep-alive connections (2 writes, 1 keyed write, 1 read), "
                   f"/livez every 50 ms; DB_QUERY_TIMEOUT_MS={QUERY_TIMEOUT_MS}; farol given both hosts, "
                   f"target_session_attrs=read-write")
    rows = []
    for name, synchronous, planned in (("failover", True, False), ("switchover", True, True),
                                       ("async", False, False)):
        s = await scenario(name, binary, work, synchronous, planned)
        if name == "async":
            # acknowledged keyed notes may be lost here, but none may be made twice
            judge_keyed(verdict, s, every_acknowledged_found=False)
            # the control: if the stall lost nothing here, "0 lost" above would prove nothing
            verdict.check(s["lost"], "async: the same stall loses acknowledged notes",
                          f"{len(s['lost'])} of {s['acknowledged']} lost (written while the standby lagged "
                          f"{STALL_S} s; with a synchronous standby they waited and got 503 instead)")
        else:
            judge(verdict, s, planned)
        rows.append(table_row(s))
    print("\n| scenario | promotion to first write | primary gone to first write | acknowledged | lost "
          "| failures from the trouble on | their p99 | /livez not 200 |\n|---|---:|---:|---:|---:|---|---:|---:|")
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    run_drill("failover", drill)
