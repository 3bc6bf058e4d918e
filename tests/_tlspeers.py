"""TLS peers for tests/test_tls_asyncio.py: asyncio (memory BIO over a plain socket) and
blocking ``ssl`` (C over the descriptor) servers and clients, TLS from the start or
after a plaintext exchange (STARTTLS). Importable (threads of the test process) and
runnable (``python _tlspeers.py server|client KIND MODE CERTDIR [PORT]``; a server
prints its port, then what it received). MODE: ``tls`` (from the start), ``starttls``
(a plaintext exchange each way first), ``greet`` (the server greets in plaintext, the
client only reads it: the client's direction carries nothing before TLS)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys

GREETING = b"220 ready\r\n"
GO = b"220 go\r\n"
REQUEST = b"hello over tls\n"
TIMEOUT = 20


def contexts(certdir):
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(f"{certdir}/c.pem", f"{certdir}/k.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(f"{certdir}/c.pem")
    return server, client


def _line(sock):
    out = b""
    while not out.endswith(b"\n"):
        d = sock.recv(1)
        if not d:
            break
        out += d
    return out


# -- blocking (ssl in C) --------------------------------------------------------------

def block_server(srv, ctx, mode):
    """Serve one connection on the listening socket ``srv``; returns the request."""
    conn, _ = srv.accept()
    conn.settimeout(TIMEOUT)
    if mode != "tls":
        conn.sendall(GREETING)
    if mode == "starttls":
        assert _line(conn) == b"STARTTLS\r\n"
        conn.sendall(GO)
    with ctx.wrap_socket(conn, server_side=True) as tls:  # the accepted socket, wrapped
        req = _line(tls)
        tls.sendall(req.upper())
    return req


def block_client(port, ctx, mode):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if mode != "tls":
        assert _line(sock) == GREETING
    if mode == "starttls":
        sock.sendall(b"STARTTLS\r\n")
        assert _line(sock) == GO
    with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(REQUEST)
        return _line(tls)


# -- asyncio (memory BIO, records through the socket's send/recv_into) ---------------

async def aio_server(ctx, mode, ready):
    """Serve one connection; ``ready(port)`` is called once it listens."""
    done = asyncio.get_running_loop().create_future()

    async def handle(r, w):
        try:
            if mode != "tls":
                w.write(GREETING)
                await w.drain()
            if mode == "starttls":
                assert await r.readline() == b"STARTTLS\r\n"
                w.write(GO)
                await w.drain()
            if mode != "tls":
                await w.start_tls(ctx)
            req = await r.readline()
            w.write(req.upper())
            await w.drain()
            w.close()
            done.set_result(req)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            done.set_exception(exc)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0,
                                     ssl=ctx if mode == "tls" else None)
    ready(srv.sockets[0].getsockname()[1])
    try:
        return await asyncio.wait_for(done, TIMEOUT)
    finally:
        srv.close()


async def aio_client(port, ctx, mode):
    if mode == "tls":
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                              server_hostname="localhost")
    else:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await r.readline() == GREETING
        if mode == "starttls":
            w.write(b"STARTTLS\r\n")
            await w.drain()
            assert await r.readline() == GO
        await w.start_tls(ctx, server_hostname="localhost")
    w.write(REQUEST)
    await w.drain()
    reply = await r.readline()
    w.close()
    try:
        await w.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass
    return reply


def main(argv):
    role, kind, mode, certdir = argv[:4]
    sctx, cctx = contexts(certdir)
    if role == "server":
        def ready(port):
            print(port, flush=True)

        if kind == "block":
            srv = socket.create_server(("127.0.0.1", 0))
            ready(srv.getsockname()[1])
            req = block_server(srv, sctx, mode)
        else:
            req = asyncio.run(aio_server(sctx, mode, ready))
        print(repr(req), flush=True)
    else:
        port = int(argv[4])
        if kind == "block":
            reply = block_client(port, cctx, mode)
        else:
            reply = asyncio.run(aio_client(port, cctx, mode))
        print(repr(reply), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
