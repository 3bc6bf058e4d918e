"""The viewer and the trace commands on a large trace: the million-event figures.

Records N events (16 processes in a ring over queues, through the real tracer
core into a SQLite file, ``tests/viewer_traces.big_trace``), then, in a fresh
interpreter per measurement (so that each peak RSS is its own), runs:

- ``app``: ``cutscope view``'s app, headless (Textual's Pilot, ``run_test``,
  160x44): the time from its start until the cut explorer is on the screen
  (``first screen``); then each key of ``KEYS`` once (frontier moves, process
  selection, start and end, nearest consistent cuts, lattice steps, other end,
  message chain, causality, pages, the whole trace; then the lane keys of ``LANE_KEYS``, each
  its own figure), a key's latency being the
  CPU time of the app's process from the key sent to the screen idle again
  (Pilot's own waits are sleeps, so its wall time is mostly them; ``no-op
  key``: a key bound to nothing, what Textual and the harness cost); then live
  follow: a batch of ``--batch`` events appended to the store (one block, the
  ring continued) three times, each time the duration of the app's reload and
  the time from the write to the new events in the app (the app reads a copy
  of the store, so that the other modes see the trace unchanged).
- ``steps``: the load in its steps: reading the store, the analysis
  (``Trace``), the explorer's display order (``Explorer``), one key press.
- ``export``: ``cutscope export --db URL -o FILE`` in a child process: its wall
  time and peak RSS (``wait4``), and the output's size.
- ``check``: ``cutscope check --db URL``, the same.
- ``doc`` (not by default): ``store.load()`` (a dict per event) then ``Trace(doc)``.

With ``--against REV``, the same measurements run on that revision's code too
(``git archive`` into a temporary directory, this worktree's built C extensions
copied in), interleaved round by round with the current code, so that before
and after share the machine's load. Reports the median and the range over the
rounds. The machine is shared: expect noise in the times (not in the RSS).

Usage: ``python benchmarks/bench_viewer.py [N] [--procs P] [--rounds R]
[--against REV] [--modes app,steps,export,check] [--batch B] [--db FILE]
[--json FILE]`` (default: N 1000000, 16 processes, 1 round, every mode but
``doc``, no baseline: what ``make bench`` runs). ``--db FILE`` keeps the
generated trace (made if absent, reused if present: generating a million
events takes about a minute).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import gc, json, os, resource, statistics, sys, time
mode, url = sys.argv[1], sys.argv[2]
import cutscope.viewer
assert cutscope.viewer.__file__.startswith(os.environ["BENCH_CODE"]), cutscope.viewer.__file__
T = time.perf_counter
KEYS = os.environ["BENCH_KEYS"].split(",")
LANE_KEYS = json.loads(os.environ["BENCH_LANE_KEYS"])
BATCH = int(os.environ["BENCH_BATCH"])
out = {}


def append_batch(store, trace, n):
    # n more events of the ring (each process sends to the next, which receives),
    # continuing every process's seq and Lamport clock, written as one block.
    procs = [p for p in trace.processes if trace.last_seq(p)]
    last = {p: [trace.last_seq(p), trace.event(p, trace.last_seq(p))["lamport"]] for p in procs}
    rows, wall = [], time.time_ns()
    k = 0
    while k < n:
        for i, p in enumerate(procs):
            q = procs[(i + 1) % len(procs)]
            s = last[p]
            s[0] += 1
            s[1] += 1
            rows.append((p, s[0], s[1], wall, "send", f"r{i}", None, 1, None, None))
            r = last[q]
            r[0] += 1
            r[1] = max(r[1], s[1]) + 1
            rows.append((q, r[0], r[1], wall, "recv", f"r{i}", f"{p}#{s[0]}", 1, None, None))
            k += 2
    store.write(rows, [])
    return len(rows)


if mode == "app":
    import asyncio
    from cutscope.tracer.store import open_store
    from cutscope.viewer.app import CutscopeApp

    async def go():
        t0 = T()
        app = CutscopeApp(db=url, follow=True, poll=0.05)
        loads = []
        inner = app._load_into

        def timed(prev):
            t = T()
            inner(prev)
            loads.append(T() - t)
        app._load_into = timed
        async with app.run_test(size=(160, 44)) as pilot:
            from textual.widgets import Static
            while app.explorer is None:
                await pilot.pause(0.02)
                status = str(app.screen.query_one("#status", Static).content)
                if "cannot load" in status or T() - t0 > 600:
                    raise SystemExit(f"no first screen: {status}")
            await pilot.pause()
            out["first_screen"] = T() - t0
            out["events"] = len(app.explorer)
            app._next_look = float("inf")  # no follow while the keys are timed
            # A key's latency: the CPU time of this process from the key sent to the
            # screen idle again (Pilot's waits are sleeps: its wall time is mostly them).
            # "f12" is bound to nothing: what a key costs the harness and Textual alone.
            C = time.process_time
            lat, noop, slow = [], [], {}
            for k in ["f12"] * 5 + KEYS:
                c1 = C()
                await pilot.press(k)
                await pilot.pause()
                (noop if k == "f12" else lat).append(C() - c1)
                if k != "f12":
                    slow[k] = max(slow.get(k, 0), lat[-1])
            # The lane keys, each once in this order, each its own figure (CPU of the whole
            # process, workers included); after z, until its layout is on (or off).
            ex = app.explorer
            for k, label in LANE_KEYS:
                was = ex.packed
                c1 = C()
                await pilot.press(k)
                await pilot.pause()
                while k == "z" and ex.packed == was and C() - c1 < 120:
                    await pilot.pause(0.01)
                out[f"key {label}"] = C() - c1
            lat.sort()
            out["key_p50"] = statistics.median(lat)
            out["key_p99"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            out["key_max"] = lat[-1]
            out["key_noop"] = statistics.median(noop)
            print("slowest keys:", sorted(slow.items(), key=lambda kv: -kv[1])[:4], file=sys.stderr)
            # live follow: append a batch, let the app see it, time its reload
            store = open_store(url, create=False)
            follow = []
            for _ in range(3):
                n0, before = len(loads), app.explorer.trace.n_events
                append_batch(store, app.explorer.trace, BATCH)
                t2 = T()
                app._next_look = 0.0
                while len(loads) == n0 or app.explorer.trace.n_events == before:
                    await pilot.pause(0.01)
                    if T() - t2 > 300:
                        raise SystemExit("follow: the new events never arrived")
                follow.append((loads[-1], T() - t2))
                app._next_look = float("inf")
            store.close()
            out["follow_load"] = statistics.median(f[0] for f in follow)
            out["follow_seen"] = statistics.median(f[1] for f in follow)
    asyncio.run(go())
elif mode in ("export", "check"):
    import subprocess
    dest = os.environ["BENCH_OUT"]
    cmd = [sys.executable, "-m", "cutscope", mode, "--db", url]
    if mode == "export":
        cmd += ["-o", dest]
    t0 = T()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    out["time"] = T() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{mode} failed: {p.stderr.read().decode()[-2000:]}")
    out["child_rss_mb"] = ru.ru_maxrss / 1024
    if mode == "export":
        out["out_mb"] = os.path.getsize(dest) / 1e6
        os.unlink(dest)
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
if mode not in ("export", "check"):
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

# The keys timed in ``app`` (Textual key names), each pressed once, in this order.
KEYS = ["up", "down", "shift+up", "shift+down", "right", "left", "home", "end", "b", "a",
        "right_square_bracket", "left_square_bracket", "right_curly_bracket", "left_curly_bracket",
        "o", "greater_than_sign", "less_than_sign", "c", "c", "pagedown", "pageup", "g", "t",
        "right", "up", "up", "down", "left"] * 2

# The lane keys timed one by one after KEYS (key, its name in the report): hide, show,
# collapse, the logical-time layout (first time, off, on again), hide and show in it.
LANE_KEYS = [("h", "h"), ("H", "H"), ("x", "x"), ("x", "x off"), ("z", "z"), ("h", "h (z)"),
             ("H", "H (z)"), ("z", "z off"), ("z", "z again"), ("G", "G"), ("shift+right", "shift+right")]


def code_tree(rev: str, dest: str) -> str:
    """``rev``'s cutscope package, laid out as the installed package (for PYTHONPATH),
    with this worktree's built C extensions (not in git) copied beside its sources."""
    src = os.path.join(dest, "src")
    os.makedirs(src)
    tar = os.path.join(dest, "code.tar")
    subprocess.run(["git", "-C", ROOT, "archive", "-o", tar, rev], check=True)
    with tarfile.open(tar) as t:
        t.extractall(src)
    for sub in ("tracer", "integrations"):
        for so in glob.glob(os.path.join(ROOT, sub, "*.so")):
            shutil.copy(so, os.path.join(src, sub))
    pkg = os.path.join(dest, "pkg", "cutscope")
    os.makedirs(pkg)
    for name in os.listdir(os.path.join(src, "src", "cutscope")):
        os.symlink(os.path.join(src, "src", "cutscope", name), os.path.join(pkg, name))
    for sub in ("tracer", "integrations", "viewer"):
        os.symlink(os.path.join(src, sub), os.path.join(pkg, sub))
    return os.path.join(dest, "pkg")


