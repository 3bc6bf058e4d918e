"""Structured search in the lanes' filter: field=value, regular expressions, && and ||,
with hit counts. Over a real SQLite trace; the expected events are picked from the
interchange document by plain Python."""

from __future__ import annotations

import asyncio
import re

import pytest

import viewer_traces
from cutscope.viewer.explorer import Explorer, describe
from cutscope.viewer.export import load, load_trace
from test_viewer import SIZE, text_of, wait_for


@pytest.fixture
def bank(db_url):
    viewer_traces.bank_trace(db_url)
    return db_url, load(db_url)["events"], Explorer(load_trace(db_url))


def data(e, k):
    return (e.get("data") or {}).get(k)


CASES = [
    ("kind=recv && process=P3", lambda e, d: e["kind"] == "recv" and e["process"] == "P3"),
    ("kind=recv p:P3", lambda e, d: e["kind"] == "recv" and e["process"] == "P3"),
    ("kind=send || kind=snapshot", lambda e, d: e["kind"] in ("send", "snapshot")),
    ("channel~^c2", lambda e, d: (e["channel"] or "").startswith("c2")),
    ("lamport>=5 && lamport<8", lambda e, d: 5 <= e["lamport"] < 8),
    ("balance=100", lambda e, d: data(e, "balance") == 100),
    ("label=tick || /snapshot 1/", lambda e, d: data(e, "label") == "tick" or "snapshot 1" in d),
    ("seq>2 k:local", lambda e, d: e["seq"] > 2 and e["kind"] == "local"),
    ("kind!=send && p:P1 || label~ti", lambda e, d: (e["kind"] != "send" and e["process"] == "P1")
     or re.search("ti", data(e, "label") or "\0") is not None),
    ("data.label=start", lambda e, d: data(e, "label") == "start"),
    ("nbytes>=8 /P1#/", lambda e, d: e["nbytes"] >= 8 and "P1#" in d),
]


@pytest.mark.parametrize("query, want", CASES, ids=[c[0] for c in CASES])
def test_structured_filter_selects_exactly_the_matching_events(bank, query, want):
    _, events, ex = bank
    expected = {(e["process"], e["seq"]) for e in events if want(e, describe(e, ex.trace))}
    assert expected and len(expected) < len(events)
    n = ex.set_filter(query)
    got = [(ex.event_at(y)["process"], ex.event_at(y)["seq"]) for y in range(len(ex))]
    assert set(got) == expected and len(got) == len(expected) == n
    order = [(ex.event_at(y)["lamport"], ex.procs.index(ex.event_at(y)["process"])) for y in range(len(ex))]
    assert order == sorted(order)  # still in the lanes' order


@pytest.mark.parametrize("query, error", [
    ("lamport>x", "not a number"),
    ("/[/", "bad regular expression"),
    ("channel~(", "bad regular expression"),
    ("kind=send && ", "empty side"),
    ("|| kind=send", "empty side"),
    ("/unclosed x", "unclosed"),
])
def test_bad_query_says_what_and_keeps_the_filter(bank, query, error):
    _, events, ex = bank
    ex.set_filter("k:recv")
    before = list(ex.rows)
    with pytest.raises(ValueError, match=error):
        ex.set_filter(query)
    assert list(ex.rows) == before and ex.filter_text == "k:recv"


def test_hit_counts_in_the_status_line(bank):
    from cutscope.viewer.app import CutscopeApp

    db, events, _ = bank

    async def go():
        app = CutscopeApp(db=db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("up")  # P1's frontier back by one: one match is outside the cut
            await pilot.press("slash")
            box = app.screen.query_one("#filter")
            box.value = "k:send && p:P1 || kind=recv"
            await pilot.press("enter")
            hits = [e for e in events if (e["kind"] == "send" and e["process"] == "P1")
                    or e["kind"] == "recv"]
            inside = [e for e in hits if e["seq"] <= ex.cut[e["process"]]]
            assert len(inside) < len(hits)
            assert (f"{len(hits)} of {len(events)} events match, {len(inside)} of them inside the cut"
                    in text_of(app, "#status"))
            await pilot.press("slash")
            box.value = "lamport>"
            await pilot.press("enter")
            assert "filter: not a number" in text_of(app, "#status")
            assert len(ex) == len(hits)  # the filter stays
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))
