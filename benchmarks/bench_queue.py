"""queue.Queue put+get throughput, traced versus untraced, in the same run.

One thread puts 100 items and gets them back, N items per round (no
contention: this measures the wrapper's own cost per message). Rounds are
interleaved: an untraced round, then a traced round that records into a real
SQLite file (``cutscope.start(db=sqlite:///<tmp>/bench.db)``, the real recorder
thread writing while the application runs). The traced clock stops only when
the store has every event (``Tracer.flush()``), and the run checks that it has:
2 events per item.

Ratio = traced / untraced throughput of adjacent rounds; the median and the
range over the rounds are printed (goal: median >= 0.65).

``--diag`` adds two diagnostic variants per round, labelled as such: the
in-memory store (``cutscope.testing.recording``, recorder thread running) and
the hot path alone (recorder thread stopped: the events stay in the buffer).

Usage: ``python benchmarks/bench_queue.py [N] [ROUNDS] [--diag]``.
"""

from __future__ import annotations

import gc
import os
import queue
import statistics
import sys
import tempfile
import time


def run(n: int, flush=None) -> float:
    q = queue.Queue()
    put, get = q.put, q.get
    items = list(range(100))
    gc.collect()
    t0 = time.perf_counter()
    for i in range(n // 100):
        for x in items:
            put(x)
        for _ in items:
            get()
    if flush is not None:
        flush()
    return n / (time.perf_counter() - t0)


def traced_sqlite(n: int, path: str) -> float:
    import cutscope

    name = "bench-queue"
    t = cutscope.start(db=f"sqlite:///{path}", name=name, strict=False)
    try:
        t.flush()
        before = t.store.stamp()[0][0]  # events in the store
        r = run(n, t.flush)
        got = t.store.stamp()[0][0] - before
    finally:
        cutscope.stop()
    if got != 2 * n:
        raise SystemExit(f"bench_queue: the store has {got} events of this round, expected {2 * n}")
    return r


def traced_memory(n: int) -> float:
    from cutscope.testing import recording

    with recording("bench", strict=False) as rec:
        return run(n, rec.tracer.flush)


def traced_nowriter(n: int) -> float:
    from cutscope.testing import recording

    with recording("bench", strict=False) as rec:
        rec.tracer.recorder.close()  # the events stay in the buffer: the hot path alone
        return run(n)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    diag = "--diag" in sys.argv
    n = int(args[0]) if args else 100_000
    rounds = int(args[1]) if len(args) > 1 else 7
    variants = {"sqlite": []}
    if diag:
        variants.update({"memory (diagnostic)": [], "no writer (diagnostic)": []})
    plain = []
    with tempfile.TemporaryDirectory(prefix="cutscope-bench-queue-") as d:
        for r in range(rounds):  # interleaved: the machine is shared
            p = run(n)
            plain.append(p)
            variants["sqlite"].append(traced_sqlite(n, os.path.join(d, "bench.db")) / p)
            if diag:
                variants["memory (diagnostic)"].append(traced_memory(n) / run(n))
                variants["no writer (diagnostic)"].append(traced_nowriter(n) / run(n))
    print(f"queue.Queue put+get, {rounds} rounds of {n:,} items; untraced median "
          f"{statistics.median(plain):,.0f} msg/s ({1e6 / statistics.median(plain):.2f} us)")
    for name, ratios in variants.items():
        med = statistics.median(ratios)
        print(f"  traced, {name}: ratio median {med:.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
              + (" (goal >= 0.65)" if name == "sqlite" else ""))


if __name__ == "__main__":
    main()
