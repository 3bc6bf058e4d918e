"""Negotiation without unread bytes, and connections that cross processes (real
processes on loopback): a traced end learns that its peer is traced from the
registry (docs/protocol.md, "Negotiation"), sends cutscope bytes only with
application bytes, and hands a connection's framing state over with its
descriptor."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import cutscope
from cutscope.viewer.export import load
from _sockutil import CUTSCOPE, PY, assert_matched, clean_env, pair, recv_exactly, start_server

PEERS = textwrap.dedent(r'''
    import asyncio, socket, sys, time
    mode = sys.argv[1]

    def listen():
        srv = socket.create_server(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
        return srv

    if mode == "banner-close":  # speaks first, closes without reading (imaplib's test)
        srv = listen()
        c, _ = srv.accept()
        c.sendall(b"* OK " + b"x" * 100 + b"\r\n")
        time.sleep(0.5)  # whatever the client sent meanwhile stays unread
        c.close()
    elif mode == "both-first":  # writes at once, then reads (dask's comm handshake)
        srv = listen()
        c, _ = srv.accept()
        c.settimeout(20)
        c.sendall(b"server-hello\n")
        got = b""
        while not got.endswith(b"\n"):
            d = c.recv(100)
            if not d:
                break
            got += d
        c.sendall(got.upper())
        c.recv(100)
        c.close()
        print(repr(got), flush=True)
    elif mode in ("async-greet", "async-both"):
        async def handle(r, w):
            w.write(b"220 ready\n")
            await w.drain()
            line = await r.readline()
            w.write(line.upper())
            await w.drain()
            await r.read()
            w.close()
            print(repr(line), flush=True)
            done.set()

        async def main():
            global done
            done = asyncio.Event()
            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            print(srv.sockets[0].getsockname()[1], flush=True)
            await asyncio.wait_for(done.wait(), 30)
            srv.close()

        asyncio.run(main())
    elif mode == "fd-receiver":  # gets a connection by SCM_RIGHTS, reads a line, answers
        u = socket.socket(socket.AF_UNIX)
        u.connect(sys.argv[2])
        msg, fds, _, _ = socket.recv_fds(u, 10, 1)
        s = socket.socket(fileno=fds[0])
        s.settimeout(20)
        got = b""
        while not got.endswith(b"\n"):
            got += s.recv(100)
        s.sendall(got.upper())
        s.close()
        print(repr(got), flush=True)
''')


@pytest.fixture
def peers(tmp_path):
    p = tmp_path / "peers.py"
    p.write_text(PEERS)
    return str(p)


@pytest.fixture
def spawned():
    """Processes a test starts: killed at its end if a failure left them running."""
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _traced_server(db_path, peers, mode, spawned, name="srv"):
    proc, port = start_server([CUTSCOPE, "run", "--db", db_path, "--name", name, "--", PY, peers,
                               mode], clean_env(CUTSCOPE_STRICT="1"))
    spawned.append(proc)
    return proc, port


def _framed_pairs(doc):
    return {(c["src"], c["dst"]) for c in doc["channels"]
            if c["framed"] and c["transport"] == "tcp"}


def test_server_that_speaks_first_and_closes_unread_gives_its_last_bytes(db_path, peers, spawned):
    """imaplib's test_linetoolong between two traced ends: the server speaks, then closes
    without reading. The client reads at once; it has written nothing, so nothing of its
    own is left unread at the server, its close is a FIN (not a reset), and the client
    reads every byte and then the end of the stream. The server's direction is framed."""
    proc, port = _traced_server(db_path, peers, "banner-close", spawned)
    cutscope.start(db=db_path, name="cli")
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        got = recv_exactly(c, 107)
        assert got == b"* OK " + b"x" * 100 + b"\r\n"
        assert c.recv(100) == b""  # not ConnectionResetError
        c.close()
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    doc = load(db_path)
    assert _framed_pairs(doc) == {("srv", "cli")}
    assert_matched(doc)


@pytest.mark.parametrize("client", ["blocking", "asyncio"])
def test_asyncio_server_that_speaks_first_is_framed_both_ways(db_path, peers, client, spawned):
    """A non-blocking (asyncio) traced server that speaks first frames its direction
    without waiting: it finds the client's registration."""
    proc, port = _traced_server(db_path, peers, "async-greet", spawned)
    cutscope.start(db=db_path, name="cli")
    try:
        if client == "blocking":
            c = socket.create_connection(("127.0.0.1", port), timeout=20)
            assert c.recv(100) == b"220 ready\n"
            c.sendall(b"quit\n")
            assert recv_exactly(c, 5) == b"QUIT\n"
            c.close()
        else:
            async def run():
                r, w = await asyncio.open_connection("127.0.0.1", port)
                greeting = await r.readline()
                w.write(b"quit\n")
                await w.drain()
                bye = await r.readline()
                w.close()
                await w.wait_closed()
                return greeting, bye

            assert asyncio.run(asyncio.wait_for(run(), 30)) == (b"220 ready\n", b"QUIT\n")
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip().endswith("b'quit\\n'"), err
    doc = load(db_path)
    assert _framed_pairs(doc) == {("srv", "cli"), ("cli", "srv")}
    assert_matched(doc, min_framed=2)


