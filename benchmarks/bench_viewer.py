"""The viewer on a large trace: time to the first screen, and peak memory.

Records N events (8 processes in a ring over queues, through the real tracer
core into a temporary SQLite file, ``tests/viewer_traces.big_trace``), then, in a
fresh interpreter per measurement (so that each peak RSS is its own), runs:

- ``app``: ``cutscope view``'s app, headless (Textual's ``run_test``), from
  its start until the cut explorer is on the screen, then one key press (move
  the frontier, recompute the cut): the load-to-first-screen time a user waits.
- ``steps``: the same load in its steps: reading the store, the analysis
  (``Trace``), the explorer's display order (``Explorer``), one key press.
- ``doc``: the document path that ``cutscope check`` and ``render`` take:
  ``store.load()`` (a dict per event) then ``Trace(doc)``.

With ``--against REV`` (a revision that reads the same store format: for the
figures in benchmarks/README.md, 80bbce9, main before the columnar load), the same measurements run on that revision's code too (``git archive``
into a temporary directory), interleaved round by round with the current code,
so that before and after share the machine's load. Reports the median and the
range over the rounds. The machine is shared: expect noise in the times (not
in the RSS).

Usage: ``python benchmarks/bench_viewer.py [N] [--rounds R] [--against REV]
[--modes app,steps,doc]`` (default: N 1000000, 1 round, every mode, no
baseline: what ``make bench`` runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r'''
import gc, json, os, resource, sys, time
mode, url = sys.argv[1], sys.argv[2]
import cutscope.viewer
assert cutscope.viewer.__file__.startswith(os.environ["BENCH_CODE"]), cutscope.viewer.__file__
T = time.perf_counter
out = {}
if mode == "app":
    import asyncio
    from cutscope.viewer.app import CutscopeApp

    async def go():
        t0 = T()
        app = CutscopeApp(db=url, follow=False)
        async with app.run_test(size=(160, 44)) as pilot:
            from textual.widgets import Static
            while app.explorer is None:
                await pilot.pause(0.02)
                status = str(app.screen.query_one("#status", Static).content)
                if "cannot load" in status or T() - t0 > 600:
                    raise SystemExit(f"no first screen: {status}")
            await pilot.pause()
            out["first_screen"] = T() - t0
            t1 = T()
            await pilot.press("up")
            await pilot.pause()
            out["key"] = T() - t1
            out["events"] = len(app.explorer)
    asyncio.run(go())
else:
    from cutscope.tracer.store import open_store
    from cutscope.viewer.model import Trace
    from cutscope.viewer.explorer import Explorer
    gc.disable()  # as the app does while it loads
    store = open_store(url, create=False)
    t0 = T()
    if mode == "steps" and hasattr(Trace, "from_store"):
        doc = store.load(events=False)
        blocks = list(store.event_blocks())
        t1 = T()
        trace = Trace(doc, blocks)
        del blocks
    else:
        doc = store.load()
        t1 = T()
        trace = Trace(doc)
    t2 = T()
    out.update(read=t1 - t0, trace=t2 - t1)
    if mode == "steps":
        ex = Explorer(trace)
        t3 = T()
        ex.move(-1)
        out.update(explorer=t3 - t2, key=T() - t3)
    out["total"] = T() - t0
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
'''


def code_tree(rev: str, dest: str) -> str:
    """``rev``'s cutscope package, laid out as the installed package (for PYTHONPATH)."""
    src = os.path.join(dest, "src")
    os.makedirs(src)
    tar = os.path.join(dest, "code.tar")
    subprocess.run(["git", "-C", ROOT, "archive", "-o", tar, rev], check=True)
    with tarfile.open(tar) as t:
        t.extractall(src)
    pkg = os.path.join(dest, "pkg", "cutscope")
    os.makedirs(pkg)
    for name in os.listdir(os.path.join(src, "src", "cutscope")):
        os.symlink(os.path.join(src, "src", "cutscope", name), os.path.join(pkg, name))
    for sub in ("tracer", "integrations", "viewer"):
        os.symlink(os.path.join(src, sub), os.path.join(pkg, sub))
    return os.path.join(dest, "pkg")


def child(mode: str, url: str, path: str | None) -> dict:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
        env["BENCH_CODE"] = path
    else:
        env["BENCH_CODE"] = ROOT
    env.pop("CUTSCOPE_STRICT", None)
    r = subprocess.run([sys.executable, "-c", CHILD, mode, url], env=env, capture_output=True,
                       text=True, timeout=1200)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(vals: list[float], unit: str, nd: int = 2) -> str:
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{nd}f} {unit}"
    return f"{med:.{nd}f} {unit} [{min(vals):.{nd}f}-{max(vals):.{nd}f}]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--against", default=None, help="a git revision to measure as the baseline")
    ap.add_argument("--modes", default="app,steps,doc")
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import viewer_traces

    modes = a.modes.split(",")
    with tempfile.TemporaryDirectory() as d:
        url = "sqlite:///" + os.path.join(d, "big.db")
        viewer_traces.big_trace(url, a.n, procs=8)
        codes = {"now": None}
        if a.against:
            codes = {a.against: code_tree(a.against, os.path.join(d, "base")), "now": None}
        res: dict = {}
        for _ in range(a.rounds):
            for mode in modes:
                for label, path in codes.items():
                    res.setdefault((mode, label), []).append(child(mode, url, path))
    print(f"{a.n} events, 8 processes in a ring; {a.rounds} round(s), median [range]")
    for (mode, label), runs in res.items():
        keys = [k for k in runs[0] if k != "events"]
        parts = [f"{k} " + fmt([r[k] for r in runs], "MB" if k == "rss_mb" else "s",
                               0 if k == "rss_mb" else 2) for k in keys]
        print(f"{mode:5} {label:>8}: " + ", ".join(parts).replace("rss_mb", "peak RSS"))
    if a.against:
        for mode in modes:
            b, n = res[(mode, a.against)], res[(mode, "now")]
            k = "first_screen" if mode == "app" else "total"
            ratios = [x[k] / y[k] for x, y in zip(b, n)]
            rss = [x["rss_mb"] / y["rss_mb"] for x, y in zip(b, n)]
            print(f"{mode:5} before/after: time x{fmt(ratios, '', 1).strip()}, "
                  f"peak RSS x{fmt(rss, '', 1).strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
