"""Stepping through the lattice of consistent cuts one event at a time, against brute force."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from cutscope.viewer.model import Trace
from test_analysis import all_cuts, brute_consistent, traces

import viewer_traces


def events_inside(t, cut):
    return sum(t.count_inside(p, cut[p]) for p in t.processes)


@settings(max_examples=150, deadline=None)
@given(traces(), st.data())
def test_next_and_previous_walk_consistent_cuts_one_event_at_a_time(doc, data):
    t = Trace(doc)
    c, n = t.bottom(), 0
    while (r := t.next_cut(c)) is not None:
        p, nxt = r
        assert brute_consistent(doc, nxt)
        assert [q for q in t.processes if nxt[q] != c[q]] == [p] and nxt[p] == t.step(p, c[p], 1)
        c, n = nxt, n + 1
    assert c == t.top() and n == t.n_events
    while (r := t.previous_cut(c)) is not None:
        p, prev = r
        assert brute_consistent(doc, prev)
        assert [q for q in t.processes if prev[q] != c[q]] == [p] and prev[p] == t.step(p, c[p], -1)
        c = prev
    assert c == t.bottom()
    # From any consistent cut, one process at a time: None exactly when its step is inconsistent.
    good = [c for c in all_cuts(t) if brute_consistent(doc, c)]
    c = data.draw(st.sampled_from(good))
    for p in t.processes:
        up = {**c, p: t.step(p, c[p], 1)}
        r = t.next_cut(c, p)
        if up[p] == c[p] or not brute_consistent(doc, up):
            assert r is None
        else:
            assert r == (p, up)
        down = {**c, p: t.step(p, c[p], -1)}
        r = t.previous_cut(c, p)
        if down[p] == c[p] or not brute_consistent(doc, down):
            assert r is None
        else:
            assert r == (p, down)
    assert t.lattice_size() == (len(good), True)
    if len(good) > 1:
        assert t.lattice_size(limit=len(good) - 1) == (len(good) - 1, False)


def test_lattice_keys_step_through_consistent_cuts(db_url):
    from cutscope.viewer.app import CutscopeApp

    from test_viewer import SIZE, text_of, wait_for

    viewer_traces.mutex_trace(db_url, token=True)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            t = ex.trace
            top = dict(ex.cut)
            # Back through the lanes' order, one event per key, every cut consistent.
            seen = []
            for _ in range(t.n_events):
                await pilot.press("left_square_bracket")
                seen.append(dict(ex.cut))
                assert ex.consistent
            assert ex.cut == t.bottom() and "lattice" in text_of(app, "#status")
            await pilot.press("left_square_bracket")
            assert ex.cut == t.bottom() and "no consistent cut below" in text_of(app, "#status")
            for _ in range(t.n_events):
                await pilot.press("right_square_bracket")
                assert ex.consistent
            assert ex.cut == top
            # The selected process only: B (lane 2) cannot receive before A sent.
            assert ex.process == "B"  # the process whose event moved last is selected
            await pilot.press("left", "home", "right", "home")  # A at 0, then B at 0
            assert ex.process == "B" and ex.cut["A"] == 0 and ex.cut["B"] == 0
            await pilot.press("right_curly_bracket")
            assert ex.cut["B"] == 0 and "B cannot" in text_of(app, "#status")
            await pilot.press("left")
            for _ in range(3):
                await pilot.press("right_curly_bracket")
            assert ex.cut["A"] == 3 and ex.consistent
            await pilot.press("right", "right_curly_bracket")
            assert ex.cut["B"] == 1 and ex.consistent
            await pilot.press("left_curly_bracket")
            assert ex.cut["B"] == 0
            # The lattice's size, counted in a worker.
            await pilot.press("l")
            await wait_for(pilot, lambda: "consistent cuts" in text_of(app, "#status"))
            assert f"lattice: {t.lattice_size()[0]} consistent cuts" in text_of(app, "#status")
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))
