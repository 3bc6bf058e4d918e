"""Every receive entry point (recv, recv_into, recvfrom, recvfrom_into, recvmsg,
recvmsg_into) and sendmsg/sendto behave as the C methods do on traced sockets: the
same bytes (never a HELLO, a frame header or an envelope), the same return values
and flags, the same errors for bad arguments; a peer that sends bytes that are not
frames fails its connection as a reset does. Real sockets on loopback."""

from __future__ import annotations

import _socket
import array
import errno
import fcntl
import select
import socket
import struct
import termios
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutscope.testing import recording
from cutscope.tracer import wire
from _sockutil import assert_matched, pair, recv_exactly

MSG = b"Michael Gilfix was here\xe1\x88\xb4\r\n"
_ss = _socket.socket


def _queued(sock) -> int:
    """Bytes in the kernel's receive queue of ``sock`` (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def _wait_queued(sock, n: int) -> None:
    deadline = time.monotonic() + 10
    while _queued(sock) < n:
        assert time.monotonic() < deadline, "bytes never arrived"
        time.sleep(0.002)


# -- one reader per entry point: each returns (bytes, ancdata, msg_flags, address) ------------

def _r_recv(s, n, flags=0):
    return s.recv(n, flags), [], 0, None


def _r_recv_into(s, n, flags=0):
    buf = bytearray(n + 7)
    k = s.recv_into(buf, n, flags)
    assert buf[k:] == bytearray(n + 7 - k)  # nothing written past what was returned
    return bytes(buf[:k]), [], 0, None


def _r_recvfrom(s, n, flags=0):
    d, a = s.recvfrom(n, flags)
    return d, [], 0, a


def _r_recvfrom_into(s, n, flags=0):
    buf = bytearray(n)
    k, a = s.recvfrom_into(buf, 0, flags)
    return bytes(buf[:k]), [], 0, a


def _r_recvmsg(s, n, flags=0):
    return s.recvmsg(n, 0, flags)


def _r_recvmsg_into(s, n, flags=0):
    # scattered over three buffers (one an array, one a memoryview slice)
    a = bytearray(n // 3)
    b = array.array("B", bytes(n // 3))
    c = bytearray(n - 2 * (n // 3) + 4)
    k, anc, fl, addr = s.recvmsg_into([a, b, memoryview(c)[:n - 2 * (n // 3)]], 0, flags)
    assert c[n - 2 * (n // 3):] == bytearray(4)
    return (bytes(a) + b.tobytes() + bytes(c))[:k], anc, fl, addr


READERS = {"recv": _r_recv, "recv_into": _r_recv_into, "recvfrom": _r_recvfrom,
           "recvfrom_into": _r_recvfrom_into, "recvmsg": _r_recvmsg,
           "recvmsg_into": _r_recvmsg_into}


@pytest.mark.parametrize("how", sorted(READERS))
def test_every_receive_entry_point_on_framed_tcp_gives_payload_only(how):
    read = READERS[how]
    with recording("p") as rec:
        c, s = pair()
        c.sendall(MSG)
        data, anc, flags, addr = read(s, 1024)
        assert data == MSG  # never the HELLO or a header
        assert (anc, flags, addr) == ([], 0, None)
        # a message read in two pieces, then a peek that shows payload only
        c.sendall(b"0123456789")
        assert read(s, 4)[0] == b"0123"
        assert read(s, 100)[0] == b"456789"
        c.sendall(b"peek me")
        assert read(s, 4, socket.MSG_PEEK)[0] == b"peek"
        assert read(s, 100)[0] == b"peek me"
        c.close()
        assert read(s, 100)[0] == b""
        s.close()
        doc = rec.trace()
    assert_matched(doc, min_framed=1)
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    assert len(recvs) == 3  # one per message; the peek recorded nothing


def _udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))  # a traced, bound address: datagrams to it are enveloped
    a.bind(("127.0.0.1", 0))
    a.settimeout(5)
    b.settimeout(5)
    return a, b


@pytest.mark.parametrize("how", sorted(READERS))
def test_every_receive_entry_point_on_udp_strips_the_envelope(how):
    read = READERS[how]
    with recording("u") as rec:
        a, b = _udp_pair()
        a.sendto(MSG, b.getsockname())
        data, anc, flags, addr = read(b, 1024)
        assert data == MSG
        assert anc == [] and not flags & socket.MSG_TRUNC
        if addr is not None:
            assert addr == a.getsockname()
        a.sendto(MSG, b.getsockname())
        data, anc, flags, addr = read(b, len(MSG) - 3)  # truncated as a plain read is
        assert data == MSG[:-3]
        if how.startswith("recvmsg"):
            assert flags & socket.MSG_TRUNC
        a.close()
        b.close()
        doc = rec.trace()
    assert [c for c in doc["channels"] if c["transport"] == "udp" and c["framed"]]
    assert_matched(doc)


def test_recvmsg_into_on_udp6_keeps_the_kernels_ancillary_data():
    if not socket.has_ipv6 or not hasattr(socket, "IPV6_RECVHOPLIMIT"):
        pytest.skip("no IPv6")
    with recording("u"):
        a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            b.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback")
        b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        b.settimeout(5)
        a.sendto(MSG, b.getsockname())
        buf = bytearray(100)
        n, anc, flags, addr = b.recvmsg_into([buf], socket.CMSG_SPACE(4))
        assert buf[:n] == MSG
        assert [(lvl, typ) for lvl, typ, _ in anc] == [(socket.IPPROTO_IPV6,
                                                         socket.IPV6_HOPLIMIT)]
        assert not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)
        a.sendto(MSG, b.getsockname())
        n, anc, flags, addr = b.recvmsg_into([buf], 1)  # too small for the item
        assert buf[:n] == MSG and anc == [] and flags & socket.MSG_CTRUNC
        a.close()
        b.close()


# -- sendmsg: partial sends continue the frame; errors as the C method's ----------------------

@pytest.mark.parametrize("mode", ["dontwait", "timeout"])
def test_sendmsg_until_the_buffer_is_full_then_every_byte_arrives(mode):
    with recording("p") as rec:
        c, s = pair()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sent = 0
        k = 0
        c.settimeout(0.03 if mode == "timeout" else None)
        with pytest.raises(OSError) as info:
            while True:
                chunk = bytes([65 + k % 26]) * 512
                if mode == "dontwait":
                    n = c.sendmsg([chunk[:100], chunk[100:]], [], socket.MSG_DONTWAIT)
                else:
                    n = c.sendmsg([chunk])
                assert 0 < n <= 512
                sent += n  # (the rest of a chunk sent in part is never sent)
                k += 1
        if mode == "dontwait":
            assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        else:
            assert isinstance(info.value, TimeoutError)
        # the reader's first receive of 512 gets 512 bytes (they are all there)
        first = s.recv(512)
        assert first == b"A" * 512
        got = bytearray(first)
        c.settimeout(None)
        c.sendall(b"!")
        while not got.endswith(b"!"):
            d = s.recv(65536)
            assert d
            got += d
        assert len(got) == sent + 1
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)


def test_a_read_gets_every_byte_already_there_despite_headers():
    """Untraced, recv(512) with 1000 bytes queued returns 512: the frame headers and the
    HELLO that share the kernel's queue do not make it return fewer."""
    with recording("p"):
        c, s = pair()
        for i in range(100):
            c.sendall(b"%010d" % i)
        _wait_queued(s, 1000 + 100 * wire.HDR_SIZE)
        got = s.recv(512)
        assert got == b"".join(b"%010d" % i for i in range(100))[:512]
        buf = bytearray(300)
        assert s.recv_into(buf) == 300
        c.close()
        s.close()


