"""Causality analysis (viewer/model/) against brute-force definitions.

Random traces are built from random message exchanges between processes
(FIFO channels, deliveries interleaved at random); every property is checked
against the definition computed the slow way.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings, strategies as st

from cutscope.viewer.model import Trace, check, check_report, parse_cut, snapshot_cut


# -- building traces -------------------------------------------------------------------

class Sim:
    """A tiny recorder of a distributed run: processes, FIFO channels, Lamport clocks."""

    def __init__(self, names):
        self.names = list(names)
        self.seq = {p: 0 for p in names}
        self.clock = {p: 0 for p in names}
        self.events = []
        self.queues = {}  # (src, dst) -> list of (msg, stamp)
        self.snapshots = []

    def chan(self, src, dst, k=0):
        return f"c-{src}-{dst}" + (f"-{k}" if k else "")

    def _ev(self, p, kind, **kw):
        self.seq[p] += 1
        e = {"process": p, "seq": self.seq[p], "lamport": self.clock[p], "kind": kind,
             "channel": None, "msg": None, "nbytes": 0, "wall_ns": len(self.events)}
        e.update(kw)
        self.events.append(e)
        return e

    def local(self, p):
        self.clock[p] += 1
        return self._ev(p, "local")

    def send(self, src, dst, k=0):
        """Send on channel ``k`` from src to dst (two channels per pair: FIFO each, not together)."""
        self.clock[src] += 1
        msg = f"{src}#{self.seq[src] + 1}"
        e = self._ev(src, "send", channel=self.chan(src, dst, k), msg=msg, nbytes=8)
        self.queues.setdefault((src, dst, k), []).append((msg, self.clock[src]))
        return e

    def deliver(self, src, dst, k=0):
        q = self.queues.get((src, dst, k))
        if not q:
            return None
        msg, stamp = q.pop(0)
        self.clock[dst] = max(self.clock[dst], stamp) + 1
        return self._ev(dst, "recv", channel=self.chan(src, dst, k), msg=msg, nbytes=8)

    def doc(self):
        chans = sorted({(e["channel"]) for e in self.events if e["channel"]})
        return {
            "format": "cutscope-trace", "version": 1,
            "processes": [{"name": p, "pid": 1, "host": "h"} for p in self.names],
            "channels": [{"id": c, "src": c.split("-")[1], "dst": c.split("-")[2],
                          "transport": "queue", "endpoint": None, "framed": True} for c in chans],
            "events": sorted(self.events, key=lambda e: (e["process"], e["seq"])),
            "snapshots": self.snapshots,
        }


@st.composite
def traces(draw, max_procs=4, max_steps=30):
    n = draw(st.integers(2, max_procs))
    names = [f"p{i}" for i in range(n)]
    sim = Sim(names)
    steps = draw(st.lists(st.tuples(st.sampled_from(["local", "send", "deliver", "deliver"]),
                                    st.integers(0, n - 1), st.integers(0, n - 1), st.integers(0, 1)),
                          max_size=max_steps))
    for op, a, b, k in steps:
        if op == "local":
            sim.local(names[a])
        elif op == "send" and a != b:
            sim.send(names[a], names[b], k)
        elif op == "deliver":
            sim.deliver(names[a], names[b], k)
    # Leave some messages undelivered (in transit at the end) on purpose.
    return sim.doc()


@st.composite
def trace_and_cut(draw):
    doc = draw(traces())
    t = Trace(doc)
    cut = {p: draw(st.integers(0, t.last_seq(p))) for p in t.processes}
    return doc, cut


# -- brute force ---------------------------------------------------------------------------

def recv_send_pairs(doc):
    sends = {e["msg"]: (e["process"], e["seq"]) for e in doc["events"] if e["kind"] == "send"}
    return [((e["process"], e["seq"]), sends[e["msg"]]) for e in doc["events"]
            if e["kind"] == "recv" and e["msg"] in sends]


def inside(cut, ev):
    return ev[1] <= cut[ev[0]]


def brute_orphans(doc, cut):
    return sorted(r for r, s in recv_send_pairs(doc) if inside(cut, r) and not inside(cut, s))


def brute_consistent(doc, cut):
    return not brute_orphans(doc, cut)


def brute_in_transit(doc, cut):
    recv_of = {}
    for e in doc["events"]:
        if e["kind"] == "recv":
            recv_of.setdefault(e["msg"], (e["process"], e["seq"]))
    out = []
    for e in doc["events"]:
        if e["kind"] == "send" and inside(cut, (e["process"], e["seq"])):
            r = recv_of.get(e["msg"])
            if r is None or not inside(cut, r):
                out.append(e["msg"])
    return sorted(out)


def all_cuts(t):
    return [dict(zip(t.processes, c)) for c in
            itertools.product(*[[0, *t.seqs[p]] for p in t.processes])]


def leq(a, b):
    return all(a[p] <= b[p] for p in a)


def closure(doc):
    """Happened-before as the transitive closure of program order and messages."""
    evs = [(e["process"], e["seq"]) for e in doc["events"]]
    succ = {e: set() for e in evs}
    by_p = {}
    for p, s in evs:
        by_p.setdefault(p, []).append(s)
    for p, ss in by_p.items():
        ss.sort()
        for a, b in zip(ss, ss[1:]):
            succ[(p, a)].add((p, b))
    for r, s in recv_send_pairs(doc):
        succ[s].add(r)
    hb = {}
    for e in evs:
        seen, todo = set(), list(succ[e])
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(succ[x])
        hb[e] = seen
    return hb


SETTINGS = settings(max_examples=50, deadline=None)


# -- properties ------------------------------------------------------------------------------

@SETTINGS
@given(trace_and_cut())
def test_consistent_iff_no_orphans_and_matches_definition(dc):
    doc, cut = dc
    t = Trace(doc)
    orphans = t.orphans(cut)
    assert t.consistent(cut) == (not orphans) == brute_consistent(doc, cut)
    assert sorted(m.recv for m in orphans) == brute_orphans(doc, cut)


@SETTINGS
@given(trace_and_cut())
def test_in_transit_is_sent_inside_received_outside_or_never(dc):
    doc, cut = dc
    t = Trace(doc)
    assert sorted(m.id for m in t.in_transit(cut)) == brute_in_transit(doc, cut)


@SETTINGS
@given(trace_and_cut())
def test_nearest_cuts_are_consistent_and_bracket_the_cut(dc):
    doc, cut = dc
    t = Trace(doc)
    below, above = t.nearest_below(cut), t.nearest_above(cut)
    assert brute_consistent(doc, below) and brute_consistent(doc, above)
    assert leq(below, cut) and leq(cut, above)
    if t.consistent(cut):
        assert below == cut == above


@settings(max_examples=30, deadline=None)
@given(traces(max_procs=3, max_steps=14), st.data())
def test_nearest_cuts_are_the_largest_below_and_smallest_above(doc, data):
    t = Trace(doc)
    cuts = all_cuts(t)
    cut = data.draw(st.sampled_from(cuts))
    below, above = t.nearest_below(cut), t.nearest_above(cut)
    for c in cuts:
        if brute_consistent(doc, c):
            if leq(c, cut):
                assert leq(c, below)
            if leq(cut, c):
                assert leq(above, c)


@settings(max_examples=30, deadline=None)
@given(traces(max_procs=3, max_steps=14))
def test_lattice_walk_yields_exactly_the_consistent_cuts_by_level(doc):
    t = Trace(doc)
    walked = list(t.lattice(limit=None))
    for c in walked:
        assert brute_consistent(doc, c)
    levels = [sum(t.count_inside(p, c[p]) for p in c) for c in walked]
    assert levels == sorted(levels)
    expected = [c for c in all_cuts(t) if brute_consistent(doc, c)]
    key = lambda c: tuple(sorted(c.items()))
    assert sorted(map(key, walked)) == sorted(map(key, expected))


@SETTINGS
@given(traces(), st.integers(1, 20))
def test_lattice_is_lazy_and_bounded(doc, limit):
    t = Trace(doc)
    got = list(t.lattice(limit=limit))
    assert len(got) <= limit
    assert all(t.consistent(c) for c in got)


@SETTINGS
@given(traces())
def test_vector_clock_happened_before_is_the_transitive_closure(doc):
    t = Trace(doc)
    hb = closure(doc)
    evs = list(hb)
    for a in evs:
        for b in evs:
            assert t.happened_before(a, b) == (b in hb[a]), (a, b)


# -- the lesson's scenarios, fixed ------------------------------------------------------------

def lesson():
    """P1 sends M to P2. The cut takes P2 after receiving M and P1 before sending it."""
    sim = Sim(["P1", "P2"])
    sim.local("P1")          # P1#1
    sim.send("P1", "P2")     # P1#2 = M
    sim.local("P2")          # P2#1
    sim.deliver("P1", "P2")  # P2#2 receives M
    return sim


def test_thin_air_message_is_an_orphan_of_an_inconsistent_cut():
    t = Trace(lesson().doc())
    cut = {"P1": 1, "P2": 2}  # M received inside, its send outside
    assert not t.consistent(cut)
    [m] = t.orphans(cut)
    assert (m.id, m.src, m.send_seq, m.dst, m.recv_seq) == ("P1#2", "P1", 2, "P2", 2)
    assert t.in_transit(cut) == []
    assert t.nearest_below(cut) == {"P1": 1, "P2": 1}
    assert t.nearest_above(cut) == {"P1": 2, "P2": 2}


def test_message_sent_before_sender_cut_and_received_after_receiver_cut_is_in_transit():
    t = Trace(lesson().doc())
    cut = {"P1": 2, "P2": 1}
    assert t.consistent(cut)
    assert [m.id for m in t.in_transit(cut)] == ["P1#2"]
    assert t.orphans(cut) == []


def _with_snapshot(sim, frontiers, channels, status="complete"):
    """Insert snapshot events after the given frontiers (renumbering later events)."""
    sid = len(sim.snapshots) + 1
    evs = []
    for e in sim.events:
        evs.append(dict(e))
    procs = {}
    for p, f in frontiers.items():
        for e in evs:
            if e["process"] == p and e["seq"] > f:
                e["seq"] += 1
        evs.append({"process": p, "seq": f + 1, "lamport": 0, "kind": "snapshot", "channel": None,
                    "msg": None, "nbytes": 0, "wall_ns": 0, "snapshot": sid})
        procs[p] = {"event_seq": f + 1, "state": {}, "done": True}
    sim.events = evs
    sim.snapshots.append({"id": sid, "initiator": "P1", "status": status, "processes": procs,
                          "channels": [{"channel": c, "complete": True,
                                        "messages": [{"msg": m} for m in ms]}
                                       for c, ms in channels.items()],
                          "missing": [] if status == "complete" else ["P3"]})
    return sim.doc()


def test_check_accepts_a_snapshot_whose_channel_holds_the_in_transit_message():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {"c-P1-P2": ["P1#2"]})
    assert Trace(doc).snapshot_cut(1) == {"P1": 2, "P2": 1}
    assert check(doc) == []


def test_check_reports_the_thin_air_snapshot():
    doc = _with_snapshot(lesson(), {"P1": 1, "P2": 2}, {"c-P1-P2": []})
    problems = check(doc)
    assert any("inconsistent cut" in p and "P1#2" in p and "thin air" in p for p in problems)


def test_check_reports_a_channel_state_that_lost_an_in_transit_message():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {"c-P1-P2": []})
    problems = check(doc)
    assert len(problems) == 1 and "c-P1-P2" in problems[0] and "P1#2" in problems[0]


def test_check_reports_a_recorded_message_that_was_not_in_transit():
    # Recording a message sent after the sender's snapshot (the lesson's slip).
    doc = _with_snapshot(lesson(), {"P1": 1, "P2": 1}, {"c-P1-P2": ["P1#2"]})
    problems = check(doc)
    assert len(problems) == 1 and "recorded [P1#2]" in problems[0]


def test_check_notes_partial_snapshots_without_failing():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {"c-P1-P2": ["P1#2"]}, status="partial")
    problems, notes = check_report(doc)
    assert problems == []
    assert any("partial" in n and "P3" in n for n in notes)


def test_check_reports_a_snapshot_event_that_is_not_there():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {"c-P1-P2": ["P1#2"]})
    doc["snapshots"][0]["processes"]["P2"]["event_seq"] = 3  # P2#3 is the receive
    assert any("no snapshot event" in p for p in check(doc))


# -- simulated Chandy-Lamport: check() accepts what the algorithm records ---------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(2, 4), st.integers(0, 2**32 - 1))
def test_check_accepts_every_chandy_lamport_snapshot_of_a_random_run(n, seed):
    rnd = random.Random(seed)
    names = [f"p{i}" for i in range(n)]
    sim = Sim(names)
    # Channels carry ("msg", id, stamp) or ("marker",) in FIFO order.
    fifo = {(a, b): [] for a in names for b in names if a != b}
    state = {}  # process -> {"seq": event_seq, "open": set of incoming channels, "rec": {chan: [ids]}}

    def record(p):
        sim.clock[p] += 1
        e = sim._ev(p, "snapshot", snapshot=1)
        state[p] = {"seq": e["seq"], "open": {a for a in names if a != p}, "rec": {}}
        for b in names:
            if b != p:
                fifo[(p, b)].append(("marker",))

    started = False
    for step in range(rnd.randint(5, 60)):
        if not started and rnd.random() < 0.1:
            record(rnd.choice(names))
            started = True
        a, b = rnd.sample(names, 2)
        if rnd.random() < 0.5:
            sim.clock[a] += 1
            msg = f"{a}#{sim.seq[a] + 1}"
            sim._ev(a, "send", channel=sim.chan(a, b), msg=msg, nbytes=1)
            fifo[(a, b)].append(("msg", msg, sim.clock[a]))
        elif fifo[(a, b)]:
            item = fifo[(a, b)].pop(0)
            if item[0] == "marker":
                if b not in state:
                    record(b)
                state[b]["open"].discard(a)
                state[b]["rec"].setdefault(a, [])
            else:
                _, msg, stamp = item
                sim.clock[b] = max(sim.clock[b], stamp) + 1
                sim._ev(b, "recv", channel=sim.chan(a, b), msg=msg, nbytes=1)
                if b in state and a in state[b]["open"]:
                    state[b]["rec"].setdefault(a, []).append(msg)
    if not started:
        record(names[0])
    # Drain every channel so the snapshot completes.
    for _ in range(1000):
        busy = [k for k, v in fifo.items() if v]
        if not busy:
            break
        a, b = busy[0]
        item = fifo[(a, b)].pop(0)
        if item[0] == "marker":
            if b not in state:
                record(b)
            state[b]["open"].discard(a)
            state[b]["rec"].setdefault(a, [])
        else:
            _, msg, stamp = item
            sim.clock[b] = max(sim.clock[b], stamp) + 1
            sim._ev(b, "recv", channel=sim.chan(a, b), msg=msg, nbytes=1)
            if b in state and a in state[b]["open"]:
                state[b]["rec"].setdefault(a, []).append(msg)
    assert all(not s["open"] for s in state.values()) and set(state) == set(names)
    sim.snapshots.append({
        "id": 1, "initiator": names[0], "status": "complete",
        "processes": {p: {"event_seq": s["seq"], "state": {}, "done": True} for p, s in state.items()},
        "channels": [{"channel": sim.chan(a, p), "complete": True,
                      "messages": [{"msg": m} for m in ms]}
                     for p, s in state.items() for a, ms in s["rec"].items()],
        "missing": []})
    doc = sim.doc()
    assert check(doc) == []
    t = Trace(doc)
    assert t.consistent(snapshot_cut(doc["snapshots"][0]))
    # Corrupting one recorded channel state is always caught.
    chans = [c for c in doc["snapshots"][0]["channels"] if c["messages"]]
    if chans:
        chans[0]["messages"].pop()
        assert check(doc)


def test_parse_cut():
    assert parse_cut("a=1,b:2=0") == {"a": 1, "b:2": 0}
    for bad in ("", "a", "a=x", "a=-1"):
        with pytest.raises(ValueError):
            parse_cut(bad)


def test_in_transit_and_orphans_across_two_channels_delivered_out_of_order():
    sim = Sim(["a", "b"])
    sim.send("a", "b", 0)     # a#1 on channel 0
    sim.send("a", "b", 1)     # a#2 on channel 1
    sim.deliver("a", "b", 1)  # b#1 receives a#2
    sim.deliver("a", "b", 0)  # b#2 receives a#1
    t = Trace(sim.doc())
    assert [m.id for m in t.in_transit({"a": 2, "b": 1})] == ["a#1"]
    assert [m.id for m in t.orphans({"a": 1, "b": 1})] == ["a#2"]
    assert [m.id for m in t.orphans({"a": 1, "b": 2})] == ["a#2"]
    assert t.nearest_below({"a": 1, "b": 2}) == {"a": 1, "b": 0}
    assert t.nearest_above({"a": 0, "b": 2}) == {"a": 2, "b": 2}


def test_check_reports_in_transit_messages_on_a_channel_the_snapshot_left_out():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {})
    [problem] = check(doc)
    assert "c-P1-P2" in problem and "P1#2" in problem and "not recorded" in problem
    # Named among what a partial snapshot could not cover, it is a note, not a problem.
    doc["snapshots"][0]["status"] = "partial"
    doc["snapshots"][0]["missing"] = [{"channel": "c-P1-P2", "reason": "not FIFO"}]
    problems, notes = check_report(doc)
    assert problems == [] and notes


def test_check_reports_an_unclosed_channel_in_a_complete_snapshot():
    doc = _with_snapshot(lesson(), {"P1": 2, "P2": 1}, {"c-P1-P2": ["P1#2"]})
    doc["snapshots"][0]["channels"][0]["complete"] = False
    [problem] = check(doc)
    assert "not closed by its marker" in problem


def test_a_frame_received_in_two_parts_across_the_cut_belongs_to_the_channel_state():
    """The first part counts for happened-before; the rest was in the channel."""
    sim = Sim(["P1", "P2"])
    sim.send("P1", "P2")                      # P1#1: one frame
    e = sim.deliver("P1", "P2")               # P2#1: its first part
    sim.seq["P2"] += 1                        # P2#2: its second part
    sim.events.append(dict(e, seq=2, lamport=e["lamport"] + 1))
    t = Trace(sim.doc())
    assert t.messages["P1#1"].recv_seq == 1 and t.last_part == {"P1#1": 2}
    assert t.in_transit({"P1": 1, "P2": 1}) == []  # received (in part) inside
    # A snapshot between the two parts records the frame on its channel (both parts
    # appended, as the receiver saw them): that verifies.
    doc = _with_snapshot(sim, {"P1": 1, "P2": 1}, {"c-P1-P2": ["P1#1"]})
    doc["snapshots"][0]["channels"][0]["messages"] = [{"msg": "P1#1"}]
    assert check(doc) == []
    doc["snapshots"][0]["channels"][0]["messages"] = []
    assert check(doc) and "P1#1" in check(doc)[0]
