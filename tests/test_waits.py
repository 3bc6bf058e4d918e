"""A selector's select() entry is a safe point: an idle server can start a snapshot."""

from __future__ import annotations

import selectors
import socket
import threading

import cutscope
from cutscope.testing import recording


def test_a_process_waiting_in_select_starts_a_snapshot_asked_from_outside():
    with recording(name="main") as rec:
        stop = threading.Event()
        ready = threading.Event()

        def idle_server():
            with cutscope.process("idle"):
                cutscope.state(lambda: {"served": 0})
                srv = socket.create_server(("127.0.0.1", 0))
                sel = selectors.DefaultSelector()
                sel.register(srv, selectors.EVENT_READ)
                ready.set()
                while not stop.is_set():
                    sel.select(0.05)  # nobody connects: only the wait's entry is a safe point
                sel.close()
                srv.close()

        th = threading.Thread(target=idle_server)
        th.start()
        ready.wait(10)
        try:
            snap = cutscope.snapshot(initiator="idle", timeout=10)
        finally:
            stop.set()
            th.join(10)
        assert snap.status == "complete", snap.missing
        assert snap.states["idle"]["served"] == 0
        kinds = [e["kind"] for e in rec.events(process="idle")]
        assert kinds == ["snapshot"]


def test_uninstrument_restores_the_selectors():
    before = {c: c.__dict__["select"] for c in (selectors.SelectSelector, selectors.EpollSelector)}
    with recording(name="main"):
        assert selectors.EpollSelector.__dict__["select"] is not before[selectors.EpollSelector]
    for c, f in before.items():
        assert c.__dict__["select"] is f