def _errors(calls):
    out = []
    for fn in calls:
        try:
            fn()
        except Exception as exc:
            out.append((type(exc), str(exc)))
        else:
            out.append(None)
    return out


def _bad_calls(s, family_dgram: bool, dest):
    buf = bytearray(10)
    calls = [
        lambda: s.recv(-1), lambda: s.recv("x"), lambda: s.recv(1, "x"), lambda: s.recv(),
        lambda: s.recv(1, 2**40), lambda: s.recv(1, 0, 0), lambda: s.recvfrom(),
        lambda: s.recvfrom(1, 0, 0), lambda: s.recv_into(), lambda: s.recv_into(buf, 0, 0, 0),
        lambda: s.recvfrom_into(), lambda: s.recvfrom_into(buf, 0, 0, 0), lambda: s.send(),
        lambda: s.send(b"x", 0, 0), lambda: s.sendall(), lambda: s.sendall(b"x", 0, 0),
        lambda: s.recv_into(buf, -1), lambda: s.recv_into(buf, 11), lambda: s.recv_into(b"ro"),
        lambda: s.recv_into(object()), lambda: s.recv_into(buf, 0, "x"),
        lambda: s.recvfrom(-1), lambda: s.recvfrom(object()), lambda: s.recvfrom(1, object()),
        lambda: s.recvfrom_into(buf, -1), lambda: s.recvfrom_into(buf, 11),
        lambda: s.recvfrom_into(b"ro"),
        lambda: s.recvmsg(), lambda: s.recvmsg(-1, 0, 0), lambda: s.recvmsg(10, -1, 0),
        lambda: s.recvmsg([bytearray(10)], 0, 0), lambda: s.recvmsg(object(), 0, 0),
        lambda: s.recvmsg(10, object(), 0), lambda: s.recvmsg(10, 0, object()),
        lambda: s.recvmsg(10, bufsize=1),
        lambda: s.recvmsg_into(), lambda: s.recvmsg_into(10, 0, 0),
        lambda: s.recvmsg_into(buf, 0, 0), lambda: s.recvmsg_into([object()], 0, 0),
        lambda: s.recvmsg_into([b"I'm not writable"], 0, 0),
        lambda: s.recvmsg_into([buf, object()], 0, 0), lambda: s.recvmsg_into([buf], -1, 0),
        lambda: s.recvmsg_into([buf], object(), 0), lambda: s.recvmsg_into([buf], 0, object()),
        lambda: s.send("str"), lambda: s.send(b"x", "y"), lambda: s.sendall(5j),
        lambda: s.sendmsg(), lambda: s.sendmsg(b"not in an iterable"),
        lambda: s.sendmsg(object()), lambda: s.sendmsg([object()]),
        lambda: s.sendmsg([MSG, object()]), lambda: s.sendmsg([MSG], object()),
        lambda: s.sendmsg([MSG], [], object()), lambda: s.sendmsg([MSG], [object()]),
        lambda: s.sendmsg([MSG], [(object(), 0, b"data")]), lambda: s.sendmsg([MSG], [(0, 0)]),
        lambda: s.sendto("\u2620", dest), lambda: s.sendto(5j, dest),
        lambda: s.sendto(b"foo", None), lambda: s.sendto("\u2620", 0, dest),
        lambda: s.sendto(b"foo", 0, None), lambda: s.sendto(b"foo", "bar", dest),
        lambda: s.sendto(b"foo", None, None), lambda: s.sendto(b"foo"),
        lambda: s.sendto(b"foo", 0, dest, 4), lambda: s.sendto(b"foo", flags=0),
        # keywords: the methods that take none, and names that no method takes
        lambda: s.recv(1, flags=0), lambda: s.recv(bufsize=1), lambda: s.send(b"x", flags=0),
        lambda: s.send(data=b"x"), lambda: s.sendall(b"x", flags=0),
        lambda: s.recvfrom(bufsize=1), lambda: s.recvfrom(1, flags=0),
        lambda: s.recv_into(buf, zz=1), lambda: s.recv_into(buf, 2, zz=1),
        lambda: s.recv_into(buf, flags=0, zz=1), lambda: s.recv_into(buf, 1, 0, zz=1),
        lambda: s.recvfrom_into(buf, q=1), lambda: s.recvfrom_into(nbytes=1),
        lambda: s.sendmsg(buffers=[MSG]), lambda: s.recvmsg_into(buffers=[buf]),
        lambda: s.sendto(b"foo", address=dest),
    ]
    if not family_dgram:
        calls.append(lambda: s.sendmsg([MSG], [], 0, object()))
    return calls


