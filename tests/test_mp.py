"""multiprocessing under cutscope: real child processes (fork, spawn, forkserver), real
SQLite stores, multiprocessing.Queue, Pipe and Listener/Client, traced and untraced peers.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.queues
import os
import queue
import subprocess
import sys
import textwrap

import pytest

import cutscope
from cutscope.testing import recording

TIMEOUT = 30.0
METHODS = ["fork", "spawn", "forkserver"]


def load(db):
    from cutscope.viewer.export import load as _load

    return _load(db)


def check_messages(doc, framed_only=True):
    """Every recv on a framed channel names a send on the same channel."""
    chans = {c["id"]: c for c in doc["channels"]}
    sends = {e["msg"]: e for e in doc["events"] if e["kind"] == "send"}
    recvs = [e for e in doc["events"] if e["kind"] == "recv" and chans[e["channel"]]["framed"]]
    for r in recvs:
        s = sends[r["msg"]]
        assert s["channel"] == r["channel"]
        assert r["lamport"] > s["lamport"]
        c = chans[r["channel"]]
        assert (c["src"], c["dst"]) == (s["process"], r["process"])
    return sends, recvs


# -- children (module level: spawn and forkserver children import them) ------------------------

def queue_child(q, back):
    for i in range(5):
        q.put((os.getpid(), i))
    q.put(("echo", back.get(timeout=TIMEOUT)))


def pipe_child(conn):
    for _ in range(3):
        conn.send(("echo", conn.recv()))
    conn.send_bytes(b"raw-bytes")
    buf = bytearray(64)
    n = conn.recv_bytes_into(buf, 4)
    conn.send_bytes(bytes(buf[4:4 + n]))
    conn.close()


def client_child(address):
    from multiprocessing.connection import Client

    c = Client(address, authkey=b"secret")
    c.send("hi")
    c.send(c.recv() + "!")
    c.close()


def self_tracing_child(conn, db):
    """A child of an untraced parent that starts cutscope itself."""
    cutscope.start(db=db, name="self-traced")
    conn.send(("hello", conn.recv()))
    conn.send_bytes(b"bytes")
    cutscope.stop()


# -- multiprocessing.Queue across processes ----------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_queue_between_traced_processes(method, db_path):
    ctx = mp.get_context(method)
    cutscope.start(db=db_path, name="parent")
    try:
        q, back1, back2 = ctx.Queue(), ctx.Queue(), ctx.Queue()
        named = ctx.Process(target=queue_child, args=(q, back1), name="worker")
        anon = ctx.Process(target=queue_child, args=(q, back2))
        named.start()
        anon.start()
        back1.put("one")
        back2.put("two")
        got = [q.get(timeout=TIMEOUT) for _ in range(12)]
        named.join(TIMEOUT)
        anon.join(TIMEOUT)
        assert named.exitcode == 0 and anon.exitcode == 0
    finally:
        cutscope.stop()
    for pid in (named.pid, anon.pid):  # per producer FIFO
        assert [i for p, i in got if p == pid] == list(range(5))
    assert sorted(x for p, x in got if p == "echo") == ["one", "two"]

    doc = load(db_path)
    names = {p["name"] for p in doc["processes"]}
    anon_name = f"parent/{anon.pid}"
    assert {"parent", "worker", anon_name} <= names
    assert {p["parent"] for p in doc["processes"] if p["name"] in ("worker", anon_name)} == {"parent"}
    chans = [c for c in doc["channels"] if c["transport"] == "mp.queue"]
    pairs = sorted((c["src"], c["dst"]) for c in chans)
    assert ("worker", "parent") in pairs and (anon_name, "parent") in pairs
    assert ("parent", "worker") in pairs and ("parent", anon_name) in pairs
    assert len(chans) == 4
    # one channel per producer into q: the two children (their echo goes on the same one)
    into_q = [c for c in chans if c["dst"] == "parent"]
    assert sorted(c["src"] for c in into_q) == sorted(["worker", anon_name])
    sends, recvs = check_messages(doc)
    assert len([r for r in recvs if r["process"] == "parent"]) == 12
    assert len(sends) == len(recvs) == 14  # every item sent was received, and recorded by both
    # the children flushed their events before os._exit()
    assert {e["process"] for e in doc["events"]} >= {"worker", anon_name}


def mpq_scenario(ctx) -> list:
    log = []
    a = log.append
    q = ctx.Queue(maxsize=2)
    a(("empty", q.empty(), q.qsize(), q.full()))
    for call in (lambda: q.get_nowait(), lambda: q.get(timeout=0.05), lambda: q.get(False)):
        try:
            call()
        except queue.Empty:
            a("Empty")
    q.put("a")
    q.put(b"b")
    a(("full", q.qsize(), q.full()))
    for call in (lambda: q.put_nowait("x"), lambda: q.put("x", timeout=0.05)):
        try:
            call()
        except queue.Full:
            a("Full")
    a(("got", q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)))
    jq = ctx.JoinableQueue()
    jq.put({"k": 1})
    a(("jq", jq.get(timeout=TIMEOUT)))
    jq.task_done()
    jq.join()
    try:
        jq.task_done()
    except ValueError:
        a("ValueError")
    q.close()
    try:
        q.put(1)
    except ValueError:
        a("closed")
    return log


def test_mp_queue_semantics_as_without_cutscope():
    ctx = mp.get_context("fork")
    plain = mpq_scenario(ctx)
    with recording("main"):
        traced = mpq_scenario(ctx)
    assert traced == plain
    assert "Empty" in plain and "Full" in plain


class HookedQueue(mp.queues.Queue):
    """A subclass with its own feeder error hook (as concurrent.futures' _SafeQueue has)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, ctx=mp.get_context("fork"), **kw)
        self.errors = []

    def _on_queue_feeder_error(self, e, obj):
        self.errors.append((type(e).__name__, obj))


def test_feeder_error_hook_sees_the_bare_item():
    import threading

    def run():
        q = HookedQueue()
        lock = threading.Lock()  # cannot be pickled
        q.put(lock)
        q.put("after")
        got = q.get(timeout=TIMEOUT)
        return got, [(name, obj is lock) for name, obj in q.errors]

    plain = run()
    with recording("main"):
        traced = run()
    assert traced == plain == ("after", [("TypeError", True)])


def test_mp_queue_markers_are_invisible_and_take_no_slot():
    ctx = mp.get_context("fork")
    with recording("main") as rec:
        q = ctx.Queue(maxsize=2)
        with cutscope.process("prod") as prod:
            q.put(1)
            prod.record(1, prod.name)  # a marker into the pipe, after 1
            q.put(2)
            prod.record(2, prod.name)  # a marker after 2
        assert q.qsize() == 2 and q.full()
        with pytest.raises(queue.Full):
            q.put_nowait(3)
        with cutscope.process("cons"):
            got = [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)]
            with pytest.raises(queue.Empty):
                q.get(timeout=0.2)  # only the marker left: swallowed, then Empty
            assert q.qsize() == 0 and not q.full()
            q.put_nowait(4)  # both slots are free again (markers released none)
            q.put_nowait(5)
        doc = rec.trace()
    assert got == [1, 2]
    cons = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "cons"]
    assert cons == [("recv", None), ("snapshot", 1), ("recv", None), ("snapshot", 2),
                    ("send", None), ("send", None)]


