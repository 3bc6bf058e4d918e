"""`make demo`: the bank as a real distributed system, live snapshots, conservation, a cut drawn.

1. Starts two banks against one store (``cutscope-demo/cutscope.db``):
   four branches as OS processes over TCP (``examples/bank_tcp.py`` under
   ``cutscope run``) and three branches as threads over ``queue.Queue``
   (``examples/bank_threads.py``) in another process.
2. While they run, takes live Chandy-Lamport snapshots from here, through the
   store, as ``cutscope snapshot`` does from another terminal: each covers
   both banks at once. For each, prints whether each bank's money adds up
   (balances recorded + money in transit = what the bank started with).
3. When the banks have finished: ``cutscope check`` (every snapshot against
   the recorded events), and the cut of the last snapshot rendered to SVG.
4. A small asyncio cluster (``examples/asyncio_cluster.py``: a coordinator and
   worker processes that all share one ``Process.name``, both ends of every
   connection writing first) under ``cutscope run``, in a store of its own
   (``cutscope-demo/cluster.db``): live snapshots while it computes, each
   audited (jobs pending + done + held + in transit = the jobs there were),
   then ``cutscope check``.
5. Opens the viewer (``cutscope view``) when standard output is a terminal;
   otherwise prints the summary and the paths.

Usage: ``python examples/demo.py [--out DIR] [--seconds S] [--snapshots K] [--no-view]``.
Exit status 0 when every snapshot is complete and conserves money and check passes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import asyncio_cluster  # noqa: E402
import bank_tcp  # noqa: E402
import bank_threads  # noqa: E402

from cutscope.testing import talking_processes  # noqa: E402
from cutscope.tracer.snapshot.coordinator import Coordinator, SNAPSHOT_LIVE_NS  # noqa: E402
from cutscope.tracer.store import open_store  # noqa: E402

TCP_BRANCHES = 4
THREAD_BRANCHES = 3
CLUSTER_WORKERS = 3
CLUSTER_JOBS = 4000
# Each branch spends this long on every transfer it receives, so that transfers
# queue up behind it and the snapshots catch money in transit.
WORK = 0.004


def cutscope_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cutscope", *args]


def wait_live(db: str, names: set[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store = open_store(db, create=False)
        except Exception:
            time.sleep(0.1)
            continue
        try:
            live = set(store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS))
            with_channels = {p for c in store.channel_ends() for p in (c["src"], c["dst"])}
        finally:
            store.close()
        if names <= (live & with_channels):
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: the banks did not come up within {timeout:g} s")


def take(db: str, initiator: str):
    store = open_store(db, create=False)
    try:
        c = Coordinator(store, initiator=initiator, timeout=10)
        c.start()
        return c.wait()
    finally:
        store.close()


def audit(snap) -> tuple[str, bool]:
    tcp_held, tcp_moving = bank_tcp.balances(snap), bank_tcp.in_transit(snap)
    thr_held, thr_moving = bank_threads.balances(snap), bank_threads.in_transit(snap)
    tcp_total, thr_total = bank_tcp.INITIAL * TCP_BRANCHES, bank_threads.INITIAL * THREAD_BRANCHES
    ok = (snap.status == "complete" and tcp_held + tcp_moving == tcp_total
          and thr_held + thr_moving == thr_total)
    line = (f"{snap.summary()}\n"
            f"    TCP bank:     balances {tcp_held} + in transit {tcp_moving} = "
            f"{tcp_held + tcp_moving} (started with {tcp_total})\n"
            f"    threads bank: balances {thr_held} + in transit {thr_moving} = "
            f"{thr_held + thr_moving} (started with {thr_total})\n"
            f"    money conserved: {'yes' if ok else 'NO'}")
    return line, ok


def run_cluster(out: str, env: dict, snapshots: int) -> tuple[list, bool]:
    """The asyncio cluster under ``cutscope run``, snapshotted while it computes."""
    db = os.path.join(out, "cluster.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    print(f"demo: the asyncio cluster ({CLUSTER_WORKERS} worker processes, {CLUSTER_JOBS} jobs), "
          f"store {db}", flush=True)
    app = subprocess.Popen(
        cutscope_cmd("run", "--db", db, "--name", "cluster", "--", sys.executable,
                     os.path.join(HERE, "asyncio_cluster.py"), "--workers", str(CLUSTER_WORKERS),
                     "--jobs", str(CLUSTER_JOBS)),
        stdout=subprocess.PIPE, text=True, env=env)
    snaps, ok = [], True
    try:
        wait_live(db, {"cluster"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the workers are connected
            if len(talking_processes(db) - {"cluster"}) >= CLUSTER_WORKERS:
                break
            time.sleep(0.1)
        for _ in range(snapshots):
            if app.poll() is not None:
                break
            snap = take(db, initiator="cluster")
            snaps.append(snap)
            pending, done, held, moving, conserved = asyncio_cluster.audit(snap, CLUSTER_JOBS)
            good = snap.status == "complete" and conserved
            ok &= good
            print(f"{snap.summary()}\n    jobs: pending {pending} + done {done} + held {held} + "
                  f"in transit {moving} = {pending + done + held + moving} "
                  f"(there were {CLUSTER_JOBS}): {'conserved' if good else 'NOT conserved'}",
                  flush=True)
            time.sleep(0.3)
        text, _ = app.communicate(timeout=600)
    except BaseException:
        if app.poll() is None:
            app.kill()
        raise
    last = [ln for ln in text.strip().splitlines() if ln.startswith("final")]
    print("demo: the cluster finished: " + (last[-1] if last else "(no final line)"))
    ok &= app.returncode == 0 and bool(snaps)
    r = subprocess.run(cutscope_cmd("check", "--db", db), capture_output=True, text=True)
    print("demo: cutscope check (cluster): "
          + (r.stdout.strip().splitlines() or [r.stderr.strip()])[0])
    return snaps, ok and r.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="cutscope-demo", help="directory for the store and the SVG")
    ap.add_argument("--seconds", type=float, default=8.0, help="how long the banks run")
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--no-view", action="store_true", help="do not open the viewer")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    db = os.path.join(out, "cutscope.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)

    print(f"demo: store {db}")
    print(f"demo: starting {TCP_BRANCHES} branches as OS processes over TCP and "
          f"{THREAD_BRANCHES} as threads over queues, for {args.seconds:g} s", flush=True)
    # The TCP bank first (its processes take longest to start), then the threads bank once
    # the TCP branches are live, so that both run while the snapshots are taken.
    tcp = subprocess.Popen(
        cutscope_cmd("run", "--db", db, "--name", "bank", "--", sys.executable,
                     os.path.join(HERE, "bank_tcp.py"), "--branches", str(TCP_BRANCHES),
                     "--seconds", str(args.seconds + 10), "--work", str(WORK)),
        stdout=subprocess.PIPE, text=True, env=env)
    threads = None
    ok = True
    snaps = []
    try:
        wait_live(db, {f"bank-{i}" for i in range(TCP_BRANCHES)})
        threads = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "bank_threads.py"), "--db", db,
             "--branches", str(THREAD_BRANCHES), "--seconds", str(args.seconds),
             "--snapshots", "0", "--rate", "200", "--work", str(WORK)],
            stdout=subprocess.PIPE, text=True, env=env)
        wait_live(db, {f"branch-{i}" for i in range(THREAD_BRANCHES)})
        t0 = time.monotonic()
        for k in range(args.snapshots):
            time.sleep(max(0.0, t0 + (k + 0.5) * (args.seconds * 0.7) / args.snapshots
                           - time.monotonic()))
            snap = take(db, initiator=f"bank-{k % TCP_BRANCHES}")
            snaps.append(snap)
            line, good = audit(snap)
            ok &= good
            print(line, flush=True)
        tcp_out, _ = tcp.communicate(timeout=120)
        thr_out, _ = threads.communicate(timeout=120)
    except BaseException:
        for p in (tcp, threads):
            if p is not None and p.poll() is None:
                p.kill()
        raise
    print("demo: the banks finished:")
    for text in (tcp_out, thr_out):
        last = [ln for ln in text.strip().splitlines() if ln.startswith("final")]
        print("    " + (last[-1] if last else "(no final line)"))
    ok &= tcp.returncode == 0 and threads.returncode == 0

    r = subprocess.run(cutscope_cmd("check", "--db", db), capture_output=True, text=True)
    print("demo: cutscope check: " + (r.stdout.strip().splitlines() or [r.stderr.strip()])[0])
    ok &= r.returncode == 0

    cluster_snaps, cluster_ok = run_cluster(out, env, args.snapshots)
    ok &= cluster_ok

    svg = None
    if snaps:
        svg = os.path.join(out, f"snapshot-{snaps[-1].id}.svg")
        if shutil.which("dot") is None:
            print("demo: Graphviz's dot is missing (apt-get install graphviz): no SVG")
            svg = None
        else:
            r = subprocess.run(cutscope_cmd("render", "--db", db, "--snapshot", str(snaps[-1].id),
                                            "-o", svg), capture_output=True, text=True)
            if r.returncode != 0:
                print(f"demo: render failed: {r.stderr.strip()}")
                svg, ok = None, False
    print("demo: summary")
    print(f"    {len(snaps)} live snapshots, "
          f"{sum(s.status == 'complete' for s in snaps)} complete, "
          f"money conserved in every one: {'yes' if ok else 'NO'}")
    print(f"    asyncio cluster: {len(cluster_snaps)} live snapshots, "
          f"{sum(s.status == 'complete' for s in cluster_snaps)} complete, "
          f"jobs conserved in every one: {'yes' if cluster_ok else 'NO'}")
    print(f"    store: {db}")
    if svg:
        print(f"    cut of snapshot {snaps[-1].id} drawn: {svg}")
    print(f"    explore it: cutscope view --db {db}")
    print(f"    snapshot it yourself while a bank runs: cutscope snapshot --db {db}")
    if sys.stdout.isatty() and not args.no_view:
        sys.stdout.flush()
        os.execv(sys.executable, cutscope_cmd("view", "--db", db))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
