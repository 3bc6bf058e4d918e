"""64-byte TCP ping-pong round trip over loopback, traced versus untraced, same run.

Two OS processes (an echo server and a client), both pinned to the same CPU
with ``os.sched_setaffinity`` so that the figure is the cost of the work, not
of cross-CPU wake-ups. Untraced and traced rounds alternate; the traced ones
run ``cutscope.start(db=<a SQLite file>)`` in both processes, so both ends
frame (HELLO, 21-byte headers) and every send and receive is recorded to SQLite
by the recorder thread. Prints the median round trip of each and the ratio
traced / untraced (goal: <= 1.30).

A third kind of round, interleaved with the other two, is a DIAGNOSTIC, not the
figure: traced as above, but with the recorder thread of each process stopped
right after ``start`` and each event tuple, once built by the core, dropped
(appended to a one-slot deque instead of the recorder's buffer; kept in memory,
40,000 tuples per round would add the garbage collector's growing passes to
the timing). Its ratio is the cost of the wrapper and the core (framing, one
Lamport event per call) without the writer.

Also prints the per-call cost of the two ways to patch a socket method: a
plain function installed on the class (what the integration does) and a
``wrapt`` wrapper, each calling straight through.

Usage: ``python benchmarks/bench_tcp.py [N] [ROUNDS]``.
"""

from __future__ import annotations

import collections
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MSG = b"x" * 64


def _pin() -> None:
    """Pin the calling thread (both ping-pong ends call it) to the last CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass


def _recv64(sock) -> bytes:
    data = sock.recv(64)
    while len(data) < 64:
        more = sock.recv(64 - len(data))
        if not more:
            break
        data += more
    return data


def _start(db: str, name: str, quiet: bool) -> None:
    import cutscope

    t = cutscope.start(db=db, name=name)
    if quiet:  # diagnostic: stop the writer and discard the events (see the docstring)
        r = t.recorder
        r.running = False
        r._wake.set()
        r._thread.join(10)
        for lp in t.processes.values():
            lp._append = collections.deque(maxlen=1).append


def serve(db: str | None, quiet: bool = False) -> None:
    if db:
        _start(db, "echo", quiet)
    _pin()  # this thread only: the recorder thread, started above, is not pinned
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send = c.recv, c.sendall
    while True:
        d = recv(64)
        if not d:
            break
        while len(d) < 64:
            d += recv(64 - len(d))
        send(d)
    c.close()
    srv.close()
    if db:
        import cutscope

        cutscope.stop()


def one_round(n: int, db: str | None, quiet: bool = False) -> float:
    """Mean round trip (seconds) over n round trips. ``quiet``: recorder threads stopped."""
    args = [sys.executable, __file__, "--serve"] + ([db] if db else []) + (["quiet"] if quiet else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    if db:
        _start(db, "pinger", quiet)
    _pin()
    try:
        c = socket.create_connection(("127.0.0.1", port))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send, recv = c.sendall, c.recv
        for _ in range(500):  # warm up
            send(MSG)
            _recv64(c)
        t0 = time.perf_counter()
        for _ in range(n):
            send(MSG)
            d = recv(64)
            if len(d) < 64:
                d += _recv64_rest(c, 64 - len(d))
        dt = time.perf_counter() - t0
        c.close()
    finally:
        if db:
            import cutscope

            cutscope.stop()
    proc.wait(30)
    return dt / n


def _recv64_rest(sock, k: int) -> bytes:
    out = b""
    while len(out) < k:
        out += sock.recv(k - len(out))
    return out


def patch_cost(n: int = 200_000) -> tuple[float, float, float]:
    """ns per send() on a socketpair: bare, plain-function patch, wrapt patch."""
    import wrapt

    a, b = socket.socketpair()
    b.setblocking(False)
    base = socket.socket.__mro__[1].send

    def loop():
        s = a.send
        t0 = time.perf_counter()
        for i in range(n):
            s(b"x")
            if i % 100 == 99:
                try:
                    while b.recv(65536):
                        pass
                except BlockingIOError:
                    pass
        return (time.perf_counter() - t0) / n * 1e9

    bare = loop()

    def plain(self, data, flags=0):
        return base(self, data, flags)

    socket.socket.send = plain
    try:
        p = loop()
    finally:
        del socket.socket.send

    def through(wrapped, instance, args, kwargs):
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(socket.socket, "send", through)
    try:
        w = loop()
    finally:
        del socket.socket.send
    a.close()
    b.close()
    return bare, p, w


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    plain, traced, quiet = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            db = os.path.join(d, f"bench{r}.db")
            plain.append(one_round(n, None))
            traced.append(one_round(n, db))
            quiet.append(one_round(n, os.path.join(d, f"quiet{r}.db"), quiet=True))
        from cutscope.viewer.export import load

        doc = load(os.path.join(d, "bench0.db"))
        framed = sum(1 for c in doc["channels"] if c["framed"])
        events = len(doc["events"])
    p, t, q = statistics.median(plain), statistics.median(traced), statistics.median(quiet)
    # per-round ratios (each traced round against the untraced round just before it)
    rt = sorted(a / b for a, b in zip(traced, plain))
    rq = sorted(a / b for a, b in zip(quiet, plain))
    bare, pf, wf = patch_cost()
    print(f"tcp 64-byte round trip, {rounds} rounds of {n}: untraced {p * 1e6:.1f} us, "
          f"traced {t * 1e6:.1f} us ({framed} framed channels, {events} events recorded "
          f"per traced round)")
    print(f"patch cost per send(): bare {bare:.0f} ns, plain function +{pf - bare:.0f} ns, "
          f"wrapt +{wf - bare:.0f} ns")
    print(f"diagnostic, recorder threads stopped (not the figure): {q * 1e6:.1f} us, "
          f"ratio {q / p:.3f} (per round {rq[0]:.2f}-{rq[-1]:.2f})")
    print(f"ratio traced/untraced: {t / p:.3f} (per round {rt[0]:.2f}-{rt[-1]:.2f}; "
          f"goal <= 1.30)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2] if len(sys.argv) > 2 else None, "quiet" in sys.argv[3:])
    else:
        main()
