"""asyncio.Queue under cutscope: transparency, tasks as logical processes, markers in band."""

from __future__ import annotations

import asyncio

import pytest

import cutscope
from cutscope.integrations import aio as aint
from cutscope.integrations.queues import QueueMarker
from cutscope.testing import recording


def outcome(fn, *a):
    try:
        return ("ok", fn(*a))
    except Exception as exc:
        return ("raised", type(exc).__name__)


async def scenario(cls) -> list:
    log = []
    a = log.append
    q = cls(maxsize=2)
    a(("empty", q.empty(), q.qsize(), q.full(), q.maxsize))
    a(("get_nowait", outcome(q.get_nowait)))
    try:
        await asyncio.wait_for(q.get(), 0.01)
    except asyncio.TimeoutError:
        a("get timed out")
    a(("put_nowait", outcome(q.put_nowait, 3), outcome(q.put_nowait, 1), outcome(q.put_nowait, 2)))
    a(("full", q.qsize(), q.full(), q.empty()))
    try:
        await asyncio.wait_for(q.put(9), 0.01)
    except asyncio.TimeoutError:
        a("put timed out")

    async def late_get():
        a("late get")
        return await q.get()

    task = asyncio.create_task(late_get())
    await q.put(4)  # waits until late_get takes one
    a(("put returned", await task))
    a(("rest", await q.get(), q.get_nowait(), q.qsize()))
    for _ in range(3):
        q.task_done()
    a(("task_done too many", outcome(q.task_done)))
    await asyncio.wait_for(q.join(), 5)
    a("joined")
    return log


@pytest.mark.parametrize("cls", [asyncio.Queue, asyncio.LifoQueue, asyncio.PriorityQueue])
def test_asyncio_queue_behaves_as_without_cutscope(cls):
    plain = asyncio.run(scenario(cls))
    with recording("main"):
        traced = asyncio.run(scenario(cls))
    assert traced == plain
    assert asyncio.Queue.get is aint._ORIG["get"]


def test_tasks_are_logical_processes_with_one_channel_each():
    async def main2():
        q = asyncio.Queue(maxsize=2)
        got = []

        @cutscope.process("producer-a")
        async def prod_a():
            for i in range(10):
                await q.put(("a", i))

        async def prod_b():
            with cutscope.process("producer-b"):
                for i in range(10):
                    await q.put(("b", i))

        @cutscope.process("consumer")
        async def cons():
            for _ in range(20):
                got.append(await q.get())
                q.task_done()

        await asyncio.wait_for(asyncio.gather(prod_a(), prod_b(), cons()), 10)
        await q.join()
        return got

    with recording("main") as rec:
        got = asyncio.run(main2())
        doc = rec.trace()
    assert [i for n, i in got if n == "a"] == list(range(10))
    assert [i for n, i in got if n == "b"] == list(range(10))
    chans = sorted((c["src"], c["dst"]) for c in doc["channels"])
    assert chans == [("producer-a", "consumer"), ("producer-b", "consumer")]
    sends = {e["msg"]: e for e in doc["events"] if e["kind"] == "send"}
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    assert len(recvs) == len(sends) == 20
    for r in recvs:
        assert r["process"] == "consumer" and sends[r["msg"]]["channel"] == r["channel"]


def test_markers_are_consumed_invisibly_by_a_waiting_getter():
    async def main():
        q = asyncio.Queue()
        got = []
        proceed = asyncio.Event()

        async def cons():
            with cutscope.process("cons"):
                got.append(await q.get())
                proceed.set()
                got.append(await q.get())  # a marker wakes it; it keeps waiting
                q.task_done()
                q.task_done()

        with cutscope.process("prod") as prod:
            t = asyncio.create_task(cons())
            q.put_nowait("x")
            await asyncio.wait_for(proceed.wait(), 5)
            await asyncio.sleep(0)
            prod.record(3, prod.name)  # flush: marker into the side deque, getter woken
            assert [type(e) for e in q._cutscope_q.side] == [QueueMarker]
            assert q.qsize() == 0 and q.empty() and q._unfinished_tasks == 1
            for _ in range(100):
                await asyncio.sleep(0)
                if not q._cutscope_q.side:
                    break
            assert not q._cutscope_q.side  # the getter took the marker and waits on
            assert not t.done()
            q.put_nowait("y")
            await asyncio.wait_for(t, 5)
            await asyncio.wait_for(q.join(), 5)
        # get_nowait on a marker-only queue raises QueueEmpty, as on an empty queue
        with cutscope.process("prod") as prod:
            prod.record(4, prod.name)
        with cutscope.process("cons"):
            got.append(outcome(q.get_nowait))
        return got

    with recording("main") as rec:
        got = asyncio.run(main())
        doc = rec.trace()
    assert got == ["x", "y", ("raised", "QueueEmpty")]
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons == [("recv", None), ("snapshot", 3), ("recv", None), ("snapshot", 4)]


