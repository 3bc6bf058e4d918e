"""asyncio streams: 64-byte round trip, traced versus untraced, same run.

Two OS processes, an echo server (``asyncio.start_server``) and a client
(``asyncio.open_connection``), each on its own event loop, both pinned to the
same CPU (``os.sched_setaffinity`` after the tracer has started: the recorder
threads are not pinned). The client writes 64 bytes and awaits
``readexactly(64)``; the server awaits ``readexactly(64)`` and writes them
back. Untraced and traced rounds alternate (five pairs by default); a traced
round runs ``cutscope.start(db=<a SQLite file>)`` in both processes, so both
directions are framed and every send and receive is recorded.

Both processes first allocate and free a 4 MiB block (``_settle_malloc``),
so that glibc's allocator serves the event loop's 256 KiB reads alike in
both kinds of round (benchmarks/README.md explains why: without it the
untraced baseline paid three extra syscalls per read that the traced one did
not, and traced measured 0.70 of untraced). ``--no-settle`` leaves that out.

The figure is the mean round trip traced / untraced of each pair: median and
range; the CPU time of both processes per round trip (all their threads, the
recorder included) is printed beside it, less sensitive to the machine's load. Each round also counts, in both processes, the ``recv`` calls the
event loop made and how many of them found nothing to read (``EAGAIN``): the
selector wake-ups per round trip, which is what the explanation in
benchmarks/README.md rests on.

Usage: ``python benchmarks/bench_asyncio.py [--trips N] [--pairs P] [--no-settle]``.
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


def _settle_malloc() -> None:
    """Allocate and free a 4 MiB block. glibc serves a request above its mmap threshold
    (128 KiB at start) with mmap, and raises the threshold when such a block is freed
    (up to 32 MiB). asyncio's selector transport reads with ``sock.recv(256 KiB)``:
    below the threshold that is a heap block, above it an mmap, an mremap to the bytes'
    size and a munmap per read. A traced process has raised the threshold as a side
    effect of the tracer's own start (blocks it freed); this puts the untraced process
    on the same footing."""
    b = bytearray(4 << 20)
    del b


SETTLE = "--no-settle" not in sys.argv


def _start(db: str | None, name: str, count: bool) -> Count | None:
    if SETTLE:
        _settle_malloc()
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
    cpu = [time.process_time()]

    async def main():
        done = asyncio.Event()

        async def handle(reader, writer):
            seen = 0
            try:
                while True:
                    d = await reader.readexactly(64)
                    writer.write(d)
                    seen += 1
                    if seen == 500:  # the client's warm-up: not counted
                        cpu[0] = time.process_time()
                        if c is not None:
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
    print(time.process_time() - cpu[0], flush=True)
    if c is not None:
        print(c.calls, c.empty, flush=True)
    _stop(db, c)


def one_round(n: int, db: str | None, count: bool = False) -> tuple[float, float, tuple | None]:
    """(mean round trip in seconds, CPU seconds of both processes per round trip,
    (receive calls, empty ones) of both ends or None)."""
    args = [sys.executable, os.path.abspath(__file__), "--serve", db or "-"] + (["count"] if count else [])
    if not SETTLE:
        args.append("--no-settle")
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
        c0 = time.process_time()
        for _ in range(n):
            writer.write(MSG)
            await reader.readexactly(64)
        dt = time.perf_counter() - t0
        cpu[0] = time.process_time() - c0
        writer.close()
        await writer.wait_closed()
        return dt / n

    cpu = [0.0]
    try:
        rt = asyncio.run(main())
    finally:
        _stop(db, c)
    out = proc.communicate(timeout=60)[0].split()
    cpu_rt = (cpu[0] + float(out[0])) / n
    if c is None:
        return rt, cpu_rt, None
    return rt, cpu_rt, (c.calls + int(out[1]), c.empty + int(out[2]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--no-settle", action="store_true",
                    help="leave the allocator as each process finds it (see _settle_malloc)")
    args = ap.parse_args()
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at start")
    plain, traced, pcpu, tcpu = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for p in range(args.pairs):
            rt, cpu, _ = one_round(args.trips, None)
            plain.append(rt)
            pcpu.append(cpu)
            rt, cpu, _ = one_round(args.trips, os.path.join(d, f"a{p}.db"))
            traced.append(rt)
            tcpu.append(cpu)
        n = min(args.trips, 2000)
        cp = one_round(n, None, count=True)[2]
        ct = one_round(n, os.path.join(d, "count.db"), count=True)[2]
    r = sorted(t / u for u, t in zip(plain, traced))
    rc = sorted(t / u for u, t in zip(pcpu, tcpu))
    print(f"asyncio streams 64-byte round trip, {args.pairs} pairs of {args.trips}: untraced "
          f"{statistics.median(plain) * 1e6:.1f} us ({min(plain) * 1e6:.1f}-{max(plain) * 1e6:.1f}), "
          f"traced {statistics.median(traced) * 1e6:.1f} us "
          f"({min(traced) * 1e6:.1f}-{max(traced) * 1e6:.1f})")
    print(f"receive calls per round trip (both ends; of them, found nothing): untraced "
          f"{cp[0] / n:.2f} ({cp[1] / n:.2f}), traced {ct[0] / n:.2f} ({ct[1] / n:.2f})")
    print(f"CPU of both processes per round trip: untraced {statistics.median(pcpu) * 1e6:.1f} us, "
          f"traced {statistics.median(tcpu) * 1e6:.1f} us; ratio median {statistics.median(rc):.3f} "
          f"(pairs {rc[0]:.3f}-{rc[-1]:.3f})")
    print(f"ratio traced/untraced round trip{'' if SETTLE else ' (--no-settle)'}: median "
          f"{statistics.median(r):.3f} (pairs {r[0]:.3f}-{r[-1]:.3f}; goal <= 1.15)")
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} at end")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(None if sys.argv[2] == "-" else sys.argv[2], "count" in sys.argv[3:])
    else:
        sys.exit(main())
