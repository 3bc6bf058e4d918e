"""Logical processes: the Lamport clock, the event sequence, and the snapshot state.

A logical process is the unit that has a clock and a local state (SPEC 3). By
default there is one per OS process; a thread or an asyncio task becomes its own
logical process inside ``cutscope.process(name)``, carried in a ``contextvars``
variable.

The hot path is ``send`` / ``recv``: one lock, two integer increments, one
tuple appended to the recorder's buffer. Everything else (formatting, I/O)
happens in the recorder thread.

Snapshot rules (Chandy-Lamport, SPEC 5) live here too because they need the
process lock: recording the local state and queueing a marker on every outgoing
endpoint happen under it, so no send of this process can fall between the two.
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any, Callable

_now = time.time_ns

# Event kinds, as stored.
SEND = "send"
RECV = "recv"
LOCAL = "local"
SNAPSHOT = "snapshot"

_current: contextvars.ContextVar["LogicalProcess | None"] = contextvars.ContextVar(
    "cutscope_process", default=None
)


class Marker:
    """A Chandy-Lamport marker waiting to go out on one endpoint."""

    __slots__ = ("snapshot", "initiator", "seq")

    def __init__(self, snapshot: int, initiator: str, seq: int):
        self.snapshot = snapshot
        self.initiator = initiator
        self.seq = seq  # seq of the sender's snapshot event

    def __repr__(self) -> str:
        return f"Marker({self.snapshot}, {self.initiator!r}, seq={self.seq})"


class OutEndpoint:
    """One outgoing channel of a logical process, as the snapshot protocol sees it.

    An integration creates one per channel it sends on and calls
    ``LogicalProcess.send(endpoint, ...)`` *while holding its own lock for that
    channel* (the connection's send lock, the queue's mutex), then writes the
    markers that call returns before its message. Markers queued while the
    channel is idle are written by ``flush(endpoint)``, which the integration
    provides and which must take the same lock.
    """

    __slots__ = ("channel", "process", "pending", "flush", "fifo", "closed", "__weakref__")

    def __init__(
        self,
        process: "LogicalProcess",
        channel: str,
        flush: Callable[["OutEndpoint"], None] | None = None,
        fifo: bool = True,
    ):
        self.channel = channel
        self.process = process
        self.pending: list[Marker] = []
        self.flush = flush
        self.fifo = fifo
        self.closed = False

    def take_markers(self) -> list[Marker]:
        """Pop every pending marker (the integration holds its channel lock)."""
        with self.process.lock:
            out, self.pending = self.pending, []
        return out


class SnapState:
    """What one logical process knows of one snapshot."""

    __slots__ = ("id", "initiator", "event_seq", "state", "closed", "messages", "out", "reported")

    def __init__(self, sid: int, initiator: str, event_seq: int, state: dict, out: list[str]):
        self.id = sid
        self.initiator = initiator
        self.event_seq = event_seq
        self.state = state
        self.closed: set[str] = set()
        # channel id -> list of (msg id, nbytes, payload bytes | None, value)
        self.messages: dict[str, list[tuple]] = {}
        self.out = out  # channels that got (or will get) a marker from us
        self.reported = False


class LogicalProcess:
    """A Lamport clock, an event sequence and the snapshot state of one process."""

    __slots__ = (
        "name", "tracer", "lock", "clock", "seq", "out", "incoming", "providers",
        "snaps", "pending", "ended", "_append", "__weakref__",
    )

    def __init__(self, tracer, name: str, seq: int = 0, clock: int = 0):
        self.name = name
        self.tracer = tracer
        self.lock = threading.Lock()
        self.clock = clock
        self.seq = seq
        self.out: list[OutEndpoint] = []  # outgoing endpoints, for markers
        self.incoming: dict[str, bool] = {}  # channel id -> fifo
        self.providers: list[Callable[[], dict]] = []
        self.snaps: dict[int, SnapState] = {}  # snapshots recorded, not yet finished
        self.pending: list[tuple[int, str]] = []  # snapshots to start at the next safe point
        self.ended = False
        self._append = tracer.recorder.append

    def __repr__(self) -> str:
        return f"<LogicalProcess {self.name} seq={self.seq} clock={self.clock}>"

    # -- events ---------------------------------------------------------------

    def send(self, ep: OutEndpoint | None, nbytes: int, payload: bytes | None = None,
             channel: str | None = None):
        """Record a send on ``ep`` (or a bare ``channel`` id that takes no markers).

        Returns ``(msg_id, lamport, markers)``: the id and Lamport stamp to put on
        the message, and the markers that must be written on the channel *before*
        it. Call it under the channel's own send lock.
        """
        with self.lock:
            self.seq = seq = self.seq + 1
            self.clock = lamport = self.clock + 1
            markers = None
            if ep is not None:
                channel = ep.channel
                if ep.pending:
                    markers = ep.pending
                    ep.pending = []
        msg = f"{self.name}#{seq}"
        self._append((self.name, seq, lamport, _now(), SEND, channel, msg, nbytes, payload, None))
        return msg, lamport, markers

    def recv(self, channel: str | None, msg: str | None, stamp: int | None, nbytes: int,
             payload: bytes | None = None, value: Any = None) -> int:
        """Record a receive of message ``msg`` stamped ``stamp`` on ``channel``.

        Messages that arrive on a channel that an unfinished snapshot of this
        process still records are added to that snapshot's channel state.
        """
        with self.lock:
            self.seq = seq = self.seq + 1
            c = self.clock
            self.clock = lamport = (c if stamp is None or c > stamp else stamp) + 1
            if channel is not None and channel not in self.incoming:
                self.incoming[channel] = True
            if self.snaps:
                for s in self.snaps.values():
                    if channel not in s.closed:
                        s.messages.setdefault(channel, []).append((msg, nbytes, payload, value))
        self._append((self.name, seq, lamport, _now(), RECV, channel, msg, nbytes, payload, None))
        return seq

    def local(self, label: str, data: dict | None = None) -> int:
        with self.lock:
            self.seq = seq = self.seq + 1
            self.clock = lamport = self.clock + 1
        self._append((self.name, seq, lamport, _now(), LOCAL, None, None, 0, None,
                      {"label": label, **(data or {})}))
        return seq

    # -- channels ---------------------------------------------------------------

    def add_out(self, ep: OutEndpoint) -> OutEndpoint:
        with self.lock:
            self.out.append(ep)
            # A channel opened after we recorded, while the snapshot still runs,
            # carries no message from before our snapshot event: mark it at once.
            for s in self.snaps.values():
                ep.pending.append(Marker(s.id, s.initiator, s.event_seq))
                s.out.append(ep.channel)
        if ep.pending and ep.flush is not None:
            self.tracer.guard(ep.flush, ep)
        return ep

    def remove_out(self, ep: OutEndpoint) -> None:
        with self.lock:
            ep.closed = True
            try:
                self.out.remove(ep)
            except ValueError:
                pass

    def add_in(self, channel: str, fifo: bool = True) -> None:
        with self.lock:
            self.incoming[channel] = fifo

    def remove_in(self, channel: str) -> None:
        with self.lock:
            self.incoming.pop(channel, None)
        self._maybe_done()

    # -- snapshots --------------------------------------------------------------

    def local_state(self) -> dict:
        state: dict = {}
        for fn in list(self.providers):
            try:
                part = fn()
            except Exception as exc:  # the application's provider failed
                self.tracer.fault(exc, f"state provider {fn!r} of {self.name}")
                part = {"_error": repr(exc)}
            if isinstance(part, dict):
                state.update(part)
            else:
                state[getattr(fn, "__name__", "state")] = part
        return state

    def record(self, sid: int, initiator: str, via: str | None = None) -> bool:
        """Record the local state for snapshot ``sid`` and queue markers everywhere.

        ``via`` is the channel whose marker caused this (closed, empty). Returns
        False if this snapshot was already recorded here.
        """
        if sid in self.snaps or sid in self.tracer.finished_snaps.get(self.name, ()):
            return False
        state = self.local_state()  # the application's code runs outside our lock
        with self.lock:
            if sid in self.snaps:
                return False
            self.seq = seq = self.seq + 1
            self.clock = lamport = self.clock + 1
            own = {"clock": lamport, "seq": seq,
                   "incoming": sorted(self.incoming), "outgoing": [e.channel for e in self.out]}
            s = SnapState(sid, initiator, seq, {**state, "_cutscope": own}, [])
            if via is not None:
                s.closed.add(via)
            flush = []
            for ep in self.out:
                ep.pending.append(Marker(sid, initiator, seq))
                s.out.append(ep.channel)
                flush.append(ep)
            self.snaps[sid] = s
            self.pending = [p for p in self.pending if p[0] != sid]
        self._append((self.name, seq, lamport, _now(), SNAPSHOT, None, None, 0, None,
                      {"snapshot": sid}))
        self.tracer.recorder.other(("snap_state", sid, self.name, s.event_seq, s.state,
                                    list(s.out), initiator))
        for ep in flush:
            if ep.pending and ep.flush is not None:
                self.tracer.guard(ep.flush, ep)
        self._maybe_done()
        return True

    def marker(self, channel: str, sid: int, initiator: str) -> None:
        """A marker of snapshot ``sid`` arrived on incoming ``channel``."""
        if sid not in self.snaps:
            if sid in self.tracer.finished_snaps.get(self.name, ()):
                return
            # First marker: this is a safe point (inside a receive, before delivery).
            self.record(sid, initiator, via=channel)
            return
        with self.lock:
            s = self.snaps.get(sid)
            if s is None:
                return
            s.closed.add(channel)
        self._maybe_done()

    def safepoint(self) -> None:
        """Start the snapshots that were asked of this process."""
        while self.pending:
            try:
                sid, initiator = self.pending[0]
            except IndexError:
                return
            if not self.record(sid, initiator):
                with self.lock:
                    self.pending = [p for p in self.pending if p[0] != sid]

    def _maybe_done(self) -> None:
        done = []
        with self.lock:
            for sid, s in list(self.snaps.items()):
                if all(c in s.closed for c in self.incoming if self.incoming[c]) and all(
                    c in s.closed for c in s.messages
                ):
                    del self.snaps[sid]
                    done.append(s)
        for s in done:
            self.tracer.finished_snaps.setdefault(self.name, set()).add(s.id)
            self.tracer.recorder.other(("snap_done", s.id, self.name, sorted(s.closed),
                                        {c: m for c, m in s.messages.items()}))

    def open_channels(self, sid: int) -> list[str]:
        """The incoming channels snapshot ``sid`` still waits for here."""
        with self.lock:
            s = self.snaps.get(sid)
            if s is None:
                return []
            open_ = {c for c in self.incoming if self.incoming[c] and c not in s.closed}
            open_.update(c for c in s.messages if c not in s.closed)
            return sorted(open_)


# The main logical process of this OS process while a tracer runs (set by Tracer).
_default: list["LogicalProcess | None"] = [None]


def current() -> LogicalProcess | None:
    """The logical process of the calling thread or task (None if not traced)."""
    return _current.get() or _default[0]
