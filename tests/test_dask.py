"""dask.distributed: the built-in state provider of a scheduler and its workers,
registered when distributed is imported; a real LocalCluster."""

from __future__ import annotations

import pytest

import cutscope

distributed = pytest.importorskip("distributed")


def inc(x):
    return x + 1


def test_dask_scheduler_and_worker_task_counts_in_the_local_state(db_path):
    from dask.distributed import Client, LocalCluster

    t = cutscope.start(db=db_path, name="daskapp")
    try:
        from cutscope.integrations.dask import dask_state

        assert dask_state in t.main.providers  # distributed imported: registered
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            futs = client.map(inc, range(40), pure=False)
            assert sum(client.gather(futs)) == sum(range(1, 41))
            snap = cutscope.snapshot(timeout=5)
            del futs
    finally:
        cutscope.stop()
    servers = snap.states["daskapp"]["dask"]
    sched = [s for s in servers if s["kind"] == "scheduler"]
    workers = [s for s in servers if s["kind"] == "worker"]
    assert len(sched) == 1 and len(workers) == 2
    assert sched[0]["workers"] == 2 and sched[0]["tasks"] == {"memory": 40}
    assert sum(w["tasks"].get("memory", 0) for w in workers) == 40
    assert all(w["executing"] == 0 and w["address"] for w in workers)
    assert not any("error" in s for s in servers)
