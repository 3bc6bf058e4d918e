"""A real event-loop system under `cutscope run`: examples/asyncio_cluster.py.

A coordinator (asyncio server) and worker processes started by multiprocessing
with one shared `Process.name`, over asyncio connections on which both ends
write a handshake first. Live snapshots from outside must be complete and
conserve the jobs; every OS process must have one unique name; every TCP
channel between two traced ends must be framed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cutscope.tracer.snapshot.coordinator import Coordinator, SNAPSHOT_LIVE_NS
from cutscope.tracer.store import open_store
from cutscope.viewer.export import load

from _checks import assert_snapshot_is_its_cut

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "asyncio_cluster.py")
sys.path.insert(0, os.path.join(ROOT, "examples"))
import asyncio_cluster  # noqa: E402

WORKERS = 3
JOBS = 100_000  # more than the test waits for: the cluster is busy throughout


def wait_cluster(db: str, timeout: float = 60.0) -> None:
    """Until the coordinator and every worker are live, each with a channel."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store = open_store(db, create=False)
        except Exception:
            time.sleep(0.2)
            continue
        try:
            live = set(store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS))
            talking = {p for c in store.channel_ends() for p in (c["src"], c["dst"])}
        finally:
            store.close()
        if "cluster" in live and len((live & talking) - {"cluster"}) >= WORKERS:
            return
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not come up within {timeout:g} s")


def test_live_snapshots_of_an_asyncio_cluster_are_complete_and_conserve_the_jobs(tmp_path):
    db = str(tmp_path / "cluster.db")
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)  # the application runs as a user would run it
    app = subprocess.Popen(
        [sys.executable, "-m", "cutscope", "run", "--db", db, "--name", "cluster", "--",
         sys.executable, EXAMPLE, "--workers", str(WORKERS), "--jobs", str(JOBS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    snaps = []
    try:
        wait_cluster(db)
        for _ in range(5):
            store = open_store(db, create=False)
            try:
                c = Coordinator(store, initiator="cluster", timeout=10)
                c.start()
                snaps.append(c.wait())
            finally:
                store.close()
            time.sleep(0.3)
    finally:
        app.kill()
        app.communicate(timeout=60)

    for snap in snaps:
        assert snap.status == "complete", (snap.summary(), snap.missing)
        assert len(snap.states) == WORKERS + 1, snap.states
        pending, done, held, moving, conserved = asyncio_cluster.audit(snap, JOBS)
        assert conserved, (snap.summary(), pending, done, held, moving)
    doc = load(f"sqlite:///{db}")
    for snap in snaps:
        assert_snapshot_is_its_cut(doc, snap)

    # One OS process, one name; no name for two processes.
    by_pid: dict[int, set] = {}
    for p in doc["processes"]:
        if any(e["process"] == p["name"] for e in doc["events"]):
            by_pid.setdefault(p["pid"], set()).add(p["name"])
    assert all(len(names) == 1 for names in by_pid.values()), by_pid
    names = [n for names in by_pid.values() for n in names]
    assert len(names) == len(set(names)), names
    assert sum(n != "cluster" for n in names) >= WORKERS, names

    # Both ends traced: every TCP channel between the coordinator and a worker is framed.
    traced = set(names)
    tcp = [c for c in doc["channels"] if c["transport"] == "tcp"
           and c["src"] in traced and c["dst"] in traced]
    assert len(tcp) >= 2 * WORKERS, doc["channels"]
    assert all(c["framed"] for c in tcp), [c for c in tcp if not c["framed"]]
