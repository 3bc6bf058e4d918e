"""The lanes as a space-time diagram: message lines between lanes, causality, the other end.

Driven by the Pilot over a real SQLite trace (viewer_traces.bank_trace); what
the lanes must show is computed from the trace's events, happened-before by a
walk of process order and messages (not the vector clocks the viewer uses).
"""

from __future__ import annotations

import asyncio

import viewer_traces
from test_viewer import SIZE, text_of, wait_for


def brute_past(trace, event):
    """Every event that happened before ``event``: process order and messages, walked back."""
    seen, todo = set(), [event]
    while todo:
        p, s = todo.pop()
        for q in trace.seqs[p]:
            if q < s and (p, q) not in seen:
                seen.add((p, q))
                todo.append((p, q))
        e = trace.event(p, s)
        if e["kind"] == "recv":
            m = trace.message_of(e)
            if m is not None and m.recv == (p, s) and m.send not in seen:
                seen.add(m.send)
                todo.append(m.send)
    return seen


def test_message_lines_causality_and_the_other_end(db_url):
    from cutscope.viewer.app import CutscopeApp
    from cutscope.viewer.widgets import Lanes
    from cutscope.viewer.widgets.lanes import lane_width

    viewer_traces.bank_trace(db_url)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            t = ex.trace
            lanes = app.screen.query_one(Lanes)
            w = lane_width(ex)
            col = {p: 8 + j * w + (w - 2) // 2 for j, p in enumerate(ex.procs)}

            def rows():
                return {(ex.event_at(y)["process"], ex.event_at(y)["seq"]): lanes._build(y).text
                        for y in range(len(ex))}

            # Every message: a line from its send toward the receiver's lane, and an
            # arrow into its receive from the sender's lane.
            drawn = rows()
            ms = [m for m in t.messages.values() if m.recv is not None]
            assert ms
            for m in ms:
                s, r = drawn[m.send], drawn[m.recv]
                a, b = col[m.src], col[m.dst]
                assert s[b] == ("╮" if b > a else "╭") and set(s[min(a, b) + 1:max(a, b)]) <= {"─", "┼"}
                assert r[a] == ("╯" if a > b else "╰")
                assert r[b + (1 if a > b else -1)] == ("◀" if a > b else "▶")

            # Causality of the selected event (P2's frontier, moved back 3).
            await pilot.press("right", "up", "up", "up", "c")
            sel = (ex.process, ex.cut[ex.process])
            assert "causality of P2" in text_of(app, "#status")
            past = brute_past(t, sel)
            for ev, text in rows().items():
                future = sel in brute_past(t, ev)
                assert ("(causal past)" in text) == (ev in past), ev
                assert ("(causal future)" in text) == future, ev
            assert any("(causal past)" in x for x in rows().values())
            assert any("(causal future)" in x for x in rows().values())
            # It follows the selection.
            await pilot.press("left")
            sel = (ex.process, ex.cut[ex.process])
            past = brute_past(t, sel)
            assert all(("(causal past)" in x) == (ev in past) for ev, x in rows().items())
            await pilot.press("c")
            assert not any("causal" in x for x in rows().values())

            # The other end: P2's frontier on a receive; o selects the sender at its send.
            await pilot.press("right")
            while t.event("P2", ex.cut["P2"])["kind"] != "recv":
                await pilot.press("up")
            m = t.message_of(("P2", ex.cut["P2"]))
            await pilot.press("o")
            assert ex.process == m.src and ex.cut[m.src] == m.send_seq
            assert f"other end of {m.id}: {m.src} #{m.send_seq}" in text_of(app, "#status")
            await pilot.press("o")
            assert ex.process == "P2" and ex.cut["P2"] == m.recv_seq
            while t.event(ex.process, ex.cut[ex.process])["kind"] in ("send", "recv"):
                await pilot.press("up")
            await pilot.press("o")
            assert "no other end" in text_of(app, "#status")
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))


def test_chain_keys_follow_messages_hop_by_hop(db_url):
    """> from a frontier: the next message its process sends, to its receive; < the last
    message it received, to its send. Checked against the events, walked by hand."""
    from cutscope.viewer.app import CutscopeApp

    viewer_traces.bank_trace(db_url)

    def next_hop(t, p, seq):
        for e in t.events[p]:
            if e["seq"] >= seq and e["kind"] == "send":
                m = t.message_of(e)
                if m is not None and m.recv is not None:
                    return m
        return None

    def prev_hop(t, p, seq):
        for e in reversed(list(t.events[p])):
            if e["seq"] <= seq and e["kind"] == "recv":
                m = t.message_of(e)
                if m is not None and m.recv == (p, e["seq"]):
                    return m
        return None

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            t = ex.trace
            await pilot.press("home")  # P1 at 0: the chain starts at P1's first message
            hops = 0
            while True:
                p, f = ex.process, ex.cut[ex.process]
                m = next_hop(t, p, max(f, 1))
                await pilot.press("greater_than_sign")
                if m is None:
                    assert "sends no received message" in text_of(app, "#status")
                    assert (ex.process, ex.cut[ex.process]) == (p, f)
                    break
                assert (ex.process, ex.cut[ex.process]) == m.recv
                assert f"chain: {m.src} #{m.send_seq} -> {m.dst} #{m.recv_seq}" in text_of(app, "#status")
                hops += 1
                assert hops < t.n_events
            assert hops >= 2
            back = 0
            while True:
                p, f = ex.process, ex.cut[ex.process]
                m = prev_hop(t, p, f)
                await pilot.press("less_than_sign")
                if m is None:
                    assert "received no message" in text_of(app, "#status")
                    break
                assert (ex.process, ex.cut[ex.process]) == m.send
                back += 1
                assert back < t.n_events
            assert back >= 1
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))
