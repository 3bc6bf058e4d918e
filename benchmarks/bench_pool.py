"""multiprocessing Pool: 4 spawn workers mapping a small function 10,000 times.

Each round is one fresh command: ``python bench_pool.py --child`` untraced,
and the same under ``cutscope run --db FILE --`` (the parent and its four
workers traced: the pool's pipes and queues are recorded). Untraced and
traced rounds alternate (five pairs by default). Inside the command the child
times two things:

- ``map``: ``pool.map(square, range(10_000), chunksize=1)`` on a pool whose
  workers have already answered one small map (so their start-up is not in
  it): 10,000 tasks and 10,000 results through the pool's pipes, the figure.
  With the default chunksize the same map is about 64 messages and takes
  20-100 ms, too short to time on this machine;
- ``pool``: from ``Pool(4)`` (spawning the workers) to the end of
  ``close()``/``join()``, which includes each worker's start-up and, traced,
  its tracer's start and final flush.

The whole command's wall time is printed too (the launcher, the parent's
start-up and the store's final writes). Ratios are traced / untraced of each
pair: median and range.

Usage: ``python benchmarks/bench_pool.py [--items N] [--pairs P]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
CUTSCOPE = os.path.join(os.path.dirname(PY), "cutscope")


def square(x: int) -> int:
    return x * x


def _cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process ``pid`` so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pool_cpu(pool) -> float:
    return _cpu(os.getpid()) + sum(_cpu(p.pid) for p in pool._pool)


def child(items: int) -> None:
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    pool = ctx.Pool(4)
    pool.map(square, range(8))  # every worker up
    c1 = _pool_cpu(pool)
    t1 = time.perf_counter()
    out = pool.map(square, range(items), chunksize=1)
    t2 = time.perf_counter()
    c2 = _pool_cpu(pool)
    pool.close()
    pool.join()
    t3 = time.perf_counter()
    if out[-1] != (items - 1) ** 2 or len(out) != items:
        raise SystemExit("bench_pool: wrong results")
    print(json.dumps({"map": t2 - t1, "cpu": (c2 - c1) / items * 1e6, "pool": t3 - t0}),
          flush=True)


def one_round(items: int, db: str | None) -> dict:
    argv = [PY, os.path.abspath(__file__), "--child", str(items)]
    if db:
        argv = [CUTSCOPE, "run", "--db", db, "--"] + argv
    env = dict(os.environ)
    env.pop("CUTSCOPE_BOOT", None)
    t0 = time.perf_counter()
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    wall = time.perf_counter() - t0
    got = json.loads(out.strip().splitlines()[-1])
    got["command"] = wall
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at start")
    plain, traced = [], []
    with tempfile.TemporaryDirectory() as d:
        for p in range(args.pairs):
            plain.append(one_round(args.items, None))
            traced.append(one_round(args.items, os.path.join(d, f"pool{p}.db")))
    for key, label in (("map", f"pool.map of {args.items} items (workers up)"),
                       ("cpu", "CPU per task of that map, us (parent and workers, every thread)"),
                       ("pool", "Pool(4) to join(), workers' start-up included"),
                       ("command", "the whole command")):
        u = [r[key] for r in plain]
        t = [r[key] for r in traced]
        ratio = sorted(b / a for a, b in zip(u, t))
        goal = " (the figure; goal <= 1.15)" if key == "map" else ""
        unit = "" if key == "cpu" else " s"
        print(f"{label}: untraced {statistics.median(u):.3f}{unit} ({min(u):.3f}-{max(u):.3f}), "
              f"traced {statistics.median(t):.3f}{unit} ({min(t):.3f}-{max(t):.3f}); ratio median "
              f"{statistics.median(ratio):.3f} (pairs {ratio[0]:.3f}-{ratio[-1]:.3f}){goal}")
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at end")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        sys.exit(main())
