"""Counted channels: a queue whose receiver cannot see a marker at its head (a pipe),
closed without its marker when every message sent before its sender's state has left it.

The case of dask's nanny: it reads its worker's start-up queue once and never again,
so every later marker stays in that pipe; and it puts one item on the worker's stop
queue and takes it back itself before the worker consumes the rest, so the markers
of that queue go to the worker, never to the nanny. Both must leave the snapshot
complete and exact, and no item may ever be taken from a queue by cutscope.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_snapshot import Bank, assert_snapshot_verifies, finish, start

import cutscope
from cutscope.testing import recording
from cutscope.viewer.model import check

TIMEOUT = 30.0

workloads = st.fixed_dictionaries({
    "n": st.integers(2, 4),
    "extra_edges": st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1,
                            max_size=6),
    "counted": st.lists(st.booleans(), min_size=6, max_size=6),
    "ops": st.lists(st.one_of(
        st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 20)),
        st.tuples(st.just("deliver"), st.integers(0, 10_000)),
        st.tuples(st.just("snapshot"), st.integers(0, 3)),
        st.tuples(st.just("abandon"), st.integers(0, 5)),
    ), min_size=1, max_size=100),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=workloads)
def test_counted_channels_never_read_again_leave_every_snapshot_complete_and_exact(w):
    """A ring of plain FIFO channels (markers reach everyone) and extra channels, some
    counted. A counted channel may be abandoned at any time: its receiver takes what
    is in it and never reads it again, its sender never sends on it again (dask's
    start-up queue). Every snapshot is complete, a consistent cut, its channel states
    exactly the messages in transit, the money conserved; the markers left in the
    abandoned channels, read at the very end, are consumed and change nothing."""
    n = w["n"]
    names = [f"b{i}" for i in range(n)]
    with recording(name="driver", instrument=False) as rec:
        bank = Bank(names, seed=w["seed"])
        ring = {(names[i], names[(i + 1) % n]) for i in range(n)}
        for a, b in sorted(ring):
            bank.connect(a, b)
        counted = iter(w["counted"])
        extra = []
        for a, b in w["extra_edges"]:
            a, b = names[a % n], names[b % n]
            if a != b and (a, b) not in ring and (a, b) not in extra:
                bank.net.connect(a, b, counted=next(counted))
                extra.append((a, b))
        edges = sorted(ring) + extra
        abandoned: set = set()
        coords = []
        for op in w["ops"]:
            if op[0] == "transfer":
                a, b = edges[(op[1] * 5 + op[2]) % len(edges)]
                if (a, b) not in abandoned:
                    bank.transfer(a, b, op[3])
            elif op[0] == "deliver":
                busy = bank.net.busy()
                if busy:
                    bank.net.deliver(busy[op[1] % len(busy)].id)
            elif op[0] == "abandon":
                if extra:
                    a, b = extra[op[1] % len(extra)]
                    link = bank.net.link(a, b)
                    if link.counted and (a, b) not in abandoned:
                        while link.in_flight():  # the receiver takes what is there...
                            bank.net.deliver(link.id)
                        bank.net.abandon(link.id)  # ...and never reads it again
                        abandoned.add((a, b))
            else:
                coords.append(start(rec.tracer, names[op[1] % n]))
            for c in coords:
                c.poll()
        snaps = finish(bank, coords, rec.tracer)
        left = sum(len(bank.net.link(a, b).items) for a, b in abandoned)
        for a, b in abandoned:  # the stale markers, read at last: consumed silently
            bank.net.links[bank.net.link(a, b).id].abandoned = False
        before = len(rec.trace()["events"])
        bank.net.run()
        rec.tracer.flush()
        doc = rec.trace()
    assert len(doc["events"]) == before or not left  # a marker is never an event
    assert check(doc) == []
    for s in snaps:
        assert s.status == "complete", s.missing
        assert_snapshot_verifies(doc, s, bank.total)


def test_counted_channel_holding_an_unread_message_is_not_closed():
    """A message sent before the snapshot that its receiver never takes is in transit
    for good: the count does not close the channel; the snapshot ends partial naming
    it, and the message is still there for the application."""
    with recording(name="driver", instrument=False) as rec:
        bank = Bank(["a", "b"])
        ab = bank.net.connect("a", "b", counted=True)
        bank.connect("b", "a")
        bank.transfer("a", "b", 5)
        bank.net.deliver(ab)
        bank.transfer("a", "b", 7)                 # never read
        bank.net.abandon(ab)
        c = start(rec.tracer, "a", timeout=0.5)
        [s] = finish(bank, [c], rec.tracer)
    assert s.status == "partial"
    assert [m.get("channel") for m in s.missing] == [ab]
    assert bank.net.link("a", "b").in_flight() == [7]


# -- real multiprocessing.Queue, threads as logical processes ---------------------------

def _consumer_loop(stop: threading.Event):
    while not stop.is_set():  # an event loop's waits: safe points, this queue never read
        cutscope.safepoint()
        time.sleep(0.005)


def test_mp_queue_read_once_then_never_again_gives_complete_snapshots():
    """P puts one item on a multiprocessing.Queue, C takes it and never reads the queue
    again (dask's start-up queue): every snapshot is complete, and the markers that
    pile up in the pipe are never shown to C."""
    snaps = []
    with recording("main"):
        q = mp.get_context("spawn").Queue()
        stop = threading.Event()
        got = []

        def consumer():
            with cutscope.process("C"):
                got.append(q.get(timeout=TIMEOUT))
                _consumer_loop(stop)

        t = threading.Thread(target=consumer)
        with cutscope.process("P"):
            q.put({"address": "tcp://127.0.0.1:1"})
            t.start()
            while not got:
                time.sleep(0.01)
            for _ in range(3):
                snaps.append(cutscope.snapshot(initiator="P", timeout=5))
        stop.set()
        t.join(TIMEOUT)
        with cutscope.process("C"):
            try:  # the markers in the pipe: swallowed, nothing delivered
                extra = q.get(timeout=0.3)
            except queue.Empty:
                extra = None
        q.close()
        q.join_thread()
        doc = cutscope.active().store.load()
    assert got == [{"address": "tcp://127.0.0.1:1"}] and extra is None
    for s in snaps:
        assert s.status == "complete", s.missing
    assert check(doc) == []


def test_mp_queue_whose_markers_go_to_another_consumer_gives_complete_snapshots():
    """P puts an item on a multiprocessing.Queue and takes it back itself (dask's
    nanny starts the queue's feeder thread so), then C consumes the queue: P's markers
    reach C, never P; P's view of the channel is closed since C closed it."""
    snaps = []
    with recording("main"):
        q = mp.get_context("spawn").Queue()
        done = threading.Event()
        got = []

        def consumer():
            with cutscope.process("C"):
                while True:
                    x = q.get(timeout=TIMEOUT)
                    got.append(x)
                    if x == "stop":
                        return

        t = threading.Thread(target=consumer)
        with cutscope.process("P"):
            q.put(None)
            assert q.get(timeout=TIMEOUT) is None
            t.start()
            for i in range(3):
                q.put(i)
                snaps.append(cutscope.snapshot(initiator="P", timeout=5))
            q.put("stop")
        t.join(TIMEOUT)
        done.set()
        q.close()
        q.join_thread()
        doc = cutscope.active().store.load()
    assert got == [0, 1, 2, "stop"]
    for s in snaps:
        assert s.status == "complete", s.missing
    assert check(doc) == []


# -- across processes: the coordinator in another interpreter (control sockets) ----------

APP = r'''
import multiprocessing as mp, os, queue, selectors, sys, time

def child(ctl, res):
    ctl.get()                      # "go": its first incoming channel
    res.put({"address": "tcp://127.0.0.1:1", "pid": os.getpid()})
    while True:                    # the worker's life: waits on its control queue
        try:
            if ctl.get(timeout=0.02) == "stop":
                return
        except queue.Empty:
            pass

if __name__ == "__main__":
    stop = sys.argv[1]
    ctx = mp.get_context("spawn")
    ctl, res = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=child, args=(ctl, res), name="worker")
    p.start()
    ctl.put("go")
    print("got", res.get(timeout=60)["address"], flush=True)   # read once, never again
    sel = selectors.DefaultSelector()
    while not os.path.exists(stop):  # an event loop: it waits in select() (a safe point)
        ctl.put("tick")
        sel.select(0.02)
    ctl.put("stop")
    p.join(60)
    print("exit", p.exitcode, flush=True)
'''


def test_queue_read_once_across_processes_closes_through_the_control_socket(tmp_path):
    """The dask shape across interpreters: a spawned worker puts one item on its
    result queue, the parent reads it once and never again; snapshots asked from a
    third interpreter (this one) are complete: the parent's interpreter is asked
    through its control socket to close the queue's channel by count."""
    import os
    import subprocess
    import sys

    from _checks import assert_snapshot_is_its_cut

    from cutscope.tracer.snapshot.coordinator import SNAPSHOT_LIVE_NS, Coordinator
    from cutscope.tracer.store import open_store
    from cutscope.viewer.export import load

    db, prog, stop = str(tmp_path / "q.db"), tmp_path / "app.py", tmp_path / "stop"
    prog.write_text(APP)
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)
    app = subprocess.Popen([sys.executable, "-m", "cutscope", "run", "--db", db, "--name", "app",
                            "--", sys.executable, str(prog), str(stop)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           cwd=str(tmp_path))
    snaps = []
    try:
        assert app.stdout.readline().strip() == "got tcp://127.0.0.1:1", app.stderr.read()[-2000:]
        deadline = time.monotonic() + 60
        while True:  # both ends of the result queue are in the store
            store = open_store(db, create=False)
            try:
                live = set(store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS))
                queues = [c for c in store.channel_ends() if c["src"] == "worker"]
            finally:
                store.close()
            if {"app", "worker"} <= live and queues and queues[0]["dst"] == "app":
                break
            assert time.monotonic() < deadline, (live, queues)
            time.sleep(0.1)
        for _ in range(3):
            store = open_store(db, create=False)
            try:
                c = Coordinator(store, initiator="app", timeout=10)
                c.start()
                snaps.append(c.wait())
            finally:
                store.close()
        stop.write_text("")
        out, err = app.communicate(timeout=120)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert app.returncode == 0 and "exit 0" in out, err[-2000:]
    doc = load(f"sqlite:///{db}")
    for s in snaps:
        assert s.status == "complete", s.missing
        assert set(s.states) == {"app", "worker"}
        assert_snapshot_is_its_cut(doc, s)
    assert check(doc) == []


def test_message_discarded_when_its_receiver_closed_its_end_is_not_in_transit():
    """b closes its end of a->b with a message unread (a connection closed with data in
    its buffer: dask's comms do it): the message was discarded, never received. The
    snapshot that follows records the channel as ended and empty, and the check
    agrees (with a note), instead of calling the message in transit."""
    from cutscope.viewer.model import check_report

    with recording(name="driver", instrument=False) as rec:
        bank = Bank(["a", "b"])
        ab = bank.connect("a", "b")
        bank.connect("b", "a")
        m = bank.transfer("a", "b", 3)
        bank.net.abandon(ab)
        bank.net.nodes["b"].remove_in(ab)          # closed unread
        c = start(rec.tracer, "a")
        [s] = finish(bank, [c], rec.tracer)
        doc = rec.trace()
    assert s.status == "complete", s.missing
    assert ab in s.states["b"]["_cutscope"]["ended"] and not s.channels.get(ab)
    problems, notes = check_report(doc)
    assert problems == []
    assert any(m in n and "never received" in n for n in notes), notes
