"""Possibly and Definitely of conjunctive predicates against a walk of the lattice.

Random small traces (test_analysis's simulator) whose local events record a
value ``x``; each local predicate compares ``x``. The brute force enumerates
every cut, keeps the consistent ones, and evaluates the predicate on each
process's recorded values folded up to its frontier.
"""

from __future__ import annotations

import collections
import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from cutscope.viewer.model import Expr, Trace, parse_conjunct
from test_analysis import all_cuts, brute_consistent, traces


@st.composite
def valued_traces(draw):
    doc = draw(traces(max_procs=3, max_steps=24))
    for e in doc["events"]:
        if e["kind"] == "local":
            e["data"] = {"label": "set", "x": draw(st.integers(0, 2))}
    return doc


@st.composite
def trace_and_phi(draw):
    doc = draw(valued_traces())
    valued = sorted({e["process"] for e in doc["events"] if e["kind"] == "local"})
    assume(valued)  # a predicate names only values that its process records
    procs = draw(st.lists(st.sampled_from(valued), min_size=1, max_size=len(valued), unique=True))
    phi = {}
    for p in procs:
        op = draw(st.sampled_from(["==", ">=", "!="]))
        phi[p] = f"x {op} {draw(st.integers(0, 2))}"
    return doc, phi


def brute_state(doc, p, frontier):
    state = {}
    for e in doc["events"]:
        if e["process"] == p and e["seq"] <= frontier and e["kind"] == "local":
            state.update(e.get("data") or {})
    return state


def brute_holds(doc, phi, cut):
    for p, text in phi.items():
        try:
            if not Expr(text).evaluate(brute_state(doc, p, cut[p])):
                return False
        except NameError:
            return False
    return True


def successors(t, cut):
    for p in t.processes:
        nxt = t.step(p, cut[p], 1)
        if nxt != cut[p]:
            yield {**cut, p: nxt}


def brute_definitely(doc, t, phi):
    """No path of consistent cuts from the empty cut to the whole trace avoids phi."""
    bottom, top = t.bottom(), t.top()
    if brute_holds(doc, phi, bottom):
        return True
    seen = {tuple(bottom.values())}
    todo = collections.deque([bottom])
    while todo:
        c = todo.popleft()
        if c == top:
            return False
        for n in successors(t, c):
            k = tuple(n.values())
            if k in seen or not brute_consistent(doc, n) or brute_holds(doc, phi, n):
                continue
            seen.add(k)
            todo.append(n)
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_and_phi())
def test_possibly_agrees_with_the_lattice(case):
    doc, phi = case
    t = Trace(doc)
    sat = [c for c in all_cuts(t) if brute_consistent(doc, c) and brute_holds(doc, phi, c)]
    ans = t.possibly(phi)
    assert ans.holds == bool(sat)
    if sat:
        assert brute_consistent(doc, ans.cut) and brute_holds(doc, phi, ans.cut)
        # the least satisfying consistent cut: below every other one
        assert ans.cut == {p: min(c[p] for c in sat) for p in t.processes}
        assert t.satisfies(phi, ans.cut)
    else:
        assert ans.cut is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_and_phi())
def test_definitely_agrees_with_the_lattice(case):
    doc, phi = case
    t = Trace(doc)
    ans = t.definitely(phi)
    assert ans.holds == brute_definitely(doc, t, phi)
    if ans.holds:
        assert brute_consistent(doc, ans.cut) and brute_holds(doc, phi, ans.cut)
        assert t.possibly(phi).holds
    else:
        assert ans.cut is None


