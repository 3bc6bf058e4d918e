"""A small asyncio cluster: a coordinator hands jobs to worker processes over TCP.

The coordinator is an asyncio server; each worker is a ``multiprocessing``
child (every one of them given the same ``Process.name``, "worker", as
frameworks do) that connects to it with asyncio. On every connection **both
ends write a handshake first** (``HELLO <who>``) and only then read the
other's, the pattern of dask's comms and many RPC protocols. Then the
coordinator keeps up to ``--window`` jobs at each worker; a worker holds a job
for ``--work`` seconds and sends back ``DONE``.

Every job is one line and one message (``JOB <n>``, ``DONE <n>``), so a
snapshot can be audited like the bank: the jobs the coordinator has not sent
yet, plus those done, plus those every worker holds, plus the job and done
lines in transit, equal the jobs there were (``audit``). Each process tells
cutscope what it holds with ``cutscope.state``; the counts are kept in the
protocols' ``data_received``, which runs in the same event-loop callback as
the receive that brought the bytes, so the state agrees with the recorded
events at every safe point. (A program built on ``asyncio`` streams has bytes
in its ``StreamReader`` buffers that its own counters do not show yet; its
state provider would have to count those too.)

Run it under cutscope, and snapshot it from another terminal::

    cutscope run --name cluster -- python examples/asyncio_cluster.py --workers 3
    cutscope snapshot --from cluster

``make demo`` runs it beside the banks and audits its snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import sys

try:
    import cutscope
except ImportError:  # runs untraced too
    cutscope = None

JOBS = 2000


def _state(fn) -> None:
    if cutscope is not None and cutscope.active() is not None:
        cutscope.state(fn)


class Lines(asyncio.Protocol):
    """One line, one message. ``partial`` counts a line that has begun to arrive."""

    def __init__(self):
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.hello())  # both ends write first

    def data_received(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.line(line.decode())

    @property
    def partial(self) -> int:
        return 1 if self.buf and not self.buf.startswith(b"HELLO") else 0


# -- the coordinator ---------------------------------------------------------------------

class Coordinator:
    def __init__(self, jobs: int, window: int):
        self.pending = list(range(jobs, 0, -1))
        self.done = 0
        self.window = window
        self.peers: list[Peer] = []
        self.finished = asyncio.get_running_loop().create_future()
        _state(self.state)

    def state(self) -> dict:
        # DONE lines that have begun to arrive count as done: their bytes were received.
        return {"pending": len(self.pending),
                "done": self.done + sum(p.partial for p in self.peers)}

    def feed(self, peer: "Peer") -> None:
        while self.pending and peer.out < self.window and peer.ready:
            peer.out += 1
            peer.transport.write(f"JOB {self.pending.pop()}\n".encode())

    def finish_if_done(self) -> None:
        if not self.pending and all(p.out == 0 for p in self.peers) and not self.finished.done():
            self.finished.set_result(self.done)


class Peer(Lines):
    def __init__(self, coord: Coordinator):
        super().__init__()
        self.coord = coord
        self.ready = False
        self.out = 0
        self.name = "?"

    def hello(self) -> bytes:
        return b"HELLO coordinator\n"

    def connection_made(self, transport):
        super().connection_made(transport)
        self.coord.peers.append(self)

    def line(self, text: str) -> None:
        kind, _, rest = text.partition(" ")
        if kind == "HELLO":
            self.name, self.ready = rest, True
        elif kind == "DONE":
            self.out -= 1
            self.coord.done += 1
        self.coord.feed(self)
        self.coord.finish_if_done()


async def coordinate(workers: int, jobs: int, window: int, work: float) -> int:
    loop = asyncio.get_running_loop()
    coord = Coordinator(jobs, window)
    server = await loop.create_server(lambda: Peer(coord), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    procs = [multiprocessing.Process(target=worker_main, args=(port, i, work), name="worker")
             for i in range(workers)]
    for p in procs:
        p.start()
    done = await coord.finished
    for peer in coord.peers:
        peer.transport.write(b"BYE\n")
    await loop.run_in_executor(None, lambda: [p.join() for p in procs])
    server.close()
    await server.wait_closed()
    return done


# -- a worker ----------------------------------------------------------------------------

class Worker(Lines):
    def __init__(self, index: int, work: float, closed: asyncio.Future):
        super().__init__()
        self.index = index
        self.work = work
        self.held: set[int] = set()
        self.closed = closed
        _state(self.state)

    def state(self) -> dict:
        return {"holding": len(self.held) + self.partial}

    def hello(self) -> bytes:
        return f"HELLO worker-{self.index} {os.getpid()}\n".encode()

    def line(self, text: str) -> None:
        kind, _, rest = text.partition(" ")
        if kind == "JOB":
            n = int(rest)
            self.held.add(n)
            asyncio.get_running_loop().call_later(self.work, self.finish, n)
        elif kind == "BYE":
            self.transport.close()

    def finish(self, n: int) -> None:
        self.held.discard(n)  # the state changes with the send, in one callback
        self.transport.write(f"DONE {n}\n".encode())

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)


def worker_main(port: int, index: int, work: float) -> None:
    async def run():
        loop = asyncio.get_running_loop()
        closed = loop.create_future()
        await loop.create_connection(lambda: Worker(index, work, closed), "127.0.0.1", port)
        await closed

    asyncio.run(run())


# -- auditing a snapshot -----------------------------------------------------------------

def _lines(messages) -> int:
    n = 0
    for m in messages:
        data = base64.b64decode(m.get("payload_b64") or "")
        n += sum(1 for line in data.split(b"\n") if line.startswith((b"JOB", b"DONE")))
    return n


def audit(snap, jobs: int = JOBS) -> tuple[int, int, int, int, bool]:
    """(pending, done, held by workers, in transit, conserved) of a snapshot (a
    ``cutscope.tracer.snapshot.Snapshot``) that covers the cluster."""
    pending = done = held = 0
    for state in snap.states.values():
        pending += int(state.get("pending", 0))
        done += int(state.get("done", 0))
        held += int(state.get("holding", 0))
    moving = sum(_lines(msgs) for msgs in snap.channels.values())
    return pending, done, held, moving, pending + done + held + moving == jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=JOBS)
    ap.add_argument("--window", type=int, default=2, help="jobs at a worker at once")
    ap.add_argument("--work", type=float, default=0.005, help="seconds a worker holds a job")
    args = ap.parse_args(argv)
    done = asyncio.run(coordinate(args.workers, args.jobs, args.window, args.work))
    print(f"final: {done} of {args.jobs} jobs done by {args.workers} workers", flush=True)
    return 0 if done == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
