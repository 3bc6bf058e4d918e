"""Lanes a person arranges: hide a process (its messages become dashed links through it),
collapse runs of local events, reorder lanes, a header that stays while scrolling.

Driven by the Pilot over real SQLite traces recorded through the tracer
(``viewer_traces.relay_trace``: a client and a server that talk only through a
relay, with runs of local steps).
"""

from __future__ import annotations

import asyncio

from cutscope.viewer.app import CutscopeApp
from cutscope.viewer.explorer import Explorer
from cutscope.viewer.export import load
from cutscope.viewer.model import Trace
from cutscope.viewer.views import apply_view, read_view, save_view
from cutscope.viewer.widgets import LaneHeader, Lanes
from cutscope.viewer.widgets.lanes import S_SELECTED, lane_width

import viewer_traces
from test_viewer import SIZE, text_of, wait_for

ROUNDS = 3


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def drawn_rows(app):
    """{(process, seq): the row's text} of every visible row."""
    ex = app.explorer
    lanes = app.screen.query_one(Lanes)
    return {(ex.event_at(y)["process"], ex.event_at(y)["seq"]): lanes._build(y).text
            for y in range(len(ex))}


def header_text(app) -> str:
    return app.screen.query_one(LaneHeader).render_line(0).text


def columns(ex):
    w = lane_width(ex)
    return {p: 8 + j * w + (w - 2) // 2 for j, p in enumerate(ex.procs)}


def test_hiding_a_lane_keeps_causality_as_dashed_links(db_url):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            assert ex.procs == ["client", "relay", "server"]
            await pilot.press("t", "b")  # a consistent cut inside the trace
            await pilot.press("right", "up", "up")
            cut, verdict = dict(ex.cut), ex.consistent
            await pilot.press("right")
            assert ex.process == "server"
            await pilot.press("left", "h")  # hide the relay
            assert "relay hidden" in text_of(app, "#status")
            assert ex.procs == ["client", "server"] and ex.hidden == {"relay"}
            assert ex.cut == cut and ex.consistent == verdict  # the cut keeps the hidden lane
            assert f"relay = {cut['relay']}" in text_of(app, "#frontiers") and "lane hidden" in \
                text_of(app, "#frontiers")
            assert "relay" not in header_text(app).split("(")[0] and "1 hidden: relay" in header_text(app)
            rows = drawn_rows(app)
            assert len(rows) == sum(len(t.seqs[p]) for p in ("client", "server"))
            assert all(p != "relay" for p, _ in rows)
            col = columns(ex)
            a, b = col["client"], col["server"]
            links = 0
            for (p, s), text in rows.items():
                e = t.event(p, s)
                if e["kind"] not in ("send", "recv"):
                    assert "┄" not in text
                    continue
                links += 1
                # The message went to (came from) the relay; the link goes to (comes from)
                # the other visible process, by the relay's forwarding in the same round.
                i, k = divmod(s - 1, 4) if p == "client" else divmod(s - 1, 3)
                if p == "client" and e["kind"] == "send":
                    other = ("server", 3 * i + 1)
                elif p == "client":
                    other = ("server", 3 * i + 3)
                elif e["kind"] == "recv":
                    other = ("client", 4 * i + 3)
                else:
                    other = ("client", 4 * i + 4)
                verb = "to" if e["kind"] == "send" else "from"
                assert f"┄ via hidden lanes {verb} {other[0]} #{other[1]}" in text, text
                # Dashed all the way between the two lanes, into the far lane.
                assert set(text[min(a, b) + 1:max(a, b)]) <= {"┄", "┼", "◀", "▶"}
                assert "┄" in text[min(a, b) + 1:max(a, b)]
                # Causality survives: the link's send happened before its receive.
                src, dst = ((p, s), other) if e["kind"] == "send" else (other, (p, s))
                assert t.vector_clock(*dst).get(src[0], 0) >= src[1]
            assert links == 4 * ROUNDS
            await pilot.press("H")
            assert "shown again: relay" in text_of(app, "#status")
            assert ex.procs == ["client", "relay", "server"] and not ex.hidden
            assert len(drawn_rows(app)) == sum(len(t.seqs[p]) for p in t.seqs)
            assert not any("┄" in x for x in drawn_rows(app).values())
            # The last visible lane cannot be hidden.
            await pilot.press("h", "h", "h")
            assert len(ex.procs) == 1 and "last visible lane" in text_of(app, "#status")
            await pilot.press("H", "q")

    run(go())


def test_collapsing_runs_of_local_events(db_url):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            full = len(ex)
            await pilot.press("x")
            # Runs of local events of one process, from the events: client's 2 a round,
            # the relay's 3; the server's single local steps stay.
            assert f"{2 * ROUNDS} runs collapsed" in text_of(app, "#status")
            assert len(ex) == full - ROUNDS * (1 + 2)
            rows = drawn_rows(app)
            heads = {k: x for k, x in rows.items() if "local events (collapsed" in x}
            assert len(heads) == 2 * ROUNDS
            for (p, s), text in heads.items():
                n = 2 if p == "client" else 3
                assert t.event(p, s)["kind"] == "local"
                assert f"{p} #{s}..#{s + n - 1} " in text and f"{n} local events" in text
                assert all(t.event(p, q)["kind"] == "local" for q in range(s, s + n))
                assert (p, s + 1) not in rows
            assert ("server", 2) in rows and "collapsed" not in rows[("server", 2)]
            # The client's frontier inside a run: the run's row carries the selection.
            await pilot.press("t")
            while t.event("client", ex.cut["client"])["kind"] != "local" or \
                    t.event("client", ex.cut["client"] - 1)["kind"] != "local":
                await pilot.press("up")
            s = ex.cut["client"] - 1  # the run's first event
            y = ex.row_for_event("client", s)
            strip = app.screen.query_one(Lanes)._build(y)
            assert any(seg.style == S_SELECTED and seg.text.startswith(" client #") for seg in strip)
            await pilot.press("x")
            assert "every one shown" in text_of(app, "#status") and len(ex) == full
            await pilot.press("q")

    run(go())


def test_reordering_lanes_keeps_the_message_lines(db_url):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            cut = dict(ex.cut)
            await pilot.press("shift+right")  # client one place right
            assert ex.procs == ["relay", "client", "server"] and ex.process == "client"
            await pilot.press("shift+right")
            assert ex.procs == ["relay", "server", "client"] and ex.process == "client"
            await pilot.press("shift+right")
            assert ex.procs == ["relay", "server", "client"] and "already last" in text_of(app, "#status")
            assert header_text(app).split()[1:4] == ["relay", "server", "client"]
            assert ex.cut == cut
            col = columns(ex)
            rows = drawn_rows(app)
            for m in t.messages.values():
                s, r = rows[m.send], rows[m.recv]
                a, b = col[m.src], col[m.dst]
                assert s[a] == "S" and r[b] == "R"
                assert s[b] == ("╮" if b > a else "╭") and set(s[min(a, b) + 1:max(a, b)]) <= {"─", "┼"}
                assert r[a] == ("╯" if a > b else "╰")
            await pilot.press("shift+left", "shift+left")
            assert ex.procs == ["client", "relay", "server"]
            await pilot.press("q")

    run(go())


def test_lane_header_stays_while_scrolling(db_url):
    viewer_traces.big_trace(db_url, 600, procs=4)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            lanes = app.screen.query_one(Lanes)
            await pilot.press("home")  # N0's frontier to its start: the view scrolls to the top
            top = lanes.scroll_offset.y
            await pilot.press("pagedown", "pagedown", "pagedown")
            await pilot.pause()
            assert lanes.scroll_offset.y > top
            head = header_text(app)
            assert head.split()[:5] == ["lamport", "N0", "N1", "N2", "N3"]
            # The header is its own row above the scrolled lanes, in the same place.
            assert app.screen.query_one(LaneHeader).region.y < lanes.region.y
            await pilot.press("q")

    run(go())


def test_saved_view_keeps_lane_order_hidden_lanes_and_collapse(db_url, tmp_path):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    ex = Explorer(Trace(load(db_url)))
    ex.select(2)
    ex.move_lane(-2 + 1)  # server before relay
    ex.hide("relay")
    ex.toggle_collapse()
    ex.toggle_packed()
    path = str(tmp_path / "v.json")
    save_view(ex, path)
    again = Explorer(Trace(load(db_url)))
    note = apply_view(again, read_view(path))
    assert note == ""
    assert again.order == ["client", "server", "relay"] and again.procs == ["client", "server"]
    assert again.hidden == {"relay"} and again.collapse and again.packed and len(again) == len(ex)


def walk_chain(t, start, forward):
    """The chain's ends from ``start``, walked over the events by hand (no next_hop)."""
    p, s = start
    ends = []
    while True:
        seqs = [q for q in t.seqs[p] if (q >= s if forward else q <= s)]
        found = None
        for q in (seqs if forward else reversed(seqs)):
            e = t.event(p, q)
            m = t.message_of(e) if e["kind"] == ("send" if forward else "recv") else None
            if m is not None and m.recv is not None and (m.send if forward else m.recv) == (p, q):
                found = m
                break
        if found is None:
            return ends
        pair = [found.send, found.recv] if forward else [found.recv, found.send]
        ends += pair
        p, s = pair[1]


def test_whole_chain_keys_follow_to_the_end(db_url):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("home", "right_parenthesis")
            ends = walk_chain(t, ("client", 1), True)
            assert len(ends) == 2 * 4 * ROUNDS  # every message is one chain here
            assert (ex.process, ex.cut[ex.process]) == ends[-1]
            status = text_of(app, "#status")
            assert status.startswith(f"chain forward: {len(ends) // 2} hops: client #3 -> relay #1")
            assert status.endswith(f"{ends[-1][0]} #{ends[-1][1]}")
            # The chain's events are marked on their rows.
            rows = drawn_rows(app)
            for k, e in enumerate(ends):
                assert f"(chain, hop {k // 2 + 1})" in rows[e]
            assert sum("(chain" in x for x in rows.values()) == len(ends)
            # Back from the server's second answer: through every earlier hop to the first request.
            await pilot.press("right", "right")
            assert ex.process == "server"
            ex.set_frontier("server", 6)
            await pilot.press("left_parenthesis")
            back = walk_chain(t, ("server", 6), False)
            assert (ex.process, ex.cut[ex.process]) == back[-1] == ("client", 3)
            assert text_of(app, "#status").startswith(f"chain back: {len(back) // 2} hops:")
            # Nothing to follow.
            await pilot.press("home", "left_parenthesis")
            assert "received no message up to #0" in text_of(app, "#status")
            await pilot.press("q")

    run(go())


def test_replay_of_the_lanes_order_linearisation(db_url):
    viewer_traces.relay_trace(db_url, rounds=1)
    t = Trace(load(db_url))

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("shift+right", "shift+right")  # the client last: priority relay, server, client
            assert ex.procs == ["relay", "server", "client"]
            ex.set_cut({p: 0 for p in ex.cut})
            cuts = [dict(ex.cut)]
            total = sum(len(t.seqs[p]) for p in ex.procs)
            for _ in range(total):
                await pilot.press("n")
                cuts.append(dict(ex.cut))
            # Each step adds one event, through consistent cuts only, and the event
            # is that of the leftmost lane that could move (checked by brute force).
            for a, b in zip(cuts, cuts[1:]):
                moved = [p for p in a if a[p] != b[p]]
                assert len(moved) == 1 and b[moved[0]] == t.step(moved[0], a[moved[0]], 1)
                assert t.consistent(b)
                for q in ex.procs[:ex.procs.index(moved[0])]:
                    c = dict(a)
                    c[q] = t.step(q, a[q], 1)
                    assert c[q] == a[q] or not t.consistent(c)
            assert cuts[-1] == {**{p: t.last_seq(p) for p in ex.procs}, "main": 0}
            await pilot.press("n")
            assert "the top" in text_of(app, "#status")
            # Back retraces the same steps.
            for k in range(len(cuts) - 2, -1, -1):
                await pilot.press("N")
                assert ex.cut == cuts[k]
            await pilot.press("N")
            assert "the bottom" in text_of(app, "#status")
            await pilot.press("q")

    run(go())


def test_minimap_shows_the_screen_and_the_cut_and_scrolls_on_click(db_url):
    from cutscope.viewer.widgets import Minimap

    viewer_traces.big_trace(db_url, 2000, procs=4)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            mm = app.screen.query_one(Minimap)
            lanes = app.screen.query_one(Lanes)
            h = mm.size.height
            assert h > 10 and len(ex) == 2000

            def cells():
                return [mm.render_line(y).text for y in range(h)]

            def cell_of(row):
                return min(h - 1, row * h // len(ex))

            # N0's frontier back to 100 events from its start, the others at their end.
            ex.set_frontier("N0", 100)
            await pilot.press("g")
            await pilot.pause()
            f = ex.nearest_row(ex.frontiers[0])
            c = cells()
            assert c[cell_of(f)][2] == "◀"
            others = {cell_of(ex.nearest_row(x)) for x in ex.frontiers[1:]}
            assert all(c[k][2] == "•" for k in others - {cell_of(f)})
            # Rows before every frontier are solid, after the earliest frontier mixed.
            assert all(x[0] == "█" for x in c[:cell_of(f)])
            assert all(x[0] == "▒" for x in c[cell_of(f) + 1:])
            # The screen's rows are the marked ones, and they follow the scrolling.
            top = lanes.scroll_offset.y
            marked = [y for y, x in enumerate(c) if x[1] == "┃"]
            assert marked and marked[0] == cell_of(top) and marked[-1] == cell_of(top + lanes.size.height - 1)
            await pilot.press("pagedown", "pagedown")
            await pilot.pause()
            assert lanes.scroll_offset.y > top
            assert [y for y, x in enumerate(cells()) if x[1] == "┃"][0] == cell_of(lanes.scroll_offset.y)
            # A click on the minimap scrolls the lanes there.
            await pilot.click("#minimap", offset=(1, h - 2))
            await pilot.pause()
            a, _ = mm.cell_rows(h - 2)
            assert lanes.scroll_offset.y <= a < lanes.scroll_offset.y + lanes.size.height
            await pilot.press("q")

    run(go())


def test_logical_time_layout_packs_concurrent_events_on_one_row(db_url):
    from test_lanes_diagram import brute_past

    viewer_traces.bank_trace(db_url)
    t = Trace(load(db_url))
    events = [(p, s) for p in t.processes for s in t.seqs[p]]
    past = {e: brute_past(t, e) for e in events}

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("z")
            assert ex.packed and "logical-time layout" in text_of(app, "#status")
            assert header_text(app).startswith("step ")
            row_of = {}
            for y in range(len(ex)):
                evs = [ex.trace._event_dict(ex.all_g[r]) for r in ex.layers[y]]
                lanes_here = [e["process"] for e in evs]
                assert len(set(lanes_here)) == len(lanes_here)  # one event per lane
                for e in evs:
                    row_of[(e["process"], e["seq"])] = y
            assert set(row_of) == set(events)
            assert len(ex) < len(events)  # concurrent events share rows
            for b in events:
                for a in past[b]:
                    assert row_of[a] < row_of[b]  # happened-before goes down the screen
            for a in events:  # the same row: concurrent
                for b in events:
                    if a != b and row_of[a] == row_of[b]:
                        assert a not in past[b] and b not in past[a]
            # Each row draws its events' glyphs in their lanes and names them.
            col = columns(ex)
            lanes = app.screen.query_one(Lanes)
            for y in range(len(ex)):
                text = lanes._build_packed(y).text
                for r in ex.layers[y]:
                    e = ex.trace._event_dict(ex.all_g[r])
                    assert text[col[e["process"]]] in "SR•◆"
                    assert f"{e['process']} #{e['seq']} {e['kind']}" in text
            # The keys still move the cut; the selected frontier's row is marked.
            await pilot.press("right", "up", "up")
            y = ex.packed_row(ex.frontiers[ex.selected])
            strip = lanes._build_packed(y)
            assert any(seg.style == S_SELECTED and seg.text.startswith(f"P2 #{ex.cut['P2']}") for seg in strip)
            await pilot.press("z")
            assert not ex.packed and len(ex) == len(events)
            await pilot.press("q")

    run(go())


def test_a_reload_keeps_the_lanes_arrangement(db_url):
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("shift+right", "right", "h", "x", "z")
            ex = app.explorer
            arranged = (list(ex.order), set(ex.hidden), ex.collapse, ex.packed, len(ex))
            assert arranged[:4] == (["relay", "client", "server"], {"server"}, True, True)
            loads = app.loads
            app.load()  # what live follow does when the store grows
            await wait_for(pilot, lambda: app.loads > loads)
            ex2 = app.explorer
            assert ex2 is not ex
            assert (list(ex2.order), set(ex2.hidden), ex2.collapse, ex2.packed, len(ex2)) == arranged
            await pilot.press("q")

    run(go())


def test_every_lane_key_in_any_order_keeps_the_screen_drawable(db_url):
    """Random sequences of the lane keys, mixed with the cut keys and a filter: every
    visible row draws, each lane's frontier row is on screen, nothing raises."""
    import random

    viewer_traces.relay_trace(db_url, rounds=2)
    keys = ["h", "H", "x", "z", "G", "shift+left", "shift+right", "left", "right", "up", "down",
            "right_parenthesis", "left_parenthesis", "n", "N", "b", "t", "c", "o",
            "greater_than_sign", "less_than_sign", "right_square_bracket", "pagedown", "home"]

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            lanes = app.screen.query_one(Lanes)
            rnd = random.Random(17)
            for k in range(160):
                if k == 80:  # a filter in the middle of it
                    await pilot.press("slash", *"k:send", "enter")
                await pilot.press(rnd.choice(keys))
                assert 1 <= len(ex.procs) and len(ex.frontiers) == len(ex.procs)
                assert len(ex) > 0
                for y in range(len(ex)):
                    lanes._build_packed(y) if ex.layers is not None else lanes._build(y)
                for f in ex.frontiers:
                    if f >= 0:
                        assert 0 <= ex.nearest_row(f) < len(ex)
            await pilot.press("q")

    run(go())


def test_grouping_lanes_by_name(tmp_path):
    from test_analysis import Sim

    names = ["db-1", "web-1", "db-2", "web-2", "cache"]
    sim = Sim(names)
    for a, b in [("web-1", "db-1"), ("web-2", "db-2"), ("db-1", "web-1"), ("web-1", "cache"),
                 ("cache", "web-2"), ("db-2", "web-2")]:
        sim.send(a, b)
        sim.deliver(a, b)
    doc = sim.doc()
    t = Trace(doc)

    async def go():
        app = CutscopeApp(doc=doc, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            header = app.screen.query_one(LaneHeader)
            assert ex.procs == names and header.size.height == 1
            await pilot.press("G")
            assert ex.procs == ["db-1", "db-2", "web-1", "web-2", "cache"]
            assert text_of(app, "#status") == "lanes grouped: db (2), web (2), cache (1)"
            await pilot.pause()
            assert header.size.height == 2
            col = columns(ex)
            groups = header.render_line(1).text
            w = lane_width(ex)
            # Each group's rule spans its lanes' columns and names the group.
            for gname, ps in (("db", ["db-1", "db-2"]), ("web", ["web-1", "web-2"])):
                a, b = col[ps[0]] - (w - 2) // 2, col[ps[-1]] + w // 2
                assert groups[a] == "└" and f" {gname} " in groups[a:b + 1]
            # The message lines follow the new order.
            rows = drawn_rows(app)
            for m in t.messages.values():
                s, r = rows[m.send], rows[m.recv]
                a, b = col[m.src], col[m.dst]
                assert s[b] == ("╮" if b > a else "╭") and r[a] == ("╯" if a > b else "╰")
            await pilot.press("G")
            assert ex.procs == names and text_of(app, "#status") == "lanes: not grouped"
            await pilot.pause()
            assert header.size.height == 1
            await pilot.press("q")

    run(go())


def test_logical_time_layout_of_a_large_trace_computes_in_a_worker(db_url, monkeypatch):
    import cutscope.viewer.explorer as explorer_module

    viewer_traces.bank_trace(db_url)
    monkeypatch.setattr(explorer_module, "SYNC_FILTER_EVENTS", 10)  # "large" from 10 events
    import threading

    threads = []
    steps = explorer_module.Explorer._steps

    def spy(self):
        threads.append(threading.current_thread() is threading.main_thread())
        return steps(self)

    monkeypatch.setattr(explorer_module.Explorer, "_steps", spy)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("z")
            await wait_for(pilot, lambda: ex.packed)
            assert ex._step is not None and "logical-time layout:" in text_of(app, "#status")
            assert threads[0] is False  # the pass over the events ran in a worker thread
            assert len(ex) < sum(len(ex.trace.seqs[p]) for p in ex.procs)
            await pilot.press("z")  # off, and on again at once: the steps are kept
            assert not ex.packed
            await pilot.press("z")
            assert ex.packed
            await pilot.press("q")

    run(go())


def test_render_key_draws_the_lanes_as_arranged(db_url):
    import os
    import re
    import shutil

    import pytest

    if shutil.which("dot") is None and not os.environ.get("CI"):
        pytest.skip("Graphviz's dot is not installed")
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("right", "h", "shift+left")  # relay hidden, server first
            assert ex.procs == ["server", "client"] and ex.hidden == {"relay"}
            await pilot.press("r")
            await wait_for(pilot, lambda: getattr(app, "last_render", None) is not None)
            svg = open(app.last_render).read()
            heads = re.findall(r'class="node lanehead".*?<text[^>]*>([^<]+)</text>', svg, re.S)
            assert heads == ["server", "client"]
            assert svg.count('class="edge transitive"') == 2 * ROUNDS
            assert 'class="edge msg"' not in svg and "hidden: relay" in svg
            await pilot.press("q")

    run(go())


def test_hidden_lanes_rows_without_a_list_agree_with_the_definition(db_url, monkeypatch):
    from cutscope.viewer.rows import VisibleRows

    monkeypatch.setattr(VisibleRows, "BLOCK", 4)  # many blocks on a small trace
    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))
    for hidden in (["relay"], ["client"], ["server", "relay"], ["client", "server"]):
        ex = Explorer(t)
        for p in hidden:
            ex.hide(p)
        assert isinstance(ex.rows, VisibleRows)  # no list of a million rows to hide a lane
        want = [g for g in range(len(ex.all_g)) if ex.lane(g) >= 0]
        assert list(ex.rows) == want and len(ex) == len(want)
        assert [ex.global_row(y) for y in range(len(ex))] == want
        for p in t.processes:
            for s in t.seqs[p]:
                y = ex.row_for_event(p, s)
                if p in ex.hidden:
                    assert y is None
                else:
                    e = ex.event_at(y)
                    assert (e["process"], e["seq"]) == (p, s)
        for g in range(len(ex.all_g)):  # the visible row at or just before each display row
            assert ex.nearest_row(g) == max(0, sum(1 for r in want if r <= g) - 1)
        ex.toggle_collapse()  # runs of local events too: still a mask of the rows
        assert all(ex.lane(g) >= 0 for g in ex.rows)


def test_logical_time_layout_rows_without_a_list_agree_with_the_steps(db_url):
    from cutscope.viewer.rows import Layers

    viewer_traces.relay_trace(db_url, rounds=ROUNDS)
    t = Trace(load(db_url))
    ex = Explorer(t)
    ex.toggle_packed()
    assert isinstance(ex.layers, Layers)
    step = ex._steps()
    steps = {step[ex.all_g[g]] for g in range(len(ex.all_g))}
    assert len(ex) == max(steps) and steps == set(range(1, len(ex) + 1))
    for y in range(len(ex)):
        assert ex.layers[y] == [g for g in range(len(ex.all_g)) if step[ex.all_g[g]] == y + 1]
    ex.hide("relay")  # hidden lanes: every step keeps its row, the hidden events are not drawn
    assert isinstance(ex.layers, Layers)
    lanes = Lanes()
    lanes.explorer = ex
    for p in t.processes:
        for s in t.seqs[p]:
            y = ex.row_for_event(p, s)
            if p == "relay":
                assert y is None
                continue
            assert (p, s) in {(t._event_dict(ex.all_g[r])["process"], t._event_dict(ex.all_g[r])["seq"])
                              for r in ex.layers[y]}
            assert f"{p} #{s} " in lanes._build_packed(y).text
