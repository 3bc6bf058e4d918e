"""queue.Queue under cutscope: transparency, markers in band, one channel per producer.

Every semantics test runs the same scenario without cutscope and with it, and
compares what the application saw (items, order, exceptions, sizes).
"""

from __future__ import annotations

import queue
import threading

import pytest
from hypothesis import given, settings, strategies as st

import cutscope
from cutscope.integrations import queues as qint
from cutscope.testing import recording

TIMEOUT = 10.0


def run_thread(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def finish(t: threading.Thread):
    t.join(TIMEOUT)
    assert not t.is_alive(), "thread did not finish"


def outcome(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except Exception as exc:  # the exception type is part of the semantics
        return ("raised", type(exc).__name__)


# -- the same scenario, untraced and traced -------------------------------------------------

def scenario(cls) -> list:
    log = []
    q = cls(maxsize=3)
    a = log.append
    a(("empty0", q.empty(), q.qsize(), q.full(), q.maxsize))
    a(("get_nowait-empty", outcome(q.get_nowait)))
    a(("get-timeout-empty", outcome(q.get, timeout=0.01)))
    a(("get-nonblock-empty", outcome(q.get, False)))
    a(("get-negative-timeout", outcome(q.get, True, -1)))
    for x in (5, 1, 4):
        a(("put", x, outcome(q.put, x)))
    a(("full", q.empty(), q.qsize(), q.full(), list(q.queue)))
    a(("put_nowait-full", outcome(q.put_nowait, 9)))
    a(("put-timeout-full", outcome(q.put, 9, timeout=0.01)))
    a(("put-negative-timeout", outcome(q.put, 9, True, -1)))
    a(("unfinished", q.unfinished_tasks))
    a(("get", outcome(q.get)))
    a(("get_nowait", outcome(q.get_nowait)))
    a(("after-gets", q.qsize(), q.empty(), q.full(), q.unfinished_tasks))
    a(("task_done", outcome(q.task_done), outcome(q.task_done)))
    a(("put_nowait", outcome(q.put_nowait, b"bytes")))
    a(("get-timeout", outcome(q.get, timeout=1.0)))
    a(("get-last", outcome(q.get, True, None)))
    a(("task_done-2", outcome(q.task_done), outcome(q.task_done)))
    a(("task_done-too-many", outcome(q.task_done)))
    a(("end", q.qsize(), q.empty(), q.unfinished_tasks, list(q.queue)))
    # join() returns at once when nothing is unfinished
    q.join()
    return log


def blocking_scenario(cls) -> list:
    """A put on a full queue waits for a get; a get on an empty queue waits for a put."""
    log = []
    q = cls(maxsize=1)
    q.put(1)
    started = threading.Event()

    def consumer():
        started.wait(TIMEOUT)
        log.append("consumer-get")
        log.append(("got", q.get(timeout=TIMEOUT)))

    t = run_thread(consumer)
    started.set()
    q.put(2, timeout=TIMEOUT)  # blocks until the consumer took 1
    log.append("put-returned")
    finish(t)
    log.append(("second", q.get(timeout=TIMEOUT)))

    def late_put():
        log.append("putting")
        q.put(3)

    t = run_thread(late_put)
    log.append(("third", q.get(timeout=TIMEOUT)))  # waits for the late put
    finish(t)
    # join() waits for task_done of every item
    done = []
    joiner = run_thread(lambda: (q.join(), done.append(True)))
    for _ in range(3):
        q.task_done()
    finish(joiner)
    log.append(("joined", done))
    return log


@pytest.mark.parametrize("cls", [queue.Queue, queue.LifoQueue, queue.PriorityQueue])
def test_every_method_behaves_as_without_cutscope(cls):
    plain = scenario(cls)
    with recording("main"):
        traced = scenario(cls)
    assert traced == plain
    # and the wrappers are gone afterwards
    assert queue.Queue.put is qint._ORIG["put"] and queue.Queue.get is qint._ORIG["get"]


def test_blocking_and_join_behave_as_without_cutscope():
    plain = blocking_scenario(queue.Queue)
    with recording("main"):
        traced = blocking_scenario(queue.Queue)
    assert traced == plain
    assert plain.index("consumer-get") < plain.index("put-returned")


def test_subclass_with_custom_container_is_transparent():
    class Dedup(queue.Queue):
        """A subclass that changes _put: it drops duplicates."""

        def _init(self, maxsize):
            super()._init(maxsize)
            self.seen = set()

        def _put(self, item):
            if item not in self.seen:
                self.seen.add(item)
                self.queue.append(item)

    def run():
        q = Dedup()
        for x in (1, 2, 1, 3, 2):
            q.put(x)
        return [q.get_nowait() for _ in range(q.qsize())], q.unfinished_tasks

    plain = run()
    with recording("main") as rec:
        traced = run()
        doc = rec.trace()
    assert traced == plain == ([1, 2, 3], 5)
    assert all(not c["fifo"] for c in doc["channels"])


# -- channels, messages, export ---------------------------------------------------------------

def sends_and_recvs(doc):
    sends = {e["msg"]: e for e in doc["events"] if e["kind"] == "send"}
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    return sends, recvs


def test_one_channel_per_producer_and_every_recv_matches_its_send(db_url):
    from cutscope.viewer.export import load

    before = c_counts()
    cutscope.start(db=db_url, name="app")
    try:
        q = queue.Queue()

        def producer(name, n):
            with cutscope.process(name):
                for i in range(n):
                    q.put((name, i))

        ts = [run_thread(producer, f"prod-{k}", 20) for k in range(3)]
        got = []
        with cutscope.process("consumer"):
            for _ in range(60):
                got.append(q.get(timeout=TIMEOUT))
        for t in ts:
            finish(t)
    finally:
        cutscope.stop()
    assert_c_path_taken(before, gets=False)  # (the consumer's gets may all wait: Python)
    for k in range(3):
        assert [i for n, i in got if n == f"prod-{k}"] == list(range(20))
    doc = load(db_url)
    chans = [c for c in doc["channels"] if c["transport"] == "queue"]
    assert sorted((c["src"], c["dst"]) for c in chans) == [
        (f"prod-{k}", "consumer") for k in range(3)]
    assert all(c["fifo"] and c["framed"] for c in chans)
    assert len({c["endpoint"] for c in chans}) == 1
    sends, recvs = sends_and_recvs(doc)
    assert len(sends) == len(recvs) == 60
    for r in recvs:
        s = sends[r["msg"]]
        assert r["process"] == "consumer" and s["channel"] == r["channel"]
        assert r["lamport"] > s["lamport"]
    by_chan = {c["id"]: c["src"] for c in chans}
    assert all(by_chan[s["channel"]] == s["process"] for s in sends.values())


def test_lifo_and_priority_queues_are_recorded_as_not_fifo():
    with recording("main") as rec:
        lq, pq = queue.LifoQueue(), queue.PriorityQueue()
        with cutscope.process("prod"):
            for x in (3, 1, 2):
                lq.put(x)
                pq.put((x, f"job{x}"))
        with cutscope.process("cons"):
            lifo = [lq.get_nowait() for _ in range(3)]
            prio = [pq.get_nowait() for _ in range(3)]
        doc = rec.trace()
    assert lifo == [2, 1, 3]
    assert prio == [(1, "job1"), (2, "job2"), (3, "job3")]
    chans = doc["channels"]
    assert len(chans) == 2 and all(not c["fifo"] and c["dst"] == "cons" for c in chans)
    sends, recvs = sends_and_recvs(doc)
    assert len(recvs) == 6 and all(r["msg"] in sends for r in recvs)
    lchan = next(c["id"] for c in chans if "Lifo" in c["endpoint"])
    lsends = [s["msg"] for s in sends.values() if s["channel"] == lchan]
    lrecvs = [r["msg"] for r in recvs if r["channel"] == lchan]
    assert lrecvs == [lsends[2], lsends[1], lsends[0]]  # the item's own message, LIFO order


def test_items_put_before_start_pass_through_untouched():
    q = queue.Queue()
    q.put("old")
    with recording("main") as rec:
        q.put("new")
        assert q.get_nowait() == "old"
        assert q.get_nowait() == "new"
        doc = rec.trace()
    sends, recvs = sends_and_recvs(doc)
    assert len(sends) == 1 and [r["msg"] for r in recvs] == list(sends)


def test_cleared_container_resynchronises():
    with recording("main") as rec:
        q = queue.Queue()
        q.put("a")
        q.put("b")
        with q.mutex:
            q.queue.clear()  # a common idiom that bypasses get()
        q.put("c")
        assert q.get_nowait() == "c"
        doc = rec.trace()
    sends, recvs = sends_and_recvs(doc)
    (r,) = recvs
    assert sends[r["msg"]]["seq"] == 3  # the message of "c", not of "a"


# -- markers ---------------------------------------------------------------------------------------

def side_markers(q):
    return [e for e in q._cutscope_q.side if type(e) is qint.QueueMarker]


def test_markers_are_invisible_and_do_not_count():
    with recording("main") as rec:
        q = queue.Queue(maxsize=3)
        with cutscope.process("prod") as prod:
            q.put(1)
            q.put(2)
            prod.record(1, prod.name)  # marker after 1, 2 (flushed into the idle queue)
            q.put(3)
            prod.record(2, prod.name)  # marker after 3, at the tail
        assert len(side_markers(q)) == 2
        assert (q.qsize(), q.empty(), q.full(), q.unfinished_tasks) == (3, False, True, 3)
        assert list(q.queue) == [1, 2, 3]
        with pytest.raises(queue.Full):
            q.put_nowait(4)  # markers do not take the free slots, nor do they add any

        got = []

        def consumer():
            with cutscope.process("cons"):
                for _ in range(3):
                    got.append(q.get(timeout=TIMEOUT))
                    q.task_done()
                # only the trailing marker is left: get() swallows it and times out
                got.append(outcome(q.get, timeout=0.05))
                got.append(outcome(q.get_nowait))

        t = run_thread(consumer)
        joined = []
        j = run_thread(lambda: (q.join(), joined.append(True)))
        finish(t)
        finish(j)
        assert joined == [True]
        assert got == [1, 2, 3, ("raised", "Empty"), ("raised", "Empty")]
        assert side_markers(q) == [] and q.unfinished_tasks == 0
        doc = rec.trace()
    cons = [e for e in doc["events"] if e["process"] == "cons"]
    kinds = [(e["kind"], e.get("snapshot")) for e in cons]
    # the consumer recorded snapshot 1 after receiving 1 and 2, before 3; snapshot 2 after 3
    assert kinds == [("recv", None), ("recv", None), ("snapshot", 1), ("recv", None),
                     ("snapshot", 2)]


def test_markers_taken_by_a_put_go_before_its_item():
    """Markers queued on an endpoint that a put finds pending (not flushed yet)."""
    from cutscope.tracer.process import Marker

    with recording("main") as rec:
        q = queue.Queue()
        with cutscope.process("prod") as prod:
            q.put("a")
            ep = q._cutscope_q.out[prod]
            with prod.lock:
                ep.pending.append(Marker(4, prod.name, 0))  # as a deferred flush leaves it
            q.put("b")
            assert [type(e).__name__ for e in q._cutscope_q.side] == ["tuple", "QueueMarker", "tuple"]
        with cutscope.process("cons"):
            assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
        doc = rec.trace()
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons == [("recv", None), ("snapshot", 4), ("recv", None)]


def test_blocked_consumer_wakes_for_a_marker_and_keeps_waiting():
    with recording("main") as rec:
        q = queue.Queue()
        with cutscope.process("prod") as prod:
            q.put("first")
        ready = threading.Event()
        got = []

        def consumer():
            with cutscope.process("cons"):
                got.append(q.get(timeout=TIMEOUT))
                ready.set()
                got.append(q.get(timeout=TIMEOUT))  # blocks; a marker arrives; goes on waiting

        t = run_thread(consumer)
        assert ready.wait(TIMEOUT)
        with cutscope.process("prod") as prod:
            prod.record(7, prod.name)  # flush wakes the blocked consumer
            # the consumer records snapshot 7 from inside its get(), then waits again
            for _ in range(1000):
                if not side_markers(q) and t.is_alive():
                    break
                threading.Event().wait(0.01)
            q.put("second")
        finish(t)
        doc = rec.trace()
    assert got == ["first", "second"]
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons == [("recv", None), ("snapshot", 7), ("recv", None)]


def test_a_marker_reaches_every_consumer_of_a_shared_queue():
    with recording("main") as rec:
        q = queue.Queue()
        got = {"c1": [], "c2": []}
        first = threading.Barrier(2, timeout=TIMEOUT)

        def consumer(name):
            with cutscope.process(name):
                got[name].append(q.get(timeout=TIMEOUT))  # each registers the channel
                first.wait()
                got[name].append(q.get(timeout=TIMEOUT))  # both block; a marker arrives

        with cutscope.process("prod") as prod:
            q.put("a")
            q.put("b")
            ts = [run_thread(consumer, n) for n in got]
            for _ in range(1000):
                with q.mutex:
                    if len(q.not_empty._waiters) == 2:
                        break
                threading.Event().wait(0.01)
            prod.record(1, prod.name)
            for _ in range(1000):  # both consumers take the marker, then wait on
                if not q._cutscope_q.side and not q._cutscope_q.pend:
                    break
                threading.Event().wait(0.01)
            assert not q._cutscope_q.side and not q._cutscope_q.pend  # nobody waits for an item
            q.put("c")
            q.put("d")
        for t in ts:
            finish(t)
        doc = rec.trace()
    assert sorted(got["c1"] + got["c2"]) == ["a", "b", "c", "d"]
    for name in got:
        kinds = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == name]
        assert kinds == [("recv", None), ("snapshot", 1), ("recv", None)], name


def test_send_exit_snapshot_with_a_provider_that_reads_the_queue():
    """A producer with no incoming channel records at the exit of its next put; its
    state provider may read the queue (it must not deadlock on the queue's mutex)."""
    with recording("main") as rec:
        q = queue.Queue()
        done = threading.Event()

        def producer():
            with cutscope.process("P") as lp:
                cutscope.state(lambda: {"backlog": q.qsize()})
                lp.request(1, "P")  # asked for a snapshot; P never receives
                q.put("x")
                q.put("y")
                done.set()

        t = run_thread(producer)
        assert done.wait(TIMEOUT), "put deadlocked"
        finish(t)
        with cutscope.process("C"):
            assert [q.get_nowait(), q.get_nowait()] == ["x", "y"]
        doc = rec.trace()
    p = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "P"]
    assert p == [("send", None), ("snapshot", 1), ("send", None)]  # after the first put
    c = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "C"]
    assert c == [("recv", None), ("snapshot", 1), ("recv", None)]  # the marker after x
    assert rec.tracer.store.states[(1, "P")]["state"].startswith('{"backlog": 1')


