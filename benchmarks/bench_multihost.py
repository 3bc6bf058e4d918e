"""Snapshots across hosts: request to completion when only the store joins the hosts.

The TCP bank (examples/bank_tcp.py) on N simulated hosts (network namespaces
with their own address, hostname and /tmp: tests/hosts.py), a PostgreSQL store
on one more host, which also asks for the snapshots and runs no branch. Prints
each snapshot's request-to-completion time (the snapshot's ``finished_ns -
requested_ns``), the median and the range, and whether the bank's money is
conserved in each. Needs root; says why and exits 0 where namespaces cannot be
made.

Run: ``python benchmarks/bench_multihost.py [--hosts 4] [--snapshots 10] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from hosts import ASKER, Hosts, Postgres, Unavailable, start_bank  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4, help="hosts that run a branch each")
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the bank runs")
    ap.add_argument("--rate", type=float, default=200.0, help="transfers per second per branch")
    ap.add_argument("--steps", action="store_true",
                    help="print each snapshot's steps (the coordinator's timings)")
    args = ap.parse_args()
    hosts = Hosts(args.hosts + 1)
    try:
        hosts.start()
        pg = Postgres(hosts, 0).start()
    except Unavailable as exc:
        hosts.stop()
        print(f"bench_multihost: skipped: {exc}")
        return 0
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUTSCOPE_STRICT", "CUTSCOPE_NAME", "CUTSCOPE_DB")}
    try:
        branches = start_bank(hosts, pg.url, args.hosts, args.seconds, args.rate, env)
        r = hosts.run(0, [sys.executable, "-c", ASKER, os.path.join(ROOT, "examples"), pg.url,
                          str(args.hosts), str(args.snapshots)],
                      wait=True, capture_output=True, env=env, timeout=args.seconds + 300)
        for b in branches:
            b.communicate(timeout=120)
    finally:
        pg.stop()
        hosts.stop()
    if r.returncode != 0:
        print(r.stderr[-2000:])
        return 1
    snaps = [json.loads(line) for line in r.stdout.splitlines()][:-1]
    total = 1000 * args.hosts
    ms = [s["elapsed"] * 1000 for s in snaps]
    good = sum(s["status"] == "complete" and s["balances"] + s["in_transit"] == total for s in snaps)
    print(f"{args.hosts} hosts with a branch each, snapshots asked from another host through "
          f"PostgreSQL: {good} of {len(snaps)} complete and conserved")
    print("request to complete (ms): " + " ".join(f"{m:.0f}" for m in ms))
    print(f"median {statistics.median(ms):.0f} ms, range {min(ms):.0f}-{max(ms):.0f} ms")
    if args.steps:  # where the time goes: the coordinator's steps, ms since its start
        for s in snaps:
            print(f"  snapshot {s['id']}: " + ", ".join(f"{k} {v * 1000:.0f}"
                                                      for k, v in s.get("timings", [])))
    return 0 if good == len(snaps) else 1


if __name__ == "__main__":
    sys.exit(main())