def test_joinable_queue_join_returns_with_markers_in_flight():
    import threading

    ctx = mp.get_context("fork")
    with recording("main"):
        jq = ctx.JoinableQueue()
        with cutscope.process("prod") as prod:
            jq.put("job")
            prod.record(1, prod.name)  # a marker behind the job, never task_done()'d
        with cutscope.process("cons"):
            assert jq.get(timeout=TIMEOUT) == "job"
            jq.task_done()
            joined = threading.Event()
            threading.Thread(target=lambda: (jq.join(), joined.set()), daemon=True).start()
            assert joined.wait(TIMEOUT)
            with pytest.raises(ValueError):
                jq.task_done()  # markers added no unfinished task
            with pytest.raises(queue.Empty):
                jq.get(timeout=0.1)  # the marker is swallowed


# -- Connection: Pipe, Listener/Client -----------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pipe_round_trip_between_traced_processes(method, db_path):
    ctx = mp.get_context(method)
    cutscope.start(db=db_path, name="parent")
    try:
        a, b = ctx.Pipe()
        p = ctx.Process(target=pipe_child, args=(b,), name="piper")
        p.start()
        got = []
        for i in range(3):
            a.send(i)
            assert a.poll(TIMEOUT)
            got.append(a.recv())
        got.append(a.recv_bytes())
        a.send_bytes(b"xxinto-bufferxx", 2, 11)
        got.append(a.recv_bytes(maxlength=100))
        p.join(TIMEOUT)
        assert p.exitcode == 0
    finally:
        cutscope.stop()
    assert got == [("echo", 0), ("echo", 1), ("echo", 2), b"raw-bytes", b"into-buffer"]
    doc = load(db_path)
    chans = [c for c in doc["channels"] if c["transport"] == "mp.connection"]
    assert sorted((c["src"], c["dst"], c["framed"], c["fifo"]) for c in chans) == [
        ("parent", "piper", True, True), ("piper", "parent", True, True)]
    sends, recvs = check_messages(doc)
    assert len(recvs) == len(sends) == 9
    sizes = sorted(r["nbytes"] for r in recvs if r["process"] == "parent")
    assert len(b"raw-bytes") in sizes  # nbytes are the application's bytes, not the frame's


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_listener_client_between_traced_processes(method, db_path):
    from multiprocessing.connection import Listener

    ctx = mp.get_context(method)
    cutscope.start(db=db_path, name="server")
    try:
        with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
            p = ctx.Process(target=client_child, args=(listener.address,), name="client")
            p.start()
            with listener.accept() as c:
                assert c.recv() == "hi"
                c.send("back")
                assert c.recv() == "back!"
            p.join(TIMEOUT)
            assert p.exitcode == 0
    finally:
        cutscope.stop()
    doc = load(db_path)
    chans = [c for c in doc["channels"] if c["transport"] == "mp.connection"]
    assert sorted((c["src"], c["dst"], c["framed"]) for c in chans) == [
        ("client", "server", True), ("server", "client", True)]
    sends, recvs = check_messages(doc)
    assert len(recvs) == len(sends) == 3  # the handshake is not recorded


