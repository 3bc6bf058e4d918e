"""The C hot paths record exactly what the pure-Python paths record.

Each scenario runs twice, in a child interpreter each: once with the C extensions
(the default) and once with ``CUTSCOPE_SPEEDUPS=0`` (the Python reference), tracing
into a SQLite file. The application's view (every return value and exception) and the
recorded trace read back from the file (every event's process, kind, channel, seq,
Lamport time, size, message id and captured payload; the channels; the snapshot
states) must be equal, event by event. Wall-clock times are left out.

- sockets: framed blocking TCP on loopback between two logical processes of one
  thread: send / sendall / recv / recv_into, frames split and coalesced, a payload
  larger than the C path takes, a snapshot recorded in the middle (in-band markers
  both ways), a snapshot asked and started at a safe point, end of stream;
- the core: ``LogicalProcess.send`` / ``recv`` from four threads at once, each its
  own logical process, over FIFO channels read in a fixed order (so the trace does
  not depend on the scheduling), with a snapshot recorded by one of them midway;
- queues from threads: producers and a consumer, each its own logical process, on
  bounded queues (waits on both sides), a marker in a queue. Every single-thread case
  of the queue's C path and its fallbacks is compared in tests/test_queues.py
  (``_equivalence_scenario``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from _cpaths import needs_c_paths

HERE = os.path.dirname(os.path.abspath(__file__))


def _outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001 - the application's view, whatever it is
        return ("raised", type(e).__name__, str(e))


def _read_trace(url: str) -> dict:
    """The trace in ``url``, without wall times: channels by (src, dst, transport,
    framed); events sorted by (process, seq); snapshot states' own part."""
    from cutscope.tracer.store import open_store

    store = open_store(url, create=False)
    try:
        doc = store.load()
    finally:
        store.close()
    chans = {c["id"]: (c["src"], c["dst"], c.get("transport"), c.get("framed"))
             for c in doc["channels"]}
    events = sorted(
        (e["process"], e["seq"], e["lamport"], e["kind"], chans.get(e["channel"]), e["msg"],
         e["nbytes"], e.get("payload_b64"), e.get("snapshot")) for e in doc["events"])
    states = []
    with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as db:
        for sid, proc, seq, state, out, closed, done in db.execute(
                "SELECT snapshot_id, process, event_seq, state, outgoing, closed, done "
                "FROM snapshot_states"):
            own = json.loads(state).get("_cutscope", {})
            own = {k: (sorted(map(str, (chans.get(c, c) for c in v))) if isinstance(v, list)
                       else v) for k, v in own.items()}
            states.append([sid, proc, seq, own, sorted(map(str, map(chans.get, json.loads(out)))),
                           sorted(map(str, map(chans.get, json.loads(closed or "[]")))), done])
        for sid, ch, idx, msg, nbytes, payload in db.execute(
                "SELECT snapshot_id, channel, idx, msg, nbytes, payload FROM snapshot_messages"):
            states.append([sid, str(chans.get(ch)), idx, msg, nbytes,
                           None if payload is None else bytes(payload).hex()])
    return {"events": events, "channels": sorted(map(list, chans.values())),
            "states": sorted(states, key=repr)}


def _paths_in_use() -> dict:
    import socket

    from cutscope.tracer import process

    return {"core": type(process.LogicalProcess.send).__name__,
            "socket": type(socket.socket.__dict__.get("send")).__name__}


# -- sockets ----------------------------------------------------------------------------------

