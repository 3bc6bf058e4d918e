"""A partial snapshot's ``missing`` names what is missing, and only that: a real
tracer (SQLite), threads as logical processes over queue.Queue."""

from __future__ import annotations

import threading
import time

import cutscope
from cutscope.viewer.export import load


def test_a_partial_snapshot_names_only_the_channels_still_open(db_path):
    """B's channel from A closes with its marker while B still waits on the one from
    C (C never reaches a safe point): the snapshot ends partial, and its `missing`
    names C and C's channel, not A's, although B is never done (the closed channel's
    report does not wait for B's "done" beyond a moment)."""
    import queue

    cutscope.start(db=db_path, name="main")
    release = threading.Event()
    stop = threading.Event()
    q_ab, q_cb = queue.Queue(), queue.Queue()
    result: dict = {}
    try:
        def a():
            with cutscope.process("A"):
                while not stop.is_set():
                    q_ab.put(1)
                    time.sleep(0.01)

        def b():
            with cutscope.process("B"):
                while not stop.is_set():
                    for q in (q_ab, q_cb):
                        try:
                            q.get(timeout=0.01)
                        except queue.Empty:
                            pass

        def c():
            with cutscope.process("C"):
                q_cb.put(1)
                release.wait()  # no safe point: never records

        threads = [threading.Thread(target=f, daemon=True) for f in (a, b, c)]
        for th in threads:
            th.start()
        time.sleep(0.3)
        with cutscope.process("asker"):
            result["snap"] = cutscope.snapshot(initiator="B", timeout=2)
    finally:
        stop.set()
        release.set()
        for th in threads:
            th.join(10)
        cutscope.stop()
    snap = result["snap"]
    assert snap.status == "partial"
    chans = {c["id"]: c for c in load(db_path)["channels"]}
    named = [(chans[m["channel"]]["src"], chans[m["channel"]]["dst"]) for m in snap.missing
             if "channel" in m]
    assert ("C", "B") in named
    assert ("A", "B") not in named, snap.missing
    assert {m.get("process") for m in snap.missing} >= {"C"}
