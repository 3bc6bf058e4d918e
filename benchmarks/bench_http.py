"""HTTP keep-alive requests per second, traced versus untraced, same run.

A round is one fresh interpreter that serves small JSON and requests it over
one keep-alive connection, in one process, pinned to one CPU
(``os.sched_setaffinity`` after the tracer has started, so the recorder thread
is not pinned and the server's threads, started later, are):

- ``stdlib``: ``http.server.ThreadingHTTPServer`` (HTTP/1.1, a handler that
  answers ``GET /`` with a 60-byte JSON body) and an ``http.client``
  keep-alive client. These go through ``makefile`` reads and writes
  (``socket.SocketIO``: ``recv_into``, ``readline`` on a buffered reader) and
  several small sends per response;
- ``aiohttp`` (when ``aiohttp`` is installed: ``pip install -e '.[bench]'``,
  which ``make bench`` does): an ``aiohttp.web`` server and an
  ``aiohttp.ClientSession`` client on one event loop (the selector
  transport's ``recv``/``recv_into`` and ``send``/``sendmsg``).

Untraced and traced rounds alternate (five pairs by default); a traced round
runs ``cutscope.start(db=<a SQLite file>)`` first, so both ends frame and
every send and receive is recorded. The figure is the slowdown, untraced
requests/s over traced requests/s of each pair: median and range. The CPU
time of the process per request (all its threads, the recorder's included)
is printed beside it: on a loaded machine it moves less than the wall clock.

Usage: ``python benchmarks/bench_http.py [--requests N] [--pairs P] [--kinds stdlib,aiohttp]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BODY = json.dumps({"id": 12345, "name": "cutscope", "ok": True, "items": [1, 2, 3]}).encode()


def _pin() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass


def run_stdlib(n: int) -> float:
    """Requests per second of n keep-alive GETs against a ThreadingHTTPServer."""
    import http.client
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY on the server's connections (http.client sets it on its own):
        # without it the body's write after the headers' waits for the peer's
        # delayed ACK, 40 ms per request, traced or not.
        disable_nagle_algorithm = True

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1])

    def get():
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 or body != BODY:
            raise SystemExit(f"bench_http: bad response {r.status} {body[:80]!r}")

    for _ in range(200):  # warm up
        get()
    t0 = time.perf_counter()
    for _ in range(n):
        get()
    dt = time.perf_counter() - t0
    conn.close()
    srv.shutdown()
    srv.server_close()
    return n / dt


def run_aiohttp(n: int) -> float:
    """Requests per second of n keep-alive GETs, aiohttp server and client on one loop."""
    import asyncio

    from aiohttp import ClientSession, TCPConnector, web

    async def handler(request):
        return web.Response(body=BODY, content_type="application/json")

    async def main() -> float:
        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/"
        async with ClientSession(connector=TCPConnector(limit=1)) as s:
            async def get():
                async with s.get(url) as r:
                    body = await r.read()
                    if r.status != 200 or body != BODY:
                        raise SystemExit(f"bench_http: bad response {r.status} {body[:80]!r}")

            for _ in range(200):
                await get()
            t0 = time.perf_counter()
            for _ in range(n):
                await get()
            dt = time.perf_counter() - t0
        await runner.cleanup()
        return n / dt

    return asyncio.run(main())


def child(kind: str, n: int, db: str | None) -> None:
    if db:
        import cutscope

        cutscope.start(db=db, name=f"http-{kind}")
    _pin()
    c0 = time.process_time()
    try:
        rps = (run_stdlib if kind == "stdlib" else run_aiohttp)(n)
    finally:
        cpu = time.process_time() - c0
        if db:
            import cutscope

            cutscope.stop()
    print(rps, cpu / (n + 200), flush=True)


def one_round(kind: str, n: int, db: str | None) -> tuple[float, float]:
    """(requests/s, CPU seconds per request, warm-up and server start included)."""
    args = [sys.executable, os.path.abspath(__file__), "--child", kind, str(n)] + ([db] if db else [])
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--kinds", default="stdlib,aiohttp")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in ("stdlib", "aiohttp"):
            print(f"bench_http: unknown kind {k!r} (stdlib, aiohttp)", file=sys.stderr)
            return 2
    if "aiohttp" in kinds:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            print("aiohttp: not installed (pip install -e '.[bench]'), skipped")
            kinds.remove("aiohttp")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at start")
    for kind in kinds:
        plain, traced, pcpu, tcpu = [], [], [], []
        with tempfile.TemporaryDirectory() as d:
            for p in range(args.pairs):
                rps, cpu = one_round(kind, args.requests, None)
                plain.append(rps)
                pcpu.append(cpu)
                rps, cpu = one_round(kind, args.requests, os.path.join(d, f"http{p}.db"))
                traced.append(rps)
                tcpu.append(cpu)
        slow = sorted(a / b for a, b in zip(plain, traced))
        rc = sorted(b / a for a, b in zip(pcpu, tcpu))
        print(f"{kind}: {args.pairs} pairs of {args.requests} keep-alive requests: untraced "
              f"{statistics.median(plain):.0f} req/s ({min(plain):.0f}-{max(plain):.0f}), traced "
              f"{statistics.median(traced):.0f} req/s ({min(traced):.0f}-{max(traced):.0f})")
        print(f"{kind}: CPU per request: untraced {statistics.median(pcpu) * 1e6:.0f} us, traced "
              f"{statistics.median(tcpu) * 1e6:.0f} us; ratio median {statistics.median(rc):.3f} "
              f"(pairs {rc[0]:.3f}-{rc[-1]:.3f})")
        print(f"{kind}: slowdown untraced/traced req/s: median {statistics.median(slow):.3f} "
              f"(pairs {slow[0]:.3f}-{slow[-1]:.3f}; goal <= 1.10)")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at end")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        sys.exit(main())
