"""Recorder throughput: events/s through cutscope's recorder into SQLite, versus raw
``sqlite3.executemany`` of the same events as rows (the obvious store: a row per
event, the layout of schema version 1), in the same run.

Traced: the application thread records send events (``LogicalProcess.send``, the
hot path the wrappers use); the clock stops when the store has them all (in
event blocks, schema version 2).
Raw: the same events, prebuilt as rows, written with executemany in batches of
20,000, WAL, synchronous=NORMAL (the recorder's settings), into a table keyed by
(process, seq). Ratio = traced / raw; goal >= 0.7.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time

N = int(os.environ.get("BENCH_EVENTS", "300000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def traced(path: str) -> float:
    from cutscope.tracer import Tracer

    from cutscope.tracer.store import open_store

    t = Tracer(db=path, name="bench", strict=True).start()
    lp = t.main
    send = lp.send
    t0 = time.perf_counter()
    for _ in range(N):
        send(None, 64, None, "c1")
    t.recorder.flush()
    dt = time.perf_counter() - t0
    t.stop()
    store = open_store(path, create=False)
    assert sum(1 for e in store.load()["events"] if e["kind"] == "send") == N
    store.close()
    return N / dt


def raw(path: str) -> float:
    from cutscope.tracer import Tracer

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE events (process TEXT, seq BIGINT, lamport BIGINT, wall_ns BIGINT, "
                "kind TEXT, channel TEXT, msg TEXT, nbytes BIGINT, payload BLOB, data TEXT, "
                "PRIMARY KEY (process, seq)) WITHOUT ROWID")
    rows = [("bench", i, i, time.time_ns(), "send", "c1", f"bench#{i}", 64, None, None)
            for i in range(1, N + 1)]
    sql = ("INSERT INTO events (process, seq, lamport, wall_ns, kind, channel, msg, nbytes, payload,"
           " data) VALUES (?,?,?,?,?,?,?,?,?,?)")
    t0 = time.perf_counter()
    for i in range(0, N, 20000):
        con.execute("BEGIN")
        con.executemany(sql, rows[i:i + 20000])
        con.execute("COMMIT")
    dt = time.perf_counter() - t0
    con.close()
    return N / dt


def main() -> int:
    ratios, tr, rw = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(ROUNDS):
            a = traced(os.path.join(d, f"t{r}.db"))
            b = raw(os.path.join(d, f"r{r}.db"))
            tr.append(a)
            rw.append(b)
            ratios.append(a / b)
    print(f"recorder: traced {statistics.median(tr):,.0f} events/s, raw executemany "
          f"{statistics.median(rw):,.0f} rows/s, ratio {statistics.median(ratios):.2f} "
          f"(median of {ROUNDS}; goal >= 0.70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
