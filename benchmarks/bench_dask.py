"""A dask.distributed job, untraced and under ``cutscope run``, in one run.

A ``LocalCluster`` with worker processes (2 by default, one thread each) and a
``Client`` mapping a small function over ``--items`` items, ``--rounds`` times.
Each round of the benchmark runs the job twice, untraced and traced, in
alternating order; the figure is the wall time of the whole job (the ``python``
command from start to exit: start-up, the computation, the shutdown), traced /
untraced, and, separately, the time of the computation alone (from the cluster
being ready to the last result). With ``--snapshots N`` the traced job also takes
N live snapshots from this process while it computes (``cutscope snapshot`` as
from another terminal) and reports each one's time from request to end, the
complete/partial counts, and whether ``cutscope check`` passes on the trace.

Usage: ``python benchmarks/bench_dask.py [--items 3000] [--rounds 3] [--workers 2]
[--repeat 1] [--snapshots 0]``. Needs ``distributed`` (the test extras).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

JOB = r'''
import os, sys, time
from dask.distributed import Client, LocalCluster

def inc(x):
    time.sleep(0.0005)
    return x + 1

if __name__ == "__main__":
    workers, items, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        print("ready", flush=True)
        t0 = time.monotonic()
        for _ in range(rounds):
            total = sum(client.gather(client.map(inc, range(items), pure=False)))
            assert total == items * (items + 1) // 2, total
        print(f"compute {time.monotonic() - t0:.3f} total {total}", flush=True)
'''


def run_job(d: str, args, traced: bool, snapshots: int = 0) -> dict:
    prog = os.path.join(d, "job.py")
    with open(prog, "w") as f:
        f.write(JOB)
    job = [sys.executable, prog, str(args.workers), str(args.items), str(args.rounds)]
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)
    db = os.path.join(d, f"dask-{time.monotonic_ns()}.db")
    cmd = ([sys.executable, "-m", "cutscope", "run", "--db", db, "--name", "dask", "--"] + job
           if traced else job)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=d)
    first = p.stdout.readline()
    if first.strip() != "ready":
        raise SystemExit(f"bench_dask: the job did not start: {p.stderr.read()[-2000:]}")
    snaps = []
    if traced and snapshots:
        snaps = take_snapshots(db, snapshots)
    out, err = p.communicate(timeout=1800)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench_dask: the job failed: {err[-2000:]}")
    compute = float(out.split("compute ")[1].split()[0])
    res = {"wall": wall, "compute": compute, "snaps": snaps, "db": db,
           "killed": err.count("still alive after")}
    if traced and snapshots:
        chk = subprocess.run([sys.executable, "-m", "cutscope", "check", "--db", db],
                             capture_output=True, text=True, timeout=900)
        res["check"] = chk.returncode == 0
    return res


def take_snapshots(db: str, n: int) -> list:
    from cutscope.testing import talking_processes
    from cutscope.tracer.snapshot.coordinator import Coordinator
    from cutscope.tracer.store import open_store

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the workers are live and talking
        if len(talking_processes(db) - {"dask"}) >= 2:
            break
        time.sleep(0.2)
    out = []
    for _ in range(n):
        store = open_store(db, create=False)
        try:
            c = Coordinator(store, initiator="dask", timeout=10)
            c.start()
            s = c.wait()
            out.append((s.status, s.elapsed))
        finally:
            store.close()
        time.sleep(0.2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--snapshots", type=int, default=0)
    args = ap.parse_args()
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("bench_dask: distributed is not installed (pip install 'dask[distributed]')")
        return 1
    walls, computes = [], []
    with tempfile.TemporaryDirectory(prefix="cutscope-bench-dask-") as d:
        for i in range(args.repeat):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {t: run_job(d, args, t, args.snapshots) for t in order}
            u, t = got[False], got[True]
            walls.append(t["wall"] / u["wall"])
            computes.append(t["compute"] / u["compute"])
            print(f"round {i + 1}: wall {t['wall']:.1f} s traced / {u['wall']:.1f} s untraced "
                  f"= {walls[-1]:.2f}; compute {t['compute']:.1f} / {u['compute']:.1f} = "
                  f"{computes[-1]:.2f}; workers killed at exit: traced {t['killed']}, "
                  f"untraced {u['killed']}")
            if t["snaps"]:
                times = sorted(e for _, e in t["snaps"] if e is not None)
                ok = sum(1 for s, _ in t["snaps"] if s == "complete")
                print(f"  snapshots: {ok} complete, {len(t['snaps']) - ok} partial; "
                      f"request to end: median {statistics.median(times) * 1000:.0f} ms, "
                      f"max {times[-1] * 1000:.0f} ms ({', '.join(f'{x * 1000:.0f}' for x in times)}); "
                      f"cutscope check: {'passed' if t.get('check') else 'FAILED'}")
    print(f"wall time traced / untraced: median {statistics.median(walls):.2f} "
          f"(goal <= 1.15); computation alone: median {statistics.median(computes):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