@settings(max_examples=25, deadline=None)
@given(
    loads=st.lists(st.integers(0, 15), min_size=1, max_size=4),
    maxsize=st.sampled_from([0, 1, 3]),
    snap_after=st.integers(0, 15),
)
def test_many_producers_keep_per_producer_fifo(loads, maxsize, snap_after):
    total = sum(loads)
    with recording("main") as rec:
        q = queue.Queue(maxsize=maxsize)

        def producer(k, n):
            with cutscope.process(f"p{k}") as lp:
                for i in range(n):
                    if k == 0 and i == snap_after:
                        lp.record(1, lp.name)  # a marker in the middle of producer 0's items
                    q.put((k, i))

        ts = [run_thread(producer, k, n) for k, n in enumerate(loads)]
        got = []
        with cutscope.process("cons"):
            for _ in range(total):
                got.append(q.get(timeout=TIMEOUT))
                q.task_done()
        for t in ts:
            finish(t)
        q.join()
        assert q.qsize() == 0 and q.empty()
        doc = rec.trace()
    for k, n in enumerate(loads):
        assert [i for kk, i in got if kk == k] == list(range(n))
    assert all(isinstance(x, tuple) for x in got)  # markers never reach the application
    sends, recvs = sends_and_recvs(doc)
    assert len(sends) == len(recvs) == total
    assert {r["msg"] for r in recvs} == set(sends)
    chans = {c["id"]: (c["src"], c["dst"]) for c in doc["channels"]}
    for r in recvs:
        s = sends[r["msg"]]
        assert s["channel"] == r["channel"] and chans[r["channel"]] == (s["process"], "cons")
    # per channel, receive order is send order
    for cid in chans:
        sent = [m for m, s in sorted(sends.items(), key=lambda kv: kv[1]["seq"])
                if s["channel"] == cid]
        assert [r["msg"] for r in recvs if r["channel"] == cid] == sent


