"""A recorder's snapshot records in the store (``SqlStore.write``): what a process reports
through the store (it has no coordinator on its host) is folded into few statements,
and what the snapshot's progress and entry show is the same as record by record.
A real SQLite file."""

from __future__ import annotations

import time

import pytest

from cutscope.tracer.records import channel_record, done_record, state_record
from cutscope.tracer.store import open_store, sqlite


@pytest.fixture
def store(tmp_path):
    s = open_store("sqlite:///" + str(tmp_path / "t.db"))
    yield s
    s.close()


def _msg(i: int) -> tuple:
    return (f"q#{i}", 16, None, None)  # (message id, bytes, payload, value), as a receive keeps it


def _snapshot_statements(monkeypatch, fn) -> int:
    """How many statements ``fn()`` sends that touch the snapshot tables (one per executemany)."""
    seen: list[str] = []
    real = sqlite.Connection.exec_driver_sql

    def counted(self, sql, params=()):
        if "snapshot" in sql:
            seen.append(sql)
        return real(self, sql, params)

    monkeypatch.setattr(sqlite.Connection, "exec_driver_sql", counted)
    try:
        fn()
    finally:
        monkeypatch.setattr(sqlite.Connection, "exec_driver_sql", real)
    return len(seen)


def test_a_report_in_one_write_is_folded_into_few_statements(store, monkeypatch):
    sid = store.create_snapshot("a", time.time_ns())
    recs = [state_record(sid, "a", 7, {"balance": 5}, ["c-out"], "a"),
            channel_record(sid, "a", "c1", [_msg(1), _msg(2)], True),
            channel_record(sid, "a", "c2", [], True),
            channel_record(sid, "a", "c3", [_msg(3)], True),
            done_record(sid, "a")]
    n = _snapshot_statements(monkeypatch, lambda: store.write([], recs))
    # The snapshot's status, the state row, each channel's message count, the messages:
    # not one statement (or three, or five) per record.
    assert n <= 5, n
    prog = store.snapshot_progress(sid)
    row = prog["states"]["a"]
    assert row["closed"] == ["c1", "c2", "c3"] and row["done"] and row["event_seq"] == 7
    assert row["outgoing"] == ["c-out"]
    chans = {c["channel"]: [m["msg"] for m in c["messages"]]
             for c in store.snapshot_entry(sid)["channels"]}
    assert chans["c1"] == ["q#1", "q#2"] and chans["c3"] == ["q#3"]


def test_records_across_writes_and_after_the_end(store):
    sid = store.create_snapshot("a", time.time_ns())
    other = store.create_snapshot("b", time.time_ns())
    store.write([], [state_record(sid, "a", 3, {"x": 1}, [], "a"),
                     channel_record(sid, "a", "c1", [_msg(1)], False)])  # still recording c1
    # A later write: two snapshots' records mixed, the channel's messages continue.
    store.write([], [state_record(other, "b", 9, {"y": 2}, [], "b"),
                     channel_record(sid, "a", "c1", [_msg(2)], True),
                     channel_record(other, "b", "c9", [], True),
                     channel_record(sid, "a", "c1", [], True)])  # (closed twice: once in the row)
    prog = store.snapshot_progress(sid)["states"]["a"]
    assert prog["closed"] == ["c1"] and not prog["done"]
    assert store.snapshot_progress(other)["states"]["b"]["closed"] == ["c9"]
    store.write([], [done_record(sid, "a")])
    assert store.snapshot_progress(sid)["states"]["a"]["done"]
    msgs = [c for c in store.snapshot_entry(sid)["channels"] if c["channel"] == "c1"][0]["messages"]
    assert [m["msg"] for m in msgs] == ["q#1", "q#2"]
    # Ended partial: the incomplete channel state of a channel still open is kept;
    # closes, states and "done"s that come after the end are not.
    assert store.finish_snapshot(other, "partial", [], time.time_ns())
    store.write([], [channel_record(other, "b", "c8", [_msg(5)], False),
                     channel_record(other, "b", "c7", [_msg(6)], True),
                     state_record(other, "late", 1, {}, [], "b"),
                     done_record(other, "b")])
    prog = store.snapshot_progress(other)["states"]
    assert set(prog) == {"b"} and prog["b"]["closed"] == ["c9"] and not prog["b"]["done"]
    got = {c["channel"]: [m["msg"] for m in c["messages"]]
           for c in store.snapshot_entry(other)["channels"]}
    assert got.get("c8") == ["q#5"] and "c7" not in got
