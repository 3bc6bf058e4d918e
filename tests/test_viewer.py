"""The Textual viewer, driven by the Pilot over real SQLite traces, and in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

import cutscope
from cutscope.viewer.model import Trace
from cutscope.viewer.app import CutscopeApp
from cutscope.viewer.explorer import Explorer
from cutscope.viewer.export import load
from cutscope.viewer.messages import CutChanged
from cutscope.viewer.screens import MainScreen, SnapshotsScreen
from cutscope.viewer.widgets import Lanes

import viewer_traces
from test_analysis import brute_consistent, brute_in_transit, brute_orphans, traces

SIZE = (160, 44)


def text_of(app, selector: str) -> str:
    w = app.screen.query_one(selector)
    c = w.content
    return str(getattr(c, "plain", c))


async def wait_for(pilot, cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


@pytest.fixture
def bank_db(db_url):
    viewer_traces.bank_trace(db_url)
    return db_url


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_moving_a_frontier_shows_consistency_orphans_and_in_transit(bank_db):
    seen: list[CutChanged] = []

    async def go():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE, message_hook=lambda m: isinstance(m, CutChanged)
                                and seen.append(m)) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            t = ex.trace
            assert ex.procs == ["P1", "P2", "P3"]
            assert ex.cut == t.top()
            assert "CONSISTENT" in text_of(app, "#verdict")
            assert "In transit (0)" in text_of(app, "#transit")

            # P1's frontier back before its last send: that message is now an orphan.
            await pilot.press("up")
            assert ex.cut["P1"] == t.last_seq("P1") - 1
            assert not ex.consistent
            assert "INCONSISTENT: 1 orphan" in text_of(app, "#verdict")
            [orphan] = t.orphans(ex.cut)
            assert orphan.src == "P1" and orphan.id in text_of(app, "#orphans")
            assert seen and seen[-1].consistent is False and seen[-1].cut == ex.cut

            # Back to the nearest consistent cut below: P2 gives up that receive.
            await pilot.press("b")
            assert ex.consistent and "CONSISTENT" in text_of(app, "#verdict")
            assert ex.cut["P2"] == orphan.recv_seq - 1
            assert "Orphans (0)" in text_of(app, "#orphans")

            # Whole trace, then P2 (right) back one event: its receive of P1's last
            # message moves out of the cut, and that message is in transit.
            await pilot.press("t", "right", "up")
            assert ex.process == "P2"
            transit = t.in_transit(ex.cut)
            assert ex.consistent and [m.id for m in transit] == [orphan.id]
            body = text_of(app, "#transit")
            assert f"In transit ({len(transit)})" in body
            assert all(m.id in body for m in transit)

            # The lanes draw the selected frontier event and mark in-transit sends.
            lanes = app.screen.query_one(Lanes)
            rows = [lanes._build(y).text for y in range(len(ex))]
            assert any("IN TRANSIT" in r for r in rows)
            ev = ex.selected_event()
            assert any(f"{ev['process']} #{ev['seq']} " in r for r in rows)

            # Nearest consistent above of an inconsistent cut contains it.
            await pilot.press("left", "home")
            before = dict(ex.cut)
            await pilot.press("a")
            assert ex.consistent and all(ex.cut[p] >= before[p] for p in before)
            await pilot.press("q")

    run(go())


def test_snapshots_screen_shows_states_and_channels_and_explores_the_cut(bank_db):
    async def go():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, SnapshotsScreen))
            detail = text_of(app, "#snap-detail")
            assert "#1 complete" in detail and "c21" in detail and "P2#2" in detail
            assert "P1" in detail and "Local states" in detail
            assert "_cutscope.clock" not in detail  # cutscope's bookkeeping, hidden by default
            await pilot.press("k")
            assert "_cutscope.clock" in text_of(app, "#snap-detail")
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
            ex = app.explorer
            assert {p: ex.cut[p] for p in ex.procs} == ex.trace.snapshot_cut(1)
            assert ex.consistent and [m.id for m in ex.in_transit] == ["P2#2"]
            assert "P2#2" in text_of(app, "#transit")

    run(go())


def test_filter_by_kind_and_process(bank_db):
    async def go():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            total = len(ex)
            await pilot.press("slash")
            for ch in "k:recv p:P3":
                await pilot.press("space" if ch == " " else ch)
            await pilot.press("enter")
            want = [e for e in load(bank_db)["events"] if e["kind"] == "recv" and e["process"] == "P3"]
            assert 0 < len(ex) == len(want) < total
            assert all(ex.event_at(y)["kind"] == "recv" for y in range(len(ex)))
            # Keys go back to the explorer once the filter is applied.
            await pilot.press("up")
            assert ex.cut["P1"] == ex.trace.last_seq("P1") - 1
            await pilot.press("slash", "escape")
            assert len(ex) == total

    run(go())


def test_render_key_writes_an_svg_next_to_the_database(bank_db, db_path):
    if shutil.which("dot") is None and not os.environ.get("CI"):
        pytest.skip("Graphviz's dot is not installed")

    async def go():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("r")
            await wait_for(pilot, lambda: getattr(app, "last_render", None) is not None)
            path = app.last_render
            assert os.path.dirname(path) == os.path.dirname(db_path) and path.endswith(".svg")
            assert open(path).read().lstrip().startswith("<?xml")
            assert path in text_of(app, "#status")

    run(go())


def test_snapshot_key_reports_what_happened(bank_db):
    async def go():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("s")
            await wait_for(pilot, lambda: getattr(app, "last_snapshot", None) is not None)
            # Nothing is live in this trace: the key says so, it never pretends.
            status = text_of(app, "#status")
            assert status == app.last_snapshot
            assert "snapshot" in status

    run(go())


def test_follows_a_live_trace(db_url):
    viewer_traces.bank_trace(db_url, extra_rounds=1)

    async def go():
        app = CutscopeApp(db=db_url, follow=True, poll=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            n0 = len(app.explorer)
            loads = app.loads
            # P3's frontier moved back by the user stays; P1's, at its end, follows.
            await pilot.press("left", "up")
            p3 = app.explorer.cut["P3"]
            t = cutscope.start(db=db_url, name="main", instrument=False)
            try:
                p1, p2 = t.process("P1"), t.process("P2")
                for _ in range(5):
                    m, st, _ = p1.send(None, 1, channel="c12")
                    m = f"{p1.name}#{m}"  # send returns the seq
                    p2.recv("c12", m, st, 1)
                t.flush()
            finally:
                cutscope.stop()
            await wait_for(pilot, lambda: app.loads > loads and len(app.explorer) == n0 + 10)
            ex = app.explorer
            assert ex.cut["P3"] == p3
            assert ex.cut["P1"] == ex.trace.last_seq("P1")
            assert "events" in text_of(app, "#status")

    run(go())


def test_following_waits_longer_after_a_slow_load(db_url, monkeypatch):
    """A reload that took t seconds is followed by the next look at the store only
    FOLLOW_FACTOR * t later: a large live trace is not reloaded back to back."""
    from cutscope.viewer import app as app_mod
    from cutscope.viewer.model import Trace

    viewer_traces.bank_trace(db_url)
    slow = Trace.from_store.__func__

    def from_store(cls, store, previous=None):  # a load that takes 0.5 s, like a large trace's
        time.sleep(0.5)
        return slow(cls, store, previous)

    monkeypatch.setattr(Trace, "from_store", classmethod(from_store))

    async def go():
        app = CutscopeApp(db=db_url, follow=True, poll=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            loaded_at = time.monotonic()
            assert app.follow_every >= app_mod.FOLLOW_FACTOR * 0.5
            assert "(following, every " in text_of(app, "#status")
            t = cutscope.start(db=db_url, name="late", instrument=False)
            try:
                t.main.local("new")
                t.flush()
            finally:
                cutscope.stop()
            while time.monotonic() < loaded_at + 1.0:  # the store changed: no reload yet
                await pilot.pause(0.1)
                assert app.loads == 1 and not app._loading
            await wait_for(pilot, lambda: app.loads == 2, timeout=60)  # (4x a slow load)

    run(go())


def test_large_trace_loads_and_scrolls(db_url):
    viewer_traces.big_trace(db_url, 20_000)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None, timeout=60)
            ex = app.explorer
            assert len(ex) >= 20_000
            lanes = app.screen.query_one(Lanes)
            for _ in range(5):
                await pilot.press("pagedown")
            await pilot.press("home")  # P-selected frontier to 0: the view scrolls to it
            await pilot.press("shift+down", "shift+down")
            assert not ex.consistent and ex.orphans
            await pilot.press("b")
            assert ex.consistent
            await pilot.press("end")
            await pilot.pause(0.1)
            assert lanes.scroll_offset.y > 1000  # scrolled to the end, row by row not needed
            # Only visible rows were built.
            assert len(lanes._cache) < 500

    run(go())


def test_bad_database_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not a database\n" * 50)
    r = subprocess.run([sys.executable, "-m", "cutscope", "view", "--db", str(bad)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stderr.startswith("cutscope: error: ") and r.stderr.count("\n") == 1


TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None and not os.environ.get("CI"), reason="tmux is not installed")
def test_cutscope_view_in_a_real_terminal(bank_db, tmp_path):
    assert TMUX, "tmux is required in CI (Debian package tmux)"
    session = f"cutscope-test-{os.getpid()}"
    # A tmux server of our own (-L): other tmux users on the machine cannot disturb it.
    tmux = [TMUX, "-L", session]
    exe = os.path.join(os.path.dirname(sys.executable), "cutscope")
    # Textual sizes itself from COLUMNS/LINES when they are set (pytest may set them).
    env_cmd = (f"cd {tmp_path} && exec env -u COLUMNS -u LINES TERM=xterm-256color "
               f"{exe} view --db {bank_db} --no-follow")
    for attempt in range(3):  # a tmux server can fail to start on a loaded machine: retry
        r = subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                            env_cmd], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            break
        time.sleep(1)
    assert r.returncode == 0, f"tmux could not start: {r.stderr}"

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True, timeout=30).stdout

    def wait_pane(*needles: str, absent: str | None = None, timeout: float = 30.0) -> str:
        """The screen once it shows every needle (a frame may be caught half drawn)."""
        deadline = time.monotonic() + timeout
        while True:
            text = pane()
            if all(n in text for n in needles) and (absent is None or absent not in text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needles!r} not on screen:\n{text}")
            time.sleep(0.2)

    def keys(*k):
        subprocess.run([*tmux, "send-keys", "-t", session, *k], check=True, timeout=30)

    try:
        wait_pane("CONSISTENT", "P1 #1", "Frontiers", "In transit (0)", "Orphans (0)")
        keys("Up")
        wait_pane("INCONSISTENT: 1 orphan", "Orphans (1)")
        keys("b")
        wait_pane("nearest consistent cut below", "CONSISTENT", "Orphans (0)",
                  absent="INCONSISTENT")
        # The message lines between lanes, the lattice and causality keys.
        wait_pane("S──╮", "╰─▶R", "R◀─╯")
        keys("[")
        wait_pane("lattice: - ", "CONSISTENT", absent="INCONSISTENT")
        keys("c")
        wait_pane("causality of ", "(causal past)")
        keys("c")
        # The logical-time layout, a hidden lane with its dashed links, the whole chain.
        keys("z")
        wait_pane("logical-time layout: 23 events on ", "step ")
        keys("z")
        wait_pane("one event per row", "lamport ")
        keys("h")
        text = wait_pane("1 hidden: P", "lane hidden")
        if "1 hidden: P3" in text:  # P3 sends nothing: hide P2 instead, whose messages go on
            keys("H")
            wait_pane("shown again: P3", absent="lane hidden")
            keys("Left", "h")
        text = wait_pane("lane hidden", "┄ via hidden lanes")
        hidden = text.split("1 hidden: ")[1][:2]
        keys("H")
        wait_pane(f"shown again: {hidden}", absent="lane hidden")
        keys(")")
        wait_pane("chain forward: ", "(chain, hop 1)")
        keys("q")
        deadline = time.monotonic() + 20
        while subprocess.run([*tmux, "has-session", "-t", session], capture_output=True,
                             timeout=30).returncode == 0:
            assert time.monotonic() < deadline, "cutscope view did not quit on q"
            time.sleep(0.2)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)


LIVE_APP = r'''
import os, queue, sys, threading, time
import cutscope

db, stop = sys.argv[1], sys.argv[2]
cutscope.start(db=db, name="live")
inbox = {"ping": queue.Queue(), "pong": queue.Queue()}

def player(me, other, serve):
    with cutscope.process(me):
        count = {"n": 0}
        cutscope.state(lambda: {"handled": count["n"]})
        if serve:
            inbox[other].put(0)
        deadline = time.monotonic() + 60
        while not os.path.exists(stop) and time.monotonic() < deadline:
            try:
                n = inbox[me].get(timeout=0.05)
            except queue.Empty:
                continue
            count["n"] += 1
            time.sleep(0.002)
            inbox[other].put(n + 1)

ts = [threading.Thread(target=player, args=("ping", "pong", True)),
      threading.Thread(target=player, args=("pong", "ping", False))]
for t in ts:
    t.start()
for t in ts:
    t.join()
cutscope.stop()
'''


def test_snapshot_key_takes_a_snapshot_of_a_live_system(tmp_path, db_url):
    """A real traced program (threads over queues) in another process; `s` snapshots it."""
    script = tmp_path / "live.py"
    script.write_text(LIVE_APP)
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, str(script), db_url, str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    async def go():
        deadline = time.monotonic() + 30
        while True:  # wait until the program has recorded something
            try:
                if len(load(db_url)["events"]) > 20:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            await asyncio.sleep(0.1)
        app = CutscopeApp(db=db_url, follow=True, poll=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await pilot.press("s")
            await wait_for(pilot, lambda: getattr(app, "last_snapshot", None) is not None, 30)
            assert "complete" in app.last_snapshot, app.last_snapshot
            await wait_for(pilot, lambda: app.doc is not None and app.doc["snapshots"], 30)
            [snap] = app.doc["snapshots"]
            assert set(snap["processes"]) == {"ping", "pong"}

    try:
        run(go())
    finally:
        stop.write_text("")
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    from cutscope.viewer.model import check
    assert check(load(db_url)) == []


def test_database_of_another_schema_version_is_refused(db_url, db_path):
    import sqlite3

    viewer_traces.bank_trace(db_url, extra_rounds=0)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for cmd in ("view", "check"):
        r = subprocess.run([sys.executable, "-m", "cutscope", cmd, "--db", db_url],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "schema version 99" in r.stderr


# -- the explorer model under random key sequences (no UI) ---------------------------------

KEYS = st.sampled_from(["left", "right", "up", "down", "shift+up", "shift+down", "b", "a",
                        "home", "end"])


@settings(max_examples=40, deadline=None)
@given(traces(), st.lists(KEYS, max_size=25))
def test_explorer_follows_keys_and_agrees_with_the_definitions(doc, keys):
    t = Trace(doc)
    ex = Explorer(t)
    for k in keys:
        if k in ("left", "right"):
            ex.select(-1 if k == "left" else 1)
        elif k in ("up", "down", "shift+up", "shift+down"):
            before = ex.cut[ex.process]
            ex.move({"up": -1, "down": 1, "shift+up": -10, "shift+down": 10}[k])
            inside = t.count_inside(ex.process, ex.cut[ex.process])
            was = t.count_inside(ex.process, before)
            assert abs(inside - was) <= {"up": 1, "down": 1}.get(k, 10)
        elif k == "b":
            ex.nearest_below()
        elif k == "a":
            ex.nearest_above()
        else:
            p = ex.process
            ex.set_frontier(p, 0 if k == "home" else t.last_seq(p))
        assert set(ex.cut) == set(t.processes)
        full = dict(ex.cut)
        assert ex.consistent == brute_consistent(doc, full)
        assert sorted(m.recv for m in ex.orphans) == brute_orphans(doc, full)
        assert sorted(m.id for m in ex.in_transit) == brute_in_transit(doc, full)
        # The frontier row of each lane is its last event inside the cut.
        for i, p in enumerate(ex.procs):
            g = ex.frontiers[i]
            if g < 0:
                assert ex.cut[p] < (t.seqs[p] or [1])[0]
            else:
                e = t.events[p][ex.all_pos[g]]
                assert ex.all_proc[g] == i and e["seq"] == t.step(p, ex.cut[p], 0)
    # Rows are a linear extension of happened-before: every send above its receive.
    row = {(t.events[ex.procs[i]][pos]["process"], t.events[ex.procs[i]][pos]["seq"]): g
           for g, (i, pos) in enumerate(zip(ex.all_proc, ex.all_pos))}
    for m in t.messages.values():
        if m.recv is not None:
            assert row[m.send] < row[m.recv]


@settings(max_examples=30, deadline=None)
@given(traces(), st.sampled_from(["k:send", "k:recv p:p0", "p:p1", "#", "p0#", "nothing-matches"]))
def test_filter_rows_are_exactly_the_matching_events_in_order(doc, text):
    from cutscope.viewer.explorer import describe, parse_filter

    t = Trace(doc)
    ex = Explorer(t)
    order = [ex.event_at(y) for y in range(len(ex))]
    n = ex.set_filter(text)
    procs, kinds, words = parse_filter(text)
    want = [e for e in order if (not procs or e["process"] in procs)
            and (not kinds or e["kind"] in kinds) and words in describe(e, t).lower()]
    assert n == len(ex) == len(want)
    assert [ex.event_at(y) for y in range(len(ex))] == want
    ex.set_filter("")
    assert len(ex) == len(order)
