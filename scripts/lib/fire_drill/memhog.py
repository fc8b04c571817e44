#!/usr/bin/env python3
"""The fire drill's memory stressor: takes the host's memory past HostHighMemoryUsage's
threshold, with a margin, holds it, and gives it back.

    memhog.py --used-share 0.88 --floor-bytes N --max-seconds S --state-file FILE

"Used" is the alert's own measure, 1 - MemAvailable / MemTotal (/proc/meminfo). Safety
comes first, in this order:
1. Before allocating anything it writes 1000 to its own /proc/self/oom_score_adj: if
   memory runs out after all, the kernel's OOM killer takes this process first, and
   nothing else.
2. It sizes the goal from MemAvailable, and refuses (exit 3, the reason in FILE) when
   reaching --used-share would leave less than --floor-bytes available: such a machine
   cannot be pushed past the threshold safely, and the drill says so instead of trying.
3. It allocates in 64 MiB chunks (each written, so that the pages are really taken),
   re-reading MemAvailable after each one, since other processes may grow meanwhile,
   and stops at the goal.
4. While holding, it re-reads MemAvailable every 0.1 s: if it falls below the floor
   (something else needs the memory), it frees everything and exits (exit 4).
5. It exits after --max-seconds whatever happens, and at once on SIGTERM or SIGINT.
FILE receives one JSON object: the goal, then (when reached) "crossed_at", the time the
goal was reached, which is the fault's time for the drill.
Exit 0: held until stopped or until the time bound.
"""

import argparse
import json
import os
import signal
import sys
import time

CHUNK = 64 << 20


def meminfo():
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) * 1024
    return values["MemTotal"], values["MemAvailable"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--used-share", type=float, required=True)
    parser.add_argument("--floor-bytes", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--state-file", required=True)
    args = parser.parse_args()

    def stop(*_):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(args.max_seconds)))

    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")

    state = {"pid": os.getpid()}

    def save(**kv):
        state.update(kv)
        tmp = args.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, args.state_file)

    total, available = meminfo()
    goal_available = int(total * (1 - args.used_share))
    save(mem_total=total, available_at_start=available, goal_available=goal_available,
         floor=args.floor_bytes, used_share=args.used_share)
    if goal_available < args.floor_bytes:
        save(refused=f"{args.used_share:.0%} used would leave {goal_available >> 20} MiB available, "
                     f"below the safety floor of {args.floor_bytes >> 20} MiB")
        return 3
    if available <= goal_available:
        save(refused=f"memory is already {1 - available / total:.0%} used: nothing to prove")
        return 3

    held = []
    while True:
        total, available = meminfo()
        if available <= goal_available:
            break
        size = min(CHUNK, available - goal_available + (1 << 20))
        if available - size < args.floor_bytes:
            save(aborted=f"MemAvailable {available >> 20} MiB: stopping above the floor")
            return 4
        held.append(bytearray(b"\x01") * size)
    save(crossed_at=time.time(), held_bytes=sum(map(len, held)), available=available,
         used=round(1 - available / total, 4))

    while True:
        time.sleep(0.1)
        _, available = meminfo()
        if available < args.floor_bytes:
            held.clear()
            save(aborted=f"MemAvailable fell to {available >> 20} MiB while holding: memory given back")
            return 4


if __name__ == "__main__":
    sys.exit(main())