def _mutex_doc(overlap: bool):
    """Two processes enter and leave a critical section; a token message orders them
    unless ``overlap``."""
    ev = []

    def e(p, seq, kind, **kw):
        ev.append({"process": p, "seq": seq, "lamport": seq, "kind": kind, "channel": kw.pop("ch", None),
                   "msg": kw.pop("msg", None), "nbytes": 0, "wall_ns": 0, **kw})

    e("a", 1, "local", data={"label": "enter", "cs": True})
    e("a", 2, "local", data={"label": "leave", "cs": False})
    e("a", 3, "send", ch="ab", msg="a#3")
    if overlap:
        e("b", 1, "local", data={"label": "enter", "cs": True})
        e("b", 2, "recv", ch="ab", msg="a#3")
    else:
        e("b", 1, "recv", ch="ab", msg="a#3")
        e("b", 2, "local", data={"label": "enter", "cs": True})
    e("b", 3, "local", data={"label": "leave", "cs": False})
    return {"format": "cutscope-trace", "version": 1,
            "processes": [{"name": "a", "pid": 1, "host": "h"}, {"name": "b", "pid": 2, "host": "h"}],
            "channels": [{"id": "ab", "src": "a", "dst": "b", "transport": "queue",
                          "endpoint": None, "framed": True}],
            "events": sorted(ev, key=lambda x: (x["process"], x["seq"])), "snapshots": []}


def test_mutual_exclusion_violation_is_possible_only_without_the_token():
    phi = {"a": "cs", "b": "cs"}
    ordered = Trace(_mutex_doc(overlap=False))
    assert not ordered.possibly(phi).holds and not ordered.definitely(phi).holds
    racy = Trace(_mutex_doc(overlap=True))
    ans = racy.possibly(phi)
    assert ans.holds and ans.cut == {"a": 1, "b": 1}
    assert not racy.definitely(phi).holds  # b may enter after a left


def test_definitely_when_each_enters_before_the_other_leaves():
    """a enters, tells b; b enters, tells a; only then does either leave."""
    ev = [
        ("a", 1, "local", None, {"label": "in", "up": 1}), ("a", 2, "send", "a#2", None),
        ("a", 3, "recv", "b#3", None), ("a", 4, "local", None, {"label": "out", "up": 0}),
        ("b", 1, "recv", "a#2", None), ("b", 2, "local", None, {"label": "in", "up": 1}),
        ("b", 3, "send", "b#3", None), ("b", 4, "local", None, {"label": "out", "up": 0}),
    ]
    doc = {"format": "cutscope-trace", "version": 1,
           "processes": [{"name": "a", "pid": 1, "host": "h"}, {"name": "b", "pid": 2, "host": "h"}],
           "channels": [], "snapshots": [],
           "events": [{"process": p, "seq": s, "lamport": 0, "kind": k, "channel": "c", "msg": m,
                       "nbytes": 0, "wall_ns": 0, **({"data": d} if d else {})}
                      for p, s, k, m, d in ev]}
    t = Trace(doc)
    ans = t.definitely({"a": "up == 1", "b": "up == 1"})
    assert ans.holds and t.consistent(ans.cut) and t.satisfies({"a": "up == 1", "b": "up == 1"}, ans.cut)
    assert ans.cut == {"a": 2, "b": 2}


def test_snapshot_states_are_values_and_bookkeeping_is_not():
    doc = _mutex_doc(overlap=False)
    doc["events"].append({"process": "a", "seq": 4, "lamport": 9, "kind": "snapshot", "channel": None,
                          "msg": None, "nbytes": 0, "wall_ns": 0, "snapshot": 1})
    doc["snapshots"] = [{"id": 1, "status": "complete", "processes": {
        "a": {"event_seq": 4, "state": {"balance": 5, "_cutscope": {"clock": 3}}}}, "channels": []}]
    t = Trace(doc)
    assert t.possibly({"a": "balance == 5"}).cut == {"a": 4, "b": 0}
    with pytest.raises(ValueError, match="no recorded value named '_cutscope'"):
        t.possibly({"a": "_cutscope"})


@pytest.mark.parametrize("text, error", [
    ("a x > 1", "not PROCESS: EXPRESSION"),
    ("zz: x", "no process 'zz'"),
    ("a: x >", "not an expression"),
    ("a: __import__('os')", "only these functions"),
    ("a: x[__name__]", "not allowed"),
    ("a: x.__class__", "private attribute"),
    ("a: open('f')", "only these functions"),
    ("a: [lambda: 1]", "not allowed in an expression: Lambda"),
    ("a: (x := 1)", "not allowed in an expression: NamedExpr"),
])
def test_bad_predicates_say_what_is_wrong(text, error):
    with pytest.raises(ValueError, match=error):
        parse_conjunct(text, ["a", "b"])