UNTRACED_CLIENT = textwrap.dedent("""
    import sys
    from multiprocessing.connection import Client
    c = Client(("127.0.0.1", int(sys.argv[1])), authkey=b"secret")
    c.send("hi")
    c.send(c.recv() + "!")
    c.send_bytes(b"plain")
    c.close()
""")

UNTRACED_SERVER = textwrap.dedent("""
    import sys
    from multiprocessing.connection import Listener
    with Listener(("127.0.0.1", 0), authkey=b"secret") as l:
        print(l.address[1], flush=True)
        with l.accept() as c:
            c.send(("got", c.recv()))
            c.send_bytes(c.recv_bytes() + b"?")
""")


def untraced_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTSCOPE_")}
    return env


def test_listener_client_with_an_untraced_peer_process(db_path):
    from multiprocessing.connection import Client, Listener

    cutscope.start(db=db_path, name="server")
    try:
        # a traced server, an untraced client
        with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
            proc = subprocess.Popen([sys.executable, "-c", UNTRACED_CLIENT,
                                     str(listener.address[1])], env=untraced_env())
            with listener.accept() as c:
                assert c.recv() == "hi"
                c.send("back")
                assert c.recv() == "back!"
                assert c.poll(TIMEOUT)
                assert c.recv_bytes() == b"plain"
            assert proc.wait(TIMEOUT) == 0
        # an untraced server, a traced client
        srv = subprocess.Popen([sys.executable, "-c", UNTRACED_SERVER], env=untraced_env(),
                               stdout=subprocess.PIPE, text=True)
        port = int(srv.stdout.readline())
        with Client(("127.0.0.1", port), authkey=b"secret") as c:
            c.send("x")
            assert c.recv() == ("got", "x")
            c.send_bytes(b"y")
            assert c.recv_bytes() == b"y?"
        assert srv.wait(TIMEOUT) == 0
        srv.stdout.close()
    finally:
        cutscope.stop()
    doc = load(db_path)
    chans = [c for c in doc["channels"] if c["transport"] == "mp.connection"]
    assert chans and not any(c["framed"] or c["fifo"] for c in chans)  # raw, recorded
    server_ev = [e for e in doc["events"] if e["process"] == "server"]
    assert sum(e["kind"] == "recv" for e in server_ev) == 5
    assert sum(e["kind"] == "send" for e in server_ev) == 3
    assert all(e["msg"] is None for e in server_ev if e["kind"] == "recv")


