"""The tracer core: Lamport rules, message ids, logical processes, the recorder."""

from __future__ import annotations

import asyncio
import threading

import pytest

import cutscope
from cutscope.testing import recording
from cutscope.tracer import current


def test_lamport_rules_and_message_ids():
    with recording(name="p", instrument=False) as rec:
        p = current()
        cutscope.event("start")                       # p: seq 1, clock 1
        msg, stamp, _ = p.send(None, 3, channel="c1")  # p: seq 2, clock 2
        msg = f"{p.name}#{msg}"  # send returns the seq
        assert (msg, stamp) == ("p#2", 2)
        with cutscope.process("q") as q:
            # A logical process starts at its creator's clock (it happened after it).
            assert q.clock == 2
            with cutscope.process("r") as r:
                r.local("a")
                r.local("b")
                r.local("c")                           # r: clock 5
                r.recv("c1", msg, stamp, 3)            # max(5, 2) + 1 = 6
                assert r.clock == 6
            q.recv("c1b", msg, 1, 3)                   # max(2, 1) + 1 = 3
            assert q.clock == 3
            m2, s2, _ = q.send(None, 1, channel="c2")  # 4
            m2 = f"{q.name}#{m2}"  # send returns the seq
            assert (m2, s2) == ("q#2", 4)
        p.recv("c2", m2, 9, 1)                          # max(2, 9) + 1 = 10
        assert p.clock == 10
        doc = rec.trace()
    evs = {(e["process"], e["seq"]): e for e in doc["events"]}
    assert [evs[("p", s)]["lamport"] for s in (1, 2, 3)] == [1, 2, 10]
    assert evs[("r", 4)]["kind"] == "recv" and evs[("r", 4)]["msg"] == "p#2"
    assert evs[("r", 4)]["lamport"] == 6
    assert evs[("p", 3)]["msg"] == "q#2"
    assert evs[("p", 1)]["data"] == {"label": "start"}
    # Every event ticks; seq is 1, 2, 3 ... per process.
    for proc in ("p", "q", "r"):
        seqs = [e["seq"] for e in doc["events"] if e["process"] == proc]
        assert seqs == list(range(1, len(seqs) + 1))


def test_receive_behind_the_local_clock_still_ticks():
    with recording(name="p", instrument=False):
        p = current()
        for _ in range(10):
            p.local("x")
        p.recv("c", "other#1", 3, 0)
        assert p.clock == 11


def test_eight_threads_lose_nothing_and_keep_seq_contiguous(db_url):
    n_threads, per = 8, 5000
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        p = t.main
        barrier = threading.Barrier(n_threads)

        def work(i):
            barrier.wait()
            for k in range(per):
                if k % 2:
                    p.send(None, k, channel=f"c{i}")
                else:
                    cutscope.event("tick", thread=i, k=k)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        cutscope.stop()
    from cutscope.viewer.export import load

    doc = load(db_url)
    seqs = [e["seq"] for e in doc["events"] if e["process"] == "main"]
    assert seqs == list(range(1, n_threads * per + 1))
    lamports = [e["lamport"] for e in doc["events"]]
    assert lamports == sorted(lamports) and len(set(lamports)) == len(lamports)


def test_process_as_decorator_context_manager_and_per_thread():
    seen = {}
    with recording(name="main", instrument=False) as rec:
        @cutscope.process("worker")
        def work():
            seen["inside"] = current().name
            cutscope.event("working")

        th = threading.Thread(target=work)
        th.start()
        th.join()
        seen["outside"] = current().name
        with cutscope.process("ctx"):
            cutscope.event("in ctx")
            with cutscope.process("nested"):
                cutscope.event("in nested")
            cutscope.event("back in ctx")
        doc = rec.trace()
    assert seen == {"inside": "worker", "outside": "main"}
    by = {}
    for e in doc["events"]:
        by.setdefault(e["process"], []).append(e["data"]["label"])
    assert by == {"worker": ["working"], "ctx": ["in ctx", "back in ctx"], "nested": ["in nested"]}
    assert {p["name"] for p in doc["processes"]} == {"main", "worker", "ctx", "nested"}


def test_asyncio_tasks_are_their_own_logical_processes():
    async def main():
        @cutscope.process("task-a")
        async def a():
            await asyncio.sleep(0)
            cutscope.event("a")
            await asyncio.sleep(0)
            return current().name

        async def b():
            with cutscope.process("task-b"):
                await asyncio.sleep(0)
                cutscope.event("b")
                return current().name

        return await asyncio.gather(a(), b())

    with recording(name="main", instrument=False) as rec:
        names = asyncio.run(main())
        doc = rec.trace()
    assert names == ["task-a", "task-b"]
    assert {(e["process"], e["data"]["label"]) for e in doc["events"]} == {("task-a", "a"), ("task-b", "b")}


def test_untraced_api_calls_are_harmless():
    # No tracer running: the API does nothing and raises nothing.
    cutscope.event("nobody listens")
    cutscope.safepoint()
    assert cutscope.state(lambda: {"x": 1})() == {"x": 1}
    with cutscope.process("x") as lp:
        assert lp is None


def test_state_providers_are_registered_per_logical_process():
    with recording(name="main", instrument=False):
        cutscope.state(lambda: {"balance": 10})
        with cutscope.process("other") as other:
            cutscope.state(lambda: {"queue": []})
            assert other.local_state() == {"queue": []}
        assert current().local_state() == {"balance": 10}


def test_start_is_idempotent_and_stop_without_start_is_harmless(db_url):
    cutscope.stop()
    t1 = cutscope.start(db=db_url, instrument=False)
    try:
        assert cutscope.start(db=db_url, instrument=False) is t1
        assert cutscope.active() is t1
    finally:
        cutscope.stop()
    assert cutscope.active() is None


def test_payload_capture_is_off_by_default_and_capped(db_url):
    from cutscope.viewer.export import load

    with recording(name="p", instrument=False) as rec:
        current().send(None, 5, b"hello", channel="c")
        doc = rec.trace()
    assert "payload_b64" not in doc["events"][0]
    with recording(name="p", instrument=False, capture_payload=3) as rec:
        current().send(None, 5, b"hello", channel="c")
        doc = rec.trace()
    import base64

    assert base64.b64decode(doc["events"][0]["payload_b64"]) == b"hel"
