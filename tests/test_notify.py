"""PostgreSQL LISTEN/NOTIFY (tracer/notify.py): snapshot requests and ends reach an
interpreter at once, with its store poll slowed to a minute (so only a notification
can bring them); a fork child listens on a connection of its own and leaves its
parent's alone. A real PostgreSQL server (tests/pgserver.py)."""

from __future__ import annotations

import os
import time

import pytest

import cutscope
from cutscope.tracer.snapshot import polling
from cutscope.tracer.store import open_store

pytestmark = pytest.mark.postgres


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def slow_poll(monkeypatch):
    """The recorders read the store's requests once a minute: only notifications are fast."""
    monkeypatch.setattr(polling, "TICK_S", 60.0)
    monkeypatch.setattr(polling, "IDLE_TICK_S", 60.0)
    monkeypatch.setenv("CUTSCOPE_CONTROL", "0")  # another host: no control socket


def _ask(other, name: str) -> int:
    """What a coordinator on another host does: a snapshot row, a request row."""
    sid = other.create_snapshot("elsewhere", time.time_ns())
    other.add_snapshot_requests(sid, "elsewhere", [name], time.time_ns())
    return sid


def test_a_request_and_an_end_reach_another_host_through_notifications(pg_url, slow_poll):
    t = cutscope.start(db=pg_url, name="far", instrument=False)
    other = open_store(pg_url, create=False)
    try:
        assert t.listener is not None and t.listener.ready.wait(10)
        time.sleep(0.2)  # the recorder's first poll is behind us: the next is a minute away
        sid = _ask(other, "far")
        assert _wait(lambda: t.main.pending == [(sid, "elsewhere")])
        assert other.finish_snapshot(sid, "partial", [], time.time_ns())
        assert _wait(lambda: not t.main.pending)
        assert sid in t.finished_snaps.get("far", ())
        # Too many names for one notification: the listener reads the requests.
        sid2 = other.create_snapshot("elsewhere", time.time_ns())
        names = ["far"] + [f"p{i:04d}-{'x' * 60}" for i in range(200)]
        other.add_snapshot_requests(sid2, "elsewhere", names, time.time_ns())
        assert _wait(lambda: t.main.pending == [(sid2, "elsewhere")])
    finally:
        other.close()
        cutscope.stop()


def test_without_notifications_the_poll_is_the_path(pg_url, slow_poll, monkeypatch):
    monkeypatch.setenv("CUTSCOPE_NOTIFY", "0")
    t = cutscope.start(db=pg_url, name="far", instrument=False)
    other = open_store(pg_url, create=False)
    try:
        assert t.listener is None and not t.store.notify
        time.sleep(0.2)
        sid = _ask(other, "far")
        assert not _wait(lambda: t.main.pending, timeout=1.0)  # a minute away
        monkeypatch.setattr(polling, "TICK_S", 0.05)
        monkeypatch.setattr(polling, "IDLE_TICK_S", 0.05)
        assert _wait(lambda: t.main.pending == [(sid, "elsewhere")])
    finally:
        other.close()
        cutscope.stop()


def test_a_fork_child_listens_on_its_own_connection(pg_url, slow_poll):
    t = cutscope.start(db=pg_url, name="forker", instrument=False)
    other = open_store(pg_url, create=False)
    try:
        assert t.listener.ready.wait(10)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own listener; asked by name, it hears it
            ok = b"0"
            try:
                c = cutscope.active()
                if c.listener is not None and c.listener.ready.wait(10):
                    os.write(w, c.main.name.encode() + b"\n")
                    if _wait(lambda: bool(c.main.pending), timeout=10):
                        ok = b"1"
                cutscope.stop()
            finally:
                os.write(w, ok)
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            child = f.readline().decode().strip()
            assert child == f"forker/{pid}"
            time.sleep(0.2)
            _ask(other, child)
            assert f.read(1) == b"1"
        os.waitpid(pid, 0)
        # The parent's listener still works after the child is gone.
        time.sleep(0.3)
        sid = _ask(other, "forker")
        assert _wait(lambda: t.main.pending == [(sid, "elsewhere")])
    finally:
        other.close()
        cutscope.stop()


def test_while_listening_a_snapshot_does_not_bring_back_the_fast_poll(pg_url, slow_poll,
                                                                       monkeypatch):
    """A snapshot that this interpreter takes part in: its requests and end come as
    notifications, so the store's poll keeps the slow pace (each poll holds the
    recorder, and its writes, for two queries); the recorder itself ticks faster."""
    from cutscope.tracer import recorder

    monkeypatch.setattr(polling, "TICK_S", 0.0)  # a poll at every tick, where one is due
    t = cutscope.start(db=pg_url, name="far", instrument=False)
    other = open_store(pg_url, create=False)
    polls = []
    real = t.store.snapshot_requests

    def counted(names):
        polls.append(time.monotonic())
        return real(names)

    try:
        assert t.listener is not None and t.listener.ready.wait(10)
        time.sleep(0.2)  # the recorder's first poll is behind us
        t.store.snapshot_requests = counted
        sid = _ask(other, "far")
        assert _wait(lambda: t.main.pending == [(sid, "elsewhere")])
        assert _wait(lambda: t.recorder.interval == recorder.SNAPSHOT_INTERVAL)
        time.sleep(0.3)  # pending all along: no safe point in this test
        assert t.main.pending and polls == []
        assert other.finish_snapshot(sid, "partial", [], time.time_ns())
        assert _wait(lambda: not t.main.pending)
        assert _wait(lambda: t.recorder.interval == recorder.INTERVAL)
    finally:
        other.close()
        cutscope.stop()
