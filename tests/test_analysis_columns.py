"""The columnar analysis read straight from the store's event tuples
(``Trace.from_store``, ``Trace(doc, blocks)``) answers exactly as the analysis of
the interchange document (``Trace(store.load())``), on random traces written in
random orders (duplicates, frames in parts, unmatched receives, unframed sends,
events with data), and on real traces recorded into SQLite.
"""

from __future__ import annotations

import json
import random

from hypothesis import given, settings, strategies as st

from cutscope.tracer.store import open_store
from cutscope.tracer.store.document import build_trace
from cutscope.viewer.model import Trace, check_report
from cutscope.viewer.explorer import Explorer
from cutscope.viewer.export import load_trace

import viewer_traces
from _cpaths import needs_c_paths
from test_analysis import traces

SETTINGS = settings(max_examples=60, deadline=None)


def raw_rows(doc: dict, rnd: random.Random) -> list[tuple]:
    """The store's raw tuples for ``doc``'s events, plus the oddities a store can hold."""
    rows = []
    for e in doc["events"]:
        derived = e["kind"] == "send" and e["msg"] == f"{e['process']}#{e['seq']}"
        rows.append((e["process"], e["seq"], e["lamport"], e["wall_ns"], e["kind"], e["channel"],
                     None if derived else e["msg"], e["nbytes"], None, None))
    procs = [p["name"] for p in doc["processes"]]
    nxt = {p: max([r[1] for r in rows if r[0] == p], default=0) + 1 for p in procs}

    def add(p, kind, ch=None, msg=None, payload=None, data=None):
        rows.append((p, nxt[p], 10_000 + nxt[p], 0, kind, ch, msg, 1, payload, data))
        nxt[p] += 1

    for _ in range(rnd.randint(0, 4)):
        p = rnd.choice(procs)
        what = rnd.randrange(6)
        if what == 0:
            add(p, "local", data=json.dumps({"label": "tick", "n": rnd.randint(0, 9)}))
        elif what == 1:
            add(p, "recv", "c-x", "ghost#7")  # names a message never sent
        elif what == 2:
            add(p, "send", "raw-1", "")  # unframed: no id
        elif what == 3:
            add(p, "snapshot", data=json.dumps({"snapshot": 5}), payload=b"\x00\x01")
        elif what == 4 and rows:  # a later part of a frame already received
            r = rnd.choice([r for r in rows if r[4] == "recv"] or [None])
            if r is not None:
                add(r[0], "recv", r[5], r[6])
        elif rows:  # the same (process, seq) written twice: the first written is kept
            r = rnd.choice(rows)
            rows.append(r[:2] + (r[2] + 1,) + r[3:])
    rnd.shuffle(rows)
    if rnd.random() < 0.5:  # usually each process's events arrive in seq order
        order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1]))
        by_p: dict[str, list[tuple]] = {}
        for i in order:
            by_p.setdefault(rows[i][0], []).append(rows[i])
        out, pos = [], {p: 0 for p in by_p}
        for r in rows:
            p = r[0]
            out.append(by_p[p][pos[p]])
            pos[p] += 1
        rows = out
    return rows


def blocks_of(rows: list[tuple], rnd: random.Random) -> list[list[tuple]]:
    out, i = [], 0
    while i < len(rows):
        k = rnd.randint(0, 7)
        out.append(rows[i:i + k])
        i += k
    return out


def same(a: Trace, b: Trace, rnd: random.Random) -> None:
    assert a.processes == b.processes
    assert {p: list(s) for p, s in a.seqs.items()} == {p: list(s) for p, s in b.seqs.items()}
    assert {p: list(v) for p, v in a.events.items()} == {p: list(v) for p, v in b.events.items()}
    assert dict(a.messages.items()) == dict(b.messages.items())
    assert list(a.messages) == list(b.messages)
    assert a.unmatched == b.unmatched and a.last_part == b.last_part
    assert a.unreceived == b.unreceived
    for p in a.processes:
        for e in a.events[p]:
            assert a.message_of(e) == b.message_of(e) and a.peer(e) == b.peer(e)
            assert a.vector_clock(p, e["seq"]) == b.vector_clock(p, e["seq"])
    for _ in range(8):
        cut = {p: rnd.randint(0, a.last_seq(p)) for p in a.processes}
        assert a.consistent(cut) == b.consistent(cut)
        assert a.orphans(cut) == b.orphans(cut)
        assert a.in_transit(cut) == b.in_transit(cut)
        assert a.nearest_below(cut) == b.nearest_below(cut)
        assert a.nearest_above(cut) == b.nearest_above(cut)
    assert list(a.lattice(limit=200)) == list(b.lattice(limit=200))
    ea, eb = Explorer(a), Explorer(b)
    assert [ea.event_at(y) for y in range(len(ea))] == [eb.event_at(y) for y in range(len(eb))]


