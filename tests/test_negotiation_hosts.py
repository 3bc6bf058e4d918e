"""Negotiation across hosts (tests/hosts.py: network namespaces, one PostgreSQL store):
the registry of connection ends reaches the other host through the store, so a
server that speaks first to a client on another host frames its direction too."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest


pytestmark = pytest.mark.postgres
HOSTS = 3  # the net fixture (conftest.py)

PEER = textwrap.dedent(r'''
    import socket, sys
    if sys.argv[1] == "server":  # speaks first (a banner), then answers one line
        srv = socket.create_server((sys.argv[2], 0))
        print(srv.getsockname()[1], flush=True)
        c, _ = srv.accept()
        c.settimeout(20)
        c.sendall(b"220 ready\n")
        got = b""
        while not got.endswith(b"\n"):
            d = c.recv(100)
            if not d:
                break
            got += d
        c.sendall(got.upper())
        c.close()
        print(repr(got), flush=True)
    else:
        c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=20)
        got = b""
        while not got.endswith(b"\n"):
            got += c.recv(100)
        assert got == b"220 ready\n", got
        c.sendall(b"quit\n")
        got = b""
        while not got.endswith(b"\n"):
            got += c.recv(100)
        assert got == b"QUIT\n", got
        c.close()
        print("OK", flush=True)
''')

READ = ("import json, sys; from cutscope.viewer.export import load; "
        "print(json.dumps(load(sys.argv[1])['channels']))")


def test_server_that_speaks_first_to_another_host_is_framed_both_ways(net):
    import subprocess

    hosts, pg = net
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTSCOPE_")}
    env["CUTSCOPE_STRICT"] = "1"
    run = [sys.executable, "-m", "cutscope", "run", "--db", pg.url, "--name"]
    srv = hosts.run(1, run + ["srv", "--", sys.executable, "-c", PEER, "server",
                              hosts.address(1)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env)
    port = srv.stdout.readline().strip()
    assert port.isdigit(), srv.stderr.read()
    cli = hosts.run(2, run + ["cli", "--", sys.executable, "-c", PEER, "client",
                              hosts.address(1), port], wait=True, capture_output=True, env=env)
    assert cli.returncode == 0 and cli.stdout.strip() == "OK", cli.stderr[-2000:]
    out, err = srv.communicate(timeout=60)
    assert srv.returncode == 0 and out.strip().endswith(repr(b"quit\n")), err[-2000:]
    r = hosts.run(0, [sys.executable, "-c", READ, pg.url], wait=True, capture_output=True,
                  env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    tcp = [c for c in json.loads(r.stdout) if c["transport"] == "tcp"]
    framed = {(c["src"], c["dst"]) for c in tcp if c["framed"]}
    assert framed == {("srv", "cli"), ("cli", "srv")}, tcp
