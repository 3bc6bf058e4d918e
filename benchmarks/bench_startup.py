"""Start-up: what tracing adds to a process's start and exit.

Four commands, run in alternating rounds (A B C D, A B C D, ...) so that the
machine's drift hits each alike:

- ``python -c pass``, untraced: the baseline;
- ``cutscope run --db FILE -- python -c pass``: the launcher and one traced
  process (import, start, stop, the store's schema already there);
- ``python -c "import cutscope"``: the front door's import alone;
- a traced ``python`` that starts one child ``python -c pass`` (the child is
  traced too, through the launcher's environment), against the same untraced.

Each command's wall time and CPU time (user + sys of the process and its
children, from ``getrusage``) are taken per run; the medians and ranges are
printed, and what tracing adds to ``python -c pass`` (goal: at most 0.25 s).

Usage: ``python benchmarks/bench_startup.py [--rounds 7]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
CUTSCOPE = os.path.join(os.path.dirname(PY), "cutscope")
SPAWN = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)"


def run(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "startup.db")
        env = dict(os.environ, CUTSCOPE_DB=db)
        env.pop("CUTSCOPE_BOOT", None)
        subprocess.run([CUTSCOPE, "run", "--db", db, "--", PY, "-c", "pass"], check=True)
        commands = {
            "python -c pass": [PY, "-c", "pass"],
            "cutscope run -- python -c pass": [CUTSCOPE, "run", "--db", db, "--", PY, "-c", "pass"],
            "python -c 'import cutscope'": [PY, "-c", "import cutscope"],
            "python spawning python -c pass": [PY, "-c", SPAWN],
            "cutscope run -- python spawning python -c pass":
                [CUTSCOPE, "run", "--db", db, "--", PY, "-c", SPAWN],
        }
        got: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                got[name].append(run(argv, env))
    print(f"{'command':48} {'wall s median (range)':>26} {'cpu s median (range)':>26}")
    med = {}
    for name, runs in got.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        med[name] = (statistics.median(walls), statistics.median(cpus))
        print(f"{name:48} {med[name][0]:8.3f} ({min(walls):.3f}-{max(walls):.3f})"
              f"   {med[name][1]:8.3f} ({min(cpus):.3f}-{max(cpus):.3f})")
    base = med["python -c pass"]
    traced = med["cutscope run -- python -c pass"]
    print(f"tracing adds to python -c pass: {traced[0] - base[0]:.3f} s wall, "
          f"{traced[1] - base[1]:.3f} s CPU (goal: at most 0.25 s)")
    child = med["cutscope run -- python spawning python -c pass"][1] - med["python spawning python -c pass"][1]
    print(f"a traced parent with one traced child adds {child:.3f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
