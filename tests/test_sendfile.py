"""os.sendfile on a traced connection: a framed direction stays framed (asyncio's
loop.sock_sendfile and transports' sendfile, socket.sendfile, user code); a raw one
keeps the real call."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import threading

import pytest

from cutscope.testing import recording
from _sockutil import assert_matched, framed_tcp, pair, recv_exactly


@pytest.fixture
def blob(tmp_path):
    data = os.urandom(3_000_000 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def real_sendfile(monkeypatch):
    """A spy in front of the real os.sendfile, put there before the wrappers go in (so
    they take it for the real one): how many calls reached the kernel's sendfile."""
    real = os.sendfile
    calls = []

    def spy(out_fd, in_fd, offset, count):
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", spy)
    return calls


def _framed_sent(doc):
    framed = framed_tcp(doc)
    return sum(e["nbytes"] for e in doc["events"] if e["kind"] == "send" and e["channel"] in framed)


async def _serve_and_collect(port_box, got, done, accepted):
    async def handle(r, w):
        accepted.set()
        while True:
            b = await r.read(65536)
            if not b:
                break
            got.extend(b)
        w.close()
        done.set()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_box.append(srv.sockets[0].getsockname()[1])
    return srv


@pytest.mark.parametrize("how", ["sock_sendfile", "transport"])
def test_asyncio_sendfile_into_a_framed_connection(blob, how, real_sendfile):
    """Both ends traced (framed): asyncio's native sendfile path calls os.sendfile on the
    socket's descriptor; the reader gets exactly the file's bytes, framed and matched."""
    path, data = blob
    offset, count = 1000, 2_500_000

    async def main():
        got, done, accepted, port = bytearray(), asyncio.Event(), asyncio.Event(), []
        srv = await _serve_and_collect(port, got, done, accepted)
        loop = asyncio.get_running_loop()
        with open(path, "rb") as f:
            if how == "sock_sendfile":
                s = socket.create_connection(("127.0.0.1", port[0]))
                s.setblocking(False)
                await asyncio.wait_for(accepted.wait(), 30)
                n = await loop.sock_sendfile(s, f, offset, count)
                pos = f.tell()
                s.close()
            else:
                r, w = await asyncio.open_connection("127.0.0.1", port[0])
                await asyncio.wait_for(accepted.wait(), 30)
                w.write(b"head")
                n = await loop.sendfile(w.transport, f, offset, count)
                pos = f.tell()
                w.write(b"tail")
                w.close()
        await asyncio.wait_for(done.wait(), 30)
        srv.close()
        await srv.wait_closed()
        return n, pos, bytes(got)

    with recording("p") as rec:
        n, pos, got = asyncio.run(main())
        doc = rec.trace()
    want = data[offset:offset + count]
    if how == "transport":
        want = b"head" + want + b"tail"
    assert n == count and pos == offset + count
    assert got == want
    assert_matched(doc)
    assert _framed_sent(doc) == len(want)
    assert not real_sendfile  # nothing went through the kernel's sendfile unframed


def test_os_sendfile_blocking_offsets_and_file_position(blob, real_sendfile):
    """User code calling os.sendfile on a blocking framed socket: an explicit offset leaves
    the file's position alone; offset None reads from it and moves it by what was sent."""
    path, data = blob
    with recording("p") as rec:
        c, s = pair()
        c.settimeout(None)
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("b", recv_exactly(s, 700_000 + 5000)))
        t.start()
        with open(path, "rb") as f:
            assert os.sendfile(c.fileno(), f.fileno(), 10, 700_000) == 700_000
            assert f.tell() == 0
            f.seek(123)
            assert os.sendfile(c.fileno(), f.fileno(), None, 5000) == 5000
            assert f.tell() == 123 + 5000
            assert os.sendfile(c.fileno(), f.fileno(), len(data), 10) == 0  # at the end
        t.join(30)
        assert got["b"] == data[10:700_010] + data[123:5123]
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    assert _framed_sent(doc) == 705_000
    assert not real_sendfile


def test_os_sendfile_nonblocking_partial_counts_keep_the_stream(blob):
    """A non-blocking descriptor with a tiny send buffer: os.sendfile returns what the
    kernel took, or raises BlockingIOError; the caller's loop (offset += n) ends with the
    reader holding exactly the file's bytes."""
    path, data = blob
    data = data[:600_000]
    with recording("p") as rec:
        c, s = pair()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.setblocking(False)
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("b", recv_exactly(s, len(data), 1000)))
        t.start()
        partial = eagain = 0
        off = 0
        with open(path, "rb") as f:
            while off < len(data):
                try:
                    n = os.sendfile(c.fileno(), f.fileno(), off, len(data) - off)
                except BlockingIOError:
                    eagain += 1
                    select.select([], [c], [], 10)  # wait for room
                    continue
                assert n > 0
                partial += n < len(data) - off
                off += n
        t.join(30)
        assert got["b"] == data
        assert partial and eagain  # the partial and EAGAIN paths were taken
        c.close()
        s.close()
        doc = rec.trace()
    assert_matched(doc)
    assert _framed_sent(doc) == len(data)


def test_raw_connection_and_file_copies_keep_the_real_sendfile(blob, tmp_path, real_sendfile):
    """A connection to an untraced peer (here: a listener opened before tracing) is raw:
    the real os.sendfile runs and its bytes are recorded as a raw send; a file-to-file
    copy (shutil) never looks like a connection."""
    path, data = blob
    srv = socket.create_server(("127.0.0.1", 0))  # not registered: its clients stay raw
    with recording("p") as rec:
        c = socket.create_connection(srv.getsockname(), timeout=10)
        s, _ = srv.accept()
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("b", recv_exactly(s, 100_000)))
        t.start()
        with open(path, "rb") as f:
            assert os.sendfile(c.fileno(), f.fileno(), 0, 100_000) == 100_000
        t.join(30)
        assert got["b"] == data[:100_000]
        calls_to_socket = len(real_sendfile)
        shutil.copyfile(path, tmp_path / "copy.bin")
        c.close()
        s.close()
        doc = rec.trace()
    srv.close()
    assert calls_to_socket == 1 and len(real_sendfile) > 1  # the copy used it too
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert not framed_tcp(doc)
    sends = [e for e in doc["events"] if e["kind"] == "send"]
    assert sum(e["nbytes"] for e in sends) == 100_000


def test_uninstrument_restores_os_sendfile():
    real = os.sendfile
    with recording("p"):
        assert os.sendfile is not real
    assert os.sendfile is real


@pytest.mark.parametrize("call", ["send", "recv_into"])
def test_a_failed_call_leaves_no_export_of_the_callers_bytearray(call):
    """After a send (recv_into) on a framed connection fails, the caller may resize its
    bytearray while the exception is alive, as it can untraced (asyncio clears its write
    buffer in the handler of a failed send)."""
    import struct

    with recording("p"):
        c, s = pair()
        c.sendall(b"x")  # both directions framed
        assert s.recv(10) == b"x"
        s.sendall(b"y")
        assert c.recv(10) == b"y"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # a reset
        c.setblocking(False)
        select.select([c], [], [], 10)
        buf = bytearray(b"z" * 100)
        try:
            for _ in range(100):
                if call == "send":
                    c.send(buf)
                else:
                    c.recv_into(buf)
                select.select([c], [], [], 0.05)
            pytest.fail("no error on a reset connection")
        except (ConnectionError, BlockingIOError):
            buf.clear()  # BufferError if a view of it were kept
        c.close()