def test_both_ends_write_first_blocking(tmp_path, db_path, peers, spawned):
    """Both ends write before they read; the client writes late (it computes its
    handshake first). Both directions framed, whatever the order on the wire."""
    proc, port = _traced_server(db_path, peers, "both-first", spawned)
    cutscope.start(db=db_path, name="cli")
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        time.sleep(0.2)
        c.sendall(b"client-hello\n")
        assert recv_exactly(c, 13) == b"server-hello\n"
        assert recv_exactly(c, 13) == b"CLIENT-HELLO\n"
        c.close()
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == repr(b"client-hello\n"), err
    doc = load(db_path)
    assert _framed_pairs(doc) == {("srv", "cli"), ("cli", "srv")}
    assert_matched(doc, min_framed=2)


def test_both_ends_write_first_asyncio_streams(tmp_path, db_path, peers, spawned):
    """An asyncio client that writes before it reads, to an asyncio server that does too."""
    proc, port = _traced_server(db_path, peers, "async-both", spawned)
    cutscope.start(db=db_path, name="cli")
    try:
        async def run():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"hello\n")
            await w.drain()
            greeting = await r.readline()
            echo = await r.readline()
            w.close()
            await w.wait_closed()
            return greeting, echo

        assert asyncio.run(asyncio.wait_for(run(), 30)) == (b"220 ready\n", b"HELLO\n")
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    doc = load(db_path)
    assert _framed_pairs(doc) == {("srv", "cli"), ("cli", "srv")}
    assert_matched(doc, min_framed=2)


# -- connections handed to another process ----------------------------------------------------

def _framed_pair():
    """A connected pair in this process, framed both ways and past its HELLOs."""
    c, s = pair()
    c.sendall(b"a")
    assert s.recv(10) == b"a"
    s.sendall(b"b")
    assert c.recv(10) == b"b"
    return c, s


def _answer_one_line(s):
    """In another process: read one line from the connection, answer it in capitals."""
    s.settimeout(20)
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(100)
        assert d, got
        got += d
    assert got == b"ping\n", got
    s.sendall(got.upper())
    s.close()
    return got


def _child_main(s):
    _answer_one_line(s)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_connection_passed_to_a_child_process(db_url, method):
    """A framed connection passed to a multiprocessing.Process as an argument: the child
    reads exactly the application's bytes, and its answer reaches this end intact."""
    cutscope.start(db=db_url, name="parent")
    try:
        c, s = _framed_pair()
        ctx = multiprocessing.get_context(method)
        p = ctx.Process(target=_child_main, args=(s,))
        p.start()
        s.close()
        c.sendall(b"ping\n")
        c.settimeout(20)
        assert recv_exactly(c, 5) == b"PING\n"
        p.join(30)
        assert p.exitcode == 0
        c.close()
    finally:
        cutscope.stop()
    doc = load(db_url)
    assert_matched(doc, min_framed=2)


def test_pool_worker_reads_a_connection_it_was_sent(db_url):
    """A traced multiprocessing Pool worker, started before the connection existed, gets
    it through the resource sharer (pickled with DupFd) and reads it."""
    cutscope.start(db=db_url, name="parent")
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:  # before the connection
            c, s = _framed_pair()
            res = pool.apply_async(_answer_one_line, (s,))
            time.sleep(0.1)
            c.sendall(b"ping\n")
            assert res.get(30) == b"ping\n"
        s.close()
        c.settimeout(20)
        assert recv_exactly(c, 5) == b"PING\n"
        c.close()
    finally:
        cutscope.stop()
    doc = load(db_url)  # (the pool's own pipes end with messages in them: terminate())
    doc["channels"] = [ch for ch in doc["channels"] if ch["transport"] == "tcp"]
    assert_matched(doc, min_framed=2)


def test_send_fds_between_two_traced_processes(tmp_path, db_path, peers, spawned):
    """socket.send_fds hands a framed connection to another traced process (under
    `cutscope run`), which reads it with recv_fds + socket(fileno=...)."""
    path = str(tmp_path / "fd.sock")
    cutscope.start(db=db_path, name="giver")
    try:
        u = socket.socket(socket.AF_UNIX)
        u.bind(path)
        u.listen()
        proc = subprocess.Popen([CUTSCOPE, "run", "--db", db_path, "--name", "taker", "--",
                                 PY, peers, "fd-receiver", path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=clean_env(CUTSCOPE_STRICT="1"),
                                text=True)
        spawned.append(proc)
        c, s = _framed_pair()
        u.settimeout(30)
        conn, _ = u.accept()
        socket.send_fds(conn, [b"x"], [s.fileno()])
        conn.close()
        s.close()
        c.sendall(b"ping\n")
        c.settimeout(20)
        assert recv_exactly(c, 5) == b"PING\n"
        c.close()
        u.close()
        out, err = proc.communicate(timeout=30)
    finally:
        cutscope.stop()
    assert proc.returncode == 0 and out.strip() == repr(b"ping\n"), err
    assert_matched(load(db_path), min_framed=2)
