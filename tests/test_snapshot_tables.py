"""Snapshots as tables: states side by side, channels, totals, diffs, expressions.

Over a real run of examples/bank_threads.py (threads, queues, two snapshots
taken by the auditor while money moves): the bank's invariant, balances plus
the money in transit, is what the expressions must find in every snapshot.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from cutscope.viewer.export import load_trace
from cutscope.viewer.model.snapshots import (
    channel_rows, diff, evaluate, in_transit, names, state_table, transit_totals)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRANCHES = 3
TOTAL = 1000 * BRANCHES  # examples/bank_threads.py's INITIAL per branch


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("bank") / "bank.db")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "bank_threads.py"), "--db",
                        "sqlite:///" + db, "--branches", str(BRANCHES), "--seconds", "1",
                        "--snapshots", "2", "--rate", "300"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    t = load_trace(db)
    assert [s["status"] for s in t.snapshots] == ["complete", "complete"]
    return db, t


def test_states_side_by_side_with_the_bookkeeping_hidden(bank):
    _, t = bank
    for s in t.snapshots:
        table = state_table(s)
        assert sorted(table.processes) == sorted(s["processes"])
        assert table.fields == ["balance"]
        for p in table.processes:
            assert table.values["balance"][p] == s["processes"][p]["state"]["balance"]
        assert table.totals["balance"] == sum(table.values["balance"].values())
        shown = state_table(s, bookkeeping=True)
        assert "_cutscope.clock" in shown.fields and shown.fields[0] == "balance"
        assert all(shown.values["_cutscope.clock"][p] == s["processes"][p]["state"]["_cutscope"]["clock"]
                   for p in shown.processes)


def test_channels_and_totals_are_the_recorded_messages(bank):
    _, t = bank
    for s in t.snapshots:
        rows = channel_rows(s, t.channels)
        assert [r.channel for r in rows] == [c["channel"] for c in s["channels"]]
        for r, c in zip(rows, s["channels"]):
            assert [m.msg for m in r.messages] == [m["msg"] for m in c["messages"]]
            assert (r.src, r.dst) == (t.channels[r.channel]["src"], t.channels[r.channel]["dst"])
        amounts = [m["value"]["amount"] for c in s["channels"] for m in c["messages"]]
        assert transit_totals(in_transit(s)).get("amount", 0) == sum(amounts)


def test_the_bank_invariant_as_an_expression(bank):
    _, t = bank
    for s in t.snapshots:
        assert evaluate(s, "sum(balance) + sum(m.amount for m in in_transit)") == TOTAL
        assert evaluate(s, "len(processes)") == BRANCHES
        p = next(iter(s["processes"]))
        assert evaluate(s, f"states[{p!r}].balance") == s["processes"][p]["state"]["balance"]
        assert evaluate(s, "sum(len(ms) for ms in channels.values())") == len(in_transit(s))
        assert "_cutscope" not in names(s) and "_cutscope" not in names(s)["states"][p]


@pytest.mark.parametrize("text, error", [
    ("sum(nosuch)", "name 'nosuch' is not defined"),
    ("balance.__class__", "private attribute"),
    ("open('x')", "only these functions"),
    ("sum(balance) +", "not an expression"),
    ("balance + 1", "TypeError"),
])
def test_a_bad_expression_says_what_is_wrong(bank, text, error):
    _, t = bank
    with pytest.raises(ValueError, match=error):
        evaluate(t.snapshots[0], text)


def test_diff_highlights_changed_values_and_moved_messages(bank):
    _, t = bank
    a, b = t.snapshots
    d = diff(a, b)
    ta, tb = state_table(a), state_table(b)
    assert d.changed == {("balance", p) for p in ta.processes
                         if ta.values["balance"][p] != tb.values["balance"][p]}
    ia = {m.msg for m in in_transit(a)}
    ib = {m.msg for m in in_transit(b)}
    assert {m.msg for m in d.delivered} == ia - ib
    assert {m.msg for m in d.sent} == ib - ia
    assert {m.msg for m in d.still} == ia & ib
    assert diff(a, a).changed == set() and not diff(a, a).sent


def test_snapshots_screen_tables_diff_and_expression(bank):
    from cutscope.viewer.app import CutscopeApp
    from cutscope.viewer.screens import MainScreen, SnapshotsScreen

    from test_viewer import SIZE, text_of, wait_for

    db, t = bank
    a, b = t.snapshots

    async def go():
        app = CutscopeApp(db="sqlite:///" + db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, SnapshotsScreen))
            await pilot.pause(0.1)
            detail = text_of(app, "#snap-detail")
            assert "Local states" in detail and "Channels" in detail
            assert all(p in detail for p in a["processes"])
            assert str(state_table(a).totals["balance"]) in detail
            assert "_cutscope.clock" not in detail
            await pilot.press("k")
            assert "_cutscope.clock" in text_of(app, "#snap-detail")
            await pilot.press("k")
            assert "_cutscope.clock" not in text_of(app, "#snap-detail")

            await pilot.press("e")
            box = app.screen.query_one("#snap-expr")
            assert box.has_focus
            box.value = "sum(balance) + sum(m.amount for m in in_transit)"
            await pilot.press("enter")
            assert f"sum(m.amount for m in in_transit) = {TOTAL}" in text_of(app, "#snap-detail")
            await pilot.press("down")  # the expression follows the highlighted snapshot
            detail = text_of(app, "#snap-detail")
            assert f"#{b['id']} complete" in detail and f"= {TOTAL}" in detail
            await pilot.press("e")
            box.value = "open('x')"
            await pilot.press("enter")
            assert "expression: only these functions" in text_of(app, "#snap-detail")

            await pilot.press("up", "m", "down")  # mark a, look at b: the diff
            detail = text_of(app, "#snap-detail")
            assert f"Snapshot #{a['id']} -> #{b['id']}" in detail
            d = diff(a, b)
            for (f, p) in d.changed:
                assert f"{a['processes'][p]['state'][f]} -> {b['processes'][p]['state'][f]}" in detail
            for m in d.delivered + d.sent + d.still:
                assert m.msg in detail
            await pilot.press("up", "m", "down")  # unmark: the tables again
            assert "Local states" in text_of(app, "#snap-detail")

            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
            assert {p: app.explorer.cut[p] for p in b["processes"]} == t.snapshot_cut(b)
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))
