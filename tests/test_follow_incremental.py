"""Live follow reads only the event blocks written since the loaded trace's, and
gets the trace a whole read gets (real SQLite files, the real store)."""

from __future__ import annotations

import sqlite3

import pytest

import viewer_traces
from cutscope.tracer.store import open_store
from cutscope.tracer.store import reading
from cutscope.viewer.model import Trace, columns


def _ring_rows(trace: Trace, n: int, wall: int = 1) -> list[tuple]:
    """``n`` more events of the ring: each process sends to the next, which receives."""
    procs = [p for p in trace.processes if trace.last_seq(p)]
    last = {p: [trace.last_seq(p), trace.event(p, trace.last_seq(p))["lamport"]] for p in procs}
    rows = []
    while len(rows) < n:
        for i, p in enumerate(procs):
            q = procs[(i + 1) % len(procs)]
            s, r = last[p], last[q]
            s[0] += 1
            s[1] += 1
            rows.append((p, s[0], s[1], wall, "send", f"r{i}", None, 1, None, None))
            r[0] += 1
            r[1] = max(r[1], s[1]) + 1
            rows.append((q, r[0], r[1], wall, "recv", f"r{i}", f"{p}#{s[0]}", 1, None, None))
    return rows


def _same(a: Trace, b: Trace) -> None:
    assert a.processes == b.processes
    assert a.n_events == b.n_events
    assert list(a._seq) == list(b._seq) and list(a._pid) == list(b._pid)
    assert a._kind == b._kind and a._msg == b._msg and list(a._peer) == list(b._peer)
    for p in a.processes:
        assert list(a.events[p]) == list(b.events[p])
    assert dict(a.messages.items()) == dict(b.messages.items())
    assert sorted(a.pairs) == sorted(b.pairs)
    assert a.unreceived == b.unreceived and a.last_part == b.last_part


@pytest.fixture
def decoded(monkeypatch):
    """How many blocks the store decodes (into tuples, or straight into columns)."""
    seen = []
    real, real_cols = reading.decode_block, columns.decode_columns

    def counting(*a):
        seen.append(a[0])
        return real(*a)

    def counting_cols(block, pindex):
        seen.append(block.id)
        return real_cols(block, pindex)
    monkeypatch.setattr(reading, "decode_block", counting)
    monkeypatch.setattr(columns, "decode_columns", counting_cols)
    return seen


def test_follow_reads_only_the_new_blocks(tmp_path, decoded):
    url = f"sqlite:///{tmp_path / 't.db'}"
    viewer_traces.big_trace(url, 6000, procs=4)
    store = open_store(url, create=False)
    try:
        old = Trace.from_store(store)
        before = len(decoded)
        assert before > 1
        store.write(_ring_rows(old, 200, wall=5), [])
        store.write(_ring_rows(old, 8)[-8:], [])  # a duplicate (process, seq) of the first batch
        decoded.clear()
        new = Trace.from_store(store, previous=old)
        assert len(decoded) == 2  # the two blocks written since
        assert new.n_events == old.n_events + 200
        decoded.clear()
        _same(new, Trace.from_store(store))
        assert len(decoded) == before + 2
        # nothing written since: nothing decoded
        decoded.clear()
        _same(Trace.from_store(store, previous=new), new)
        assert decoded == []
    finally:
        store.close()


def test_follow_reads_everything_again_when_a_block_committed_late(tmp_path, decoded):
    url = f"sqlite:///{tmp_path / 't.db'}"
    path = str(tmp_path / "t.db")
    viewer_traces.big_trace(url, 3000, procs=3)
    store = open_store(url, create=False)
    t = Trace.from_store(store)
    store.write(_ring_rows(t, 30), [])
    store.write(_ring_rows(t, 30), [])  # (continues the first batch: _ring_rows moved on)
    # the next to last block kept aside, as if its writer had not committed yet: the
    # last block read has a higher id than it
    db = sqlite3.connect(path)
    bid, *rest = db.execute("SELECT * FROM event_blocks ORDER BY id DESC LIMIT 1 OFFSET 1").fetchone()
    db.execute("DELETE FROM event_blocks WHERE id = ?", (bid,))
    db.commit()
    try:
        old = Trace.from_store(store)
        cols = ", ".join(["?"] * (1 + len(rest)))
        db.execute(f"INSERT INTO event_blocks VALUES ({cols})", (bid, *rest))  # commits late
        db.commit()
        store.write(_ring_rows(old, 30), [])
        decoded.clear()
        new = Trace.from_store(store, previous=old)
        assert bid in decoded and len(decoded) > 2  # everything read again
        _same(new, Trace.from_store(store))
    finally:
        store.close()
        db.close()


def test_follow_reads_everything_again_when_a_process_registered(tmp_path, decoded):
    url = f"sqlite:///{tmp_path / 't.db'}"
    viewer_traces.big_trace(url, 2000, procs=3)
    store = open_store(url, create=False)
    try:
        old = Trace.from_store(store)
        n = len(decoded)
        viewer_traces.mutex_trace(url)  # another interpreter: its processes registered
        decoded.clear()
        new = Trace.from_store(store, previous=old)
        assert len(decoded) > n  # the old blocks too
        _same(new, Trace.from_store(store))
        assert {"A", "B"} <= set(new.processes)
    finally:
        store.close()
