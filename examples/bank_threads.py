"""The bank, as threads over queues: each branch is a thread that is its own logical process.

Branches move money to each other through ``queue.Queue`` inboxes while an
auditor (the main thread) takes Chandy-Lamport snapshots of the running bank.
No snapshot stops anything; each must show the same total: the balances the
branches recorded plus the money in transit in the queues::

    python examples/bank_threads.py --branches 4 --seconds 3 --snapshots 5
    cutscope check            # every snapshot against the recorded events

Nothing in the branches' code knows about snapshots beyond two lines:
``cutscope.process(name)`` makes the thread a logical process and
``cutscope.state(fn)`` says what its local state is. The debit and the ``put``
of a transfer, and the ``get`` and the credit, happen between two safe points
(the entries of ``get``), so a recorded balance always agrees with the
branch's recorded sends and receives.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import sys
import threading
import time

import cutscope

INITIAL = 1000


class Branch:
    def __init__(self, bank: "Bank", i: int):
        self.bank = bank
        self.name = f"branch-{i}"
        self.inbox: queue.Queue = queue.Queue()
        self.balance = INITIAL
        self.rng = random.Random(bank.seed * 1000 + i)

    def run(self) -> None:
        bank = self.bank
        with cutscope.process(self.name):
            cutscope.state(lambda: {"balance": self.balance})
            bank.ready.wait()
            others = [b for b in bank.branches if b is not self]
            # A first transfer, so that every branch has a channel (is part of the
            # distributed system) before the auditor takes its first snapshot.
            self._transfer(self.rng.choice(others))
            bank.started.wait()
            pause = 1.0 / bank.rate if bank.rate else 0.0
            next_send = time.monotonic()
            while not bank.stop.is_set():
                now = time.monotonic()
                if now < next_send:  # paced: receive while waiting for the next transfer
                    self._receive(timeout=next_send - now)
                    continue
                next_send = now + pause * self.rng.uniform(0.5, 1.5)
                if self.rng.random() < 0.5 and self.balance > 0:
                    self._transfer(self.rng.choice(others))
                else:
                    self._receive(timeout=0.005)
            # Stop sending; take in everything still in flight to us.
            bank.quiet.wait()
            while self._receive(timeout=0.02):
                pass

    def _transfer(self, to: "Branch") -> None:
        amount = self.rng.randint(1, min(50, self.balance))
        self.balance -= amount  # the debit and the put, between two safe points
        to.inbox.put({"amount": amount, "from": self.name})

    def _receive(self, timeout: float) -> bool:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        self.balance += item["amount"]
        if self.bank.work:  # the branch's own work: meanwhile, transfers queue up
            time.sleep(self.bank.work)
        return True


class Bank:
    def __init__(self, branches: int = 4, seed: int = 0, rate: float = 1000.0, work: float = 0.0):
        self.seed = seed
        self.rate = rate  # transfers a branch attempts per second (0: as fast as it can)
        self.work = work  # seconds a branch spends on each transfer it receives
        self.branches = [Branch(self, i) for i in range(branches)]
        self.ready = threading.Event()
        self.started = threading.Barrier(branches + 1)  # every branch made its first transfer
        self.stop = threading.Event()
        self.quiet = threading.Barrier(branches + 1)
        self.threads = [threading.Thread(target=self._run, args=(b,), name=b.name, daemon=True)
                        for b in self.branches]

    def _run(self, b: Branch) -> None:
        try:
            b.run()
        except threading.BrokenBarrierError:
            pass

    @property
    def total(self) -> int:
        return INITIAL * len(self.branches)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.ready.set()
        self.started.wait(30)

    def finish(self, timeout: float = 30.0) -> None:
        self.stop.set()
        try:
            self.quiet.wait(timeout)
        except threading.BrokenBarrierError:
            pass
        for t in self.threads:
            t.join(timeout)


def in_transit(snap) -> int:
    return sum(m["value"]["amount"] for ms in snap.channels.values() for m in ms
               if isinstance(m.get("value"), dict))


def balances(snap) -> int:
    return sum(s.get("balance", 0) for p, s in snap.states.items() if p.startswith("branch-"))


def audit(snap, total: int) -> str:
    """One line: the snapshot's money, and whether it adds up."""
    held, moving = balances(snap), in_transit(snap)
    ok = snap.status == "complete" and held + moving == total
    mark = "ok" if ok else "MISMATCH" if snap.status == "complete" else snap.status.upper()
    return (f"{snap.summary()}: balances {held} + in transit {moving} = {held + moving} "
            f"(total {total}) {mark}")


def run(branches: int = 4, seconds: float = 2.0, snapshots: int = 3, seed: int = 0,
        timeout: float = 10.0, out=None, delays: list[float] | None = None, rate: float = 1000.0,
        work: float = 0.0):
    """Run the bank under the running tracer; returns (snapshots taken, bank)."""
    bank = Bank(branches, seed, rate, work)
    rng = random.Random(seed)
    bank.start()
    taken = []
    try:
        t0 = time.monotonic()
        if delays is None:
            delays = sorted(rng.uniform(0.05, seconds) for _ in range(snapshots))
        for d in delays:
            time.sleep(max(0.0, t0 + d - time.monotonic()))
            snap = cutscope.snapshot(initiator=rng.choice(bank.branches).name, timeout=timeout)
            taken.append(snap)
            if out is not None:
                print(audit(snap, bank.total), file=out, flush=True)
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        bank.finish()
    return taken, bank


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=os.environ.get("CUTSCOPE_DB", "sqlite:///cutscope.db"))
    ap.add_argument("--branches", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="transfers per second per branch (0: flat out)")
    ap.add_argument("--work", type=float, default=0.0,
                    help="seconds a branch spends on each transfer it receives")
    args = ap.parse_args(argv)
    if args.branches < 2:
        ap.error("a bank needs at least 2 branches")
    cutscope.start(db=args.db, name="bank-threads")
    try:
        snaps, bank = run(args.branches, args.seconds, args.snapshots, args.seed, out=sys.stdout,
                          rate=args.rate, work=args.work)
        final = sum(b.balance for b in bank.branches)
        print(f"final balances add up to {final} (total {bank.total})")
    finally:
        cutscope.stop()
    bad = [s for s in snaps if s.status != "complete" or balances(s) + in_transit(s) != bank.total]
    return 1 if bad or final != bank.total else 0


if __name__ == "__main__":
    sys.exit(main())