def test_snapshot_of_threads_connected_by_queues_conserves_money(db_url):
    """A bank of three branch threads: every snapshot's states plus in-transit == total."""
    import random

    n, start_balance, rounds = 3, 100, 150
    before = c_counts()
    cutscope.start(db=db_url, name="bank")
    try:
        qs = [queue.Queue() for _ in range(n)]
        stop = threading.Event()

        def branch(i):
            rnd = random.Random(i)
            with cutscope.process(f"branch-{i}"):
                bal = {"balance": start_balance}
                cutscope.state(lambda: dict(bal))
                sent = 0
                while not stop.is_set():
                    try:
                        amount = qs[i].get(timeout=0.005)
                        bal["balance"] += amount
                    except queue.Empty:
                        pass
                    if sent < rounds and bal["balance"] > 0:
                        amount = rnd.randint(1, min(10, bal["balance"]))
                        bal["balance"] -= amount
                        qs[rnd.choice([j for j in range(n) if j != i])].put(amount)
                        sent += 1

        ts = [run_thread(branch, i) for i in range(n)]
        for _ in range(1000):  # every branch has a channel, and the store knows it
            if sum(len(q._cutscope_q.out) for q in qs if hasattr(q, "_cutscope_q")) >= n:
                break
            threading.Event().wait(0.01)
        cutscope.active().flush()
        snaps = [cutscope.snapshot(initiator="branch-0", timeout=30) for _ in range(2)]
        stop.set()
        for t in ts:
            finish(t)
    finally:
        cutscope.stop()
    # the snapshots ran while the branches put through the C path (their gets mostly wait
    # for an item: the Python get; test_snapshot_threads' pipeline has C gets throughout)
    assert_c_path_taken(before, gets=False)
    for snap in snaps:
        assert snap.status == "complete", snap.missing
        money = sum(s["balance"] for s in snap.states.values() if "balance" in s)
        money += sum(m["value"] for msgs in snap.channels.values() for m in msgs)
        assert money == n * start_balance
    from cutscope.viewer.model import check
    from cutscope.viewer.export import load

    assert check(load(db_url)) == []  # every cut consistent, channel states as recorded


