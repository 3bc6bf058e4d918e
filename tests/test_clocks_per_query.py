"""Answers the viewer asks for on a key, made without a pass over the trace: a
vector clock asked for one event (``Trace._past``: a fixpoint over the pair
indexes) is the one the whole table gives (``Trace._vector_clocks``); messages
made in bulk (``Trace._messages``) are those made one by one."""

from __future__ import annotations

from hypothesis import given, settings

from cutscope.viewer.model import Trace
from cutscope.viewer.model import clocks
from test_analysis import traces


@settings(max_examples=150, deadline=None)
@given(traces(max_procs=5, max_steps=40))
def test_one_event_clock_is_the_table_clock(doc):
    one = Trace(doc)
    table = Trace(doc)
    table._vector_clocks()
    for p in one.processes:
        for e in one.events[p]:
            assert one.vector_clock(p, e["seq"]) == table.vector_clock(p, e["seq"]), (p, e["seq"])
    assert one._vc is None  # answered one at a time: no table built


def test_the_table_is_built_past_per_query(monkeypatch):
    doc = {"processes": [{"name": "a"}, {"name": "b"}], "events": [
        {"process": "a", "seq": 1, "lamport": 1, "kind": "send", "msg": "a#1", "channel": "c"},
        {"process": "b", "seq": 1, "lamport": 2, "kind": "recv", "msg": "a#1", "channel": "c"}]}
    monkeypatch.setattr(clocks, "PER_QUERY", 3)
    t = Trace(doc)
    for _ in range(3):
        assert t.vector_clock("b", 1) == {"a": 1, "b": 1}
    assert t._vc is None
    assert t.vector_clock("b", 1) == {"a": 1, "b": 1}
    assert t._vc is not None


@settings(max_examples=100, deadline=None)
@given(traces(max_procs=4, max_steps=40))
def test_messages_made_in_bulk_are_the_messages_made_one_by_one(doc):
    t = Trace(doc)
    rows = list(t._send_rows) * 40  # past the size made one by one
    assert t._messages(rows) == [t._message(s) for s in rows]
    assert all(type(m) is type(t._message(s)) for m, s in zip(t._messages(rows), rows))