WRONG_KEY_CLIENT = textwrap.dedent("""
    import sys
    from multiprocessing.connection import AuthenticationError, Client
    try:
        Client(("127.0.0.1", int(sys.argv[1])), authkey=b"wrong")
    except AuthenticationError as exc:
        print("AuthenticationError", exc, flush=True)
""")


def test_listener_with_a_wrong_authkey_fails_as_without_cutscope(db_path):
    """The handshake's answers are checked as by multiprocessing: a wrong key fails both ends."""
    from multiprocessing.connection import AuthenticationError, Listener

    def attempt():
        with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
            proc = subprocess.Popen([sys.executable, "-c", WRONG_KEY_CLIENT,
                                     str(listener.address[1])], env=untraced_env(),
                                    stdout=subprocess.PIPE, text=True)
            with pytest.raises(AuthenticationError) as info:
                listener.accept()
            out = proc.communicate(timeout=TIMEOUT)[0]
        return str(info.value), out

    untraced = attempt()
    cutscope.start(db=db_path, name="server")
    try:
        traced = attempt()
    finally:
        cutscope.stop()
    assert traced == untraced
    assert traced[1].startswith("AuthenticationError")


def other_pythons():
    """Interpreters of other versions on this machine (untraced peers that speak their
    version's handshake: 3.11 answers with a bare HMAC-MD5, 3.12+ with a digest prefix)."""
    import glob
    import shutil

    found = {}
    for exe in [shutil.which("python3.11"), "/usr/bin/python3",
                *glob.glob("/root/.pyenv/versions/3.1*/bin/python3")]:
        if not exe or not os.access(exe, os.X_OK):
            continue
        ver = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
        if ver and ver != str(sys.version_info[:2]):
            found.setdefault(ver, exe)
    return sorted(found.items())


@pytest.mark.parametrize("peer", [p[1] for p in other_pythons()] or
                         [pytest.param(None, marks=pytest.mark.skip("no other Python here"))])
def test_listener_client_with_an_untraced_peer_of_another_version(peer, db_path):
    from multiprocessing.connection import Client, Listener

    cutscope.start(db=db_path, name="server")
    try:
        with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
            proc = subprocess.Popen([peer, "-c", UNTRACED_CLIENT, str(listener.address[1])],
                                    env=untraced_env())
            with listener.accept() as c:
                assert c.recv() == "hi"
                c.send("back")
                assert c.recv() == "back!"
                assert c.recv_bytes() == b"plain"
            assert proc.wait(TIMEOUT) == 0
        srv = subprocess.Popen([peer, "-c", UNTRACED_SERVER], env=untraced_env(),
                               stdout=subprocess.PIPE, text=True)
        port = int(srv.stdout.readline())
        with Client(("127.0.0.1", port), authkey=b"secret") as c:
            c.send("x")
            assert c.recv() == ("got", "x")
        srv.kill()
        srv.wait(TIMEOUT)
        srv.stdout.close()
    finally:
        cutscope.stop()
    chans = [c for c in load(db_path)["channels"] if c["transport"] == "mp.connection"]
    assert chans and not any(c["framed"] for c in chans)