def test_racing_producers_each_send_on_their_own_channel():
    """put caches the last producer's endpoint on the queue: threads that interleave
    their puts on one queue (thread switches forced as often as the interpreter
    allows) must each record every send on their own channel, matched by its recv."""
    import sys

    n, k = 3000, 4
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between any two bytecodes, often
    before = c_counts()
    try:
        doc, got = _racing_producers(n, k)
    finally:
        sys.setswitchinterval(switch)
    assert_c_path_taken(before)
    for j in range(k):
        assert [i for jj, i in got if jj == j] == list(range(n))
    sends, recvs = sends_and_recvs(doc)
    assert len(sends) == len(recvs) == n * k
    chans = {c["id"]: (c["src"], c["dst"]) for c in doc["channels"]}
    assert len(chans) == k
    for r in recvs:
        s = sends[r["msg"]]
        assert s["channel"] == r["channel"] and chans[r["channel"]] == (s["process"], "cons")


def _racing_producers(n: int, k: int):
    with recording("main") as rec:
        q = queue.Queue()
        go = threading.Barrier(k)

        def producer(j):
            with cutscope.process(f"p{j}"):
                go.wait(TIMEOUT)
                for i in range(n):
                    q.put((j, i))

        ts = [run_thread(producer, j) for j in range(k)]
        with cutscope.process("cons"):
            got = [q.get(timeout=TIMEOUT) for _ in range(n * k)]
        for t in ts:
            finish(t)
        return rec.trace(), got


