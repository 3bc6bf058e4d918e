"""The bank, as OS processes over TCP: each branch is a process with a listening socket.

Run it under the launcher, which traces it and every branch it starts::

    cutscope run --db bank.db --name bank -- python examples/bank_tcp.py --branches 4 --seconds 10
    cutscope snapshot --db bank.db --from bank-0     # from another terminal, while it runs
    cutscope check --db bank.db

The parent starts the branches (``bank-0``, ``bank-1``, ...; ``CUTSCOPE_NAME``
names each), tells each the others' ports, and, if asked (``--snapshots K``),
takes live snapshots itself and checks that the money adds up in each. The
branches' code knows nothing of cutscope except ``cutscope.state``; under plain
``python`` (no launcher) everything runs untraced.

A branch sends each transfer as one 16-byte record (amount, sender) with one
``sendall`` and reads with ``recv(16, MSG_WAITALL)``: a recorded state agrees
with the branch's events at a receive's entry (a safe point) only if a receive
never leaves a transfer half read.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import time

try:
    import cutscope
except ImportError:  # pragma: no cover - the example without cutscope installed
    cutscope = None

INITIAL = 1000
RECORD = struct.Struct("!qq")  # amount, sender index


# -- a branch (one OS process) ------------------------------------------------------------

def branch(index: int, seconds: float, rate: float, seed: int, work: float = 0.0,
           bind: str = "127.0.0.1") -> int:
    balance = INITIAL
    partial: dict = {}  # connection -> the start of a record (rare: a record split in two)
    if cutscope is not None:
        # A record half read would be in neither the balance nor the channel: say so.
        cutscope.state(lambda: {"balance": balance, "half_read": sum(map(len, partial.values()))})
    rng = random.Random(seed * 1000 + index)
    lsock = socket.socket()
    lsock.bind((bind, 0))
    lsock.listen(64)
    print(lsock.getsockname()[1], flush=True)
    # The others' ports (on 127.0.0.1), or their [address, port] (branches on several hosts).
    ends = [tuple(e) if isinstance(e, list) else ("127.0.0.1", e)
            for e in json.loads(sys.stdin.readline())]
    n = len(ends)
    outs = {j: socket.create_connection(e) for j, e in enumerate(ends) if j != index}
    sel = selectors.DefaultSelector()
    ins: list[socket.socket] = []
    while len(ins) < n - 1:  # every other branch connects to us once
        conn, _ = lsock.accept()
        # A readable socket may hold only a snapshot marker (cutscope consumes it): never
        # block long in a receive that select announced.
        conn.settimeout(0.05)
        ins.append(conn)
        sel.register(conn, selectors.EVENT_READ)
    print("ready", flush=True)
    sys.stdin.readline()  # go

    def receive(conn) -> None:
        nonlocal balance
        buf = partial.pop(conn, b"")
        try:
            data = conn.recv(RECORD.size - len(buf), socket.MSG_WAITALL)
        except (socket.timeout, BlockingIOError):
            data = None  # nothing for the application after all
        if data == b"":  # end of stream (the peer stopped)
            sel.unregister(conn)
            conn.close()
            return
        buf += data or b""
        if len(buf) < RECORD.size:
            if buf:
                partial[conn] = buf
            return
        amount, _ = RECORD.unpack(buf)
        balance += amount
        if work:  # the branch's own work on a transfer: meanwhile, others queue up
            time.sleep(work)

    deadline = time.monotonic() + seconds
    pause = 1.0 / rate if rate else 0.0
    next_send = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        for key, _ in sel.select(timeout=max(0.0, min(next_send, deadline) - now)):
            receive(key.fileobj)
        if time.monotonic() >= next_send:
            next_send = time.monotonic() + pause * rng.uniform(0.5, 1.5)
            if balance > 0:
                to = rng.choice(list(outs))
                amount = rng.randint(1, min(50, balance))
                balance -= amount
                outs[to].sendall(RECORD.pack(amount, index))
    for s in outs.values():  # stop sending: the peers read to our end of stream
        s.shutdown(socket.SHUT_WR)
    while sel.get_map():
        for key, _ in sel.select(timeout=5):
            receive(key.fileobj)
    for s in outs.values():
        s.close()
    print(json.dumps({"balance": balance}), flush=True)
    return 0


# -- the parent: start the branches, take snapshots, check the money --------------------------

def in_transit(snap) -> int:
    """The money in the recorded channel states of the TCP branches (16-byte records)."""
    import base64

    total = 0
    for msgs in snap.channels.values():
        for m in msgs:
            b64 = m.get("payload_b64")
            if b64 and not isinstance(m.get("value"), dict):
                data = base64.b64decode(b64)
                for off in range(0, len(data) - RECORD.size + 1, RECORD.size):
                    total += RECORD.unpack_from(data, off)[0]
    return total


def balances(snap) -> int:
    return sum(s.get("balance", 0) for p, s in snap.states.items() if p.startswith("bank-"))


def audit(snap, total: int) -> str:
    held, moving = balances(snap), in_transit(snap)
    ok = snap.status == "complete" and held + moving == total
    mark = "ok" if ok else "MISMATCH" if snap.status == "complete" else snap.status.upper()
    return (f"{snap.summary()}: balances {held} + in transit {moving} = {held + moving} "
            f"(total {total}) {mark}")


class Branches:
    """The branch processes, started and wired up."""

    def __init__(self, n: int, seconds: float, rate: float, seed: int, work: float = 0.0):
        self.n = n
        self.procs = []
        for i in range(n):
            env = dict(os.environ, CUTSCOPE_NAME=f"bank-{i}")
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "branch", "--index", str(i),
                 "--seconds", str(seconds), "--rate", str(rate), "--seed", str(seed),
                 "--work", str(work)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        ports = [int(p.stdout.readline()) for p in self.procs]
        for p in self.procs:
            p.stdin.write(json.dumps(ports) + "\n")
            p.stdin.flush()
        for p in self.procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a branch did not start")

    @property
    def total(self) -> int:
        return INITIAL * self.n

    def go(self) -> None:
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the branches; returns the sum of their final balances."""
        final = 0
        for p in self.procs:
            out, _ = p.communicate(timeout=timeout)
            final += json.loads(out.strip().splitlines()[-1])["balance"]
        return final

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def parent(args) -> int:
    bank = Branches(args.branches, args.seconds, args.rate, args.seed, args.work)
    try:
        bank.go()
        print(f"{args.branches} branches running for {args.seconds:g} s "
              f"(pids {' '.join(str(p.pid) for p in bank.procs)})", flush=True)
        snaps = []
        if args.snapshots and cutscope is not None and cutscope.active() is not None:
            t0 = time.monotonic()
            # The branches need a moment to be live in the store (first heartbeat, channels).
            for k in range(args.snapshots):
                at = t0 + (k + 1) * args.seconds / (args.snapshots + 1)
                time.sleep(max(0.0, at - time.monotonic()))
                snap = cutscope.snapshot(initiator=f"bank-{k % args.branches}", timeout=10)
                snaps.append(snap)
                print(audit(snap, bank.total), flush=True)
        final = bank.finish()
    except BaseException:
        bank.kill()
        raise
    print(f"final balances add up to {final} (total {bank.total})", flush=True)
    bad = [s for s in snaps if s.status != "complete" or balances(s) + in_transit(s) != bank.total]
    return 1 if bad or final != bank.total else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", nargs="?", choices=["parent", "branch"], default="parent")
    ap.add_argument("--branches", type=int, default=4)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=200.0, help="transfers per second per branch")
    ap.add_argument("--snapshots", type=int, default=0, help="live snapshots the parent takes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=float, default=0.0,
                    help="seconds a branch spends on each transfer it receives")
    ap.add_argument("--bind", default="127.0.0.1", help="a branch's listening address")
    args = ap.parse_args(argv)
    if args.role == "branch":
        return branch(args.index, args.seconds, args.rate, args.seed, args.work, args.bind)
    if args.branches < 2:
        ap.error("a bank needs at least 2 branches")
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
