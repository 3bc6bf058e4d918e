"""asyncio streams: 64-byte round trip, traced versus untraced, same run.

Two OS processes, an echo server (``asyncio.start_server``) and a client
(``asyncio.open_connection``), each on its own event loop, both pinned to the
same CPU (``os.sched_setaffinity`` after the tracer has started: the recorder
threads are not pinned). The client writes 64 bytes and awaits
``readexactly(64)``; the server awaits ``readexactly(64)`` and writes them
back. Untraced and traced rounds alternate (five pairs by default); a traced
round runs ``cutscope.start(db=<a SQLite file>)`` in both processes, so both
directions are framed and every send and receive is recorded.

The figure is the mean round trip traced / untraced of each pair: median and
range. Each round also counts, in both processes, the ``recv`` calls the
event loop made and how many of them found nothing to read (``EAGAIN``): the
selector wake-ups per round trip, which is what the explanation in
benchmarks/README.md rests on.

Usage: ``python benchmarks/bench_asyncio.py [--trips N] [--pairs P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MSG = b"x" * 64


def _pin() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass


class Count:
    """Counts the receive calls the event loop makes on this process's sockets.

    Installed on ``socket.socket`` *after* cutscope (so it counts the calls the
    application, here asyncio, makes, whatever cutscope does beneath)."""

    def __init__(self) -> None:
        self.calls = self.empty = 0
        self.orig = {}

    def install(self) -> None:
        for name in ("recv", "recv_into"):
            orig = getattr(socket.socket, name)
            self.orig[name] = socket.socket.__dict__.get(name)

            def counted(sock, *a, _orig=orig, **k):
                self.calls += 1
                try:
                    return _orig(sock, *a, **k)
                except BlockingIOError:
                    self.empty += 1
                    raise
            setattr(socket.socket, name, counted)

    def remove(self) -> None:
        for name, orig in self.orig.items():
            if orig is None:
                delattr(socket.socket, name)
            else:
                setattr(socket.socket, name, orig)


def _start(db: str | None, name: str, count: bool) -> Count | None:
    if db:
        import cutscope

        cutscope.start(db=db, name=name)
    _pin()
    if count:
        c = Count()
        c.install()
        return c
    return None


def _stop(db: str | None, c: Count | None) -> None:
    if c is not None:
        c.remove()
    if db:
        import cutscope

        cutscope.stop()


def serve(db: str | None, count: bool) -> None:
    c = _start(db, "aecho", count)

    async def main():
        done = asyncio.Event()

        async def handle(reader, writer):
            seen = 0
            try:
                while True:
                    d = await reader.readexactly(64)
                    writer.write(d)
                    seen += 1
                    if seen == 500 and c is not None:  # the client's warm-up: not counted
                        c.calls = c.empty = 0
            except asyncio.IncompleteReadError:
                pass
            writer.close()
            done.set()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await done.wait()
        srv.close()

    asyncio.run(main())
    if c is not None:
        print(c.calls, c.empty, flush=True)
    _stop(db, c)


def one_round(n: int, db: str | None, count: bool = False) -> tuple[float, tuple[int, int] | None]:
    """(mean round trip in seconds, (receive calls, empty ones) of both ends or None)."""
    args = [sys.executable, os.path.abspath(__file__), "--serve", db or "-"] + (["count"] if count else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    c = _start(db, "aping", count)

    async def main() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(500):
            writer.write(MSG)
            await reader.readexactly(64)
        if c is not None:
            c.calls = c.empty = 0
        t0 = time.perf_counter()
        for _ in range(n):
            writer.write(MSG)
            await reader.readexactly(64)
        dt = time.perf_counter() - t0
        writer.close()
        await writer.wait_closed()
        return dt / n

    try:
        rt = asyncio.run(main())
    finally:
        _stop(db, c)
    out = proc.communicate(timeout=60)[0].split()
    if c is None:
        return rt, None
    return rt, (c.calls + int(out[0]), c.empty + int(out[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at start")
    plain, traced = [], []
    with tempfile.TemporaryDirectory() as d:
        for p in range(args.pairs):
            plain.append(one_round(args.trips, None)[0])
            traced.append(one_round(args.trips, os.path.join(d, f"a{p}.db"))[0])
        n = min(args.trips, 2000)
        _, cp = one_round(n, None, count=True)
        _, ct = one_round(n, os.path.join(d, "count.db"), count=True)
    r = sorted(t / u for u, t in zip(plain, traced))
    print(f"asyncio streams 64-byte round trip, {args.pairs} pairs of {args.trips}: untraced "
          f"{statistics.median(plain) * 1e6:.1f} us ({min(plain) * 1e6:.1f}-{max(plain) * 1e6:.1f}), "
          f"traced {statistics.median(traced) * 1e6:.1f} us "
          f"({min(traced) * 1e6:.1f}-{max(traced) * 1e6:.1f})")
    print(f"receive calls per round trip (both ends; of them, found nothing): untraced "
          f"{cp[0] / n:.2f} ({cp[1] / n:.2f}), traced {ct[0] / n:.2f} ({ct[1] / n:.2f})")
    print(f"ratio traced/untraced round trip: median {statistics.median(r):.3f} "
          f"(pairs {r[0]:.3f}-{r[-1]:.3f}; goal <= 1.15)")
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at end")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(None if sys.argv[2] == "-" else sys.argv[2], "count" in sys.argv[3:])
    else:
        sys.exit(main())