def child(mode: str, url: str, path: str | None, batch: int) -> dict:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
        env["BENCH_CODE"] = path
    else:
        env["BENCH_CODE"] = ROOT
    env.pop("CUTSCOPE_STRICT", None)
    env["BENCH_KEYS"] = ",".join(KEYS)
    env["BENCH_LANE_KEYS"] = json.dumps(LANE_KEYS)
    env["BENCH_BATCH"] = str(batch)
    db = url[len("sqlite:///"):]
    work = None
    if mode == "app":  # follow appends to the store: the app reads a copy
        work = db + ".app"
        for ext in ("", "-wal"):
            if os.path.exists(db + ext):
                shutil.copy(db + ext, work + ext)
        url = "sqlite:///" + work
    env["BENCH_OUT"] = db + ".out"
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, mode, url], env=env, capture_output=True,
                           text=True, timeout=1200)
    finally:
        if work is not None:
            for ext in ("", "-wal", "-shm", ".lock", ".lock.urgent"):
                if os.path.exists(work + ext):
                    os.unlink(work + ext)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    for line in r.stderr.splitlines():
        if line.startswith("slowest keys:"):
            print(f"{mode} {path or 'now'}: {line}", file=sys.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(vals: list[float], unit: str, nd: int = 2) -> str:
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{nd}f} {unit}"
    return f"{med:.{nd}f} {unit} [{min(vals):.{nd}f}-{max(vals):.{nd}f}]"


