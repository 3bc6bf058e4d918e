"""A message from thin air: an inconsistent cut, built by hand on a real trace.

Two branches (threads that are logical processes, over a queue) record a real
trace: ``alice`` sends 10 to ``bob``, who credits it. Then we look at two cuts
of that trace:

- the cut where alice's send is inside and bob's receive is outside: consistent,
  the 10 is *in transit* (sent inside, received outside), a global state
  that could have happened;
- the cut where bob's receive is inside and alice's send is outside:
  inconsistent, the 10 was *received but never sent*: money from thin air.
  No run of the system can pass through that global state.

(The lesson's diagram labels the first case as the inconsistent one, and its
"conversely" says a send included with its receipt excluded makes a message
appear from nowhere. It does not: that message is simply in transit, and a
snapshot records it in the channel's state. The message from thin air is the
receipt included with its send excluded.)

The inconsistent cut is then stored as if it were a snapshot, next to a real
Chandy-Lamport snapshot of the same system, and ``cutscope check`` is run on
the database: the real one verifies, the forged one is reported. Usage::

    python examples/thin_air.py [--db PATH]      # default: a temporary file
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import cutscope
from cutscope.viewer.model import Trace, format_cut
from cutscope.viewer.export import load


def record(db: str) -> None:
    """The real system: alice sends 10 to bob; bob credits it; a real snapshot after."""
    cutscope.start(db=db, name="thin-air")
    try:
        box: queue.Queue = queue.Queue()
        back: queue.Queue = queue.Queue()
        balances = {"alice": 100, "bob": 100}
        stop = threading.Event()
        sent = threading.Event()

        def serve(q: queue.Queue, on_item) -> None:
            """Receive until told to stop: every receive's entry is a safe point."""
            while not stop.is_set():
                try:
                    on_item(q.get(timeout=0.05))
                except queue.Empty:
                    pass

        def alice():
            with cutscope.process("alice"):
                cutscope.state(lambda: {"balance": balances["alice"]})
                balances["alice"] -= 10
                box.put({"amount": 10})
                sent.set()
                serve(back, lambda item: None)  # bob's acknowledgement

        def bob():
            with cutscope.process("bob"):
                cutscope.state(lambda: {"balance": balances["bob"]})

                def credit(item):
                    balances["bob"] += item["amount"]
                    back.put("ack")
                serve(box, credit)

        threads = [threading.Thread(target=alice), threading.Thread(target=bob)]
        for th in threads:
            th.start()
        sent.wait(10)
        time.sleep(0.2)
        snap = cutscope.snapshot(initiator="bob", timeout=5)
        print(f"a real snapshot: {snap.summary()}: "
              f"{ {p: s['balance'] for p, s in snap.states.items()} }")
        stop.set()
        for th in threads:
            th.join()
    finally:
        cutscope.stop()


def forge(db: str, cut: dict[str, int]) -> int:
    """Store ``cut`` as if a snapshot had recorded it (what a wrong algorithm would do)."""
    from cutscope.tracer.store import open_store

    store = open_store(db, create=False)
    try:
        sid = store.create_snapshot("forger", time.time_ns())
        recs = [("snap_state", sid, p, n + 1, {"forged": True}, [], "forger") for p, n in cut.items()]
        recs += [("snap_done", sid, p) for p in cut]
        store.write([], recs)
        store.finish_snapshot(sid, "complete", [], time.time_ns())
    finally:
        store.close()
    return sid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help="SQLite path (default: a temporary file)")
    args = ap.parse_args(argv)
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="cutscope-thin-air-"), "trace.db")
    record(db)

    t = Trace(load(db))
    m = next(msg for msg in t.messages.values() if msg.src == "alice" and msg.dst == "bob")
    print(f"\nthe message: {m.id}, sent by alice at seq {m.send_seq}, "
          f"received by bob at seq {m.recv_seq}")

    fine = {"alice": m.send_seq, "bob": m.recv_seq - 1}
    print(f"\ncut {format_cut(fine)}: alice's send inside, bob's receive outside")
    print(f"  consistent: {t.consistent(fine)}; in transit: {[x.id for x in t.in_transit(fine)]}")

    air = {"alice": m.send_seq - 1, "bob": m.recv_seq}
    print(f"\ncut {format_cut(air)}: bob's receive inside, alice's send outside")
    print(f"  consistent: {t.consistent(air)}; orphans (received, never sent): "
          f"{[x.id for x in t.orphans(air)]}")
    print(f"  bob has 110 and alice 100: 10 from thin air. Nearest consistent cuts: "
          f"below {format_cut(t.nearest_below(air))}, above {format_cut(t.nearest_above(air))}")

    sid = forge(db, air)
    print(f"\nstored that cut as snapshot {sid}; `cutscope check --db {db}` says:")
    r = subprocess.run([sys.executable, "-m", "cutscope", "check", "--db", db],
                       capture_output=True, text=True)
    for line in (r.stdout + r.stderr).strip().splitlines():
        print("  " + line)
    print(f"  (exit status {r.returncode})")
    return 0 if r.returncode != 0 and not t.consistent(air) and t.consistent(fine) else 1


if __name__ == "__main__":
    sys.exit(main())
