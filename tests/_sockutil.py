"""Helpers for the socket integration tests (tests/test_sockets*.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
CUTSCOPE = os.path.join(os.path.dirname(PY), "cutscope")


def pair(server_name=None, client_name=None):
    """A connected TCP pair opened through the wrappers: (client, server side)."""
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        c = socket.create_connection(srv.getsockname(), timeout=10)
        s, _ = srv.accept()
        s.settimeout(10)
    finally:
        srv.close()
    return c, s


def recv_exactly(sock, n, size=65536):
    out = bytearray()
    while len(out) < n:
        d = sock.recv(min(size, n - len(out)))
        if not d:
            break
        out += d
    return bytes(out)


def framed_tcp(doc):
    return {c["id"] for c in doc["channels"] if c["framed"] and c["transport"] == "tcp"}


def assert_matched(doc, min_framed=1, complete=True):
    """Every receive on a framed channel names a send on that channel with the same size;
    with ``complete``, every such send was received exactly once."""
    framed = {c["id"] for c in doc["channels"] if c["framed"]}
    assert len(framed) >= min_framed, doc["channels"]
    sends = {}
    for e in doc["events"]:
        if e["kind"] == "send" and e["channel"] in framed:
            assert e["msg"], e
            sends[(e["channel"], e["msg"])] = e
    got = []
    for e in doc["events"]:
        if e["kind"] == "recv" and e["channel"] in framed:
            key = (e["channel"], e["msg"])
            assert key in sends, f"receive of a message never sent: {e}"
            assert sends[key]["nbytes"] == e["nbytes"], (sends[key], e)
            got.append(key)
    assert len(got) == len(set(got)), "a message received twice"
    if complete:
        assert sorted(got) == sorted(sends), "sent but never received"
    return framed


def clean_env(**extra):
    """An environment with nothing of cutscope in it (an untraced Python)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CUTSCOPE_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


# An untraced peer: a plain Python program, no cutscope anywhere.
PEER = textwrap.dedent(r'''
    import socket, sys
    mode = sys.argv[1]
    def server(greet):
        srv = socket.create_server(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
        c, _ = srv.accept()
        c.settimeout(20)
        if greet:
            c.sendall(b"220 hello\r\n")
        data = b""
        while not data.endswith(b"\n"):
            d = c.recv(1000)
            if not d:
                break
            data += d
        c.sendall(data.upper())
        c.close()
        sys.stdout.write(repr(data) + "\n")
    def client(port, greet):
        c = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
        if greet:
            g = b""
            while not g.endswith(b"\n"):
                g += c.recv(1000)
            assert g == b"220 hello\r\n", g
        c.sendall(b"ping me\n")
        r = b""
        while not r.endswith(b"\n"):
            d = c.recv(1000)
            if not d:
                break
            r += d
        assert r == b"PING ME\n", r
        print("OK", flush=True)
    if mode == "server":
        server(False)
    elif mode == "greet-server":
        server(True)
    elif mode == "client":
        client(sys.argv[2], False)
    elif mode == "greet-client":
        client(sys.argv[2], True)
''')


def peer_script(tmp_path):
    p = tmp_path / "peer.py"
    p.write_text(PEER)
    return str(p)


def start_server(args, env, cwd=None):
    """Start a server process; returns (Popen, port) once it listens."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True, cwd=cwd)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"server did not start: {line!r} {out!r} {err!r}")
    return proc, int(line)
