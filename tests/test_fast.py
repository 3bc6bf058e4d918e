"""The C hot paths (tracer/_fast.c, integrations/sockets/_fastsock.c): installed when
built, equal to the Python code they replace, atomic against the Python critical
sections, and a failure inside them never reaches the application's bytes.

The rest of the suite runs with the C paths (they are installed by default); the
parity test runs the socket, queue and core tests again with ``CUTSCOPE_SPEEDUPS=0``,
the pure-Python reference.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from cutscope.testing import recording
from cutscope.tracer import process
from _cpaths import needs_c_paths
from _sockutil import ROOT, assert_matched, pair, recv_exactly


@needs_c_paths
def test_the_c_paths_are_built_and_installed():
    # Where a C compiler works, `pip install -e .` must have built the extension;
    # without one, cutscope runs the Python paths (FAST is None) and this test skips.
    assert process.FAST is not None, ("cutscope.tracer._fast was not built, though this "
                                      "machine has a working C compiler")
    assert type(process.LogicalProcess.send).__name__ == "method_descriptor"
    assert type(process.LogicalProcess.recv).__name__ == "method_descriptor"
    plain = socket.socket.__dict__.get("send")
    with recording("p"):
        for name in ("send", "sendall", "recv"):
            m = socket.socket.__dict__[name]
            assert type(m).__name__ == "method_descriptor", name
            assert "cutscope" in m.__doc__
    assert socket.socket.__dict__.get("send") is plain  # uninstalled


@needs_c_paths
def test_the_socket_fast_path_is_the_socket_integrations():
    """The core's extension knows no integration: the socket fast path is the socket
    integration's own extension, which reaches the core through the core's capsule."""
    import importlib

    from cutscope.integrations.sockets import hotpath

    core = importlib.import_module("cutscope.tracer._fast")
    assert not [n for n in dir(core) if "sock" in n.lower()], dir(core)
    assert type(core._C_API).__name__ == "PyCapsule"
    assert hotpath.FASTSOCK is not None
    assert hotpath.FASTSOCK.__name__ == "cutscope.integrations.sockets._fastsock"
    assert hotpath.send.__doc__.startswith("socket.send, traced")


def test_a_free_threaded_build_runs_the_python_paths():
    """The C paths rely on the GIL: where ``sys.abiflags`` names a free-threaded build,
    none of the extensions is loaded and every hot path is the Python one."""
    code = ("import sys; sys.abiflags += 't'\n"
            "import socket, queue, cutscope\n"
            "from cutscope.tracer import process\n"
            "from cutscope.integrations import queues\n"
            "from cutscope.integrations.sockets import hotpath\n"
            "assert process.FAST is None and queues.FASTQ is None and hotpath.FASTSOCK is None\n"
            "assert [m for m in sys.modules if m.rpartition('.')[2].startswith('_fast')] == []\n"
            "assert type(process.LogicalProcess.send).__name__ == 'function'\n"
            "cutscope.start(db='sqlite:///' + sys.argv[1])\n"
            "assert type(socket.socket.__dict__['send']).__name__ == 'function'\n"
            "assert type(queue.Queue.__dict__['put']).__name__ == 'function'\n"
            "cutscope.stop()\nprint('ok')\n")
    with __import__("tempfile").TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", code, os.path.join(d, "t.db")],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@needs_c_paths
@pytest.mark.parametrize("name", ["cutscope.tracer._fast", "cutscope.integrations._fastq",
                                  "cutscope.integrations.sockets._fastsock"])
def test_each_extension_is_loaded_once_per_process(name):
    """Multi-phase initialisation with module state; the method descriptors a module
    installs reach the state of the one module object the process loaded, so a second
    one is refused and the first keeps working."""
    import importlib
    import importlib.util

    loaded = importlib.import_module(name)
    spec = importlib.util.find_spec(name)
    again = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match="one module object per process"):
        spec.loader.exec_module(again)
    assert sys.modules[name] is loaded
    with recording("p"):
        c, s = pair()
        c.sendall(b"x" * 10)
        assert recv_exactly(s, 10) == b"x" * 10
        c.sendall(b"y" * 10)
        assert recv_exactly(s, 10) == b"y" * 10
        c.close()
        s.close()


def test_speedups_off_keeps_the_python_paths():
    code = ("import socket, cutscope\nfrom cutscope.tracer import process\n"
            "assert process.FAST is None\n"
            "assert type(process.LogicalProcess.send).__name__ == 'function'\n"
            "cutscope.start(db='sqlite:///' + __import__('sys').argv[1])\n"
            "assert type(socket.socket.__dict__['send']).__name__ == 'function'\n"
            "cutscope.stop()\nprint('ok')\n")
    env = dict(os.environ, CUTSCOPE_SPEEDUPS="0")
    with __import__("tempfile").TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", code, os.path.join(d, "t.db")], env=env,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(process.FAST is None, reason="this run is on the pure-Python paths already")
def test_the_python_reference_passes_the_same_tests():
    """The socket, queue and core tests, once more on the pure-Python paths."""
    env = dict(os.environ, CUTSCOPE_SPEEDUPS="0")
    files = ["tests/test_sockets.py", "tests/test_core.py", "tests/test_queues.py",
             "tests/test_snapshot_threads.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        "-p", "no:randomly", *files], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


@pytest.mark.timeout(120)
def test_sequence_and_clock_stay_exact_with_c_and_python_sections_interleaved():
    """One logical process, four threads sending and receiving on their own connections
    through the C paths, and a fifth recording local events through the Python path
    (which holds the process lock): no seq is lost or given twice, and the Lamport
    clock grows with the seq. A C section that was not atomic against the Python ones
    (the lock-free mode) would lose or repeat an update."""
    rounds = 400
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: every interleaving
    try:
        doc = _interleaved(rounds)
    finally:
        sys.setswitchinterval(old)
    mine = sorted((e["seq"], e["lamport"]) for e in doc["events"] if e["process"] == "p")
    seqs = [s for s, _ in mine]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a seq lost or repeated"
    clocks = [c for _, c in mine]
    assert all(a < b for a, b in zip(clocks, clocks[1:])), "the clock went back"
    assert len([e for e in doc["events"] if e["process"] == "p" and e["kind"] == "send"]) \
        >= 4 * rounds
    assert_matched(doc, min_framed=4)


def _interleaved(rounds):
    with recording("p") as rec:
        lp = process.current()
        pairs = [pair() for _ in range(4)]
        errors = []

        def pinger(c, s):
            try:
                for i in range(rounds):
                    c.sendall(b"m%05d" % i)
                    assert recv_exactly(s, 6) == b"m%05d" % i
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def local():
            for i in range(rounds * 20):
                lp.local("tick", {"i": i})

        threads = [threading.Thread(target=pinger, args=p) for p in pairs]
        threads.append(threading.Thread(target=local))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for c, s in pairs:
            c.close()
            s.close()
        return rec.trace()


class _Broken:
    """A recorder buffer whose append fails: the C core's last step before returning."""

    def __init__(self):
        self.calls = 0

    def __call__(self, row):
        self.calls += 1
        raise RuntimeError("injected into the C path")


