"""The socket integration, in one interpreter: framing invariants (the application
sees exactly its own bytes, errors and end of stream) on real loopback sockets.
Cross-process peers: test_sockets_procs.py; the standard library's clients and
servers: test_sockets_stdlib.py."""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cutscope
from cutscope.testing import recording
from cutscope.tracer import wire
from _checks import assert_snapshot_is_its_cut
from _sockutil import assert_matched, pair, recv_exactly


def _nb_pair(sndbuf=None, rcvbuf=None):
    srv = socket.create_server(("127.0.0.1", 0))
    a = socket.socket()
    if sndbuf:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    a.connect(srv.getsockname())
    b, _ = srv.accept()
    srv.close()
    if rcvbuf:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_traced_pair_is_framed_and_transparent():
    with recording("p") as rec:
        c, s = pair()
        for i in range(5):
            c.sendall(b"request %d" % i)
            assert s.recv(100) == b"request %d" % i
            s.sendall(b"reply %d" % i)
            assert c.recv(100) == b"reply %d" % i
        c.close()
        assert s.recv(100) == b""  # the same end of stream
        s.close()
        doc = rec.trace()
    framed = assert_matched(doc, min_framed=2)
    chans = [c for c in doc["channels"] if c["id"] in framed]
    assert all(c["transport"] == "tcp" and "->" in c["endpoint"] for c in chans)
    # Lamport: every receive is later than its send
    sends = {e["msg"]: e for e in doc["events"] if e["kind"] == "send"}
    for e in doc["events"]:
        if e["kind"] == "recv":
            assert e["lamport"] > sends[e["msg"]]["lamport"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sends=st.lists(st.binary(min_size=1, max_size=6000), min_size=1, max_size=8),
       sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=10),
       use_into=st.booleans())
def test_random_chunkings_nonblocking_tiny_sndbuf(sends, sizes, use_into):
    """Partial sends continue the current frame; the reader gets exactly the bytes."""
    total = b"".join(sends)
    with recording("h") as rec:
        a, b = _nb_pair(sndbuf=1024, rcvbuf=1024)
        got = bytearray()
        cur = off = i = 0
        deadline = time.monotonic() + 30
        while len(got) < len(total):
            assert time.monotonic() < deadline, "stalled"
            if cur < len(sends):
                try:
                    n = a.send(sends[cur][off:])
                    assert 0 < n <= len(sends[cur]) - off
                    off += n
                    if off == len(sends[cur]):
                        cur, off = cur + 1, 0
                except BlockingIOError:
                    pass
            size = sizes[i % len(sizes)]
            i += 1
            try:
                if use_into:
                    buf = bytearray(size)
                    n = b.recv_into(buf)
                    assert n > 0
                    got += buf[:n]
                else:
                    d = b.recv(size)
                    assert d, "a marker or header must never read as end of stream"
                    assert len(d) <= size
                    got += d
            except BlockingIOError:
                select.select([b], [a] if cur < len(sends) else [], [], 0.01)
        assert bytes(got) == total
        a.close()
        b.close()
        doc = rec.trace()
    assert_matched(doc)


def test_blocking_partial_frames_and_sendall_large():
    with recording("p") as rec:
        c, s = pair()
        blob = os.urandom(3_000_000)
        t = threading.Thread(target=c.sendall, args=(blob,))
        t.start()
        got = recv_exactly(s, len(blob), size=7777)
        t.join(10)
        assert got == blob
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)


def test_half_read_frame_leaves_select_selectors_asyncio_readable():
    with recording("p"):
        c, s = pair()
        c.sendall(b"x" * 100)
        assert s.recv(10) == b"x" * 10  # the rest of the frame stays in the kernel
        assert select.select([s], [], [], 5)[0] == [s]
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ)
        assert sel.select(5)
        sel.close()

        async def readable():
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            loop.add_reader(s.fileno(), lambda: fut.done() or fut.set_result(True))
            try:
                return await asyncio.wait_for(fut, 5)
            finally:
                loop.remove_reader(s.fileno())

        assert asyncio.run(readable()) is True
        assert recv_exactly(s, 90) == b"x" * 90
        c.close()
        s.close()


