"""The standard library's own clients and servers, and curl, work unchanged with
cutscope active; traced pairs give framed channels whose receives match sends."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import shutil
import socketserver
import subprocess
import threading
import urllib.request
import xmlrpc.client
import xmlrpc.server

import pytest

import cutscope
from cutscope.testing import recording
from _sockutil import assert_matched


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one connection

    def do_GET(self):
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        data = self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.write(data[::-1])

    def log_message(self, *args):
        pass


def _serve(server):
    t = threading.Thread(target=cutscope.process("web")(server.serve_forever), args=(0.05,))
    t.start()
    return t


def test_http_server_with_http_client_and_urllib():
    with recording("main") as rec:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        port = httpd.server_address[1]
        t = _serve(httpd)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/a")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"hello /a")
            body = bytes(range(256)) * 40
            conn.request("POST", "/p", body=body)
            r = conn.getresponse()
            assert r.read() == body[::-1]
            conn.close()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/u", timeout=10) as r:
                assert r.read() == b"hello /u"
        finally:
            httpd.shutdown()
            t.join(10)
            httpd.server_close()
        doc = rec.trace()
    framed = assert_matched(doc, min_framed=4)  # two connections, both directions
    assert len(framed) == 4


def test_xmlrpc():
    with recording("main") as rec:
        srv = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
        srv.register_function(lambda a, b: a + b, "add")
        srv.register_function(lambda s: s[::-1], "rev")
        t = _serve(srv)
        try:
            with cutscope.process("client"):
                proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{srv.server_address[1]}")
                assert proxy.add(2, 3) == 5
                assert proxy.rev("x" * 5000 + "y") == "y" + "x" * 5000
        finally:
            srv.shutdown()
            t.join(10)
            srv.server_close()
        doc = rec.trace()
    framed = assert_matched(doc, min_framed=2)
    assert {(c["src"], c["dst"]) for c in doc["channels"] if c["id"] in framed} == {
        ("client", "web"), ("web", "client")}


def test_socketserver_threaded_echo():
    class Echo(socketserver.StreamRequestHandler):
        def handle(self):
            for line in self.rfile:
                self.wfile.write(line.upper())

    with recording("main") as rec:
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
        t = _serve(srv)
        try:
            import socket

            c = socket.create_connection(srv.server_address, timeout=10)
            f = c.makefile("rwb")
            for i in range(20):
                f.write(b"line %d\n" % i)
                f.flush()
                assert f.readline() == b"LINE %d\n" % i
            f.close()
            c.close()
        finally:
            srv.shutdown()
            t.join(10)
            srv.server_close()
        doc = rec.trace()
    assert_matched(doc, min_framed=2)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_against_a_traced_http_server():
    with recording("main") as rec:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        port = httpd.server_address[1]
        t = _serve(httpd)
        try:
            r = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://127.0.0.1:{port}/c",
                                f"http://127.0.0.1:{port}/d"],
                               capture_output=True, timeout=30)
            p = subprocess.run(["curl", "-sS", "--max-time", "20", "--data-binary", "abcdef",
                                f"http://127.0.0.1:{port}/post"], capture_output=True, timeout=30)
        finally:
            httpd.shutdown()
            t.join(10)
            httpd.server_close()
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"hello /chello /d"
        assert p.stdout == b"fedcba", p.stderr
        doc = rec.trace()
    # curl is not traced: raw channels, recorded
    tcp = [c for c in doc["channels"] if c["transport"] == "tcp"]
    assert tcp and not any(c["framed"] for c in tcp)
    assert any(e["kind"] == "recv" and e["msg"] is None and e["nbytes"] > 0 for e in doc["events"])


def test_asyncio_streams_echo_both_sides_traced():
    async def main():
        async def handle(reader, writer):
            with cutscope.process("srv"):
                while line := await reader.readline():
                    writer.write(line.upper())
                    await writer.drain()
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
        port = server.sockets[0].getsockname()[1]
        with cutscope.process("cli"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(10):
                writer.write(b"msg %d\n" % i)
                await writer.drain()
                assert await reader.readline() == b"MSG %d\n" % i
            big = b"z" * 300_000 + b"\n"
            writer.write(big)
            await writer.drain()
            assert await reader.readexactly(len(big)) == big.upper()
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with recording("main") as rec:
        asyncio.run(main())
        doc = rec.trace()
    assert_matched(doc, min_framed=2)
