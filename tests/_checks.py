"""Assertions shared by the snapshot tests."""

from __future__ import annotations

from cutscope.viewer.model import Trace


def assert_snapshot_is_its_cut(doc, snap) -> Trace:
    """The snapshot is complete, its cut consistent, and each channel state is
    exactly the messages in transit across that cut (same ids, same order)."""
    # (on failure, also how far each process got: stuck, or only slow?)
    assert snap.status == "complete", (snap.missing, {
        p: max((e["seq"] for e in doc["events"] if e["process"] == p), default=None)
        for p in sorted({e["process"] for e in doc["events"]})})
    t = Trace(doc)
    cut = t.snapshot_cut(snap.id)
    assert t.consistent(cut), [m.id for m in t.orphans(cut)]
    transit: dict[str, list[str]] = {}
    for m in t.in_transit(cut):
        if m.channel not in ended_at(snap, m.dst):  # closed unread by its receiver: empty
            transit.setdefault(m.channel, []).append(m.id)
    assert {c: [m["msg"] for m in ms] for c, ms in snap.channels.items() if ms} == transit
    return t


def ended_at(snap, process) -> set:
    """The incoming channels that ``process`` had ended before its state (closed its
    end, or read the end of the stream): empty in the cut."""
    return set(((snap.states.get(process) or {}).get("_cutscope") or {}).get("ended") or ())
