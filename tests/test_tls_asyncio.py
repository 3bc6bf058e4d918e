"""TLS between traced ends, whoever does the TLS: asyncio (a memory BIO whose records go
through the socket wrappers) or blocking ``ssl`` (C over the descriptor), from the
start or after a framed plaintext exchange (STARTTLS: ``loop.start_tls``, or a blocking
end that wraps its socket, a server its accepted one). The application sees exactly the
bytes it would untraced; the plaintext before TLS is framed and matched; the TLS is raw."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading

import pytest

import cutscope
from cutscope.testing import recording
from cutscope.viewer.export import load
from _sockutil import CUTSCOPE, PY, assert_matched, clean_env, framed_tcp, start_server
import _tlspeers as peers

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = [("aio", "aio"), ("aio", "block"), ("block", "aio"), ("block", "block")]


@pytest.fixture(scope="module")
def certdir(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tlsa")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(d / "k.pem"), "-out", str(d / "c.pem"), "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(d)


def _run_server(kind, mode, sctx, box, port_ready):
    with cutscope.process("server"):
        try:
            if kind == "block":
                import socket

                srv = socket.create_server(("127.0.0.1", 0))
                box["port"] = srv.getsockname()[1]
                port_ready.set()
                try:
                    box["req"] = peers.block_server(srv, sctx, mode)
                finally:
                    srv.close()
            else:
                def ready(port):
                    box["port"] = port
                    port_ready.set()

                box["req"] = asyncio.run(peers.aio_server(sctx, mode, ready))
        except BaseException as exc:  # noqa: BLE001
            box["err"] = exc
            port_ready.set()


def _run_client(kind, mode, cctx, port):
    with cutscope.process("client"):
        if kind == "block":
            return peers.block_client(port, cctx, mode)
        return asyncio.run(asyncio.wait_for(peers.aio_client(port, cctx, mode), 30))


def _check_plaintext_framed(doc, mode):
    if mode == "greet":
        framed = assert_matched(doc, min_framed=1)
        assert sum(e["nbytes"] for e in doc["events"]
                   if e["kind"] == "send" and e["channel"] in framed) == len(peers.GREETING)
    if mode == "starttls":
        # The plaintext before TLS went framed both ways and every message matched.
        framed = assert_matched(doc, min_framed=2)
        sizes = sorted(e["nbytes"] for e in doc["events"]
                       if e["kind"] == "send" and e["channel"] in framed)
        assert sum(sizes) == len(peers.GREETING) + len(b"STARTTLS\r\n") + len(peers.GO)


@pytest.mark.parametrize("mode", ["tls", "starttls", "greet"])
@pytest.mark.parametrize("server,client", KINDS)
def test_tls_between_traced_ends_in_one_process(certdir, server, client, mode):
    sctx, cctx = peers.contexts(certdir)
    with recording("main") as rec:
        box, port_ready = {}, threading.Event()
        t = threading.Thread(target=_run_server, args=(server, mode, sctx, box, port_ready))
        t.start()
        assert port_ready.wait(30)
        reply = _run_client(client, mode, cctx, box["port"]) if "port" in box else None
        t.join(30)
        assert not t.is_alive()
        assert "err" not in box, box["err"]
        doc = rec.trace()
    assert box["req"] == peers.REQUEST
    assert reply == peers.REQUEST.upper()
    _check_plaintext_framed(doc, mode)


@pytest.mark.parametrize("server,client,mode", [k + ("starttls",) for k in KINDS] +
                         [("aio", "aio", "tls")])
def test_tls_between_traced_processes(certdir, db_path, server, client, mode):
    """Two unmodified programs under `cutscope run`."""
    script = os.path.join(HERE, "_tlspeers.py")
    env = clean_env(CUTSCOPE_STRICT="1")
    proc, port = start_server([CUTSCOPE, "run", "--db", db_path, "--name", "srv", "--",
                               PY, script, "server", server, mode, certdir], env)
    try:
        cli = subprocess.run([CUTSCOPE, "run", "--db", db_path, "--name", "cli", "--",
                              PY, script, "client", client, mode, certdir, str(port)],
                             env=env, capture_output=True, text=True, timeout=60)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cli.returncode == 0, cli.stderr + "\n--- server:\n" + err
    assert proc.returncode == 0, err
    assert "cutscope:" not in cli.stderr + err  # no fault
    assert cli.stdout.strip() == repr(peers.REQUEST.upper())
    assert out.strip() == repr(peers.REQUEST)
    _check_plaintext_framed(load(db_path), mode)


def test_untraced_peers_see_no_foreign_byte(certdir):
    """A traced asyncio STARTTLS client against an untraced blocking server (its own
    process, no cutscope), and the reverse: plaintext and TLS both raw."""
    script = os.path.join(HERE, "_tlspeers.py")
    env = clean_env()
    sctx, cctx = peers.contexts(certdir)
    with recording("main") as rec:
        proc, port = start_server([PY, script, "server", "block", "starttls", certdir], env)
        reply = _run_client("aio", "starttls", cctx, port)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert reply == peers.REQUEST.upper()
        doc = rec.trace()
    assert not framed_tcp(doc)


def test_a_tls_hello_on_a_framed_direction_ends_the_frames_both_ways():
    """The wire itself: a write that is a TLS hello record, on a framed direction, goes
    out after a RAW frame; the reader gets exactly the raw bytes from there (a small read
    first: the rest is kept for the next one; a peek sees them too), and answers with a
    RAW of its own, so its next bytes arrive raw too."""
    from cutscope.tracer import wire
    from _sockutil import pair, recv_exactly

    assert wire.parse_control(wire.RAW_FRAME, 0) == (wire.RAW, None, 1)
    hello = b"\x16\x03\x01\x00\x64\x01" + os.urandom(99)
    with recording("p") as rec:
        c, s = pair()  # (sockets with a timeout: the general send path)
        c.sendall(b"STARTTLS\r\n")
        assert recv_exactly(s, 10) == b"STARTTLS\r\n"
        s.sendall(b"220 go\r\n")
        assert recv_exactly(c, 8) == b"220 go\r\n"
        c.sendall(hello)
        assert s.recv(10) == hello[:10]
        peeked = s.recv(1000, socket_msg_peek())
        assert peeked and hello[10:].startswith(peeked)
        assert recv_exactly(s, len(hello) - 10) == hello[10:]
        server_hello = b"\x16\x03\x03\x00\x30\x02" + os.urandom(48)
        s.sendall(server_hello)
        assert recv_exactly(c, len(server_hello)) == server_hello
        c.sendall(b"after")  # raw now (TLS application data, as far as anyone knows)
        assert recv_exactly(s, 5) == b"after"
        c.close()
        s.close()
        doc = rec.trace()
    framed = assert_matched(doc, min_framed=2)
    raw_sends = [e for e in doc["events"] if e["kind"] == "send" and e["channel"] not in framed]
    assert sorted(e["nbytes"] for e in raw_sends) == sorted([len(hello), len(server_hello), 5])


def socket_msg_peek():
    import socket

    return socket.MSG_PEEK


def test_nonblocking_ssl_server_after_starttls(certdir):
    """A non-blocking ``SSLSocket`` server (its handshake driven by hand, the way
    asyncore-style servers do: test_poplib): before its C code reads, the frames up to
    the client's RAW are taken, raising SSLWantReadError (``args[0]`` the C code's
    ``SSL_ERROR_WANT_READ``) while they have not arrived, as the handshake itself does."""
    import select
    import socket
    import ssl

    sctx, cctx = peers.contexts(certdir)
    go_on = threading.Event()  # the client starts its TLS once the server has waited once

    def until_done(fn, sock):
        while True:
            try:
                return fn()
            except ssl.SSLError as err:  # (as asyncore-style servers test it)
                if err.args[0] == ssl.SSL_ERROR_WANT_READ:
                    go_on.set()
                    select.select([sock], [], [], 10)
                elif err.args[0] == ssl.SSL_ERROR_WANT_WRITE:
                    select.select([], [sock], [], 10)
                else:
                    raise

    with recording("main") as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        box = {}

        def serve():
            with cutscope.process("server"):
                try:
                    conn, _ = srv.accept()
                    conn.settimeout(peers.TIMEOUT)
                    conn.sendall(peers.GREETING)
                    assert peers._line(conn) == b"STARTTLS\r\n"
                    conn.sendall(peers.GO)
                    conn.setblocking(False)
                    tls = sctx.wrap_socket(conn, server_side=True,
                                           do_handshake_on_connect=False)
                    until_done(tls.do_handshake, tls)
                    req = b""
                    while not req.endswith(b"\n"):
                        req += until_done(lambda: tls.recv(100), tls)
                    box["req"] = req
                    until_done(lambda: tls.send(req.upper()), tls)
                    tls.close()
                except BaseException as exc:  # noqa: BLE001
                    box["err"] = exc
                    go_on.set()

        t = threading.Thread(target=serve)
        t.start()
        with cutscope.process("client"):
            sock = socket.create_connection(srv.getsockname(), timeout=peers.TIMEOUT)
            assert peers._line(sock) == peers.GREETING
            sock.sendall(b"STARTTLS\r\n")
            assert peers._line(sock) == peers.GO
            assert go_on.wait(30)
            with cctx.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(peers.REQUEST)
                reply = peers._line(tls)
        t.join(30)
        srv.close()
        doc = rec.trace()
    assert "err" not in box, box["err"]
    assert box["req"] == peers.REQUEST and reply == peers.REQUEST.upper()
    _check_plaintext_framed(doc, "starttls")