def test_pipe_with_an_untraced_parent(db_path):
    """The parent does not trace; its child starts cutscope: the pipe stays raw."""
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=self_tracing_child, args=(b, db_path))
    p.start()
    try:
        a.send("ping")
        assert a.poll(TIMEOUT), "the child did not answer"
        assert a.recv() == ("hello", "ping")
        assert a.poll(TIMEOUT)
        assert a.recv_bytes() == b"bytes"
        p.join(TIMEOUT)
        assert p.exitcode == 0
    finally:
        if p.is_alive():
            p.kill()
    doc = load(db_path)
    assert [c["framed"] for c in doc["channels"]] in ([], [False], [False, False])
    kinds = sorted(e["kind"] for e in doc["events"] if e["process"] == "self-traced")
    assert kinds.count("send") == 2


def test_pipe_markers_are_invisible_and_poll_stays_truthful():
    with recording("main") as rec:
        a, b = mp.Pipe()  # duplex: a socketpair, markers allowed
        with cutscope.process("A") as A:
            a.send("first")
        with cutscope.process("B"):
            assert b.recv() == "first"
        with cutscope.process("A") as A:
            A.record(1, A.name)  # a marker frame alone on the wire
        with cutscope.process("B"):
            assert b.poll(0) is False  # consumed the marker; nothing for the application
        with cutscope.process("A") as A:
            A.record(2, A.name)
            a.send_bytes(b"second")
        with cutscope.process("B"):
            assert b.poll(TIMEOUT) is True
            assert b.recv_bytes() == b"second"  # the marker before it went unseen
            assert b.poll(0) is False
        doc = rec.trace()
    evs = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "B"]
    assert evs == [("recv", None), ("snapshot", 1), ("snapshot", 2), ("recv", None)]
    chans = [c for c in doc["channels"]]
    assert [(c["src"], c["dst"], c["fifo"]) for c in chans] == [("A", "B", True)]


def test_connection_wait_stays_truthful():
    with recording("main") as rec:
        from multiprocessing.connection import wait  # the wrapper (bound after start)

        a, b = mp.Pipe()
        with cutscope.process("A") as A:
            a.send(0)
        with cutscope.process("B"):
            assert wait([b], TIMEOUT) == [b] and b.recv() == 0
        with cutscope.process("A") as A:
            A.record(1, A.name)  # a marker alone on the wire
        with cutscope.process("B"):
            assert wait([b], 0.05) == []  # not ready: the marker was consumed
        with cutscope.process("A") as A:
            A.record(2, A.name)
            a.send("data")
        with cutscope.process("B"):
            assert wait([b], TIMEOUT) == [b]
            assert b.recv() == "data"
        doc = rec.trace()
    evs = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "B"]
    assert evs == [("recv", None), ("snapshot", 1), ("snapshot", 2), ("recv", None)]


def test_one_way_pipe_is_not_fifo_for_snapshots():
    with recording("main") as rec:
        r, w = mp.Pipe(duplex=False)  # an os.pipe: cannot be peeked, so no markers on it
        with cutscope.process("A") as A:
            w.send(1)
            A.record(1, A.name)
            w.send(2)
        with cutscope.process("B"):
            assert [r.recv(), r.recv()] == [1, 2]
            assert r.poll(0) is False
        doc = rec.trace()
    (c,) = doc["channels"]
    assert (c["src"], c["dst"], c["framed"], c["fifo"]) == ("A", "B", True, False)
    assert [e["kind"] for e in doc["events"] if e["process"] == "B"] == ["recv", "recv"]


# -- a snapshot across processes connected by multiprocessing.Queue ------------------------------