@pytest.mark.parametrize("strict", [False, True])
def test_a_failure_inside_the_c_path_never_touches_the_bytes(strict):
    with recording("p", strict=strict) as rec:
        c, s = pair()
        c.sendall(b"before")
        assert s.recv(100) == b"before"
        lp = process.current()
        good = lp._append
        lp._append = broken = _Broken()
        try:
            if strict:
                # strict mode (the tests' default): the error is cutscope's, raised
                # before anything was written
                with pytest.raises(RuntimeError, match="injected"):
                    c.sendall(b"during")
            else:
                c.sendall(b"during")
                assert s.recv(100) == b"during"
                s.sendall(b"back")
                assert c.recv(100) == b"back"
        finally:
            lp._append = good
        assert broken.calls >= (1 if strict else 3)
        if not strict:
            c.sendall(b"after")
            assert s.recv(100) == b"after"
            assert rec.tracer.faults >= 3
            rec.trace()
            assert any("injected into the C path" in f["detail"] for f in rec.store.faults)
        c.close()
        s.close()


def test_markers_queued_while_idle_go_out_before_the_next_c_send():
    """Markers waiting on the endpoint (queued by a snapshot while the connection was
    idle) are written by the next send, on the C path, before its frame: the bytes on
    the wire, read with the plain C method, are the marker frame, then the frame."""
    from cutscope.tracer import wire

    raw_recv = socket.socket.__mro__[1].recv
    with recording("p"):
        c, s = pair()
        c.sendall(b"x" * 10)
        assert recv_exactly(s, 10) == b"x" * 10  # past the HELLO: the next send is fast
        lp = process.current()
        conn_ends = [ep for ep in lp.out if ep.flush is not None]
        assert conn_ends
        with lp.lock:  # as record() does from inside another send: queued, not flushed
            for ep in conn_ends:
                ep.pending.append(process.Marker(99, "p", lp.seq))
        c.sendall(b"y" * 10)
        assert all(not ep.pending for ep in conn_ends)
        want = wire.marker(99, "p")
        got = b""
        while len(got) < len(want) + wire.HDR_SIZE + 10:
            got += raw_recv(s, 4096)
        assert got[:len(want)] == want
        kind, n, _seq, _lam = wire.HDR.unpack_from(got, len(want))
        assert (kind, n) == (wire.DATA, 10)
        assert got[len(want) + wire.HDR_SIZE:] == b"y" * 10
        c.close()
        s.close()