def _socket_scenario(url: str, capture: int) -> dict:
    import socket

    import cutscope
    from cutscope.tracer.process import current

    log = []
    a = log.append
    cutscope.start(db=url, name="parity", capture_payload=capture)
    try:
        with cutscope.process("B"):
            srv = socket.create_server(("127.0.0.1", 0))
        with cutscope.process("A"):
            c = socket.create_connection(srv.getsockname(), timeout=None)
            c.settimeout(None)
        with cutscope.process("B"):
            s, _ = srv.accept()
            s.settimeout(None)
            srv.close()
        paths = _paths_in_use()

        def at(name, fn, *args):
            with cutscope.process(name):
                a((name, getattr(fn, "__name__", "?"), _outcome(fn, *args)))

        at("A", c.sendall, b"hello")  # the HELLO goes first
        at("B", s.recv, 64)
        for i in range(1, 13):
            msg = bytes([65 + i]) * (7 * i)
            at("A", c.send if i % 2 else c.sendall, msg)
            if i % 3 == 0:
                buf = bytearray(200)
                with cutscope.process("B"):
                    a(("B", "recv_into", _outcome(s.recv_into, buf), bytes(buf[:7 * i])))
            else:
                at("B", s.recv, 4096)
            at("B", s.sendall, b"r" + msg[:5])
            at("A", c.recv, 4096)
        # A frame read in pieces (bufsize smaller than the frame), then two frames read
        # by one receive each, though both are in the socket's buffer.
        at("A", c.sendall, b"0123456789" * 5)
        for _ in range(5):
            at("B", s.recv, 10)
        at("A", c.sendall, b"first")
        at("A", c.sendall, b"second")
        with cutscope.process("B"):
            got = b""
            while len(got) < 11:
                got += s.recv(4096)
                a(("B", "recv", got))
        # A snapshot recorded by A between two messages: its marker goes out on A -> B
        # before A's next frame; B records on it and sends its own before its reply.
        with cutscope.process("A"):
            current().record(1, "A")
        at("A", c.sendall, b"after-marker")
        at("B", s.recv, 4096)
        at("B", s.sendall, b"reply-after-marker")
        at("A", c.recv, 4096)
        # A snapshot asked of B, started at B's next safe point (its next receive).
        with cutscope.process("B"):
            current().request(2, "B")
        at("A", c.sendall, b"x" * 300)
        at("B", s.recv, 4096)
        at("B", s.send, b"y" * 40)
        at("A", c.recv, 4096)
        # Larger than the C path takes in one frame: the Python path, whatever runs.
        big = bytes(range(256)) * 400
        at("A", c.sendall, big)
        with cutscope.process("B"):
            got = bytearray()
            while len(got) < len(big):
                d = s.recv(65536)
                if not d:
                    break
                got += d
            a(("B", "big", len(got), bytes(got) == big))
        # Arguments the C path hands to the Python function, and end of stream.
        at("A", c.send, memoryview(b"view"))
        at("B", s.recv, 4096, 0)
        at("A", c.sendall, b"flags", 0)
        at("B", s.recv, 4096)
        with cutscope.process("A"):
            c.close()
        at("B", s.recv, 4096)
        with cutscope.process("B"):
            s.close()
    finally:
        cutscope.stop()
    return {"log": repr(log), "paths": paths}


# -- the core ---------------------------------------------------------------------------------

def _core_scenario(url: str, capture: int) -> dict:
    """Four threads, each its own logical process, all-to-all over FIFO channels: in each
    round every process sends to every other one, then takes one message from each of
    them, in a fixed order (waiting for it). P0 records a snapshot midway."""
    import threading
    import time

    import cutscope
    from cutscope.testing import Network

    names = [f"P{i}" for i in range(4)]
    rounds = 30
    t = cutscope.start(db=url, name="parity", capture_payload=capture, instrument=False)
    log = {n: [] for n in names}
    try:
        net = Network(t, seed=None)
        for x in names:
            for y in names:
                if x != y:
                    net.connect(x, y)
        paths = _paths_in_use()
        go = threading.Barrier(len(names))
        errors = []

        def take(link):
            """Deliver the head of ``link`` until a message was (markers first)."""
            while True:
                while not link.items:
                    time.sleep(0)
                head = link.items[0]
                net.deliver(link.id)
                if head[0] == "msg":
                    return head[3]

        def run(me: str):
            try:
                lp = net.node(me)
                go.wait()
                for r in range(rounds):
                    if me == "P0" and r == rounds // 2:
                        lp.record(1, "P0")
                    for other in names:
                        if other != me:
                            log[me].append(("sent", net.send(me, other, (me, r), nbytes=8 + r)))
                    for other in names:
                        if other != me:
                            log[me].append(("got", take(net.link(other, me))))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(n,)) for n in names]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
    finally:
        cutscope.stop()
    return {"log": repr(sorted(log.items())), "paths": paths}


# -- queues, from threads --------------------------------------------------------------------