# -- the C fast path (integrations/_fastq.c) ----------------------------------------------------
#
# With the extension built (and CUTSCOPE_SPEEDUPS not 0), queue.Queue.put/get are its method
# descriptors: the common case in C, everything else through the Python put/get. These tests
# check that it is installed, that the threaded tests above really run through it, and that
# it records exactly what the Python functions record.

def c_counts():
    """The C module's call counts now (None when the Python functions are the wrappers)."""
    return qint.FASTQ.counts() if qint.FASTQ is not None else None


def assert_c_path_taken(before, puts=True, gets=True):
    if before is None:
        return  # pure Python (CUTSCOPE_SPEEDUPS=0, or not built)
    after = qint.FASTQ.counts()
    if puts:
        assert after["put"] > before["put"], (before, after)
    if gets:
        assert after["get"] > before["get"], (before, after)


def test_c_descriptors_are_installed_when_the_extension_is_built():
    import importlib.util

    from cutscope.tracer import process

    built = importlib.util.find_spec("cutscope.integrations._fastq") is not None
    if process.FAST is None:  # CUTSCOPE_SPEEDUPS=0 (or the core's extension not built)
        assert qint.FASTQ is None
        kind = "function"
    else:
        assert built, "tracer/_fast is built, integrations/_fastq is not (setup.py)"
        assert qint.FASTQ is not None
        kind = "method_descriptor"
    assert type(qint.put).__name__ == type(qint.get).__name__ == kind
    assert dict(qint.QueueInstrumentor.TARGETS) == {"put": qint.put, "get": qint.get}
    with recording("main"):
        assert queue.Queue.__dict__["put"] is qint.put
        assert queue.Queue.__dict__["get"] is qint.get
        before = c_counts()
        with cutscope.process("p"):
            queue.Queue().put(0)  # first put of p: the Python put (opens the endpoint)
    assert queue.Queue.__dict__["put"] is qint._ORIG["put"]
    assert queue.Queue.__dict__["get"] is qint._ORIG["get"]
    if before is not None:
        assert c_counts()["put_py"] == before["put_py"] + 1


