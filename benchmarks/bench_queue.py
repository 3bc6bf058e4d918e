"""queue.Queue put+get throughput, traced versus untraced, in the same run.

One thread puts N items and gets them back (no contention: this measures the
wrapper's own cost per message). The traced run records into an in-memory
store through ``cutscope.testing.recording`` (the recorder thread drains the
buffer as in production). Prints both throughputs and the ratio traced /
untraced (goal: >= 0.65). Usage: ``python benchmarks/bench_queue.py [N] [ROUNDS]``.
"""

from __future__ import annotations

import gc
import queue
import sys
import time


def run(n: int) -> float:
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
    return n / (time.perf_counter() - t0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    from cutscope.testing import recording

    plain, traced = [], []
    for _ in range(rounds):  # interleaved, best of each: the machine is shared
        plain.append(run(n))
        with recording("bench", strict=False) as rec:
            traced.append(run(n))
            rec.tracer.flush()
    p, t = max(plain), max(traced)
    print(f"queue.Queue put+get: untraced {p:,.0f} msg/s, traced {t:,.0f} msg/s, "
          f"ratio {t / p:.3f} (goal >= 0.65)")


if __name__ == "__main__":
    main()
