"""TLS (ssl.SSLSocket): passed through untouched, its plaintext I/O recorded unframed."""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.request

import pytest

import cutscope
from cutscope.testing import recording


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(server context, client context, cert path) for localhost, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "k.pem", d / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client, str(cert)


def _tls_events(doc, process, kind):
    tls = {c["id"] for c in doc["channels"] if c["transport"] == "tls"}
    return [e for e in doc["events"]
            if e["process"] == process and e["kind"] == kind and e["channel"] in tls]


def test_plaintext_sends_and_receives_are_recorded_unframed(tls):
    sctx, cctx, _ = tls
    chunks = [b"a" * 10, b"b" * 3000, b"c"]
    with recording("main", capture_payload=64) as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        got = bytearray()

        def serve():
            with cutscope.process("server"):
                conn, _ = srv.accept()
                with sctx.wrap_socket(conn, server_side=True) as s:
                    buf = bytearray(4096)
                    while len(got) < sum(map(len, chunks)):
                        n = s.recv_into(buf)  # through SSLSocket.read(n, buffer)
                        got.extend(buf[:n])
                    s.sendall(b"done")

        t = threading.Thread(target=serve)
        t.start()
        with cutscope.process("client"):
            raw = socket.create_connection(srv.getsockname(), timeout=10)
            with cctx.wrap_socket(raw, server_hostname="localhost") as c:
                for ch in chunks:
                    c.sendall(ch)
                assert c.recv(100) == b"done"
        t.join(10)
        srv.close()
        doc = rec.trace()
    assert bytes(got) == b"".join(chunks)  # the application's bytes, untouched
    sends = _tls_events(doc, "client", "send")
    assert [e["nbytes"] for e in sends] == [len(ch) for ch in chunks]
    assert all(e["msg"] is None for e in sends)  # unframed: no message ids
    assert sum(e["nbytes"] for e in _tls_events(doc, "server", "recv")) == len(got)
    assert [e["nbytes"] for e in _tls_events(doc, "client", "recv")] == [4]
    assert [e["nbytes"] for e in _tls_events(doc, "server", "send")] == [4]
    chans = {c["id"]: c for c in doc["channels"] if c["transport"] == "tls"}
    assert len(chans) == 4 and not any(c["framed"] for c in chans.values())
    out = chans[sends[0]["channel"]]
    assert out["src"] == "client" and out["endpoint"].endswith(f"->127.0.0.1:{port}")
    # no TCP channel carried the TLS records: the socket wrappers passed them through
    assert not any(c["transport"] == "tcp" for c in doc["channels"])


def test_https_with_urllib(tls):
    sctx, _, cert = tls
    body = b"x" * 5000

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    with recording("main") as rec:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.socket = sctx.wrap_socket(httpd.socket, server_side=True)
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        try:
            ctx = ssl.create_default_context(cafile=cert)
            url = f"https://127.0.0.1:{httpd.server_address[1]}/"
            with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
                assert r.read() == body
        finally:
            httpd.shutdown()
            httpd.server_close()
        doc = rec.trace()
    recv = _tls_events(doc, "main", "recv")
    # the client's reads and the server's reads (one process here): the body is in them
    assert sum(e["nbytes"] for e in recv) >= len(body)
    assert _tls_events(doc, "main", "send")


def test_uninstrument_restores_sslsocket():
    before = {n: ssl.SSLSocket.__dict__[n] for n in ("read", "write", "send", "_real_close")}
    with recording("main"):
        assert all(ssl.SSLSocket.__dict__[n] is not f for n, f in before.items())
    assert {n: ssl.SSLSocket.__dict__[n] for n in before} == before


def test_a_recording_error_never_reaches_the_application(tls, monkeypatch):
    from cutscope.tracer.process import LogicalProcess

    sctx, cctx, _ = tls
    with recording("main", strict=False) as rec:
        srv = socket.create_server(("127.0.0.1", 0))
        out = {}

        def serve():
            conn, _ = srv.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                out["req"] = s.recv(100)
                s.sendall(b"reply")

        t = threading.Thread(target=serve)
        t.start()

        def broken(*a, **k):
            raise RuntimeError("injected")

        # every TLS event now fails inside cutscope
        monkeypatch.setattr(LogicalProcess, "unframed", broken)
        raw = socket.create_connection(srv.getsockname(), timeout=10)
        with cctx.wrap_socket(raw, server_hostname="localhost") as c:
            c.sendall(b"request")
            assert c.recv(100) == b"reply"
        monkeypatch.undo()
        t.join(10)
        srv.close()
        rec.trace()
        assert out["req"] == b"request"
        assert any(f["location"].startswith("tls: recording") and "injected" in f["detail"]
                   for f in rec.store.faults)


def test_a_closed_tls_connection_leaves_no_uncovered_channel(tls):
    """While open, the incoming TLS channel is one a snapshot cannot cover (it says so);
    once the connection is closed, nothing more can arrive on it and it is gone."""
    sctx, cctx, _ = tls
    with recording("main"):
        srv = socket.create_server(("127.0.0.1", 0))

        def serve():
            with cutscope.process("server"):
                conn, _ = srv.accept()
                with sctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(b"hello")
                    s.recv(10)

        t = threading.Thread(target=serve)
        t.start()
        with cutscope.process("client") as lp:
            raw = socket.create_connection(srv.getsockname(), timeout=10)
            c = cctx.wrap_socket(raw, server_hostname="localhost")
            assert c.recv(10) == b"hello"
            assert [f for f in lp.incoming.values()] == [False]  # not FIFO for snapshots
            c.sendall(b"bye")
            c.close()
            assert lp.incoming == {}
        t.join(10)
        srv.close()