@pytest.mark.timeout(180)
def test_snapshots_stay_consistent_while_threads_of_one_process_send_through_c():
    """Four threads of one logical process send on their own connections through the C
    path while snapshots record that process (record() queues a marker on every
    endpoint under the process lock, a few Python calls long). A C send that slipped
    between the snapshot event and its marker would put a message sent after the cut
    ahead of the marker: an orphan, an inconsistent cut."""
    import cutscope

    from _checks import assert_snapshot_is_its_cut

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    stop = threading.Event()
    snaps, errors = [], []
    try:
        with recording("p") as rec:
            pairs = [pair() for _ in range(4)]

            def sender(c):
                try:
                    i = 0
                    while not stop.is_set():
                        c.sendall(b"%08d" % i)
                        i += 1
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            def receiver(k, s):
                with cutscope.process(f"q{k}"):
                    try:
                        while True:
                            d = s.recv(4096)
                            if not d:
                                return
                    except Exception as exc:  # pragma: no cover
                        errors.append(exc)

            ths = [threading.Thread(target=sender, args=(c,)) for c, _ in pairs]
            ths += [threading.Thread(target=receiver, args=(k, s)) for k, (_, s) in enumerate(pairs)]
            for t in ths:
                t.start()
            for _ in range(12):
                snaps.append(cutscope.snapshot(initiator="p", timeout=20))
            stop.set()
            for t in ths[:4]:
                t.join(30)
            for c, _ in pairs:
                c.shutdown(socket.SHUT_WR)
            for t in ths[4:]:
                t.join(30)
            for c, s in pairs:
                c.close()
                s.close()
            doc = rec.trace()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    for snap in snaps:
        assert_snapshot_is_its_cut(doc, snap)


# -- packed events (chunks) in the recorder's buffer -------------------------------------

_OPS = hst.lists(hst.one_of(
    hst.tuples(hst.just("send"), hst.integers(0, 2**40), hst.none() | hst.binary(max_size=8)),
    hst.tuples(hst.just("recv"), hst.integers(0, 300), hst.none() | hst.text(max_size=4)),
    hst.tuples(hst.just("local"), hst.integers(0, 3)),           # a tuple, Python path
    hst.tuples(hst.just("take"), hst.integers(0, 5), hst.integers(-1, 200)),  # writer batch
    hst.tuples(hst.just("putback")),                             # a failed batch goes back
    hst.tuples(hst.just("pop")),                                 # drop mode: the newest item
    hst.tuples(hst.just("many"), hst.integers(60, 140)),         # fill chunks past 64
), max_size=60)


@needs_c_paths
@settings(max_examples=200, deadline=None)
@given(ops=_OPS, cap=hst.sampled_from([0, 4]))
def test_every_event_is_in_exactly_one_item_whatever_the_writer_does(ops, cap):
    """The C paths write events into chunks in the buffer; the writer takes items,
    puts a failed batch back, drop mode pops the newest. Whatever the order: every
    event is in exactly one of the batches written, the items dropped and the buffer,
    in order of seq within the buffer's items, counted right by ``events``, and a
    batch's block decodes to the stored form of its events."""
    import collections
    import types

    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row

    FAST = process.FAST
    buf = collections.deque()
    rec = types.SimpleNamespace(push=buf.append, check=lambda: None)
    lp = process.LogicalProcess(types.SimpleNamespace(recorder=rec), "p")
    ep = process.OutEndpoint(lp, "c1")
    made, written, dropped, last = [], [], [], []
    for op in ops:
        kind = op[0]
        if kind == "send":
            made.append(lp.send(ep, op[1], op[2])[0])
        elif kind == "recv":
            made.append(lp.recv("c2", op[2], op[1], op[1]))
        elif kind == "local":
            made.append(lp.local("l", {"i": op[1]}))
        elif kind == "many":
            made.extend(lp.send(ep, 1)[0] for _ in range(op[1]))
        elif kind == "take":
            batch = FAST.take(buf, op[1], op[2])
            if batch:
                rows = FAST.expand(batch)
                assert len(rows) == FAST.events(batch)
                data, n, wall = S.encode_block(batch, cap)
                assert (n, wall) == (len(rows), rows[-1][3])
                assert S.decode_block(1, S.BLOCK_ENCODING, data) == [event_row(r, cap) for r in rows]
                written.extend(r[1] for r in rows)
                last = batch
        elif kind == "putback" and last:
            buf.extendleft(reversed(last))
            for _ in FAST.expand(last):
                written.pop()
            last = []
        elif kind == "pop" and buf:
            dropped.extend(r[1] for r in FAST.expand([buf.pop()]))
            last = []
        if kind != "take":
            last = [] if kind != "putback" else last
    left = [r[1] for r in FAST.expand(buf)]
    assert FAST.events(buf) == len(left) <= FAST.held(buf)  # (the bound's O(1) count)
    assert sorted(written + dropped + left) == sorted(made) == list(range(1, len(made) + 1))
    assert left == sorted(left)
    chunks = [x for x in buf if type(x) is FAST.Chunk]
    assert all(0 < len(c) <= 64 for c in chunks)