def bank_branch(i, inboxes, stop, start_balance, rounds):
    import random

    rnd = random.Random(i)
    bal = {"balance": start_balance}
    cutscope.state(lambda: dict(bal))
    sent = 0
    n = len(inboxes)
    while not stop.is_set():
        try:
            bal["balance"] += inboxes[i].get(timeout=0.005)
        except queue.Empty:
            pass
        if sent < rounds and bal["balance"] > 0:
            amount = rnd.randint(1, min(10, bal["balance"]))
            bal["balance"] -= amount
            inboxes[rnd.choice([j for j in range(n) if j != i])].put(amount)
            sent += 1
    # drain what is left so that every send has its receive
    while True:
        try:
            bal["balance"] += inboxes[i].get(timeout=0.3)
        except queue.Empty:
            break


def test_snapshot_across_processes_over_mp_queues_conserves_money(db_path):
    import threading

    ctx = mp.get_context("fork")
    n, start_balance = 3, 100
    cutscope.start(db=db_path, name="branch-0")
    try:
        inboxes = [ctx.Queue() for _ in range(n)]
        stop = ctx.Event()
        kids = [ctx.Process(target=bank_branch, args=(i, inboxes, stop, start_balance, 200),
                            name=f"branch-{i}") for i in range(1, n)]
        for k in kids:
            k.start()
        result = {}

        def take():
            try:
                # wait until every branch has a channel in the store, then snapshot
                for _ in range(500):
                    doc = cutscope.active().store.load()
                    if len({c["src"] for c in doc["channels"] if c["dst"]}) >= n:
                        break
                    threading.Event().wait(0.02)
                with cutscope.process("snapshotter"):  # not branch-0's thread: its own
                    for _ in range(50):  # a loaded machine: branch-1's beat may lag
                        try:
                            result["snap"] = cutscope.snapshot(initiator="branch-1",
                                                               timeout=TIMEOUT)
                            break
                        except cutscope.SnapshotError as exc:
                            result["error"] = exc
                            threading.Event().wait(0.1)
            finally:
                stop.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        bank_branch(0, inboxes, stop, start_balance, 200)  # the parent is branch 0
        taker.join(TIMEOUT)
        for k in kids:
            k.join(TIMEOUT)
            assert k.exitcode == 0
    finally:
        cutscope.stop()
    assert "snap" in result, result.get("error")
    snap = result["snap"]
    assert snap.status == "complete", snap.missing
    assert set(snap.states) >= {f"branch-{i}" for i in range(n)}
    money = sum(s["balance"] for s in snap.states.values() if "balance" in s)
    money += sum(m["value"] for msgs in snap.channels.values() for m in msgs)
    assert money == n * start_balance
    doc = load(db_path)
    sends, recvs = check_messages(doc)
    assert len(sends) == len(recvs)
    from cutscope.viewer.model import check

    assert check(doc) == []  # the cut is consistent, its channel states as recorded


def test_stop_removes_every_wrapper():
    import multiprocessing.connection as C
    import multiprocessing.process as P
    import multiprocessing.queues as Q
    from multiprocessing.reduction import ForkingPickler

    def targets():
        return (Q.Queue.put, Q.Queue.get, Q.Queue.__init__, Q.Queue.__dict__["_feed"],
                Q.JoinableQueue.put, C.Connection._send_bytes, C.Connection._recv_bytes,
                C.Connection._poll, C.Pipe, C.wait, C.Client, C.Listener.accept, C.deliver_challenge,
                C.answer_challenge, ForkingPickler._extra_reducers[C.Connection],
                P.BaseProcess.start, P.BaseProcess._bootstrap)

    before = targets()
    for _ in range(2):
        with recording("main"):
            during = targets()
        assert targets() == before
    assert all(a is not b for a, b in zip(before, during))


def test_connection_opened_during_a_snapshot_is_marked_first():
    """A channel opened after its sender recorded carries the marker before anything."""
    with recording("main") as rec:
        a, b = mp.Pipe()
        with cutscope.process("A") as A:
            A.record(1, A.name)  # A has recorded; the snapshot is still open
            a.send("after")  # opening the endpoint flushes the marker first (no deadlock)
        with cutscope.process("B"):
            assert b.recv() == "after"
        doc = rec.trace()
    evs = [(e["kind"], e.get("snapshot")) for e in doc["events"] if e["process"] == "B"]
    assert evs == [("snapshot", 1), ("recv", None)]


