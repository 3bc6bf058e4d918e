"""Snapshots across hosts: the TCP bank on four simulated hosts (tests/hosts.py),
one PostgreSQL store on a fifth, snapshots asked from that fifth host, which runs
no branch. Only the store joins the hosts: no control socket reaches across.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hosts import ASKER, start_bank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUTSCOPE = [sys.executable, "-m", "cutscope"]
BRANCHES = 4
HOSTS = BRANCHES + 1  # the net fixture (conftest.py): a host per branch and one that asks

pytestmark = pytest.mark.postgres


def _env():
    env = dict(os.environ)
    for k in ("CUTSCOPE_STRICT", "CUTSCOPE_NAME", "CUTSCOPE_DB"):
        env.pop(k, None)
    return env


def test_a_bank_across_four_hosts_snapshotted_from_a_fifth(net):
    hosts, pg = net
    env = _env()
    branches = start_bank(hosts, pg.url, BRANCHES, seconds=12, rate=200, env=env)
    r = hosts.run(0, [sys.executable, "-c", ASKER, os.path.join(ROOT, "examples"), pg.url,
                      str(BRANCHES), "6"], wait=True, capture_output=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    *snaps, last = [json.loads(line) for line in r.stdout.splitlines()]
    final = 0
    for b in branches:
        out, _ = b.communicate(timeout=120)
        final += json.loads(out.strip().splitlines()[-1])["balance"]
    total = 1000 * BRANCHES
    assert final == total
    assert len(snaps) == 6
    for s in snaps:
        assert s["status"] == "complete", s
        assert s["balances"] + s["in_transit"] == total, s
    # Five hosts wrote to the store: the four branches' and the asker's.
    assert {f"host{i}" for i in range(1, BRANCHES + 1)} <= set(snaps[-1]["hosts"]), snaps[-1]
    # Between traced branches on different hosts every TCP channel is framed (markers go in-band).
    tcp = [c for c in last["channels"] if c["transport"] == "tcp"]
    assert len(tcp) == BRANCHES * (BRANCHES - 1), last
    assert all(c["framed"] for c in tcp), [c for c in tcp if not c["framed"]]
    check = hosts.run(0, CUTSCOPE + ["check", "--db", pg.url], wait=True, capture_output=True,
                      env=env)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    elapsed = sorted(s["elapsed"] for s in snaps)
    print(f"request to complete across hosts: median {elapsed[len(elapsed) // 2] * 1000:.0f} ms, "
          f"all {[round(e * 1000) for e in elapsed]}")
