"""A large trace in the viewer: it opens, and the cut explorer moves (no time asserted)."""

from __future__ import annotations

import asyncio
import time

from cutscope.viewer.app import CutscopeApp
from cutscope.viewer.widgets import Lanes

import viewer_traces

SIZE = (160, 44)


async def wait_for(pilot, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def test_a_200k_event_trace_opens_and_the_cut_explorer_moves(db_url):
    viewer_traces.big_trace(db_url, 200_000, procs=8)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None, timeout=120)
            ex = app.explorer
            t = ex.trace
            assert len(ex) == t.n_events >= 200_000 and len(ex.procs) == 8
            assert app.doc["events"] == []  # the events live in the analysis's columns
            assert ex.consistent and ex.cut == t.top()
            # Back two events on the first process (a receive and its last send): the
            # send's receive downstream is an orphan.
            p = ex.process
            last = t.last_seq(p)
            await pilot.press("up", "up")
            assert ex.cut[p] == t.step(p, last, -2) and not ex.consistent
            [orphan] = ex.orphans
            assert orphan.src == p and orphan.send_seq > ex.cut[p]
            assert orphan.id in str(app.screen.query_one("#orphans").content)
            # The nearest consistent cut below drops the receive; above restores the send.
            await pilot.press("b")
            assert ex.consistent and ex.cut[orphan.dst] < orphan.recv_seq
            await pilot.press("a")
            assert ex.consistent
            # Another process, to its start: everything it sent is now orphaned downstream.
            await pilot.press("right", "home")
            q = ex.process
            assert q != p and ex.cut[q] == 0 and not ex.consistent
            await pilot.press("b")
            assert ex.consistent
            # The lanes scroll to the frontier and build only the rows they show.
            lanes = app.screen.query_one(Lanes)
            await pilot.press("end")
            await pilot.pause(0.1)
            assert lanes.scroll_offset.y > 100_000
            assert len(lanes._cache) < 500
            # The frontier event, described from the columns.
            ev = ex.selected_event()
            assert ev is not None and ev["process"] == q and ev["seq"] == t.last_seq(q)
            # A free-text filter on a large trace runs in a worker: the screen stays
            # live (its keys work meanwhile), then the lanes show the matches.
            await pilot.press("slash")
            for ch in f"{p}#1":
                await pilot.press(ch)
            await pilot.press("enter")
            await pilot.press("left")  # keys still work while the worker filters
            assert ex.process != q
            status = lambda: str(app.screen.query_one("#status").content)
            await wait_for(pilot, lambda: status().startswith("filter "), timeout=120)
            assert 0 < len(ex) < t.n_events and ex.filter_text == f"{p}#1"
            assert all(f"{p}#1" in (ex.event_at(y)["msg"] or "") for y in range(min(len(ex), 50)))
            await pilot.press("slash", "escape")
            assert len(ex) == t.n_events

    asyncio.run(asyncio.wait_for(go(), 300))