def square(x):
    return x * x


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_terminate_keeps_the_workers_events(method, db_path):
    """`with Pool()` ends in terminate(): SIGTERM. The workers flush before they die."""
    cutscope.start(db=db_path, name="pool")
    try:
        with mp.get_context(method).Pool(2) as pool:
            assert sum(pool.map(square, range(20), chunksize=1)) == sum(x * x for x in range(20))
    finally:
        cutscope.stop()
    doc = load(db_path)
    framed = {c["id"] for c in doc["channels"] if c["framed"]}
    sends = {e["msg"] for e in doc["events"] if e["kind"] == "send"}
    recvs = [e for e in doc["events"] if e["process"] == "pool" and e["kind"] == "recv"
             and e["channel"] in framed]
    assert recvs and all(e["msg"] in sends for e in recvs)


def term_while_stopping_child(q):
    """Puts 30 items with its writer thread stopped (so they wait in the buffer for
    the stop at the child's end), and SIGTERMs itself in the middle of that stop's
    write, as Pool.terminate() can: the events must still reach the store."""
    import signal

    from cutscope.tracer.recorder import Recorder

    r = cutscope.tracer.active().recorder
    r.running = False
    r._wake.set()
    r._thread.join(10)
    r.running = True  # stopped for real by the child's end, below
    orig = Recorder._write

    def _write(self, rows, items):
        if rows and not self.running:  # the stop's write, on this (the main) thread
            Recorder._write = orig
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, rows, items)

    Recorder._write = _write
    for i in range(30):
        q.put(i)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigterm_while_the_child_stops_tracing_keeps_its_events(method, db_path):
    import signal

    cutscope.start(db=db_path, name="parent")
    try:
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=term_while_stopping_child, args=(q,), name="child")
        p.start()
        assert [q.get(timeout=TIMEOUT) for _ in range(30)] == list(range(30))
        p.join(TIMEOUT)
    finally:
        cutscope.stop()
    assert p.exitcode == -signal.SIGTERM  # it died of the signal, as without cutscope
    doc = load(db_path)
    sends, recvs = check_messages(doc)
    assert len([e for e in doc["events"] if e["process"] == "child" and e["kind"] == "send"]) == 30
    assert len([e for e in recvs if e["process"] == "parent"]) == 30


def term_inside_the_recorder_child():
    """SIGTERM arrives while this thread holds the recorder's wake-up lock (inside
    Event.set, as when a put records a new channel): the handler must not wait on it."""
    import signal
    import time

    cutscope.event("before")
    wake = cutscope.tracer.active().recorder._wake
    with wake._cond:  # what Event.set() holds
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(TIMEOUT)  # the handler runs here, at the next bytecode


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigterm_while_the_child_holds_a_recorder_lock_still_ends_it(method, db_path):
    """ProcessPoolExecutor terminates the workers of a broken pool with SIGTERM, at any
    point of what they do: the child dies of the signal instead of hanging."""
    import signal

    cutscope.start(db=db_path, name="parent")
    try:
        ctx = mp.get_context(method)
        p = ctx.Process(target=term_inside_the_recorder_child, name="child")
        p.start()
        p.join(TIMEOUT)
        alive = p.is_alive()
        if alive:
            p.kill()
            p.join(TIMEOUT)
    finally:
        cutscope.stop()
    assert not alive, "the child hung in its SIGTERM handler"
    assert p.exitcode == -signal.SIGTERM


