"""The recorder thread's part of the snapshot protocol (``Tracer.tick_hooks``):
queued markers, SIGUSR1, the store's requests and ends."""

from __future__ import annotations

import logging
import threading
import time

from ..recorder import INTERVAL, SNAPSHOT_INTERVAL
from .coordinator import Coordinator
from .result import SnapshotError

log = logging.getLogger("cutscope")

TICK_S = 0.05  # minimum interval between two request polls of one interpreter
# ... while it takes part in no snapshot and serves a control socket (coordinators
# of this host reach it through the socket; the store is for the other hosts'), and
# always while it listens to PostgreSQL's notifications (tracer/notify.py: requests
# and ends come at once; the poll is the fallback):
IDLE_TICK_S = 0.25
# A process reports the channels it closes together with its "done"; one that is
# still not done this long after it recorded sends what it has (tick).
OUTBOX_S = 0.25


class Poller:
    """The tick hook (``Tracer.tick_hooks``) of one tracer, with what it remembers
    between ticks: when it last read the store's requests, and which requests
    (of running snapshots) it has handed over."""

    def __init__(self):
        self.polled_at = 0.0  # time.monotonic() of the last read of the requests
        self.taken: set[tuple[int, str]] = set()  # (snapshot id, process) handed over

    def __call__(self, tracer) -> None:
        tick(tracer, self)


def tick(tracer, poller: Poller) -> None:
    """Called by each interpreter's recorder thread, about every 50 ms.

    Writes the markers that a send-exit safe point left queued; turns SIGUSR1s
    into snapshots; takes this interpreter's snapshot requests from the store
    (sets ``lp.pending``); ends the snapshots that the store says have ended.
    """
    dq = tracer.deferred_flush
    while dq:
        ep = dq.pop(0)
        if ep.pending and not ep.closed and ep.flush is not None:
            tracer.guard(ep.flush, ep)
    for lp in list(tracer.processes.values()):  # closed channels of processes not done
        if lp.snaps:
            lp.send_stale_outboxes(OUTBOX_S)
    n = tracer.take_snapshot_signals()
    if n:
        for _ in range(min(n, 4)):
            _start_from_signal(tracer)
    now = time.monotonic()
    procs = tracer.processes
    busy = any(lp.snaps or lp.pending for lp in list(procs.values()))
    # While this interpreter takes part in a snapshot, the recorder ticks faster (idle
    # channels' markers, queued markers); the store's poll below keeps its own pace.
    rec = tracer.recorder
    rec.interval = SNAPSHOT_INTERVAL if busy else INTERVAL
    every = TICK_S
    lst = tracer.listener
    if lst is not None and lst.ready.is_set():
        # Requests and ends come as notifications, at once: the poll is the fallback
        # (a notification lost with a dropped connection), snapshot or not.
        every = IDLE_TICK_S
    elif tracer.control is not None and not poller.taken and not busy:
        every = IDLE_TICK_S
    if now - poller.polled_at < every:
        return
    poller.polled_at = now
    store = tracer.store
    names = [n for n, lp in list(procs.items()) if not lp.ended]
    taken = poller.taken
    current = set()
    for sid, name, initiator in store.snapshot_requests(names):
        current.add((sid, name))
        if (sid, name) in taken:
            continue
        lp = procs.get(name)
        if lp is not None:
            lp.request(sid, initiator)
    poller.taken = current  # only the requests of running snapshots are remembered
    open_ = {sid for lp in list(procs.values()) for sid in list(lp.snaps)}
    open_.update(sid for lp in list(procs.values()) for sid, _ in list(lp.pending))
    if open_:
        ended = {sid: st for sid, st in store.snapshot_statuses(open_).items() if st != "running"}
        for sid in ended:
            tracer.snap_sinks.pop(sid, None)
        for lp in list(procs.values()):
            for sid, st in ended.items():
                if sid in lp.snaps or any(p[0] == sid for p in lp.pending):
                    lp.finish(sid, st == "complete")


def _start_from_signal(tracer, timeout: float = 10.0) -> None:
    """SIGUSR1: a snapshot with this process's main logical process as initiator.

    Runs in the recorder thread (the signal handler only counted); the waiting
    happens in a thread of its own, which logs the result.
    """
    lp = tracer.main
    c = Coordinator(tracer.store, initiator=lp.name, timeout=timeout, tracer=tracer)
    try:
        c.start()
    except SnapshotError as exc:
        log.warning("cutscope: SIGUSR1: %s", exc)
        return

    def run():
        try:
            snap = c.wait()
            log.warning("cutscope: SIGUSR1: %s", snap.summary())
        except Exception as exc:
            tracer._writer_error(exc)

    threading.Thread(target=run, name=f"cutscope-snapshot-{c.id}", daemon=True).start()
