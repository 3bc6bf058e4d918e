"""Snapshots of the threads bank (examples/bank_threads.py): real threads, real queue.Queue.

Each branch is a thread that is its own logical process; money moves through
the queue integration; auditors take snapshots at random times while the
branches run at full speed.
"""

from __future__ import annotations

import os
import sys
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cutscope
from cutscope.testing import recording
from cutscope.viewer.analysis import Trace, check

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
import bank_threads  # noqa: E402


def verify(doc, snap, total):
    """Consistent cut; each channel's state is exactly what was in transit; money adds up."""
    assert snap.status == "complete", snap.missing
    t = Trace(doc)
    cut = t.snapshot_cut(snap.id)
    assert set(cut) == {p for p in snap.states}
    assert t.consistent(cut), [m.id for m in t.orphans(cut)]
    transit: dict[str, list[str]] = {}
    for m in t.in_transit(cut):
        transit.setdefault(m.channel, []).append(m.id)
    assert {c: [m["msg"] for m in ms] for c, ms in snap.channels.items() if ms} == transit
    assert bank_threads.balances(snap) + bank_threads.in_transit(snap) == total


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(branches=st.integers(2, 5), seed=st.integers(0, 10_000),
       delays=st.lists(st.floats(0.0, 0.4), min_size=1, max_size=3),
       rate=st.sampled_from([300.0, 3000.0, 0.0]))
def test_threads_bank_every_snapshot_consistent_and_money_conserved(branches, seed, delays, rate):
    with recording(name="auditor") as rec:
        snaps, bank = bank_threads.run(branches=branches, seconds=0.5, seed=seed,
                                       delays=sorted(delays), rate=rate, timeout=20)
        doc = rec.trace()
    assert sum(b.balance for b in bank.branches) == bank.total
    assert check(doc) == []
    assert len(snaps) == len(delays)
    for s in snaps:
        verify(doc, s, bank.total)


def test_concurrent_snapshots_from_several_auditors():
    with recording(name="auditor") as rec:
        bank = bank_threads.Bank(4, seed=7, rate=2000)
        bank.start()
        out: list = []
        try:
            def audit(initiator):
                out.append(cutscope.snapshot(initiator=initiator, timeout=20))

            ths = [threading.Thread(target=audit, args=(f"branch-{i}",)) for i in range(3)]
            for th in ths:
                th.start()
            for th in ths:
                th.join(30)
        finally:
            bank.finish()
        doc = rec.trace()
    assert len(out) == 3 and len({s.id for s in out}) == 3
    assert check(doc) == []
    for s in out:
        verify(doc, s, bank.total)