def test_a_name_never_recorded_is_an_error():
    t = Trace(_mutex_doc(overlap=True))
    with pytest.raises(ValueError, match="no recorded value named 'csx'"):
        t.possibly({"a": "csx"})
    with pytest.raises(ValueError, match="empty predicate"):
        t.definitely({})


def test_process_names_with_colons():
    assert parse_conjunct("h:1: x == 2", ["h:1", "h"])[0] == "h:1"
    assert parse_conjunct("h: {1: 2}[x] == 2", ["h"])[0] == "h"


# -- real traces: the CLI and the explorer ------------------------------------------------

import asyncio  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import viewer_traces  # noqa: E402


def cutscope_cli(*args):
    return subprocess.run([sys.executable, "-m", "cutscope", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_answers_with_the_witness_cut_and_exit_status(db_url):
    viewer_traces.mutex_trace(db_url, token=False)
    r = cutscope_cli("possibly", "--db", db_url, "A: cs", "B: cs")
    assert r.returncode == 0 and r.stdout.strip() == "possibly: holds; witness cut main=0,A=1,B=1"
    r = cutscope_cli("definitely", "--db", db_url, "A: cs", "B: cs")
    assert r.returncode == 1 and r.stdout.strip() == "definitely: does not hold"
    r = cutscope_cli("definitely", "--db", db_url, "--json", "A: balance <= 10", "B: balance == 3")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["holds"] and out["cut"]["B"] >= 1


def test_cli_token_trace_never_has_both_inside(db_url):
    viewer_traces.mutex_trace(db_url, token=True)
    r = cutscope_cli("possibly", "--db", db_url, "A: cs", "B: cs")
    assert r.returncode == 1 and r.stdout.strip() == "possibly: does not hold"


@pytest.mark.parametrize("args, error", [
    (["A: cz"], "A: no recorded value named 'cz' (recorded: balance, cs, label)"),
    (["Q: cs"], "no process 'Q' in this trace (processes: main, A, B)"),
    (["A: cs", "A: balance"], "two local predicates for A: join them with 'and'"),
    (["A: cs ="], "not an expression"),
    (["A: open('x')"], "only these functions can be called"),
])
def test_cli_bad_predicate_is_one_line_and_exit_2(db_url, args, error):
    viewer_traces.mutex_trace(db_url, token=False)
    r = cutscope_cli("possibly", "--db", db_url, *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cutscope: error: ")
    assert error in r.stderr and "Traceback" not in r.stderr


def test_explorer_key_w_jumps_to_the_witness_cut(db_url):
    from cutscope.viewer.app import CutscopeApp

    from test_viewer import SIZE, text_of, wait_for

    viewer_traces.mutex_trace(db_url, token=False)

    async def go():
        app = CutscopeApp(db=db_url, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            assert ex.cut == ex.trace.top()
            await pilot.press("w")
            box = app.screen.query_one("#predicate")
            assert box.has_focus
            box.value = "possibly A: cs && B: cs"
            await pilot.press("enter")
            await wait_for(pilot, lambda: "holds" in text_of(app, "#status"))
            assert {p: ex.cut[p] for p in ("A", "B")} == {"A": 1, "B": 1}
            assert ex.consistent and "CONSISTENT" in text_of(app, "#verdict")
            assert "witness cut" in text_of(app, "#status") and not box.has_focus

            await pilot.press("w")
            box.value = "definitely A: cs && B: cs"
            await pilot.press("enter")
            await wait_for(pilot, lambda: "does not hold" in text_of(app, "#status"))
            assert "definitely(A: cs && B: cs)" in text_of(app, "#status")
            assert {p: ex.cut[p] for p in ("A", "B")} == {"A": 1, "B": 1}  # the cut stays

            await pilot.press("w")
            box.value = "A: nosuch"
            await pilot.press("enter")
            await wait_for(pilot, lambda: "no recorded value named 'nosuch'" in text_of(app, "#status"))

            await pilot.press("w")
            assert box.has_focus
            await pilot.press("escape")
            assert not box.has_focus and not box.has_class("visible")
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(go(), 90))