UNITS = {"rss_mb": ("peak RSS", "MB", 0), "child_rss_mb": ("peak RSS", "MB", 0),
         "out_mb": ("output", "MB", 0), "events": ("events", "", 0)}
NAMES = {"first_screen": "first screen", "key_p50": "key p50", "key_p99": "key p99", "key_max": "key max", "key_noop": "no-op key",
         "follow_load": "follow: reload", "follow_seen": "follow: write to screen"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--against", default=None, help="a git revision to measure as the baseline")
    ap.add_argument("--modes", default="app,steps,export,check")
    ap.add_argument("--batch", type=int, default=10_000,
                    help="events appended per live-follow batch (app)")
    ap.add_argument("--db", default=None,
                    help="a SQLite file to keep the generated trace in (made if absent, reused if "
                         "present)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import viewer_traces

    modes = a.modes.split(",")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.abspath(a.db) if a.db else os.path.join(d, "big.db")
        url = "sqlite:///" + path
        if not os.path.exists(path):
            viewer_traces.big_trace(url, a.n, procs=a.procs)
        codes = {"now": None}
        if a.against:
            codes = {a.against: code_tree(a.against, os.path.join(d, "base")), "now": None}
        res: dict = {}
        for _ in range(a.rounds):
            for mode in modes:
                for label, code in codes.items():
                    res.setdefault((mode, label), []).append(child(mode, url, code, a.batch))
    print(f"{a.n} events, {a.procs} processes in a ring; {a.rounds} round(s), median [range]; "
          f"app: headless (Textual Pilot, 160x44), {len(KEYS)} key presses, follow batches of "
          f"{a.batch} events")
    for (mode, label), runs in res.items():
        parts = []
        for k in runs[0]:
            name, unit, nd = UNITS.get(k, (NAMES.get(k, k), "s", 3 if k.startswith("key") else 2))
            if k.startswith("key") and mode == "app":
                vals = [r[k] * 1000 for r in runs]
                parts.append(f"{name} " + fmt(vals, "ms", 0))
            else:
                parts.append(f"{name} " + fmt([r[k] for r in runs], unit, nd))
        print(f"{mode:6} {label:>8}: " + ", ".join(parts))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{m} {lab}": runs for (m, lab), runs in res.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
