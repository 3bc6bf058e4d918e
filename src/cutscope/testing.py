"""Helpers for testing code that runs under cutscope.

``recording()`` traces the block with an in-memory store (no database file)
and gives back the trace as the interchange document::

    with cutscope.testing.recording() as rec:
        run_my_service()
    doc = rec.trace()          # {"format": "cutscope-trace", "events": [...], ...}
"""

from __future__ import annotations

import collections
import contextlib
import random
import threading
from typing import Any, Callable, Iterator

from cutscope.tracer import Tracer, active
from cutscope.tracer.process import LogicalProcess, OutEndpoint
from cutscope.tracer.store import MemoryStore

__all__ = ["Recording", "recording", "Network", "Link"]


class Recording:
    def __init__(self, tracer: Tracer):
        self.tracer = tracer
        self.store: MemoryStore = tracer.store

    def trace(self) -> dict:
        """Everything recorded so far, as the ``cutscope-trace`` document."""
        if self.tracer.running:
            self.tracer.flush()
        return self.store.load()

    def events(self, process: str | None = None, kind: str | None = None) -> list[dict]:
        return [e for e in self.trace()["events"]
                if (process is None or e["process"] == process) and (kind is None or e["kind"] == kind)]


@contextlib.contextmanager
def recording(name: str = "test", capture_payload: int = 0, instrument: bool = True,
              strict: bool = True) -> Iterator[Recording]:
    """Trace the block into memory; the wrappers are installed unless ``instrument=False``."""
    if active() is not None:
        raise RuntimeError("cutscope is already tracing this process")
    t = Tracer(name=name, capture_payload=capture_payload, strict=strict,
               store=MemoryStore(capture=capture_payload)).start()
    if instrument:
        from cutscope import integrations

        integrations.instrument(t)
    rec = Recording(t)
    try:
        yield rec
    finally:
        if instrument:
            from cutscope import integrations

            integrations.uninstrument()
        t.stop()


# -- a deterministic in-process network --------------------------------------------------

class Link:
    """One FIFO channel of a ``Network``: a queue of messages and markers, in order."""

    def __init__(self, net: "Network", cid: str, src: LogicalProcess, dst: LogicalProcess,
                 lazy: bool, counted: bool = False):
        self.net = net
        self.id = cid
        self.src = src
        self.dst = dst
        self.items: collections.deque = collections.deque()
        self.lock = threading.Lock()  # the channel's send lock (markers may be flushed by
        # the recorder thread)
        self.known = not lazy  # whether the receiver has registered the channel
        self.ep = OutEndpoint(src, cid, flush=self._flush)
        self.counted = counted  # like a pipe: the sender counts its sends, the receiver
        # what it got (a marker nobody reads is closed by count: LogicalProcess.close_idle)
        if counted:
            self.ep.count = 0
        self.abandoned = False  # the receiver reads it no more (only markers are left)
        if not lazy:
            dst.add_in(cid)
        src.add_out(self.ep)

    def _flush(self, ep: OutEndpoint) -> None:
        with self.lock:
            for m in ep.take_markers():
                self.items.append(("marker", m.snapshot, m.initiator))

    def in_flight(self) -> list:
        """The application values on their way (markers left out), oldest first."""
        return [it[3] for it in list(self.items) if it[0] == "msg"]

    def __repr__(self) -> str:
        return f"<Link {self.id} {self.src.name}->{self.dst.name} {len(self.items)} in flight>"


