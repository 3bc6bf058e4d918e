"""Logical-process names: one per OS process, unique in the store, for its whole life.

A name given twice (the same ``Process.name`` for several children, the same
``--name`` for two launches) becomes ``name``, ``name#2``, ``name#3`` in order of
registration; real processes, real stores.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cutscope
from cutscope.viewer.model import check
from cutscope.viewer.export import load
from _sockutil import CUTSCOPE, PY, clean_env
from test_mp import bank_branch

TIMEOUT = 30.0


def _one_name_per_pid(doc, threads=()) -> dict[int, str]:
    """{pid: name} of the OS processes (not the ``threads``' logical processes)."""
    by_pid: dict[int, list[str]] = {}
    for p in doc["processes"]:
        if p["name"] not in threads:
            by_pid.setdefault(p["pid"], []).append(p["name"])
    assert all(len(v) == 1 for v in by_pid.values()), by_pid
    return {pid: v[0] for pid, v in by_pid.items()}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_with_one_process_name_get_a_name_each(method, db_path):
    """Three children all called "branch" (as dask names every worker): branch,
    branch#2, branch#3, one per pid; a snapshot started by "branch#2" over their
    multiprocessing queues completes and its cut checks."""
    ctx = mp.get_context(method)
    n, start_balance = 4, 100
    cutscope.start(db=db_path, name="bank")
    result: dict = {}
    try:
        inboxes = [ctx.Queue() for _ in range(n)]
        stop = ctx.Event()
        kids = [ctx.Process(target=bank_branch, args=(i, inboxes, stop, start_balance, 200),
                            name="branch") for i in range(1, n)]
        for k in kids:
            k.start()

        def take():
            try:
                for _ in range(500):  # every branch has a channel in the store
                    doc = cutscope.active().store.load(events=False)
                    if len({c["src"] for c in doc["channels"] if c["dst"]}) >= n:
                        break
                    time.sleep(0.02)
                with cutscope.process("snapshotter"):
                    for _ in range(50):
                        try:
                            result["snap"] = cutscope.snapshot(initiator="branch#2",
                                                               timeout=TIMEOUT)
                            break
                        except cutscope.SnapshotError as exc:
                            result["error"] = exc
                            time.sleep(0.1)
            finally:
                stop.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        bank_branch(0, inboxes, stop, start_balance, 200)
        taker.join(TIMEOUT)
        for k in kids:
            k.join(TIMEOUT)
            assert k.exitcode == 0
    finally:
        cutscope.stop()
    doc = load(db_path)
    names = _one_name_per_pid(doc, threads=("snapshotter",))
    assert sorted(names[k.pid] for k in kids) == ["branch", "branch#2", "branch#3"]
    assert {p["parent"] for p in doc["processes"] if p["pid"] in {k.pid for k in kids}} == {"bank"}
    assert "snap" in result, result.get("error")
    snap = result["snap"]
    assert snap.status == "complete", snap.missing
    assert snap.initiator == "branch#2"
    assert {"bank", "branch", "branch#2", "branch#3"} <= set(snap.states)
    money = sum(s["balance"] for s in snap.states.values() if "balance" in s)
    money += sum(m["value"] for msgs in snap.channels.values() for m in msgs)
    assert money == n * start_balance
    assert check(doc) == []


SAME_NAME_CHILDREN = textwrap.dedent(r'''
    import multiprocessing as mp, os, sys

    def work(q):
        q.put(os.getpid())

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        q = ctx.Queue()
        ps = [ctx.Process(target=work, args=(q,), name="Worker") for _ in range(3)]
        ps.append(ctx.Process(target=work, args=(q,)))
        for p in ps:
            p.start()
        got = sorted(q.get(timeout=60) for _ in ps)
        for p in ps:
            p.join()
        print("PIDS", *[p.pid for p in ps])
''')


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_run_children_are_recorded_under_one_name_each(method, tmp_path):
    """Under `cutscope run`, a spawned child traces from its start (sitecustomize),
    before it knows its Process.name: when it learns it, the name it had is given
    back, so the pid has one name."""
    prog = tmp_path / "prog.py"
    prog.write_text(SAME_NAME_CHILDREN)
    db = tmp_path / "t.db"
    r = subprocess.run([CUTSCOPE, "run", "--db", str(db), "--name", "x", "--", PY, str(prog),
                        method], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    pids = [int(p) for p in r.stdout.split("PIDS")[1].split()]
    doc = load(str(db))
    names = _one_name_per_pid(doc)
    assert sorted(names[p] for p in pids[:3]) == ["Worker", "Worker#2", "Worker#3"]
    assert names[pids[3]].endswith(f"/{pids[3]}")
    c = subprocess.run([CUTSCOPE, "check", "--db", str(db)], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert c.returncode == 0, c.stdout + c.stderr


LOOPING = textwrap.dedent(r'''
    import os, queue, sys, time
    from cutscope.tracer import active
    print("NAME", active().main.name, flush=True)
    q = queue.Queue()
    i = 0
    while not os.path.exists(sys.argv[1]):
        q.put(i)
        i += q.get()
        time.sleep(0.005)
''')


def test_two_launches_with_one_name_and_a_snapshot_from_the_second(tmp_path):
    prog = tmp_path / "loop.py"
    prog.write_text(LOOPING)
    db, stop = tmp_path / "t.db", tmp_path / "stop"
    env = clean_env()
    procs = [subprocess.Popen([CUTSCOPE, "run", "--db", str(db), "--name", "x", "--", PY,
                               str(prog), str(stop)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    try:
        names = sorted(p.stdout.readline().split()[1] for p in procs)
        assert names == ["x", "x#2"]
        snap = None
        for _ in range(50):  # until both have a channel in the store and a heartbeat
            r = subprocess.run([CUTSCOPE, "snapshot", "--db", str(db), "--from", "x#2", "--json",
                                "--timeout", "20"], capture_output=True, text=True, env=env,
                               timeout=60)
            if r.returncode == 0:
                snap = json.loads(r.stdout)
                break
            time.sleep(0.2)
        assert snap is not None, r.stdout + r.stderr
        assert snap["initiator"] == "x#2" and snap["status"] == "complete"
        assert {"x", "x#2"} <= set(snap["processes"])
        r = subprocess.run([CUTSCOPE, "snapshot", "--db", str(db), "--from", "x#3"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "x#3" in r.stderr and "x, x#2" in r.stderr
    finally:
        stop.touch()
        for p in procs:
            p.wait(timeout=60)
    c = subprocess.run([CUTSCOPE, "check", "--db", str(db)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert c.returncode == 0, c.stdout + c.stderr
    assert os.path.exists(db)