def test_recv_into_makefile_and_waitall():
    with recording("p") as rec:
        c, s = pair()
        c.sendall(b"abcdefgh")
        buf = bytearray(5)
        assert s.recv_into(buf) == 5 and buf == b"abcde"
        assert s.recv_into(buf, 2) == 2 and buf[:2] == b"fg"
        assert s.recv(10) == b"h"
        c.sendall(b"12")
        c.sendall(b"34")
        assert s.recv(4, socket.MSG_WAITALL) == b"1234"
        wf = c.makefile("wb")
        rf = s.makefile("rb")
        wf.write(b"line one\nline two\n")
        wf.flush()
        assert rf.readline() == b"line one\n"
        assert rf.readline() == b"line two\n"
        wf.close()
        rf.close()
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)


def test_sendfile_takes_the_send_fallback_on_framed(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(200_000)
    path.write_bytes(data)
    with recording("p") as rec:
        c, s = pair()
        with open(path, "rb") as f:
            t = threading.Thread(target=c.sendfile, args=(f,))
            t.start()
            got = recv_exactly(s, len(data))
            t.join(10)
        assert got == data
        c.close()
        s.close()
        doc = rec.trace()
    framed = assert_matched(doc)
    sent = sum(e["nbytes"] for e in doc["events"] if e["kind"] == "send" and e["channel"] in framed)
    assert sent == len(data)


def test_msg_peek_returns_payload_and_records_nothing():
    with recording("p") as rec:
        c, s = pair()
        c.sendall(b"peekaboo")
        assert s.recv(4, socket.MSG_PEEK) == b"peek"  # never header bytes
        assert s.recv(100, socket.MSG_PEEK) == b"peekaboo"
        assert s.recv(100) == b"peekaboo"
        c.sendall(b"more")
        assert s.recv(2) == b"mo"
        assert s.recv(10, socket.MSG_PEEK) == b"re"  # in the middle of a frame
        assert s.recv(10) == b"re"
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    assert len(recvs) == 2  # one per message: peeks record nothing


def test_timeout_is_respected_and_raised_as_plain():
    with recording("p"):
        c, s = pair()
        s.settimeout(0.05)
        with pytest.raises(TimeoutError):
            s.recv(10)
        c.sendall(b"late")
        s.settimeout(5)
        assert s.recv(10) == b"late"
        c.close()
        s.close()


def test_nonblocking_empty_raises_blockingioerror():
    with recording("p"):
        a, b = _nb_pair()
        with pytest.raises(BlockingIOError):
            b.recv(10)
        a.close()
        b.close()


def test_dup_and_fromfd_find_the_connection_state():
    with recording("p") as rec:
        c, s = pair()
        c.sendall(b"0123456789" * 10)
        assert s.recv(15) == b"012345678901234"
        s2 = s.dup()  # a new object, a new descriptor, the same connection mid-frame
        assert recv_exactly(s2, 20) == b"56789012345678901234"
        s3 = socket.socket(fileno=os.dup(s.fileno()))
        assert recv_exactly(s3, 65) == (b"0123456789" * 10)[35:]
        c.sendall(b"next")
        assert s.recv(10) == b"next"
        for x in (s2, s3, s, c):
            x.close()
        doc = rec.trace()
    assert_matched(doc)


def test_marker_never_visible_blocking_and_nonblocking():
    """A receive that finds only a marker reads on (blocking) or raises BlockingIOError."""
    with recording("main") as rec:
        got = []
        started = threading.Event()
        with cutscope.process("A"):
            c, s = pair()
            c.sendall(b"abc")
        s.setblocking(False)

        def reader():
            with cutscope.process("B"):
                started.set()
                while True:
                    try:
                        d = s.recv(100)
                    except BlockingIOError:
                        got.append("EAGAIN")
                        select.select([s], [], [], 5)
                        continue
                    got.append(d)
                    if not d:
                        return

        t = threading.Thread(target=reader)
        t.start()
        started.wait(5)
        with cutscope.process("A"):
            snap = cutscope.snapshot(timeout=10)
            assert snap.status == "complete", snap.missing
            c.sendall(b"def")
            c.close()
        t.join(10)
        assert not t.is_alive()
        data = [d for d in got if d != "EAGAIN"]
        assert b"".join(data) == b"abcdef"
        assert data[-1] == b"" and all(data[:-1])  # end of stream only at the real end
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    assert any(e["kind"] == "snapshot" and e["process"] == "B" for e in doc["events"])


def test_marker_then_data_on_blocking_socket():
    with recording("main") as rec:
        with cutscope.process("A"):
            c, s = pair()
        out = []

        def reader():
            with cutscope.process("B"):
                out.append(recv_exactly(s, 6))

        t = threading.Thread(target=reader)
        t.start()
        with cutscope.process("A"):
            c.sendall(b"abc")
            snap = cutscope.snapshot(timeout=10)
            c.sendall(b"def")
        t.join(10)
        assert out == [b"abcdef"]
        assert snap.status == "complete"
        c.close()
        s.close()
        assert_matched(rec.trace())


def test_in_transit_message_lands_in_the_channel_state():
    """Messages sent before their sender recorded and received after their receiver
    recorded are in the snapshot's channel state (with their payloads)."""
    import base64

    with recording("main") as rec:
        with cutscope.process("A"):
            c, s = pair()
            c.sendall(b"syn")  # A's HELLO: B frames its own direction after reading it
        with cutscope.process("B"):
            assert s.recv(10) == b"syn"
            s.sendall(b"hi")  # sent before B records; A reads it later
        res = {"a": [], "b": []}

        def read_all(name, sock, into):
            with cutscope.process(name):
                while True:
                    d = sock.recv(100)
                    if not d:
                        return
                    into.append(d)

        with cutscope.process("B"):
            snap_box = []
            tb = threading.Thread(target=lambda: snap_box.append(
                cutscope.process("B")(cutscope.snapshot)(timeout=10)))
            tb.start()
            b_lp = rec.tracer.processes["B"]
            deadline = time.monotonic() + 10
            while not b_lp.snaps and time.monotonic() < deadline:  # B has recorded: its
                time.sleep(0.005)  # marker is behind "hi"
            assert b_lp.snaps
        with cutscope.process("A"):
            c.sendall(b"in-transit")
        ta = threading.Thread(target=read_all, args=("A", c, res["a"]))
        rb = threading.Thread(target=read_all, args=("B", s, res["b"]))
        ta.start()
        rb.start()
        tb.join(10)
        with cutscope.process("B"):
            s.shutdown(socket.SHUT_WR)
        ta.join(10)
        with cutscope.process("A"):
            c.shutdown(socket.SHUT_WR)
        rb.join(10)
        assert b"".join(res["a"]) == b"hi"
        assert b"".join(res["b"]) == b"in-transit"
        snap = snap_box[0]
        assert_snapshot_is_its_cut(rec.trace(), snap)  # channel states = in transit across it
        payloads = sorted(base64.b64decode(m["payload_b64"]) for msgs in snap.channels.values()
                          for m in msgs)
        # Which of the two is in transit depends on when A recorded: asked directly,
        # at the exit of its send ("hi" then in transit, A not having read it), or at
        # B's marker behind "hi" ("in-transit" then in transit). One of them always is.
        assert payloads in ([b"hi", b"in-transit"], [b"in-transit"], [b"hi"]), snap.channels
        c.close()
        s.close()


def _greet(srv):
    """The server side of a greeting protocol (it speaks first): the accepted socket."""
    s, _ = srv.accept()
    s.settimeout(10)
    s.sendall(b"220 ready\r\n")
    assert s.recv(100) == b"QUIT\r\n"
    s.sendall(b"221 bye\r\n")
    return s


def _assert_framed_both_ways(doc):
    framed = assert_matched(doc, min_framed=2)
    pairs = {(c["src"], c["dst"]) for c in doc["channels"] if c["id"] in framed}
    assert pairs == {("client", "server"), ("server", "client")}


def test_server_speaks_first_traced_pair_is_framed_both_ways():
    """The server, about to speak first, finds the client's registration (out of band)
    and frames its own direction; the client frames its own at its first send."""
    with recording("main") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        out = {}

        def client():
            with cutscope.process("client"):
                c = socket.create_connection(srv.getsockname(), timeout=10)
                out["greeting"] = c.recv(100)
                c.sendall(b"QUIT\r\n")
                out["bye"] = c.recv(100)
                c.close()

        t = threading.Thread(target=client)
        t.start()
        with cutscope.process("server"):
            s = _greet(srv)
            t.join(10)
            assert s.recv(100) == b""
            s.close()
        srv.close()
        assert out == {"greeting": b"220 ready\r\n", "bye": b"221 bye\r\n"}
        doc = rec.trace()
    _assert_framed_both_ways(doc)


def test_server_speaks_first_to_an_asyncio_client_is_framed_both_ways():
    """An asyncio client (non-blocking connect) registers before its connect completes:
    a blocking traced server that speaks first frames its own direction too."""
    import asyncio

    with recording("main") as rec:
        srv = socket.create_server(("127.0.0.1", 0))

        def server():
            with cutscope.process("server"):
                _greet(srv).close()

        t = threading.Thread(target=server)
        t.start()

        async def client():
            r, w = await asyncio.open_connection(*srv.getsockname())
            greeting = await r.readline()
            w.write(b"QUIT\r\n")
            await w.drain()
            bye = await r.readline()
            w.close()
            await w.wait_closed()
            return greeting, bye

        with cutscope.process("client"):
            got = asyncio.run(asyncio.wait_for(client(), 20))
        t.join(10)
        srv.close()
        assert got == (b"220 ready\r\n", b"221 bye\r\n")
        doc = rec.trace()
    _assert_framed_both_ways(doc)


def test_udp_enveloped_between_traced_and_raw_otherwise():
    with recording("u") as rec:
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", 0))  # a traced, bound address: registered
        b.settimeout(5)
        a.settimeout(5)
        a.sendto(b"datagram one", b.getsockname())
        data, addr = b.recvfrom(100)
        assert data == b"datagram one"
        b.sendto(b"reply", addr)  # a is learned as traced (it sent an envelope)
        assert a.recv(100) == b"reply"
        buf = bytearray(50)
        a.sendto(b"into", b.getsockname())
        n, _ = b.recvfrom_into(buf)
        assert buf[:n] == b"into"
        a.sendto(b"peek", b.getsockname())
        assert b.recv(100, socket.MSG_PEEK) == b"peek"
        assert b.recv(2) == b"pe"  # truncated like a plain datagram read
        a.close()
        b.close()
        doc = rec.trace()
    udp = [c for c in doc["channels"] if c["transport"] == "udp"]
    assert udp and all(c["framed"] and not c["fifo"] for c in udp)
    assert_matched(doc)


def test_internal_error_with_strict_off_leaves_bytes_intact(monkeypatch):
    from cutscope.tracer.process import LogicalProcess

    def broken(*a, **kw):
        raise RuntimeError("injected")

    with recording("p", strict=False) as rec:
        c, s = pair()
        c.sendall(b"before")
        assert s.recv(100) == b"before"
        monkeypatch.setattr(LogicalProcess, "send", broken)
        monkeypatch.setattr(LogicalProcess, "recv", broken)
        c.sendall(b"during")
        assert s.recv(100) == b"during"
        s.sendall(b"back")
        assert c.recv(100) == b"back"
        monkeypatch.undo()
        c.sendall(b"after")
        assert s.recv(100) == b"after"
        c.close()
        s.close()
        assert rec.tracer.faults >= 3
        rec.trace()  # flushes the recorder
        assert any("injected" in f["detail"] for f in rec.store.faults)


def test_untraced_destination_gets_no_foreign_bytes():
    """A listener this process opened before tracing is not registered: raw both ways."""
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        with recording("p") as rec:
            c = socket.create_connection(srv.getsockname(), timeout=5)
            s, _ = srv.accept()
            c.sendall(b"plain")
            # read with the C method: the bytes on the wire, exactly
            assert socket.socket.__mro__[1].recv(s, 100) == b"plain"
            c.close()
            s.close()
            doc = rec.trace()
    finally:
        srv.close()
    assert doc["channels"] and not any(ch["framed"] for ch in doc["channels"])
    sends = [e for e in doc["events"] if e["kind"] == "send"]
    assert sends and all(e["msg"] is None for e in sends)


def test_uninstrument_restores_the_class():
    before = dict(socket.socket.__dict__)
    with recording("p"):
        assert socket.socket.send is not socket.socket.__mro__[1].send
    assert dict(socket.socket.__dict__) == before
    assert socket.socket.send is socket.socket.__mro__[1].send


def test_wire_roundtrip():
    h = wire.hello("c123", "proc/1")
    assert h.startswith(wire.MAGIC)
    assert wire.parse_hello(h) == ("c123", "proc/1", len(h))
    assert wire.parse_hello(h[:-1]) is None
    m = wire.marker(7, "init")
    assert wire.parse_control(m, 0) == (wire.MARKER, (7, "init"), len(m))
    env = wire.envelope("c9", "x", 5, 9) + b"payload"
    cid, name, seq, lam, off = wire.parse_envelope(env)
    assert (cid, name, seq, lam, env[off:]) == ("c9", "x", 5, 9, b"payload")
    assert wire.parse_envelope(b"plain datagram") is None


def test_idle_incoming_channel_marker_is_consumed_so_the_snapshot_completes():
    """B has recorded; A's marker sits at the head of A -> B, which B never
    reads. cutscope consumes it (recorder tick) and the snapshot completes; B's next
    read still gets exactly the application's bytes."""
    with recording("main"):
        with cutscope.process("A"):
            c, s = pair()
            c.sendall(b"syn")
        with cutscope.process("B"):
            assert s.recv(10) == b"syn"
            s.sendall(b"ack")
        with cutscope.process("A"):
            assert c.recv(10) == b"ack"
        got = []

        def a_reads():
            with cutscope.process("A"):
                while d := c.recv(100):
                    got.append(d)

        t = threading.Thread(target=a_reads)
        t.start()
        with cutscope.process("B"):
            snap = cutscope.snapshot(timeout=10)  # B never reads while it runs
        assert snap.status == "complete", snap.missing
        with cutscope.process("A"):
            c.sendall(b"later")
        with cutscope.process("B"):
            assert s.recv(100) == b"later"  # the marker was consumed, the data was not
            s.shutdown(socket.SHUT_WR)
        t.join(10)
        assert got == []
        c.close()
        s.close()


def test_scm_rights_and_af_unix_pass_through_untouched(tmp_path):
    a, b = socket.socketpair()
    f = open(tmp_path / "x", "w+b")
    try:
        with recording("p") as rec:
            socket.send_fds(a, [b"m"], [f.fileno()])
            msg, fds, _flags, _addr = socket.recv_fds(b, 10, 1)
            assert msg == b"m" and len(fds) == 1
            os.write(fds[0], b"through the passed fd")
            os.close(fds[0])
            doc = rec.trace()
        f.seek(0)
        assert f.read() == b"through the passed fd"
        assert not doc["channels"]  # AF_UNIX: passed through, not recorded
    finally:
        f.close()
        a.close()
        b.close()


def _tls_contexts(tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


@pytest.mark.parametrize("wrap", ["listener", "per-connection"])
def test_tls_passes_through(tmp_path, wrap):
    """TLS between two traced ends: the TLS bytes go raw, the application talks."""
    sctx, cctx = _tls_contexts(tmp_path)
    with recording("main"):
        srv = socket.create_server(("127.0.0.1", 0))
        addr = srv.getsockname()
        if wrap == "listener":
            srv = sctx.wrap_socket(srv, server_side=True)
        out = {}

        def serve():
            with cutscope.process("server"):
                conn, _ = srv.accept()
                if wrap == "per-connection":
                    conn = sctx.wrap_socket(conn, server_side=True)
                with conn:
                    out["req"] = conn.recv(100)
                    conn.sendall(b"secret reply")

        t = threading.Thread(target=serve)
        t.start()
        with cutscope.process("client"):
            raw = socket.create_connection(addr, timeout=10)
            with cctx.wrap_socket(raw, server_hostname="localhost") as c:
                c.sendall(b"secret request")
                assert c.recv(100) == b"secret reply"
        t.join(10)
        srv.close()
        assert out["req"] == b"secret request"


def test_connection_opened_unseen_to_a_traced_listener_is_raw_and_a_fault():
    """A socket whose connection cutscope did not see open (here: connected through the
    C method) cannot know whether it is framed: it passes raw and records a fault."""
    with recording("p", strict=False) as rec:
        srv = socket.create_server(("127.0.0.1", 0))  # a registered, traced listener
        c = socket.socket()
        socket.socket.__mro__[1].connect(c, srv.getsockname())
        s, _ = srv.accept()
        c.sendall(b"unseen")
        assert s.recv(100) == b"unseen"
        s.sendall(b"back")
        assert c.recv(100) == b"back"
        for x in (c, s, srv):
            x.close()
        rec.trace()
        assert any("could not see it" in f["detail"] for f in rec.store.faults)


def test_another_logical_process_sending_on_the_same_connection():
    """An AS frame names the new sender: message ids stay '<sender>#<seq>' and match."""
    with recording("main") as rec:
        with cutscope.process("A"):
            c, s = pair()
            c.sendall(b"from A|")
        with cutscope.process("A2"):
            c.sendall(b"from A2|")
        with cutscope.process("A"):
            c.sendall(b"A again|")
        with cutscope.process("B"):
            want = b"from A|from A2|A again|"
            assert recv_exactly(s, len(want)) == want
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    senders = [e["msg"].split("#")[0] for e in doc["events"]
               if e["kind"] == "recv" and e["msg"]]
    assert sorted(senders) == ["A", "A", "A2"]


def _blocking_pair():
    c, s = pair()
    c.settimeout(None)
    s.settimeout(None)
    return c, s


def test_blocking_ping_pong_send_sendall_recv_hot_paths():
    """Blocking sockets (the hot paths of send, sendall and recv): replies of every size
    from 1 byte to past one read, in both directions; every receive names its send."""
    with recording("p") as rec:
        c, s = _blocking_pair()
        for i in range(60):
            msg = bytes([65 + i % 26]) * (1 + i * 97 % 3000)
            if i % 2:
                assert c.send(msg) == len(msg)
            else:
                assert c.sendall(msg) is None
            assert recv_exactly(s, len(msg), size=1 + i * 13 % 2000) == msg
            s.sendall(msg[::-1])
            assert recv_exactly(c, len(msg)) == msg[::-1]
        c.close()
        assert s.recv(10) == b""
        s.close()
        doc = rec.trace()
    assert_matched(doc, min_framed=2)
    assert sum(e["kind"] == "send" for e in doc["events"]) == 120


def test_threads_sharing_a_blocking_connection_keep_frames_whole():
    """Four threads sendall on one blocking framed connection at once (the hot path's token
    taken, and contended: the general path waits for it) while one reader reads in odd
    sizes: every message arrives whole, each thread's in its order, each received once."""
    with recording("p") as rec:
        c, s = _blocking_pair()
        c.sendall(b"start|")  # the HELLO goes out with it (the general path)
        assert recv_exactly(s, 6) == b"start|"
        msgs = {t: [b"%d:%d:%s|" % (t, i, b"x" * ((i * 37 + t * 11) % 300)) for i in range(250)]
                for t in range(4)}
        total = sum(len(m) for ms in msgs.values() for m in ms)
        go = threading.Barrier(4)

        def sender(t):
            go.wait(10)
            for m in msgs[t]:
                c.sendall(m)

        ts = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        got = bytearray()
        sizes = [1, 7, 64, 1000, 3, 333]
        i = 0
        while len(got) < total:
            d = s.recv(min(sizes[i % len(sizes)], total - len(got)))
            assert d
            got += d
            i += 1
        for t in ts:
            t.join(10)
        parts = bytes(got).split(b"|")[:-1]
        seen = {t: [] for t in range(4)}
        for p in parts:
            t, k, pad = p.split(b":")
            assert pad == b"x" * ((int(k) * 37 + int(t) * 11) % 300)
            seen[int(t)].append(int(k))
        assert all(seen[t] == list(range(250)) for t in range(4))
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    assert sum(e["kind"] == "send" for e in doc["events"]) == 1001


def test_two_threads_reading_one_connection_lose_no_byte():
    """Two threads recv on one framed connection at once (one takes the hot path, the other
    waits on the general path): together they read exactly the bytes sent, and the stream
    stays in step (a last message read afterwards is intact)."""
    with recording("p") as rec:
        c, s = _blocking_pair()
        s.settimeout(0.5)
        n_msgs = 400
        total = n_msgs * 50
        lock = threading.Lock()
        counts = [0, 0]

        def reader(k):
            while True:
                with lock:
                    if sum(counts) >= total:
                        break
                try:
                    d = s.recv(57)
                except TimeoutError:
                    continue
                with lock:
                    counts[k] += len(d)

        rs = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
        for r in rs:
            r.start()
        for i in range(n_msgs):
            c.sendall(b"%049d|" % i)
        for r in rs:
            r.join(20)
        assert sum(counts) == total
        c.sendall(b"last message")
        s.settimeout(10)
        assert recv_exactly(s, 12) == b"last message"
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)


def test_first_write_that_is_a_tls_record_stays_raw():
    """A traced client whose first bytes are a TLS record (asyncio's TLS writes its records
    through send) sends no HELLO: a peer that reads in C (ssl) gets exactly those bytes."""
    record = b"\x16\x03\x01\x00\x05hello" + b"rest of the handshake"
    raw_recv = socket.socket.__mro__[1].recv
    with recording("p") as rec:
        for how in ("send", "sendall", "sendmsg"):
            c, s = pair()
            getattr(c, how)([record] if how == "sendmsg" else record)
            got = b""
            while len(got) < len(record):
                got += raw_recv(s, 4096)
            assert got == record
            c.close()
            s.close()
        doc = rec.trace()
    sends = [e for e in doc["events"] if e["kind"] == "send"]
    assert len(sends) == 3 and all(e["nbytes"] == len(record) for e in sends)
    framed = {ch["id"] for ch in doc["channels"] if ch["framed"]}
    assert not any(e["channel"] in framed for e in sends)


def test_registry_entries_live_as_long_as_their_connection():
    """Each end of a connection to a traced listener is registered (control directory,
    named by its 4-tuple) from connect/accept to close; the client's intent is gone once
    connect() returned; a detached end is registered as not reading through the wrappers."""
    from cutscope.integrations.sockets import binding
    from cutscope.tracer import control

    me = f"{os.getpid()} "
    with recording("main"):
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        ck, sk = binding._conn_of(c).key, binding._conn_of(s).key
        assert ck == binding._conn_of(s).peer_key and sk == binding._conn_of(c).peer_key
        assert control.get_entry("c", ck) == me + "w"
        assert control.get_entry("c", sk) == me + "w"
        assert control.entry_names("i", f"127.0.0.1,{port},") == []
        fd = s.detach()
        assert control.get_entry("c", sk) == me + "r"
        s = socket.socket(fileno=fd)
        with pytest.raises(BlockingIOError):
            s.recv(1, socket.MSG_DONTWAIT)  # its first call through the wrappers
        assert control.get_entry("c", sk) == me + "w"
        c.close()
        assert control.get_entry("c", ck) is None
        s.close()
        assert control.get_entry("c", sk) is None
        srv.close()


def test_frame_sized_reads_fall_back_into_step_after_the_hello():
    """A reader that takes frame-sized reads (recv(64) for 64-byte messages) while the
    writer is ahead: its first read also takes the HELLO, so it ends mid-frame. The next
    read finishes that frame only, and from then on each read is one whole message
    (where recv's C hot path serves it), instead of every read straddling two frames
    for the life of the connection. The bytes are the application's either way."""
    with recording("p") as rec:
        c, s = pair()
        msgs = [bytes([65 + i]) * 64 for i in range(10)]
        for m in msgs:
            c.sendall(m)
        time.sleep(0.05)  # all of them wait in the reader's socket
        chunks = []
        while sum(map(len, chunks)) < 640:
            chunks.append(s.recv(64))
        assert b"".join(chunks) == b"".join(msgs)
        assert chunks[-9:] == msgs[1:], [len(x) for x in chunks]
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc, min_framed=1)