class Network:
    """A deterministic network of logical processes inside one thread, for tests.

    Each ``connect(a, b)`` is a FIFO channel from a to b. ``send`` puts a message
    on it; nothing arrives until the test calls ``deliver``, which takes the
    head of one channel (the one given, or one picked by the network's seeded
    random generator): deliveries are delayed and reordered *between* channels,
    never within one. Markers travel in the channels like messages, so a
    Chandy-Lamport snapshot (``cutscope.tracer.snapshot.Coordinator``) runs over
    it exactly as over sockets; each delivery starts at a safe point (the
    receiver's pending snapshots are started before anything is delivered).

    ``on_receive(name, value, src)`` is called for each delivered message:
    the application of the test (a bank moving money, for instance).
    """

    def __init__(self, tracer: Tracer | None = None, seed: int | None = 0,
                 on_receive: Callable[[str, Any, str], None] | None = None):
        t = tracer or active()
        if t is None:
            raise RuntimeError("Network needs a running tracer (cutscope.testing.recording())")
        self.tracer = t
        self.rng = random.Random(seed)
        self.on_receive = on_receive
        self.nodes: dict[str, LogicalProcess] = {}
        self.links: dict[str, Link] = {}
        self._by_pair: dict[tuple[str, str], Link] = {}

    def node(self, name: str, state: Callable[[], dict] | None = None) -> LogicalProcess:
        """The logical process ``name`` (created on first use); ``state``: its provider."""
        lp = self.nodes.get(name)
        if lp is None:
            lp = self.nodes[name] = self.tracer.process(name)
        if state is not None:
            lp.providers.append(state)
        return lp

    def connect(self, src: str, dst: str, lazy: bool = False, counted: bool = False) -> str:
        """A FIFO channel from ``src`` to ``dst``; returns its id.

        ``lazy``: the receiver learns of the channel only with its first item
        (as a socket's receiver learns of a connection with its HELLO).
        ``counted``: its ends count messages, as a ``multiprocessing.Queue``'s do
        (a pipe: no marker can be seen at its head).
        """
        a, b = self.node(src), self.node(dst)
        cid = self.tracer.new_channel_id()
        self.tracer.channel(cid, src, dst, "testing", f"{src}->{dst}", framed=True)
        link = Link(self, cid, a, b, lazy, counted)
        self.links[cid] = link
        self._by_pair[(src, dst)] = link
        return cid

    def link(self, src: str, dst: str) -> Link:
        return self._by_pair[(src, dst)]

    def send(self, src: str, dst: str, value: Any, nbytes: int = 8) -> str:
        """``src`` sends ``value`` to ``dst`` on their channel; returns the message id."""
        link = self._by_pair[(src, dst)]
        with link.lock:
            if link.counted:
                link.ep.count += 1
            seq, stamp, markers = link.src.send(link.ep, nbytes)
            msg = f"{link.src.name}#{seq}"
            for m in markers or ():
                link.items.append(("marker", m.snapshot, m.initiator))
            link.items.append(("msg", msg, stamp, value, nbytes))
        return msg

    def busy(self) -> list[Link]:
        """The channels with something in flight that their receiver reads."""
        return [lk for lk in self.links.values() if lk.items and not lk.abandoned]

    def abandon(self, channel: str) -> None:
        """The receiver of ``channel`` never reads it again (as dask's nanny never reads
        its worker's start-up queue again): what is in flight stays there."""
        self.links[channel].abandoned = True

    def in_flight(self) -> int:
        return sum(len(lk.items) for lk in self.links.values())

    def deliver(self, channel: str | None = None) -> bool:
        """Deliver the head of ``channel`` (or of a channel picked at random); False if idle."""
        if channel is None:
            busy = self.busy()
            if not busy:
                return False
            link = busy[self.rng.randrange(len(busy))]
        else:
            link = self.links[channel]
            if not link.items:
                return False
        dst = link.dst
        if dst.pending:  # the receive's entry: a safe point
            dst.safepoint()
        item = link.items.popleft()
        if item[0] == "end":
            dst.remove_in(link.id)
            return True
        if not link.known:
            link.known = True
            dst.add_in(link.id)
        if item[0] == "marker":
            dst.marker(link.id, item[1], item[2])
            return True
        _, msg, stamp, value, nbytes = item
        dst.recv(link.id, msg, stamp, nbytes, None, value)
        if link.counted:
            dst.count_in(link.id)
        if self.on_receive is not None:
            self.on_receive(dst.name, value, link.src.name)
        return True

    def close(self, channel: str) -> None:
        """The sender closes ``channel``: the receiver sees its end after what is in flight."""
        link = self.links[channel]
        link.src.remove_out(link.ep)
        with link.lock:
            link.items.append(("end",))

    def run(self, max_steps: int = 1_000_000) -> int:
        """Deliver until nothing is in flight (or ``max_steps``); returns the deliveries made."""
        n = 0
        while n < max_steps and self._step():
            n += 1
        return n

    def _step(self) -> bool:
        busy = self.busy()
        if not busy:
            return False
        return self.deliver(busy[self.rng.randrange(len(busy))].id)

    def settle(self) -> None:
        """Write everything recorded so far to the store (before reading progress)."""
        self.tracer.flush()


def talking_processes(db: str) -> set[str]:
    """The processes of the store ``db`` that are live (seen within a snapshot
    coordinator's liveness window) and have a channel: those a snapshot asked now
    would wait for. For tests, examples and benchmarks that wait for a traced
    system to be up before they snapshot it."""
    import time

    from cutscope.tracer.snapshot.coordinator import SNAPSHOT_LIVE_NS
    from cutscope.tracer.store import open_store

    store = open_store(db, create=False)
    try:
        live = set(store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS))
        talking = {p for c in store.channel_ends() for p in (c["src"], c["dst"])}
    finally:
        store.close()
    return live & talking