def test_flush_from_another_thread_goes_through_the_loop():
    import threading

    async def main():
        q = asyncio.Queue()
        with cutscope.process("prod") as prod:
            q.put_nowait(1)
        done = threading.Event()

        def other_thread():
            prod.record(5, prod.name)  # a flush from outside the loop's thread
            done.set()

        with cutscope.process("cons"):
            assert await q.get() == 1
            threading.Thread(target=other_thread).start()
            assert await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)
            for _ in range(100):
                await asyncio.sleep(0)
                if q._cutscope_q.side:
                    break
            with pytest.raises(asyncio.QueueEmpty):
                q.get_nowait()
        return q

    with recording("main") as rec:
        asyncio.run(main())
        doc = rec.trace()
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons == [("recv", None), ("snapshot", 5)]


# -- asyncio.Queue.shutdown() (3.13) -----------------------------------------------------------

needs_shutdown = pytest.mark.skipif(not hasattr(asyncio.Queue, "shutdown"),
                                    reason="asyncio.Queue.shutdown() is new in Python 3.13")


async def shutdown_scenario(cls, immediate: bool, mark=None) -> list:
    log = []
    a = log.append
    q = cls(maxsize=3)
    for x in (3, 1, 2):
        a(("put", outcome(q.put_nowait, x)))
    blocked = cls()
    waiter = asyncio.create_task(blocked.get())
    full_put = asyncio.create_task(q.put(9))  # waits: q is full
    await asyncio.sleep(0)
    if mark is not None:
        mark(q)
    q.shutdown(immediate=immediate)
    blocked.shutdown()
    for t in (waiter, full_put):
        try:
            a(("woken", await asyncio.wait_for(t, 5)))
        except Exception as exc:
            a(("woken", type(exc).__name__))
    a(("after", q.qsize(), q.empty(), q.full()))
    a(("put_nowait", outcome(q.put_nowait, 9)))
    try:
        await q.put(9)
    except Exception as exc:
        a(("put", type(exc).__name__))
    for _ in range(4):
        try:
            a(("get", await asyncio.wait_for(q.get(), 5)))
            q.task_done()
        except Exception as exc:
            a(("get", type(exc).__name__))
    a(("get_nowait", outcome(q.get_nowait)))
    await asyncio.wait_for(q.join(), 5)
    a("joined")
    return log


@needs_shutdown
@pytest.mark.parametrize("cls", [asyncio.Queue, asyncio.LifoQueue])
@pytest.mark.parametrize("immediate", [False, True])
def test_shutdown_behaves_as_without_cutscope(cls, immediate):
    plain = asyncio.run(shutdown_scenario(cls, immediate))
    assert ("put_nowait", ("raised", "QueueShutDown")) in plain
    with recording("main"):
        traced = asyncio.run(shutdown_scenario(cls, immediate))
    assert traced == plain


@needs_shutdown
@pytest.mark.parametrize("immediate", [False, True])
def test_shutdown_with_a_marker_left_in_the_queue(immediate):
    """get returns the items left, then raises QueueShutDown: the marker is never seen."""
    plain = asyncio.run(shutdown_scenario(asyncio.Queue, immediate))
    with recording("main"):
        async def traced_run():
            with cutscope.process("prod") as prod:
                return await shutdown_scenario(asyncio.Queue, immediate,
                                               lambda q: prod.record(1, prod.name))

        traced = asyncio.run(traced_run())
    assert traced == plain


def test_asyncio_imported_after_start_is_traced(tmp_path):
    """A program that imports asyncio after ``cutscope.start()``: the post-import hook
    runs while the ``asyncio`` package is still importing ``asyncio.queues`` (wrapt 1),
    and must wrap the queue then, in a fresh interpreter, in strict mode."""
    import subprocess
    import sys

    db = tmp_path / "t.db"
    script = (
        "import cutscope\n"
        f"cutscope.start(db={str(db)!r}, name='late')\n"
        "import asyncio\n"
        "async def main():\n"
        "    q = asyncio.Queue()\n"
        "    await q.put(1)\n"
        "    return await q.get()\n"
        "print(asyncio.run(main()))\n"
        "cutscope.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, "CUTSCOPE_STRICT": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    from cutscope.viewer.export import load

    kinds = [e["kind"] for e in load(str(db))["events"] if e["process"] == "late"]
    assert "send" in kinds and "recv" in kinds, kinds
