"""Small real traces for the viewer, render and check tests.

They are recorded through the real tracer core (``cutscope.start`` with a real
SQLite file, logical processes, their ``send``/``recv``/``record``/``marker``
calls), not written by hand, so the tests read what a traced run stores.
"""

from __future__ import annotations

import time

import cutscope


def _insert_snapshot(tracer, sid: int, initiator: str, status: str = "complete",
                     missing: str = "[]") -> None:
    tracer.store.execute(lambda conn: conn.exec_driver_sql(
        "INSERT INTO snapshots (id, initiator, status, requested_ns, finished_ns, missing) "
        "VALUES (?, ?, ?, ?, ?, ?)", (sid, initiator, status, time.time_ns(), time.time_ns(), missing)))


def bank_trace(db_url: str, extra_rounds: int = 3) -> None:
    """Three processes exchanging messages, with one Chandy-Lamport snapshot.

    P1 -> P2 on c12, P2 -> P1 on c21, P2 -> P3 on c23. Snapshot 1 (initiated
    by P1) records message P2#.. in transit on c21.
    """
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        p1, p2, p3 = t.process("P1"), t.process("P2"), t.process("P3")
        for cid, a, b in (("c12", "P1", "P2"), ("c21", "P2", "P1"), ("c23", "P2", "P3")):
            t.channel(cid, a, b, "queue", None, True)
        p1.local("start", {"balance": 100})
        m, st, _ = p1.send(None, 8, channel="c12")
        m = f"{p1.name}#{m}"  # send returns the seq
        p2.recv("c12", m, st, 8)
        p1.add_in("c21")
        p3.add_in("c23")
        p1.record(1, "P1")                      # P1 records first
        m2, st2, _ = p2.send(None, 8, channel="c21")   # sent before P2 records ...
        m2 = f"{p2.name}#{m2}"  # send returns the seq
        p2.marker("c12", 1, "P1")               # P2 records on P1's marker
        p3.marker("c23", 1, "P1")               # P3 records on P2's marker
        p1.recv("c21", m2, st2, 8)              # ... received after P1 recorded: in transit
        p1.marker("c21", 1, "P1")               # P2's marker closes c21
        for _ in range(extra_rounds):
            m, st, _ = p2.send(None, 4, channel="c23")
            m = f"{p2.name}#{m}"  # send returns the seq
            p3.recv("c23", m, st, 4)
            m, st, _ = p1.send(None, 4, channel="c12")
            m = f"{p1.name}#{m}"  # send returns the seq
            p2.recv("c12", m, st, 4)
            p3.local("tick")
        t.flush()
        _insert_snapshot(t, 1, "P1")
    finally:
        cutscope.stop()


def big_trace(db_url: str, n_events: int, procs: int = 4) -> None:
    """About ``n_events`` events over ``procs`` processes in a ring (for scrolling tests)."""
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        lps = [t.process(f"N{i}") for i in range(procs)]
        for i in range(procs):
            t.channel(f"r{i}", f"N{i}", f"N{(i + 1) % procs}", "queue", None, True)
        k = 0
        while k < n_events:
            for i, lp in enumerate(lps):
                m, st, _ = lp.send(None, 1, channel=f"r{i}")
                m = f"{lp.name}#{m}"  # send returns the seq
                lps[(i + 1) % procs].recv(f"r{i}", m, st, 1)
                k += 2
            if k % 20_000 < 2 * procs:
                t.flush()
        t.flush()
    finally:
        cutscope.stop()


def thin_air_trace(db_url: str) -> None:
    """The lesson's bad snapshot, recorded through the real core.

    P1 records its state, *then* sends M; P2 receives M and only then records
    (as if M had overtaken P1's marker: a channel that is not FIFO). P2's
    state shows M received, P1's shows M not sent: M comes from thin air.
    """
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        p1, p2 = t.process("P1"), t.process("P2")
        t.channel("c12", "P1", "P2", "queue", None, True)
        p1.record(1, "P1")                   # P1#1: snapshot
        m, st, _ = p1.send(None, 8, channel="c12")   # P1#2: M, after P1's state
        m = f"{p1.name}#{m}"  # send returns the seq
        p2.recv("c12", m, st, 8)             # P2#1: M received ...
        p2.marker("c12", 1, "P1")            # P2#2: ... before P2's state
        p2.local("after")
        t.flush()
        _insert_snapshot(t, 1, "P1")
    finally:
        cutscope.stop()


def mutex_trace(db_url: str, token: bool = True) -> None:
    """Two processes A and B enter and leave a critical section (``cs``, recorded
    with each ``local`` event), with a ``balance`` beside it.

    With ``token``, A sends B a token after leaving and B enters only after
    receiving it: the two are never inside together. Without it, B enters
    before the token arrives: both can be inside at once, but need not be.
    """
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        a, b = t.process("A"), t.process("B")
        t.channel("ab", "A", "B", "queue", None, True)
        a.local("enter", {"cs": True, "balance": 10})       # A 1
        a.local("leave", {"cs": False, "balance": 7})       # A 2
        m, st, _ = a.send(None, 8, channel="ab")            # A 3
        if token:
            b.recv("ab", f"A#{m}", st, 8)                   # B 1
            b.local("enter", {"cs": True, "balance": 3})    # B 2
        else:
            b.local("enter", {"cs": True, "balance": 3})    # B 1
            b.recv("ab", f"A#{m}", st, 8)                   # B 2
        b.local("leave", {"cs": False, "balance": 3})       # B 3
        t.flush()
    finally:
        cutscope.stop()


def relay_trace(db_url: str, rounds: int = 3) -> None:
    """A client, a relay and a server, with runs of local events.

    Each round: ``client`` does two local steps and sends a request to
    ``relay``; the relay receives it, does three local steps, forwards it to
    ``server``; the server receives it, does a local step, answers the relay;
    the relay passes the answer back to the client. With the relay hidden,
    every message of the client and the server goes through it.
    """
    t = cutscope.start(db=db_url, name="main", instrument=False)
    try:
        c, r, s = t.process("client"), t.process("relay"), t.process("server")
        for cid, a, b in (("cr", "client", "relay"), ("rs", "relay", "server"),
                          ("sr", "server", "relay"), ("rc", "relay", "client")):
            t.channel(cid, a, b, "queue", None, True)

        def hop(src, dst, ch):
            m, st, _ = src.send(None, 8, channel=ch)
            dst.recv(ch, f"{src.name}#{m}", st, 8)

        for i in range(rounds):
            c.local("prepare", {"round": i})
            c.local("encode", {"round": i})
            hop(c, r, "cr")
            for step in ("check", "route", "stamp"):
                r.local(step, {"round": i})
            hop(r, s, "rs")
            s.local("serve", {"round": i})
            hop(s, r, "sr")
            hop(r, c, "rc")
        t.flush()
    finally:
        cutscope.stop()