# One thread, several logical processes, every case the hot path tests for (and the ones it
# hands to the Python code): run in a child interpreter with the C path and without it, the
# application sees the same, and the trace is the same event for event.
def _equivalence_scenario() -> dict:
    import json

    from cutscope.tracer.process import Marker

    log = []
    a = log.append
    with recording("main", capture_payload=64) as rec:
        q = queue.Queue(maxsize=4)
        with cutscope.process("P1") as p1:
            a(outcome(q.put, 1))  # first put: the endpoint
            a(outcome(q.put, b"xy"))
            a(outcome(q.put_nowait, (3,)))  # block=False, bounded, not full
            a(outcome(q.put, 4, block=False, timeout=-1))  # the timeout is not looked at
        with cutscope.process("P2") as p2:
            a(outcome(q.put, "full", timeout=0.01))  # full: Full after the timeout
            a(outcome(q.put, "full", True, -1))  # ValueError
            a(outcome(q.put_nowait, "full"))  # Full
        a(("sizes", q.qsize(), q.full(), q.unfinished_tasks))
        with cutscope.process("C") as c:
            a(outcome(q.get))  # first get on P1's channel
            a(outcome(q.get, timeout=1.0))
            a(outcome(q.get, timeout=-1))  # ValueError (an item is there, though)
            a(outcome(q.get, True, 0))
            a(outcome(q.get, False))
            a(outcome(q.get_nowait))
            a(outcome(q.get, timeout=0.01))  # empty: Empty after the timeout
            for _ in range(4):
                q.task_done()
        with cutscope.process("P2"):
            a(outcome(q.put, "p2-a"))  # P2's first put
            a(outcome(q.put, "p2-b"))
        with cutscope.process("P1"):
            p1.record(1, "P1")  # a marker after P1's items, flushed into the queue
            a(outcome(q.put, "after-mark"))
            ep = q._cutscope_q.out[p1]
            with p1.lock:
                ep.pending.append(Marker(2, "P1", 0))  # as a deferred flush leaves it
            a(outcome(q.put, "after-pending-mark"))  # the send returns the marker
        with cutscope.process("C"):
            for _ in range(2):
                a(outcome(q.get, timeout=1.0))
        with cutscope.process("P2"):
            p2.request(3, "P2")  # P2 never receives: it records at the exit of its next put
            a(outcome(q.put, "p2-c"))
            a(outcome(q.put, "p2-d"))
        with cutscope.process("C"):
            for _ in range(4):
                a(outcome(q.get, timeout=1.0))
            a(outcome(q.get_nowait))
        u = queue.Queue()  # unbounded; a second consumer; bytes
        with cutscope.process("P1"):
            for i in range(5):
                a(outcome(u.put, bytes([i]) * i, False, -3))  # unbounded: not looked at
        for name in ("C", "C2", "C", "C2", "C"):
            with cutscope.process(name):
                a((name, outcome(u.get, block=False)))
        with cutscope.process("P1"):  # a fault while recording (strict: tracer.fault raises)
            keep, p1._append = p1._append, _failing_append
            a(outcome(u.put, "faulty-send"))  # the item is in, without its metadata
            p1._append = keep
            a(outcome(u.put, "next"))
        with cutscope.process("C") as c:
            a(outcome(u.get_nowait))  # delivered untraced
            keep, c._append = c._append, _failing_append
            a(outcome(u.get_nowait))  # the receive's fault raises; the item was taken
            c._append = keep
            a(("u", u.qsize(), u.unfinished_tasks, len(u._cutscope_q.side)))

        class Bounded(queue.Queue):
            """maxsize is a property: the C path must read it as getattr does."""

            @property
            def maxsize(self):
                return 2

            @maxsize.setter
            def maxsize(self, v):
                pass

        b = Bounded()
        lifo = queue.LifoQueue()
        with cutscope.process("P1"):
            a([outcome(b.put_nowait, i) for i in range(3)])
            a([outcome(lifo.put, i) for i in range(3)])
        with cutscope.process("C"):
            a([outcome(b.get_nowait) for _ in range(3)])
            a([outcome(lifo.get_nowait) for _ in range(4)])
        doc = rec.trace()
        states = {f"{k[0]}/{k[1]}": json.loads(v["state"])["_cutscope"]["seq"]
                  for k, v in rec.tracer.store.states.items()}
    chans = {c["id"]: (c["src"], c["dst"], c["fifo"]) for c in doc["channels"]}
    events = sorted(
        (e["process"], e["seq"], e["lamport"], e["kind"], chans.get(e["channel"]), e["msg"],
         e["nbytes"], e.get("payload_b64"), e.get("snapshot")) for e in doc["events"])
    return {"log": repr(log), "events": events, "channels": sorted(chans.values()),
            "states": states, "counts": c_counts()}