def test_peer_that_sent_everything_and_closed_before_the_first_read():
    """ftplib's storbinary: the client sends its data and closes (its registration goes)
    before the server's first read. The server still finds the HELLO and unframes."""
    data = bytes(range(256)) * 67
    with recording("p") as rec:
        c, s = pair()
        c.sendall(data)
        c.close()
        s.setblocking(False)
        time.sleep(0.05)
        got = bytearray()
        while True:
            try:
                d = s.recv(1024)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not d:
                break
            got += d
        assert bytes(got) == data
        s.close()
        doc = rec.trace()
    assert_matched(doc, min_framed=1)


def test_client_connecting_by_host_name_is_found_by_a_server_that_speaks_first():
    """A client that connects to "localhost" (not an IP literal) is registered under the
    address it really reached, so the server that speaks first frames its direction."""
    with recording("main") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(("localhost", srv.getsockname()[1]), timeout=10)
        s, _ = srv.accept()
        s.sendall(b"220 ready\r\n")
        assert c.recv(100) == b"220 ready\r\n"
        c.sendall(b"quit\r\n")
        assert s.recv(100) == b"quit\r\n"
        c.close()
        s.close()
        srv.close()
        doc = rec.trace()
    assert_matched(doc, min_framed=2)


def test_a_forked_child_does_not_inherit_its_parents_connects_in_progress():
    """A connect in progress in the parent at fork time (its intent registered) ends in
    the parent; the child, a server on that address, must not wait on it for good."""
    from cutscope.integrations.sockets import registry

    with recording("main"):
        name = registry._intent("127.0.0.1", 1)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.read(r, 1)  # the parent's connect has returned
                os._exit(0 if not registry._connecting_to(("127.0.0.1", 1)) else 1)
            except BaseException:
                os._exit(2)
        registry._intent_done(name)
        os.write(w, b"x")
        _, status = os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert os.waitstatus_to_exitcode(status) == 0
