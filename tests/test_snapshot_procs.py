"""Snapshots of real OS processes over TCP (examples/bank_tcp.py under `cutscope run`).

The branches are separate interpreters; requests reach them through the store,
markers travel in-band on their TCP connections. `cutscope snapshot` runs as a
second process, as a user would run it from another terminal; SIGUSR1 goes to a
branch's pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutscope.tracer.snapshot import Snapshot
from cutscope.tracer.store import open_store
from cutscope.viewer.model import check
from cutscope.viewer.export import load

from _checks import assert_snapshot_is_its_cut

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANK = os.path.join(ROOT, "examples", "bank_tcp.py")
CUTSCOPE = [sys.executable, "-m", "cutscope"]
sys.path.insert(0, os.path.join(ROOT, "examples"))
import bank_tcp  # noqa: E402


def start_bank(db_path, branches, seconds, snapshots=0, seed=0, rate=200):
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)  # the application runs as a user would run it
    return subprocess.Popen(
        CUTSCOPE + ["run", "--db", db_path, "--name", "bank", "--", sys.executable, BANK,
                    "--branches", str(branches), "--seconds", str(seconds),
                    "--snapshots", str(snapshots), "--seed", str(seed), "--rate", str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def wait_live(db_path, branches, timeout=30):
    """Until every branch is live in the store with its channels known at both ends."""
    names = {f"bank-{i}" for i in range(branches)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(db_path):
            try:
                store = open_store(db_path, create=False)
            except Exception:
                store = None
            if store is not None:
                try:
                    live = set(store.live_processes(time.time_ns() - 3_000_000_000))
                    ends = [c for c in store.channel_ends()
                            if c["src"] in names and c["dst"] in names]
                finally:
                    store.close()
                if names <= live and len(ends) >= branches * (branches - 1):
                    return
        time.sleep(0.05)
    raise AssertionError("the bank's branches did not come up")


def verify(doc, snap: Snapshot, total: int):
    assert_snapshot_is_its_cut(doc, snap)
    assert all(s.get("half_read", 0) == 0 for s in snap.states.values())
    assert bank_tcp.balances(snap) + bank_tcp.in_transit(snap) == total


def finish_bank(proc, timeout=90):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out, err)
    return out


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(branches=st.integers(2, 4), seed=st.integers(0, 1000), rate=st.sampled_from([100, 400]))
def test_tcp_bank_snapshots_are_consistent_and_conserve_money(tmp_path_factory, branches, seed, rate):
    db = str(tmp_path_factory.mktemp("tcp") / "bank.db")
    proc = start_bank(db, branches, seconds=3, snapshots=2, seed=seed, rate=rate)
    out = finish_bank(proc)
    assert out.count(" ok") == 2, out
    doc = load(db)
    assert check(doc) == []
    assert len(doc["snapshots"]) == 2
    for entry in doc["snapshots"]:
        verify(doc, Snapshot.from_entry(entry), 1000 * branches)


def test_cutscope_snapshot_from_another_process_and_sigusr1(tmp_path):
    db = str(tmp_path / "bank.db")
    n = 3
    proc = start_bank(db, n, seconds=15)
    try:
        wait_live(db, n)
        # SIGUSR1 to a branch: it initiates a snapshot itself.
        store = open_store(db, create=False)
        try:
            pid = {p["name"]: p["pid"] for p in store.processes()}["bank-2"]
        finally:
            store.close()
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        got = None
        while time.monotonic() < deadline and got is None:
            store = open_store(db, create=False)
            try:
                doc_snaps = [s for s in store.load()["snapshots"] if s["initiator"] == "bank-2"]
            finally:
                store.close()
            if doc_snaps and doc_snaps[0]["status"] != "running":
                got = doc_snaps[0]
            time.sleep(0.1)
        assert got is not None and got["status"] == "complete", got
        # As a user would, from another terminal: JSON, then the human form.
        r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db, "--from", "bank-1", "--json",
                                       "--timeout", "10"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        entry = json.loads(r.stdout)
        assert entry["status"] == "complete" and entry["initiator"] == "bank-1", entry["missing"]
        assert set(entry["processes"]) == {"bank-0", "bank-1", "bank-2"}
        first = Snapshot.from_entry(entry)
        assert bank_tcp.balances(first) + bank_tcp.in_transit(first) == 1000 * n

        r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"snapshot {first.id + 1}: complete"), r.stdout
        assert "bank-2" in r.stdout and '"balance"' in r.stdout

        # Bad input: one line, non-zero.
        r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db, "--from", "nobody"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip().splitlines() == ["cutscope: error: no live traced process named 'nobody'"]

    finally:
        if proc.poll() is None:
            out = finish_bank(proc)
    doc = load(db)
    assert check(doc) == []
    assert len(doc["snapshots"]) == 3
    for entry in doc["snapshots"]:
        verify(doc, Snapshot.from_entry(entry), 1000 * n)


def test_sigusr1_handler_of_the_application_is_left_alone(tmp_path):
    code = (
        "import signal, cutscope\n"
        "mine = lambda s, f: None\n"
        "signal.signal(signal.SIGUSR1, mine)\n"
        f"cutscope.start(db={str(tmp_path / 'a.db')!r}, name='a', instrument=False)\n"
        "assert signal.getsignal(signal.SIGUSR1) is mine\n"
        "cutscope.stop()\n"
        "signal.signal(signal.SIGUSR1, signal.SIG_DFL)\n"
        f"cutscope.start(db={str(tmp_path / 'a.db')!r}, name='a', instrument=False)\n"
        "assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)\n"
        "cutscope.stop()\n"
        "assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("args, message", [
    (["--timeout", "0"], "--timeout: must be a positive number of seconds: '0'"),
    (["--timeout", "soon"], "--timeout: not a number of seconds: 'soon'"),
])
def test_cutscope_snapshot_bad_timeout(db_path, args, message):
    open_store(db_path).close()
    r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db_path] + args, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"cutscope: error: {message}"]


def test_cutscope_snapshot_with_nothing_running(db_path):
    open_store(db_path).close()
    r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db_path], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["cutscope: error: no live traced process to take a "
                                             "snapshot of"]


def test_snapshot_completes_while_every_recorder_is_blocked_in_a_write(tmp_path):
    """The store's write lock is held by someone else (here: the test) for seconds:
    every traced process's recorder thread is blocked in its write, so it can poll
    no request and write no snapshot record. The request still reaches the
    initiator through its control socket (tracer/control.py), every branch reports
    straight to the coordinator, and the snapshot is complete; its records reach
    the store with the coordinator's write, once the lock is free."""
    import fcntl
    import threading

    db = str(tmp_path / "bank.db")
    n = 3
    proc = start_bank(db, n, seconds=12)
    try:
        wait_live(db, n)
        fd = os.open(db + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        release = threading.Timer(4.0, fcntl.flock, (fd, fcntl.LOCK_UN))
        release.start()
        try:
            time.sleep(0.3)  # the recorders are waiting for the lock now
            r = subprocess.run(CUTSCOPE + ["snapshot", "--db", db, "--from", "bank-1", "--json",
                                           "--timeout", "2"],
                               capture_output=True, text=True, timeout=60)
        finally:
            release.join(10)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        entry = json.loads(r.stdout)
        assert entry["status"] == "complete", entry["missing"]
        assert set(entry["processes"]) == {f"bank-{i}" for i in range(n)}
    finally:
        if proc.poll() is None:
            finish_bank(proc)
    doc = load(db)
    assert check(doc) == []
    for e in doc["snapshots"]:
        verify(doc, Snapshot.from_entry(e), 1000 * n)