@SETTINGS
@given(traces(max_procs=4, max_steps=40), st.integers(0, 2**32))
def test_columns_from_raw_tuples_answer_as_the_document(doc, seed):
    rnd = random.Random(seed)
    rows = raw_rows(doc, rnd)
    procs = [dict(p, parent=None) for p in doc["processes"]]
    chans = [dict(c, fifo=True) for c in doc["channels"]]
    full = build_trace(procs, chans, rows, [], [], [])
    bare = build_trace(procs, chans, [], [], [], [])
    same(Trace(full), Trace(bare, blocks_of(rows, rnd)), rnd)


def test_from_store_matches_load_on_recorded_traces(tmp_path):
    for name, make in (("bank", viewer_traces.bank_trace),
                       ("thin", viewer_traces.thin_air_trace),
                       ("ring", lambda url: viewer_traces.big_trace(url, 3_000, procs=3))):
        url = f"sqlite:///{tmp_path / name}.db"
        make(url)
        store = open_store(url, create=False)
        try:
            doc = store.load()
            cols = Trace.from_store(store)
            assert cols.doc["events"] == [] and cols.n_events == len(doc["events"])
            assert {k: v for k, v in cols.doc.items() if k != "events"} == \
                {k: v for k, v in doc.items() if k != "events"}
            same(Trace(doc), cols, random.Random(name))
            assert check_report(doc, cols) == check_report(doc)
        finally:
            store.close()
        t = load_trace(url)  # what `cutscope check` and `render` can use instead of load()
        assert check_report(t.doc, t) == check_report(doc) and t.n_events == len(doc["events"])


def test_event_blocks_hold_every_stored_tuple_and_load_can_leave_them_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    viewer_traces.big_trace(url, 2_000, procs=2)
    for store in (open_store(url, create=False), open_store("memory:")):
        if store.url == "memory:":  # the same records, written to a memory store
            src = open_store(url, create=False)
            store.events.extend(r for b in src.event_blocks() for r in b)
            src.close()
        try:
            rows = [r for b in store.event_blocks() for r in b]
            assert len(rows) >= 2_000 and all(len(r) == 10 for r in rows)
            assert store.load(events=False)["events"] == []
            if store.url != "memory:":
                assert len(store.load()["events"]) == len(rows)
        finally:
            store.close()


_odd_ids = st.sampled_from(["#", "#0", "p#", "p#x", "p#007", "p# 1", "p#+1", "p#1_0", "p#-1",
                            "p#99999999999999999999", "ünï#1", "a#b#1", "nohash", "P0#1"])


@SETTINGS
@given(traces(max_procs=4, max_steps=40), st.integers(0, 2**32), st.lists(_odd_ids, max_size=3))
@needs_c_paths
def test_c_resolve_of_message_ids_is_the_python_reference(doc, seed, odd):
    """``FAST.resolve_ids`` gives ``_resolve_derived``'s answer (the send row of each
    id, or None when one id does not resolve by offset): on each trace's received ids,
    on those ids with odd strings mixed in, on the ids of every event and of every send
    (together and one at a time)."""
    import pytest
    from cutscope.viewer.model import matching

    rnd = random.Random(seed)
    rows = raw_rows(doc, rnd)
    procs = [dict(p, parent=None) for p in doc["processes"]]
    chans = [dict(c, fifo=True) for c in doc["channels"]]
    t = Trace(build_trace(procs, chans, [], [], [], []), blocks_of(rows, rnd))
    names = t.processes or ["p"]
    received = [m for k, m in zip(t._kind, t._msg) if k == "recv" and m]
    every = [f"{p}#{s}" for p, s in zip(map(names.__getitem__, t._pid), t._seq)]
    sends = [i for i, k, m in zip(every, t._kind, t._msg) if k == "send" and m is None]
    mixed = received + odd
    rnd.shuffle(mixed)
    for ids in (received, every, sends, mixed, *([i] for i in sends[:6]),
                [f"{rnd.choice(names)}#{rnd.randint(0, 50)}"]):
        fast = t._resolve_derived(list(ids))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(matching, "FAST", None)
            assert t._resolve_derived(list(ids)) == fast
