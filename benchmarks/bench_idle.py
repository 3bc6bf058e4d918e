"""What tracing costs a process that does nothing: CPU per second of an idle
interpreter, traced (``cutscope.start`` on a SQLite file: the recorder thread's
ticks, its store polls for snapshot requests, heartbeats, the control socket's
thread) versus untraced, each in a fresh interpreter, interleaved.

Usage: ``python benchmarks/bench_idle.py [SECONDS] [ROUNDS]``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import resource, sys, time
if sys.argv[1] != "-":
    import cutscope
    cutscope.start(db=sys.argv[1], name="idle")
time.sleep(1.0)  # past the start's own work
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
time.sleep(float(sys.argv[2]))
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(cpu / (t1 - t0))
"""


def one(db: str, seconds: float) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, db, str(seconds)], capture_output=True,
                         text=True, timeout=seconds + 60, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    plain, traced = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            plain.append(one("-", seconds))
            traced.append(one(f"sqlite:///{os.path.join(d, f'idle{r}.db')}", seconds))
    p, t = statistics.median(plain), statistics.median(traced)
    print(f"idle interpreter, {rounds} rounds of {seconds:g} s: untraced {p * 1000:.1f} ms of CPU "
          f"per second, traced {t * 1000:.1f} ms/s ({t * 100:.2f}% of a core; "
          f"range {min(traced) * 1000:.1f}-{max(traced) * 1000:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