def _failing_append(event):
    raise RuntimeError("the recorder's buffer refused the event")


def _run_scenario(speedups: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, CUTSCOPE_SPEEDUPS=speedups, CUTSCOPE_STRICT="1")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_queues; "
            "print(json.dumps(test_queues._equivalence_scenario()))")
    out = subprocess.run([sys.executable, "-c", code, here], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_c_path_records_exactly_what_the_python_functions_record():
    from cutscope.tracer import process

    fast = _run_scenario("1")
    slow = _run_scenario("0")
    assert slow["counts"] is None
    if process.FAST is not None:  # built: the C path ran, for the common cases
        assert fast["counts"]["put"] >= 5 and fast["counts"]["get"] >= 8, fast["counts"]
        assert fast["counts"]["put_py"] > 0 and fast["counts"]["get_py"] > 0
    assert fast["log"] == slow["log"]
    assert fast["channels"] == slow["channels"]
    assert fast["events"] == slow["events"]
    assert fast["states"] == slow["states"]
    assert len(fast["events"]) > 40 and len(fast["states"]) >= 3


def test_many_producers_one_consumer_through_the_c_path():
    """Per-producer FIFO and every recv matched to its send, with the producers racing on
    the C path (st.last changes hands: the endpoint is found in st.out) and a snapshot
    (markers: the Python path) in the middle."""
    n, k = 400, 4
    before = c_counts()
    with recording("main") as rec:
        q = queue.Queue(maxsize=16)
        go = threading.Barrier(k + 1)

        def producer(j):
            with cutscope.process(f"p{j}") as lp:
                go.wait(TIMEOUT)
                for i in range(n):
                    if j == 0 and i == n // 2:
                        lp.record(1, lp.name)
                    q.put((j, i))

        ts = [run_thread(producer, j) for j in range(k)]
        got = []
        with cutscope.process("cons"):
            go.wait(TIMEOUT)
            for _ in range(n * k):
                got.append(q.get(timeout=TIMEOUT))
                q.task_done()
        for t in ts:
            finish(t)
        q.join()
        assert q.unfinished_tasks == 0 and q._cutscope_q.side == type(q._cutscope_q.side)()
        doc = rec.trace()
    assert_c_path_taken(before)
    for j in range(k):
        assert [i for jj, i in got if jj == j] == list(range(n))
    sends, recvs = sends_and_recvs(doc)
    assert len(sends) == len(recvs) == n * k
    chans = {c["id"]: (c["src"], c["dst"]) for c in doc["channels"]}
    assert len(chans) == k
    for r in recvs:
        s = sends[r["msg"]]
        assert s["channel"] == r["channel"] and chans[r["channel"]] == (s["process"], "cons")
        assert r["lamport"] > s["lamport"]
    for cid in chans:
        sent = [m for m, s in sorted(sends.items(), key=lambda kv: kv[1]["seq"])
                if s["channel"] == cid]
        assert [r["msg"] for r in recvs if r["channel"] == cid] == sent
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons.count(("snapshot", 1)) == 1


# -- Queue.shutdown() (3.13): the running interpreter's semantics ---------------------------

needs_shutdown = pytest.mark.skipif(not hasattr(queue.Queue, "shutdown"),
                                    reason="queue.Queue.shutdown() is new in Python 3.13")


def shutdown_scenario(cls, immediate: bool, mark=None) -> list:
    """Producers and consumers around shutdown(); ``mark(q)`` leaves a marker in the queue
    (traced runs) just before the shutdown."""
    log = []
    a = log.append
    q = cls(maxsize=4)
    for x in (3, 1, 2):
        a(("put", outcome(q.put, x)))
    woken = []
    blocked = cls()

    def waiter():
        woken.append(outcome(blocked.get, timeout=TIMEOUT))

    t = run_thread(waiter)
    if mark is not None:
        mark(q)
    q.shutdown(immediate=immediate)
    blocked.shutdown()
    finish(t)
    a(("woken", woken))
    a(("after", q.qsize(), q.empty(), q.full(), q.unfinished_tasks, q.is_shutdown))
    a(("put", outcome(q.put, 9)))
    a(("put_nowait", outcome(q.put_nowait, 9)))
    a(("put-timeout", outcome(q.put, 9, timeout=0.01)))
    for _ in range(4):
        a(("get", outcome(q.get, timeout=0.05)))
        if log[-1][1][0] == "ok":
            q.task_done()
    a(("get_nowait", outcome(q.get_nowait)))
    a(("get-block", outcome(q.get, timeout=TIMEOUT)))  # empty and shut down: raises at once
    a(("end", q.qsize(), q.empty(), q.unfinished_tasks))
    q.join()  # returns: every item was taken (or dropped by an immediate shutdown)
    return log


@needs_shutdown
@pytest.mark.parametrize("cls", [queue.Queue, queue.LifoQueue, queue.PriorityQueue])
@pytest.mark.parametrize("immediate", [False, True])
def test_shutdown_behaves_as_without_cutscope(cls, immediate):
    plain = shutdown_scenario(cls, immediate)
    assert ("put", ("raised", "ShutDown")) in plain
    with recording("main"):
        with cutscope.process("both"):
            traced = shutdown_scenario(cls, immediate)
    assert traced == plain


@needs_shutdown
@pytest.mark.parametrize("immediate", [False, True])
def test_shutdown_with_markers_left_in_the_queue(immediate):
    """A marker between the items left at shutdown is never seen: get returns the items,
    then raises ShutDown; qsize and join count only items."""
    plain = shutdown_scenario(queue.Queue, immediate)
    with recording("main"):
        with cutscope.process("prod") as prod:
            def mark(q):
                prod.record(1, prod.name)  # the marker goes in after the items

            traced = shutdown_scenario(queue.Queue, immediate, mark)
    assert traced == plain


@needs_shutdown
def test_shutdown_through_the_c_path():
    """Steady producer and consumer (the C path, when built): put after shutdown raises."""
    with recording("main"):
        q = queue.Queue()
        with cutscope.process("p"):
            q.put(0)
            before = c_counts()
            q.put(1)
            q.shutdown()
            with pytest.raises(queue.ShutDown):
                q.put(2)
        with cutscope.process("c"):
            assert [q.get(), q.get()] == [0, 1]
            with pytest.raises(queue.ShutDown):
                q.get()
        assert_c_path_taken(before, gets=False)


def test_stop_removes_the_hooks_of_every_queue_class():
    """The hooks on queue.Queue and on the LIFO/priority classes used while tracing go."""
    classes = (queue.Queue, queue.LifoQueue, queue.PriorityQueue)
    names = ("_put", "_get", "_qsize")
    before = [c.__dict__.get(n) for c in classes for n in names]
    for _ in range(2):
        with recording("main"):
            for c in classes:
                q = c()
                q.put(1)
                assert q.get() == 1
            assert queue.LifoQueue.__dict__["_put"] is not before[3]
        assert [c.__dict__.get(n) for c in classes for n in names] == before