def _queue_scenario(url: str, capture: int) -> dict:
    """tests/test_queues.py compares one thread's queue calls (every case of the C path
    and its fallbacks); this one runs them from threads, into SQLite: three producers,
    each its own logical process, put into their own bounded queue (a full queue makes
    the producer wait: the Python path) while a consumer takes from the three in turn
    (waiting when one is empty). P0 records a snapshot midway: its marker travels in
    its queue."""
    import queue
    import threading

    import cutscope
    from cutscope.tracer.process import current

    rounds = 40
    cutscope.start(db=url, name="parity", capture_payload=capture)
    log = {}
    try:
        qs = [queue.Queue(maxsize=4) for _ in range(3)]
        errors = []

        def producer(i):
            try:
                with cutscope.process(f"P{i}"):
                    for r in range(rounds):
                        if i == 0 and r == rounds // 2:
                            current().record(1, "P0")
                        qs[i].put((i, r, b"x" * r))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        def consumer():
            got = log["C"] = []
            try:
                with cutscope.process("C"):
                    for _ in range(rounds):
                        for q in qs:
                            got.append(q.get(timeout=60))
                            q.task_done()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=producer, args=(i,)) for i in range(3)]
        threads.append(threading.Thread(target=consumer))
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors
        paths = _paths_in_use()
        from cutscope.integrations import queues as qint

        paths["queue"] = type(qint.put).__name__
        paths["queue_counts"] = qint.FASTQ.counts() if qint.FASTQ is not None else None
    finally:
        cutscope.stop()
    return {"log": repr(log), "paths": paths}


# -- running them -----------------------------------------------------------------------------

def _child(scenario: str, capture: int, speedups: str, tmp_path) -> dict:
    db = tmp_path / f"{scenario}-{capture}-{speedups}.db"
    url = f"sqlite:///{db}"
    env = dict(os.environ, CUTSCOPE_SPEEDUPS=speedups, CUTSCOPE_STRICT="1")
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_parity as t; "
            "r = getattr(t, sys.argv[2])(sys.argv[3], int(sys.argv[4])); "
            "r['trace'] = t._read_trace(sys.argv[3]); print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code, HERE, scenario, url, str(capture)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare(fast: dict, slow: dict) -> None:
    assert slow["paths"]["core"] == "function", slow["paths"]
    assert fast["paths"]["core"] == "method_descriptor", fast["paths"]
    assert fast["log"] == slow["log"]
    ft, st = fast["trace"], slow["trace"]
    assert ft["channels"] == st["channels"]
    assert len(ft["events"]) == len(st["events"])
    for f, s in zip(ft["events"], st["events"]):
        assert f == s
    assert ft["states"] == st["states"]


@needs_c_paths
@pytest.mark.timeout(300)
@pytest.mark.parametrize("capture", [0, 64])
def test_sockets_record_the_same_trace_with_and_without_c(capture, tmp_path):
    fast = _child("_socket_scenario", capture, "1", tmp_path)
    slow = _child("_socket_scenario", capture, "0", tmp_path)
    assert fast["paths"]["socket"] == "method_descriptor", fast["paths"]
    assert slow["paths"]["socket"] == "function", slow["paths"]
    _compare(fast, slow)
    events = fast["trace"]["events"]
    framed = [e for e in events if e[4] is not None and e[4][3] and e[3] in ("send", "recv")]
    assert len(framed) >= 60, len(framed)
    assert {e[0] for e in events if e[3] == "snapshot"} >= {"A", "B"}
    assert len(fast["trace"]["states"]) >= 4
    if capture:
        assert any(e[7] for e in framed)


@needs_c_paths
@pytest.mark.timeout(300)
@pytest.mark.parametrize("capture", [0, 16])
def test_the_core_records_the_same_trace_with_and_without_c(capture, tmp_path):
    fast = _child("_core_scenario", capture, "1", tmp_path)
    slow = _child("_core_scenario", capture, "0", tmp_path)
    _compare(fast, slow)
    events = fast["trace"]["events"]
    assert sum(e[3] == "send" for e in events) == sum(e[3] == "recv" for e in events) == 4 * 3 * 30
    assert sum(e[3] == "snapshot" for e in events) == 4
    assert len(fast["trace"]["states"]) >= 4


@needs_c_paths
@pytest.mark.timeout(300)
@pytest.mark.parametrize("capture", [0, 32])
def test_queues_from_threads_record_the_same_trace_with_and_without_c(capture, tmp_path):
    fast = _child("_queue_scenario", capture, "1", tmp_path)
    slow = _child("_queue_scenario", capture, "0", tmp_path)
    assert fast["paths"]["queue"] == "method_descriptor" and slow["paths"]["queue"] == "function"
    assert fast["paths"]["queue_counts"]["put"] > 0 and fast["paths"]["queue_counts"]["get"] > 0
    _compare(fast, slow)
    events = fast["trace"]["events"]
    assert sum(e[3] == "send" for e in events) == sum(e[3] == "recv" for e in events) == 3 * 40
    assert {e[0] for e in events if e[3] == "snapshot"} == {"P0", "C"}
