#!/usr/bin/env python3
"""The monitoring configuration of monitoring/ with local addresses, for the monitoring
stack that runs from Debian's packages on 127.0.0.1 (monitoring-stack.sh, beside this
file): a stand-in for the compose file's containers on a machine that cannot pull their
images. With the images, compose runs monitoring/ as it is and nothing here is used.

    local_addresses.py OUT_DIR --source DIR --address FROM=TO...
        prometheus.yml, its target files and alertmanager.yml of DIR: every FROM address
        (a compose host:port) replaced by TO, relative paths made absolute. Nothing else
        changes; an address that no longer occurs is an error.
"""

import argparse
import re
import sys
from pathlib import Path

from monitoring_config import MONITORING, dump_yaml, load_yaml


def _replace_addresses(node, addresses, used):
    if isinstance(node, dict):
        return {k: _replace_addresses(v, addresses, used) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_addresses(v, addresses, used) for v in node]
    if isinstance(node, str):
        for old, new in addresses.items():
            # whole host:port only: "app:5000" must not match inside "myapp:50001"
            pattern = re.compile(rf"(?<![\w.-]){re.escape(old)}(?![\w])")
            if pattern.search(node):
                used.add(old)
                node = pattern.sub(new, node)
    return node


def render(out_dir, source, addresses):
    source, out_dir = Path(source).resolve(), Path(out_dir)
    used = set()
    prom_dir = source / "prometheus"
    prometheus = _replace_addresses(load_yaml(prom_dir / "prometheus.yml"), addresses, used)
    prometheus["rule_files"] = [str(prom_dir / f) for f in prometheus.get("rule_files", [])]
    for job in prometheus.get("scrape_configs", []):
        for sd in job.get("file_sd_configs", []):
            for rel in sd["files"]:
                targets = _replace_addresses(load_yaml(prom_dir / rel), addresses, used)
                dump_yaml(targets, out_dir / "prometheus" / rel, f"Rendered from {prom_dir / rel}")
    dump_yaml(prometheus, out_dir / "prometheus/prometheus.yml", f"Rendered from {prom_dir}/prometheus.yml")
    alertmanager = _replace_addresses(load_yaml(source / "alertmanager/alertmanager.yml"), addresses, used)
    dump_yaml(alertmanager, out_dir / "alertmanager/alertmanager.yml",
              f"Rendered from {source}/alertmanager/alertmanager.yml")
    missing = set(addresses) - used
    if missing:
        raise SystemExit(f"render: {', '.join(sorted(missing))} no longer in the configuration "
                         "of " + str(source) + "; update monitoring-stack.sh")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--source", default=str(MONITORING))
    parser.add_argument("--address", action="append", default=[], metavar="FROM=TO")
    args = parser.parse_args(argv)
    render(args.out_dir, args.source, dict(a.split("=", 1) for a in args.address))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