def test_bad_arguments_raise_what_the_c_methods_raise():
    """The same exception type and message as an untraced socket, on a framed TCP
    connection and on a UDP socket whose destination is traced (enveloped)."""
    # untraced, first: the reference
    srv = socket.create_server(("127.0.0.1", 0))
    c0 = socket.create_connection(srv.getsockname())
    s0, _ = srv.accept()
    srv.close()
    u0 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u0.bind(("127.0.0.1", 0))
    want_tcp = _errors(_bad_calls(s0, False, s0.getsockname()))
    want_udp = _errors(_bad_calls(u0, True, u0.getsockname()))
    for x in (c0, s0, u0):
        x.close()
    assert all(w is not None for w in want_tcp), want_tcp
    with recording("p") as rec:
        c, s = pair()
        c.sendall(b"hi")
        assert s.recv(10) == b"hi"  # framed both ways from here
        s.sendall(b"ho")
        assert c.recv(10) == b"ho"
        got_tcp = _errors(_bad_calls(s, False, s.getsockname()))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        got_udp = _errors(_bad_calls(u, True, u.getsockname()))
        # nothing was sent or consumed by the failed calls
        c.sendall(b"after")
        assert s.recv(10) == b"after"
        u.settimeout(0.2)
        with pytest.raises(TimeoutError):
            u.recv(100)
        for x in (c, s, u):
            x.close()
        doc = rec.trace()
    assert got_tcp == want_tcp
    assert got_udp == want_udp
    assert_matched(doc)


