"""The socket integration across OS processes: traced <-> traced (both under the
real launcher or cutscope.start()), traced <-> untraced and untraced <-> traced,
for client-speaks-first and server-speaks-first protocols. The untraced side is
a separate plain Python process with no cutscope in it."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import cutscope
from cutscope.viewer.export import load
from _sockutil import CUTSCOPE, PY, assert_matched, clean_env, peer_script, start_server

GREETING = b"220 hello\r\n"


def _client(port: int, greet: bool) -> None:
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        if greet:
            g = b""
            while not g.endswith(b"\n"):
                g += c.recv(1000)
            assert g == GREETING
        c.sendall(b"ping me\n")
        r = b""
        while not r.endswith(b"\n"):
            d = c.recv(1000)
            assert d
            r += d
        assert r == b"PING ME\n"
    finally:
        c.close()


def _server(greet: bool):
    """A traced server in this process; returns (listening socket, run function)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        c, _ = srv.accept()
        c.settimeout(20)
        if greet:
            c.sendall(GREETING)
        data = b""
        while not data.endswith(b"\n"):
            d = c.recv(1000)
            if not d:
                break
            data += d
        c.sendall(data.upper())
        c.close()
        return data

    return srv, run


@pytest.mark.parametrize("greet", [False, True], ids=["client-first", "server-first"])
def test_traced_client_untraced_server(tmp_path, db_url, greet):
    script = peer_script(tmp_path)
    proc, port = start_server([PY, script, "greet-server" if greet else "server"], clean_env())
    cutscope.start(db=db_url, name="client")
    try:
        _client(port, greet)
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == repr(b"ping me\n")  # the untraced server saw no foreign byte
    doc = load(db_url)
    assert not any(c["framed"] for c in doc["channels"])
    kinds = {e["kind"] for e in doc["events"] if e["channel"]}
    assert kinds == {"send", "recv"}  # raw, but recorded


@pytest.mark.parametrize("greet", [False, True], ids=["client-first", "server-first"])
def test_untraced_client_traced_server(tmp_path, db_url, greet):
    script = peer_script(tmp_path)
    cutscope.start(db=db_url, name="server")
    try:
        srv, run = _server(greet)
        port = srv.getsockname()[1]
        proc = subprocess.Popen([PY, script, "greet-client" if greet else "client", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                                text=True)
        data = run()
        srv.close()
        out, err = proc.communicate(timeout=20)
    finally:
        cutscope.stop()
    assert data == b"ping me\n"
    assert proc.returncode == 0 and out.strip() == "OK", err
    doc = load(db_url)
    assert not any(c["framed"] for c in doc["channels"])


@pytest.mark.parametrize("greet", [False, True], ids=["client-first", "server-first"])
def test_traced_to_traced_across_processes(tmp_path, db_path, greet):
    """The server is an unmodified program under `cutscope run`; the client traced here."""
    script = peer_script(tmp_path)
    env = clean_env(CUTSCOPE_STRICT="1")
    proc, port = start_server([CUTSCOPE, "run", "--db", db_path, "--name", "srv", "--",
                               PY, script, "greet-server" if greet else "server"], env)
    cutscope.start(db=db_path, name="cli")
    try:
        _client(port, greet)
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == repr(b"ping me\n")
    doc = load(db_path)
    framed = assert_matched(doc, min_framed=2)
    pairs = {(c["src"], c["dst"]) for c in doc["channels"] if c["id"] in framed}
    assert pairs == {("cli", "srv"), ("srv", "cli")}
    assert {p["name"] for p in doc["processes"]} >= {"cli", "srv"}


def test_stale_registration_of_a_dead_process_is_ignored(tmp_path, db_path):
    """A traced server that died without unregistering must not make clients frame
    towards whoever listens on that port next."""
    script = peer_script(tmp_path)
    from cutscope.tracer.store import open_store

    proc, port = start_server([PY, script, "server"], clean_env())
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    store = open_store(db_path)
    store.register_listener(f"{socket.gethostname()}@127.0.0.1", port, "ghost", int(dead))
    store.close()
    cutscope.start(db=db_path, name="client")
    try:
        _client(port, False)
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=20)
    assert out.strip() == repr(b"ping me\n"), err


UDP_PEER = r'''
import socket, sys
if sys.argv[1] == "recv":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(20)
    print(s.getsockname()[1], flush=True)
    data, addr = s.recvfrom(2000)
    s.sendto(data.upper(), addr)
    print(repr(data), flush=True)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"raw datagram", ("127.0.0.1", int(sys.argv[2])))
'''


def test_udp_with_untraced_peers_stays_raw(tmp_path, db_url):
    script = tmp_path / "udp_peer.py"
    script.write_text(UDP_PEER)
    proc, port = start_server([PY, str(script), "recv"], clean_env())
    cutscope.start(db=db_url, name="udp")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(20)
        s.sendto(b"to an untraced receiver", ("127.0.0.1", port))
        assert s.recvfrom(2000)[0] == b"TO AN UNTRACED RECEIVER"
        s.close()
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))  # registered: traced senders would envelope
        r.settimeout(20)
        subprocess.run([PY, str(script), "send", str(r.getsockname()[1])], env=clean_env(),
                       check=True, timeout=30)
        assert r.recvfrom(2000)[0] == b"raw datagram"
        r.close()
    finally:
        cutscope.stop()
    out, err = proc.communicate(timeout=20)
    assert out.strip() == repr(b"to an untraced receiver"), err  # no envelope reached it
    doc = load(db_url)
    udp = [c for c in doc["channels"] if c["transport"] == "udp"]
    assert udp and not any(c["framed"] for c in udp)
