#!/usr/bin/env python3
"""farol's JSON log as an access log: answers by status, and panics; exits 1 on any 5xx or panic.

    access_log.py LOG [SKIP_LINES]
"""

import collections
import itertools
import json
import sys


def main(path, skip=0):
    statuses, panics = collections.Counter(), 0
    with open(path) as log:
        for entry in map(json.loads, itertools.islice(log, skip, None)):
            if entry.get("message") == "request":
                statuses[entry["status"]] += 1
            elif entry.get("message") == "handler panicked":
                panics += 1
    print("  requests farol answered, by status:", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    errors = sum(n for s, n in statuses.items() if s >= 500)
    print(f"  5xx answers: {errors}, panics: {panics}")
    return 1 if errors or panics else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *map(int, sys.argv[2:3])))
