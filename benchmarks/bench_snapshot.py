"""Snapshots of a busy system: 16 OS processes in a full TCP mesh under load.

Starts N worker processes (default 16) under ``cutscope run``, each with a
listening socket and a connection to every other (N*(N-1) framed channels),
each sending 16-byte messages round-robin to its peers and reading whatever
arrives. While they run, the parent takes K snapshots one after another
(``cutscope.snapshot``, initiator cycling through the workers) and records
when each was requested and when it ended. Every worker counts its sends in
50 ms buckets of wall time. Printed:

- time from request to complete snapshot: median, p90, max (goal <= 50 ms):
  the snapshot's ``finished_ns - requested_ns``, i.e. until the coordinator
  knows every state and channel state; and the call's wall time, which adds
  the write of the result to the store (its turn on a busy SQLite file);
- the application's throughput (messages sent per second, all workers) in the
  buckets that overlap a snapshot versus the buckets that do not, and the ratio
  (goal: dip <= 10%, ratio >= 0.90);
- how many snapshots were complete, and ``cutscope check`` on the trace.

Usage: ``python benchmarks/bench_snapshot.py [--workers 16] [--seconds 8]
[--snapshots 10] [--rate 300]`` (``--rate``: messages per second per worker,
0 = as fast as it can). Needs the socket integration.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BUCKET = 0.05
RECORD = 16


def worker(index: int, seconds: float, rate: float) -> int:
    import cutscope

    sent = received = 0
    cutscope.state(lambda: {"sent": sent, "received": received})
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    print(lsock.getsockname()[1], flush=True)
    ports = json.loads(sys.stdin.readline())
    n = len(ports)
    outs = [socket.create_connection(("127.0.0.1", p)) for j, p in enumerate(ports) if j != index]
    sel = selectors.DefaultSelector()
    ins = []
    while len(ins) < n - 1:
        c, _ = lsock.accept()
        c.setblocking(False)
        ins.append(c)
        sel.register(c, selectors.EVENT_READ)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))
    buckets: dict[int, int] = {}
    msg = b"x" * RECORD
    pause = 1.0 / rate if rate else 0.0
    end = time.time() + seconds
    nxt = time.time()
    k = 0
    while True:
        now = time.time()
        if now >= end:
            break
        wait = max(0.0, nxt - now) if pause else 0.0
        for key, _ in sel.select(timeout=wait):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            received += len(data) // RECORD
        if time.time() >= nxt:
            outs[k % len(outs)].sendall(msg)
            k += 1
            sent += 1
            b = int(time.time() / BUCKET)
            buckets[b] = buckets.get(b, 0) + 1
            nxt = (nxt + pause) if pause else 0.0
            if pause and nxt < time.time() - 0.2:  # do not build an unbounded backlog
                nxt = time.time()
    for s in outs:
        s.close()
    print(json.dumps({"buckets": buckets}), flush=True)
    return 0


def parent(args) -> int:
    import cutscope
    from cutscope.tracer.snapshot import Coordinator
    from cutscope.viewer.model import check
    from cutscope.viewer.export import load

    here = os.path.abspath(__file__)
    procs = []
    for i in range(args.workers):
        env = dict(os.environ, CUTSCOPE_NAME=f"w{i:02d}")
        procs.append(subprocess.Popen(
            [sys.executable, here, "worker", "--index", str(i), "--seconds", str(args.seconds),
             "--rate", str(args.rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env))
    ports = [int(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.write(json.dumps(ports) + "\n")
        p.stdin.flush()
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    t = cutscope.active()
    store = t.store
    names = {f"w{i:02d}" for i in range(args.workers)}
    t_wait = time.time()
    while not names <= set(store.live_processes(time.time_ns() - 3_000_000_000)):
        if time.time() - t_wait > 60:
            raise SystemExit("the workers did not come up in the store")
        time.sleep(0.05)
    t0 = time.time() + 0.5
    for p in procs:
        p.stdin.write(f"{t0}\n")
        p.stdin.flush()
    # Snapshots in the middle of the run, with quiet time before and between them.
    windows = []
    gap = args.seconds / (args.snapshots + 2)
    for k in range(args.snapshots):
        time.sleep(max(0.0, t0 + gap * (k + 1) - time.time()))
        if time.time() > t0 + args.seconds - 1.0:
            print(f"only {k} snapshots fitted in the run", file=sys.stderr)
            break
        a = time.time()
        c = Coordinator(t.store, initiator=f"w{(k * 5) % args.workers:02d}", timeout=10, tracer=t)
        c.start()
        snap = c.wait()  # what cutscope.snapshot(initiator=...) does
        b = time.time()
        windows.append((a, b, snap))
        if args.verbose:
            steps = ", ".join(f"{n} {s * 1000:.0f}" for n, s in c.timings)
            print(f"  {snap.summary()}; wall {1000 * (b - a):.0f} ms [{steps}]", file=sys.stderr,
                  flush=True)
    buckets: dict[int, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=120)
        for bk, c in json.loads(out.strip().splitlines()[-1])["buckets"].items():
            buckets[int(bk)] = buckets.get(int(bk), 0) + c
    cutscope.active().flush()
    db = cutscope.active().store.url
    during, quiet = [], []
    first, last = int((t0 + 0.5) / BUCKET), int((t0 + args.seconds - 0.3) / BUCKET)
    for bk in range(first, last):
        lo, hi = bk * BUCKET, (bk + 1) * BUCKET
        c = buckets.get(bk, 0) / BUCKET
        (during if any(a < hi and lo < b for a, b, _ in windows) else quiet).append(c)
    lat = sorted((s.elapsed or (b - a)) * 1000 for a, b, s in windows)
    complete = sum(s.status == "complete" for _, _, s in windows)
    print(f"workers {args.workers}, full mesh ({args.workers * (args.workers - 1)} channels), "
          f"rate {'max' if not args.rate else f'{args.rate:g}/s'} per worker, "
          f"{len(windows)} snapshots, {complete} complete")
    wall = sorted((b - a) * 1000 for a, b, _ in windows)
    print(f"request -> complete: median {statistics.median(lat):.0f} ms, "
          f"p90 {lat[int(0.9 * (len(lat) - 1))]:.0f} ms, max {lat[-1]:.0f} ms (goal <= 50 ms)")
    print(f"request -> stored and returned (the call's wall time): median "
          f"{statistics.median(wall):.0f} ms, p90 {wall[int(0.9 * (len(wall) - 1))]:.0f} ms, "
          f"max {wall[-1]:.0f} ms")
    if during and quiet:
        d, q = statistics.mean(during), statistics.mean(quiet)
        print(f"throughput: {q:.0f} msg/s without snapshots, {d:.0f} msg/s during snapshots: "
              f"ratio {d / q:.3f} (goal >= 0.90)")
    cutscope.stop()
    problems = check(load(db))
    print(f"cutscope check: {len(problems)} problems")
    print(f"store: {db.split('://')[0]}")
    # Slow or partial snapshots are figures, not failures; a wrong one is a failure.
    return 1 if problems or not windows else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", nargs="?", default="parent", choices=["parent", "worker"])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--snapshots", type=int, default=10)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--db", default=None,
                    help="store URL (default: a fresh SQLite file); 'postgres': a throwaway "
                         "PostgreSQL server on loopback")
    args = ap.parse_args()
    if args.role == "worker":
        return worker(args.index, args.seconds, args.rate)
    import cutscope

    if cutscope.active() is None:
        # Relaunch under `cutscope run` (which traces us and the workers) with a fresh store.
        d = tempfile.mkdtemp(prefix="cutscope-bench-")
        srv = None
        if args.db == "postgres":  # a throwaway PostgreSQL server (tests/pgserver.py)
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                            "tests"))
            import pgserver

            srv = pgserver.Server(d)
            srv.start()
            db = srv.url
        else:
            db = args.db or os.path.join(d, "bench.db")
        argv = [a for a in sys.argv[1:]]
        cmd = [sys.executable, "-m", "cutscope", "run", "--db", db, "--name", "bench", "--",
               sys.executable, os.path.abspath(__file__)] + argv
        try:
            return subprocess.call(cmd)
        finally:
            if srv is not None:
                srv.stop()
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