def test_a_marker_alone_in_the_pipe_leaves_the_queue_empty():
    """Markers hold no slot of the queue's semaphore: with only a marker in the pipe,
    empty() is True and qsize() 0, as without cutscope; the next get swallows it."""
    import time

    with recording("main"):
        q = mp.get_context("fork").Queue()
        with cutscope.process("P") as prod:
            q.put("item")
        with cutscope.process("C"):
            assert q.get(timeout=TIMEOUT) == "item"
        assert q.empty() and q.qsize() == 0
        prod.record(7, prod.name)  # a snapshot: its marker goes into the idle queue
        deadline = time.monotonic() + TIMEOUT
        while not q._poll() and time.monotonic() < deadline:  # the feeder wrote it
            time.sleep(0.01)
        assert q._poll(), "the marker never reached the pipe"
        assert q.empty() and q.qsize() == 0
        with cutscope.process("C"):
            with pytest.raises(queue.Empty):
                q.get(timeout=0.2)
        assert not q._poll()
        q.close()
        q.join_thread()


def test_a_bare_md5_answer_that_starts_with_a_brace_is_read_as_bare():
    """A 3.11 (or legacy) peer answers with a bare 16-byte HMAC-MD5, whose first byte is
    b"{" once in 256 answers: the stdlib reads an answer of that length as bare, and so
    must the traced end that checks it (else the handshake fails at random)."""
    import hmac

    from cutscope.integrations.mp.frames import MAGIC
    from cutscope.integrations.mp.handshake import mac_for

    authkey = b"secret"
    for n in range(100_000):
        bare = b"{sha256}" + n.to_bytes(32, "big")  # the stdlib's challenge (3.12+)
        signed = bare + MAGIC  # the challenge as the traced end sent it
        answer = hmac.new(authkey, signed, "md5").digest()
        if answer[:1] == b"{":
            break
    else:
        pytest.fail("no answer starting with a brace")
    assert mac_for(authkey, answer, signed, bare) == hmac.new(authkey, bare, "md5").digest()
    # a wrong bare answer is still refused
    assert mac_for(b"other", answer, signed, bare) is None


def test_data_frames_built_once_per_sender_read_back_exactly():
    """A sender's data frame (its fixed header parts encoded once) is the frame of
    ``data_header`` plus the message, for any bytes-like message, and parses back to
    the same stamp, channel, message id and offset of the message."""
    from cutscope.integrations.mp import frames

    framer = frames.DataFramer("c-7é", "wörker-3")
    for seq, stamp, message in ((1, 1, b""), (9, 10, b"x" * 300), (10**12, 2**63 - 1,
                                                                      memoryview(b"\x00abc"))):
        frame = framer.frame(seq, stamp, message)
        assert frame == frames.data_header("c-7é", f"wörker-3#{seq}", stamp) + bytes(message)
        view = memoryview(frame)
        assert frames.is_frame(view)
        assert frames.parse_tuple(view) == (frames.DATA, stamp, "c-7é", f"wörker-3#{seq}",
                                            len(frame) - len(message))
        assert tuple(frames.parse(view)) == frames.parse_tuple(view)


def test_one_way_pipe_delivers_exact_bytes_and_message_ids():
    """A framed one-way pipe (a Pool's SimpleQueue): the receiver gets the sent bytes
    (bytes, a memoryview, a pickled object, into a buffer at an offset, an empty
    message), and each receive names its send's id."""
    with recording("main") as rec:
        r, w = mp.Pipe(duplex=False)
        with cutscope.process("séndér"):
            w.send_bytes(b"one")
            w.send_bytes(memoryview(b"--two--")[2:5])
            w.send({"three": 3})
            w.send_bytes(b"")
            w.send_bytes(b"four", 1, 2)
        with cutscope.process("B"):
            assert r.recv_bytes() == b"one"
            assert r.recv_bytes(3) == b"two"
            assert r.recv() == {"three": 3}
            assert r.recv_bytes() == b""
            buf = bytearray(8)
            assert r.recv_bytes_into(buf, 3) == 2
            assert bytes(buf) == b"\x00\x00\x00ou\x00\x00\x00"
        r.close()
        w.close()
        doc = rec.trace()
    sends, recvs = check_messages(doc)
    assert len(sends) == len(recvs) == 5
    assert [sends[e["msg"]]["msg"] for e in recvs] == [f"séndér#{i}" for i in range(1, 6)]
