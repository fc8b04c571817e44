#!/usr/bin/env python3
"""The fire drill's memory stressor: takes `1 - MemAvailable / MemTotal` (HostHighMemoryUsage's
measure) to --used-share, holds it, gives it back; its safety rules, in order, are in
docs/fire-drill.md. Exit 3: refused before allocating anything; 4: gave up above the floor.
FILE gets one JSON object: the goal, then "crossed_at" (the fault's time) or why it stopped.

    memhog.py --used-share 0.88 --floor-bytes N --max-seconds S --state-file FILE
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

    with open("/proc/self/oom_score_adj", "w") as f:   # if memory runs out after all, it dies first
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
        held.append(bytearray(b"\x01") * size)   # written: the pages are really taken
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
