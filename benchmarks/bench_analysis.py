"""The viewer's costs on a large trace: loading it, indexing it, and one key press.

Records N events (4 processes in a ring over queues, through the real tracer
core into a temporary SQLite file), then times: reading the interchange
document from the store, building the analysis (``Trace``) and the explorer's
display order (``Explorer``), and the cut operations a key press runs (move a
frontier and recompute consistency, orphans and in-transit; nearest
consistent cut below/above). The last line is the ratio of a key press's
analysis on the large trace to the same on a 1,000-event trace (about 1: the
per-key work does not grow with the trace). Usage:
``python benchmarks/bench_analysis.py [N]`` (default 200000).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def build(n: int, path: str) -> None:
    import viewer_traces

    viewer_traces.big_trace("sqlite:///" + path, n)


def per_key(ex, rounds: int = 200) -> float:
    """Seconds per key press's analysis: a frontier move and the recompute."""
    t0 = time.perf_counter()
    for i in range(rounds):
        ex.select(1)
        ex.move(-3 if i % 2 else 3)
        if i % 10 == 0:
            ex.nearest_below()
            ex.nearest_above()
    return (time.perf_counter() - t0) / rounds


def main() -> int:
    from cutscope.viewer.model import Trace
    from cutscope.viewer.explorer import Explorer
    from cutscope.viewer.export import load

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as d:
        small, big = os.path.join(d, "small.db"), os.path.join(d, "big.db")
        build(1_000, small)
        t0 = time.perf_counter()
        build(n, big)
        rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        doc = load(big)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr = Trace(doc)
        t_trace = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex = Explorer(tr)
        t_ex = time.perf_counter() - t0
        k_big = per_key(ex)
        k_small = per_key(Explorer(Trace(load(small))))
    print(f"{len(doc['events'])} events: recorded in {rec:.1f} s; load {t_load:.2f} s, "
          f"Trace {t_trace:.2f} s, Explorer {t_ex:.2f} s")
    print(f"key press analysis: {k_big * 1e3:.3f} ms on {n} events, {k_small * 1e3:.3f} ms on 1000 "
          f"events; ratio large/small {k_big / k_small:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