# -- a hostile peer: a valid HELLO, then bytes that are not frames -----------------------------

def _hostile_payloads():
    h = wire.hello("c99", "evil")
    frame = wire.data_header(2, 1, 1) + b"ok"
    return {
        "unknown type": h + frame + b"\x09garbage",
        "marker of snapshot 0": h + frame + wire.marker(0, "x"),
        "marker of a snapshot id out of range": h + frame + struct.pack(
            "!BQH", wire.MARKER, 2**64 - 1, 1) + b"x",
        "channel id not ascii": wire.MAGIC + bytes([wire.VERSION, 2]) + b"\xff\xfe" +
        b"\x00\x01e" + frame,
        "HELLO of another version": wire.MAGIC + bytes([99, 1]) + b"c\x00\x01e" + frame,
    }


def _raw_client(addr, payload):
    """A peer known as traced (connected through the wrappers, so registered), that
    writes ``payload`` with the C method of _socket.socket, past the wrappers."""
    c = socket.create_connection(addr, timeout=10)
    _ss.sendall(c, payload)
    return c


@pytest.mark.parametrize("kind", sorted(_hostile_payloads()))
@pytest.mark.parametrize("how", sorted(READERS))
def test_hostile_peer_fails_its_connection_as_a_reset(kind, how):
    payload = _hostile_payloads()[kind]
    read = READERS[how]
    with recording("srv") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        c = _raw_client(srv.getsockname(), payload)
        s, _ = srv.accept()
        s.settimeout(10)
        got = b""
        with pytest.raises(ConnectionResetError) as info:
            for _ in range(5):
                got += read(s, 100)[0]
        assert info.value.errno == errno.ECONNRESET
        assert not isinstance(info.value, wire.WireError)
        if payload.startswith(wire.hello("c99", "evil")):
            assert got == b"ok"  # the bytes before the bad ones are the peer's data
        # later calls behave as on a reset socket: end of stream, and sends fail
        assert read(s, 100)[0] == b""
        assert select.select([s], [], [], 5)[0] == [s]
        with pytest.raises(BrokenPipeError):
            s.send(b"x")
        # the server goes on serving others
        c2 = socket.create_connection(srv.getsockname(), timeout=10)
        s2, _ = srv.accept()
        s2.settimeout(10)
        c2.sendall(b"hello")
        assert s2.recv(100) == b"hello"
        s2.sendall(b"world")
        assert c2.recv(100) == b"world"
        for x in (c, s, c2, s2, srv):
            x.close()
        rec.trace()
        assert any("not frames" in f["detail"] or "reset" in f["location"]
                   for f in rec.store.faults), rec.store.faults


