"""Where the writer's cost lands on the TCP ping-pong: round trips held up, not slowed.

The same ping-pong as ``bench_tcp.py`` (two processes, both ends pinned to one
CPU, 64-byte messages), but each round trip is timed on its own. Prints, for
untraced rounds and traced rounds (events recorded to SQLite): the mean, the
median, the 99.9th percentile, and the share of the time spent in round trips
ten times the median or more. With tracing, those are the round trips during
which a recorder thread (of either process) held the GIL or ran on the
ping-pong's CPU: a batch of events taken, encoded, compressed and written.
The share is what ``recorder.WRITE_INTERVAL`` trades against the size of each
hold (benchmarks/README.md). A diagnostic, not a goal: the timing of each
round trip adds its own cost to both kinds of round.

Usage: ``python benchmarks/bench_tcp_stalls.py [N] [ROUNDS]``.
"""

from __future__ import annotations

import array
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_tcp as B  # noqa: E402  (the server, the pinning, the start)


def timed_round(n: int, db: str | None) -> list[int]:
    """The n round trips' durations (ns), sorted."""
    args = [sys.executable, B.__file__, "--serve"] + ([db] if db else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    if db:
        B._start(db, "pinger", False)
    B._pin()
    try:
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send, recv = c.sendall, c.recv
        for _ in range(500):
            send(B.MSG)
            B._recv64(c)
        ts = array.array("q", bytes(8 * (n + 1)))
        clock = time.perf_counter_ns
        ts[0] = clock()
        for i in range(n):
            send(B.MSG)
            d = recv(64)
            if len(d) < 64:
                d += B._recv64_rest(c, 64 - len(d))
            ts[i + 1] = clock()
        c.close()
    finally:
        if db:
            import cutscope

            cutscope.stop()
    proc.wait(30)
    return sorted(ts[i + 1] - ts[i] for i in range(n))


def summary(d: list[int]) -> tuple[float, float, float, float]:
    """(mean us, median us, p99.9 us, % of the time in round trips >= 10x the median)."""
    med = d[len(d) // 2]
    total = sum(d)
    held = sum(x for x in d if x >= 10 * med)
    return total / len(d) / 1e3, med / 1e3, d[int(len(d) * 0.999)] / 1e3, 100.0 * held / total


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    plain, traced = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            plain.append(summary(timed_round(n, None)))
            traced.append(summary(timed_round(n, os.path.join(tmp, f"stalls{r}.db"))))
    for name, rs in (("untraced", plain), ("traced", traced)):
        m = [statistics.median(x[k] for x in rs) for k in range(4)]
        print(f"tcp round trips, {name}: mean {m[0]:.1f} us, median {m[1]:.1f} us, p99.9 "
              f"{m[2]:.0f} us; time in round trips >= 10x the median: {m[3]:.1f}% "
              f"(median of {rounds} rounds of {n})")


if __name__ == "__main__":
    main()
