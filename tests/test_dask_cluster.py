"""A real distributed system under `cutscope run`: a dask.distributed cluster.

A `LocalCluster` with worker processes (the scheduler and the nannies in the
main process, each worker a process of its own that the nanny starts with the
same `Process.name` as every other) and a `Client` mapping a function over
thousands of items, round after round. While it computes: ten snapshots asked
from outside, each complete and consistent with the recorded
events; afterwards `cutscope check`, one unique name per OS process, no raw
TCP channel between two traced ends, and the job's result as without cutscope.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("distributed")

from cutscope.testing import talking_processes  # noqa: E402
from cutscope.tracer.snapshot.coordinator import Coordinator  # noqa: E402
from cutscope.tracer.store import open_store  # noqa: E402
from cutscope.viewer.export import load  # noqa: E402

from _checks import assert_snapshot_is_its_cut  # noqa: E402

WORKERS = 2
ITEMS = 600  # a round takes seconds: the job ends soon after it is told to

JOB = textwrap.dedent(r'''
    import os, sys, time
    from dask.distributed import Client, LocalCluster

    def inc(x):
        time.sleep(0.0005)
        return x + 1

    if __name__ == "__main__":
        workers, items, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            print("ready", flush=True)
            rounds = 0
            while not os.path.exists(stop) or rounds == 0:
                total = sum(client.gather(client.map(inc, range(items), pure=False)))
                assert total == items * (items + 1) // 2, total
                rounds += 1
            print(f"rounds {rounds} total {total}", flush=True)
''')


@pytest.mark.timeout(900)  # five traced interpreters start, compute and stop on a shared machine
def test_live_snapshots_of_a_dask_cluster(tmp_path):
    db = str(tmp_path / "dask.db")
    prog = tmp_path / "job.py"
    prog.write_text(JOB)
    stop = tmp_path / "stop"
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)  # the application runs as a user would run it
    app = subprocess.Popen(
        [sys.executable, "-m", "cutscope", "run", "--db", db, "--name", "dask", "--",
         sys.executable, str(prog), str(WORKERS), str(ITEMS), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    snaps = []
    try:
        assert app.stdout.readline().strip() == "ready", app.stderr.read()[-3000:]
        deadline = time.monotonic() + 60
        while True:  # the workers are live and talking
            talking = talking_processes(db)
            if len(talking - {"dask"}) >= WORKERS:
                break
            assert time.monotonic() < deadline, talking
            time.sleep(0.2)
        for _ in range(10):
            store = open_store(db, create=False)
            try:
                c = Coordinator(store, initiator="dask", timeout=10)
                c.start()
                snaps.append(c.wait())
            finally:
                store.close()
            time.sleep(0.2)
        stop.write_text("")
        out, err = app.communicate(timeout=400)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert app.returncode == 0, err[-3000:]
    assert f"total {ITEMS * (ITEMS + 1) // 2}" in out, out

    for snap in snaps:
        assert snap.status == "complete", (snap.summary(), snap.missing)
    doc = load(f"sqlite:///{db}")
    for snap in snaps:
        assert_snapshot_is_its_cut(doc, snap)
    check = subprocess.run([sys.executable, "-m", "cutscope", "check", "--db", db],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]

    names_of: dict[int, set] = {}
    for p in doc["processes"]:
        if any(e["process"] == p["name"] for e in doc["events"]):
            names_of.setdefault((p["host"], p["pid"]), set()).add(p["name"])
    assert all(len(n) == 1 for n in names_of.values()), names_of
    assert len(names_of) >= WORKERS + 1, names_of
    traced = {n for names in names_of.values() for n in names}
    tcp = [c for c in doc["channels"] if c["transport"] == "tcp"
           and c["src"] in traced and c["dst"] in traced]
    assert tcp and all(c["framed"] for c in tcp), [c for c in tcp if not c["framed"]]