def test_hostile_peer_under_a_threaded_server_other_clients_are_served():
    import socketserver

    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                while True:
                    d = self.request.recv(1000)
                    if not d:
                        return
                    self.request.sendall(d)
            except ConnectionResetError:
                self.server.resets.append(True)

    with recording("srv") as rec:
        with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
            server.resets = []
            server.daemon_threads = True
            t = threading.Thread(target=server.serve_forever, daemon=True)
            t.start()
            bad = _raw_client(server.server_address, _hostile_payloads()["unknown type"])
            good = [socket.create_connection(server.server_address, timeout=10) for _ in range(3)]
            for i, g in enumerate(good):
                g.sendall(b"msg %d" % i)
            for i, g in enumerate(good):
                assert g.recv(100) == b"msg %d" % i
            # the hostile connection: its data echoed, then shut down by the server's side
            bad.settimeout(10)
            echoed = b""
            while True:
                d = _ss.recv(bad, 100)
                if not d:
                    break
                echoed += d
            assert echoed.endswith(b"ok")  # (framed: the peer said HELLO)
            deadline = time.monotonic() + 10
            while not server.resets:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for g in good:
                g.close()
            bad.close()
            server.shutdown()
        rec.trace()
        assert any("not frames" in f["detail"] or "reset" in f["location"]
                   for f in rec.store.faults)


# -- property: random chunkings through random entry points ------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sends=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
       sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=10),
       hows=st.lists(st.sampled_from(sorted(READERS)), min_size=1, max_size=6),
       sendmsg=st.booleans())
def test_random_chunkings_through_every_entry_point(sends, sizes, hows, sendmsg):
    total = b"".join(sends)
    with recording("h") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)
        a.connect(srv.getsockname())
        b, _ = srv.accept()
        srv.close()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        a.setblocking(False)
        b.setblocking(False)
        got = bytearray()
        cur = off = i = 0
        deadline = time.monotonic() + 30
        while len(got) < len(total):
            assert time.monotonic() < deadline, "stalled"
            if cur < len(sends):
                try:
                    rest = sends[cur][off:]
                    n = a.sendmsg([rest[:5], rest[5:]]) if sendmsg else a.send(rest)
                    assert 0 < n <= len(rest)
                    off += n
                    if off == len(sends[cur]):
                        cur, off = cur + 1, 0
                except BlockingIOError:
                    pass
            size = sizes[i % len(sizes)]
            how = hows[i % len(hows)]
            i += 1
            try:
                d = READERS[how](b, size)[0]
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


def test_bad_marker_on_an_idle_channel_is_left_to_the_applications_receive():
    """The recorder's tick consumes markers at the head of idle incoming channels while a
    snapshot runs; a bad one there is not its to judge (strict mode would raise in the
    tick): the application's next receive fails the connection."""
    import cutscope
    from cutscope.integrations.sockets import instrumentor

    with recording("main") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        c = _raw_client(srv.getsockname(), wire.hello("c99", "evil") +
                        wire.data_header(2, 1, 1) + b"ok")
        with cutscope.process("B"):
            s, _ = srv.accept()
            s.settimeout(10)
            assert s.recv(100) == b"ok"
        done = []

        def snap():
            with cutscope.process("B"):
                done.append(cutscope.snapshot(timeout=1.5))

        t = threading.Thread(target=snap)
        t.start()
        deadline = time.monotonic() + 10
        while not rec.tracer.processes["B"].snaps:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _ss.sendall(c, wire.marker(0, "evil"))
        _wait_queued(s, len(wire.marker(0, "evil")))
        instrumentor._tick(rec.tracer)  # raises (strict) if it judges the bad marker
        with cutscope.process("B"):
            with pytest.raises(ConnectionResetError):
                s.recv(100)
        t.join(10)
        assert done  # (complete: the reset ended the channel)
        for x in (c, s, srv):
            x.close()


def test_a_marker_that_a_top_up_read_brings_is_recorded_before_the_data_of_the_call():
    """B's recv(12) reads on past control bytes (a top-up) and meets A's first marker
    behind two 5-byte messages it has not delivered yet: B records its state before
    those receives, so they are in transit on A -> B (B's application has not seen them)
    and the cut agrees with the application's own state."""
    import base64

    import cutscope
    from _checks import assert_snapshot_is_its_cut

    with recording("main") as rec:
        with cutscope.process("A"):
            c, s = pair()
            c.sendall(b"warm")
        seen = [0]
        with cutscope.process("B"):
            cutscope.state(lambda: {"seen": seen[0]})
            assert s.recv(100) == b"warm"  # at a frame boundary from here
        with cutscope.process("A"):
            c.sendall(b"12345")
            c.sendall(b"67890")
        box = []
        t = threading.Thread(target=lambda: box.append(
            cutscope.process("A")(cutscope.snapshot)(timeout=10)))
        t.start()
        marker = len(wire.marker(1, "A"))
        _wait_queued(s, 2 * (wire.HDR_SIZE + 5) + marker)  # A's marker is out
        with cutscope.process("A"):
            c.sendall(b"abcde")
        _wait_queued(s, 3 * (wire.HDR_SIZE + 5) + marker)
        with cutscope.process("B"):
            got = s.recv(12)
            assert got == b"1234567890ab"
            seen[0] += len(got)
            assert s.recv(100) == b"cde"
        t.join(10)
        snap = box[0]
        assert snap.status == "complete", snap.missing
        assert snap.states["B"]["seen"] == 0
        payloads = [base64.b64decode(m["payload_b64"]) for msgs in snap.channels.values()
                    for m in msgs]
        assert payloads == [b"12345", b"67890"]
        assert_snapshot_is_its_cut(rec.trace(), snap)
        c.close()
        s.close()


@pytest.mark.parametrize("how", sorted(READERS))
def test_a_reset_met_after_payload_in_the_same_call_is_raised_by_the_next(how):
    """recv(27) reads 48 bytes (two 3-byte frames: the request was filled, so it reads
    on) and the kernel then reports the peer's reset: the call returns the 6 payload
    bytes and the next one raises ConnectionResetError, as a plain receive would."""
    read = READERS[how]
    with recording("p"):
        srv = socket.create_server(("127.0.0.1", 0))
        c = _raw_client(srv.getsockname(), wire.hello("c99", "peer") +
                        wire.data_header(4, 1, 1) + b"warm")
        s, _ = srv.accept()
        s.settimeout(10)
        assert read(s, 100)[0] == b"warm"
        _ss.sendall(c, wire.data_header(3, 2, 2) + b"abc" + wire.data_header(3, 3, 3) + b"def")
        _wait_queued(s, 48)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # a reset
        time.sleep(0.2)  # (loopback delivers the RST at once; margin for a loaded machine)
        assert read(s, 27)[0] == b"abcdef"
        with pytest.raises(ConnectionResetError):
            read(s, 27)
        s.close()
        srv.close()


@pytest.mark.parametrize("how", ["recv", "recv_into", "makefile"])
def test_several_frames_in_one_read_come_out_together_each_recorded(how):
    """A response's headers and body sent by two sends and read by one receive (as
    http.client and BaseHTTPRequestHandler do): the receive returns both payloads, as
    untraced, and records each message once, in order, with its own payload; a last
    frame still arriving is finished by the next receives."""
    import base64

    head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello"
    big = bytes(range(256)) * 4096  # 1 MiB: arrives in several reads
    with recording("p", capture_payload=8) as rec:
        c, s = pair()
        c.sendall(b"hi")  # the HELLO is read with this one
        assert recv_exactly(s, 2) == b"hi"
        c.sendall(head)
        c.sendall(body)
        c.sendall(b"x")
        _wait_queued(s, len(head) + len(body) + 1 + 3 * wire.HDR_SIZE)
        if how == "makefile":
            f = s.makefile("rb")
            assert f.readline() == b"HTTP/1.1 200 OK\r\n"
            assert f.read(len(head) - 17 + len(body) + 1) == head[17:] + body + b"x"
        else:
            data = _READ_ONE[how](s, 4096)
            assert data == head + body + b"x"
        sender = threading.Thread(target=c.sendall, args=(head + big,))
        sender.start()
        got = bytearray()
        while len(got) < len(head) + len(big):
            d = _READ_ONE[how if how != "makefile" else "recv"](s, 1 << 21)
            assert d
            got += d
        sender.join(10)
        assert bytes(got) == head + big
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    assert [e["nbytes"] for e in recvs] == [2, len(head), len(body), 1, len(head) + len(big)]
    assert [base64.b64decode(e["payload_b64"]) for e in recvs[1:4]] == [head[:8], body, b"x"]


@pytest.mark.parametrize("how", ["recv", "recv_into"])
def test_a_read_that_ends_on_a_frame_header_records_that_message_with_its_first_bytes(how):
    """A read that brings one whole frame and then only the next frame's header (the
    kernel split that frame after its header): the receive returns the first payload,
    and the second message is recorded when its first bytes are received, with those
    bytes as its payload, as when each frame comes in a read of its own."""
    import base64
    import os

    with recording("p", capture_payload=8) as rec:
        c, s = pair()
        c.sendall(b"hi")  # the HELLO is read with this one
        assert recv_exactly(s, 2) == b"hi"
        # frames written under cutscope's feet, on the descriptor: seq 0 (no id)
        os.write(c.fileno(), wire.HDR.pack(wire.DATA, 5, 0, 50) + b"first" +
                 wire.HDR.pack(wire.DATA, 6, 0, 60))
        _wait_queued(s, 5 + 2 * wire.HDR_SIZE)
        assert _READ_ONE[how](s, 4096) == b"first"
        recvs = [e for e in rec.trace()["events"] if e["kind"] == "recv"]
        assert [e["nbytes"] for e in recvs] == [2, 5]
        os.write(c.fileno(), b"second")
        assert _READ_ONE[how](s, 4096) == b"second"
        c.close()
        s.close()
        doc = rec.trace()
    recvs = [e for e in doc["events"] if e["kind"] == "recv"]
    assert [e["nbytes"] for e in recvs] == [2, 5, 6]
    assert [base64.b64decode(e["payload_b64"]) for e in recvs[1:]] == [b"first", b"second"]


def _recv_into_bytes(s, n):
    buf = bytearray(n)
    k = s.recv_into(buf)
    return bytes(buf[:k])


_READ_ONE = {"recv": lambda s, n: s.recv(n), "recv_into": _recv_into_bytes}


def test_nonblocking_send_until_the_buffer_is_full_then_every_byte_arrives():
    """send() on a non-blocking framed socket (asyncio's transports write so): each call
    returns what the kernel took of the payload, a full buffer raises BlockingIOError as
    untraced, the rest of a frame taken in part is continued by the next send, and the
    reader gets exactly the bytes the sends reported."""
    with recording("p") as rec:
        c, s = pair()
        c.sendall(b"hi")  # the HELLO goes with this one
        assert recv_exactly(s, 2) == b"hi"
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.setblocking(False)
        expect = bytearray()
        k = 0
        for _round in range(3):
            with pytest.raises(BlockingIOError):
                while True:
                    chunk = bytes([65 + k % 26]) * 700
                    n = c.send(chunk)
                    assert 0 < n <= 700
                    expect += chunk[:n]
                    k += 1
            got = bytearray()
            while len(got) < len(expect):
                got += s.recv(65536)
            assert got == expect
            expect.clear()
        c.setblocking(True)
        c.sendall(b"!")
        assert s.recv(10) == b"!"
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
