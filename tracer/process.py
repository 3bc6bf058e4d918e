"""Logical processes: the Lamport clock, the event sequence, and the snapshot state.

A logical process is the unit that has a clock and a local state. By
default there is one per OS process; a thread or an asyncio task becomes its own
logical process inside ``cutscope.process(name)``, carried in a ``contextvars``
variable.

The hot path is ``send`` / ``recv``: one lock, two integer increments, one
tuple appended to the recorder's buffer. Everything else (formatting, I/O)
happens in the recorder thread.

Snapshot rules (Chandy-Lamport, docs/snapshots.md) live here too because they need the
process lock: recording the local state and queueing a marker on every outgoing
endpoint happen under it, so no send of this process can fall between the two.
"""

from __future__ import annotations

import collections
import contextvars
import os
import sys
import threading
import time
from typing import Any, Callable

from .records import channel_record, done_record, state_record

_now = time.time_ns

# Event kinds, as stored.
SEND = "send"
RECV = "recv"
LOCAL = "local"
SNAPSHOT = "snapshot"

# How many ended incoming channels a process remembers for its snapshot states.
ENDED_KEPT = 128

# The buffer bound is checked every CHECK_MASK + 1 events of a process (hot path).
CHECK_MASK = 255

# The logical process of the calling thread or task, where one was entered
# (``cutscope.process``); else ``default_process[0]`` is the caller's.
current_var: contextvars.ContextVar["LogicalProcess | None"] = contextvars.ContextVar(
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

    __slots__ = ("channel", "process", "pending", "flush", "fifo", "closed", "count",
                 "__weakref__")

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
        # The messages sent on the channel, for a channel whose receiver cannot see a
        # marker at its head (a pipe cannot be peeked): None where nobody counts. The
        # integration adds one *before* ``lp.send`` of each message (under its channel
        # lock), so the count a snapshot records covers every message sent before it
        # (and at most the one being sent: never too few). See ``close_idle``.
        self.count: int | None = None

    def take_markers(self) -> list[Marker]:
        """Pop every pending marker (the integration holds its channel lock)."""
        with self.process.lock:
            out, self.pending = self.pending, []
        return out


class SnapState:
    """What one logical process knows of one snapshot it has recorded.

    It stays here until the coordinator ends the snapshot (``finish``): a
    channel that this process did not know when it recorded (its HELLO still on
    the way) may still bring in-transit messages and then its marker.
    """

    __slots__ = ("id", "initiator", "event_seq", "closed", "messages", "out", "done", "sink",
                 "outbox", "t0")

    def __init__(self, sid: int, initiator: str, event_seq: int, out: list[str], sink=None):
        self.id = sid
        self.initiator = initiator
        self.event_seq = event_seq
        self.closed: set[str] = set()  # incoming channels whose marker (or end) arrived
        # channel id -> list of (msg id, nbytes, payload bytes | None, value), until its marker
        self.messages: dict[str, list[tuple]] = {}
        self.out = out  # channels that got (or will get) a marker from us
        self.done = False  # every registered FIFO incoming channel closed (reported once)
        # Where this process's records of the snapshot go: None = the store (through
        # the recorder); else the coordinator, directly (Tracer.snap_send). Decided
        # once, at record, so that all of them go to one place.
        self.sink = sink
        self.outbox: list[tuple] = []  # records for the sink, sent with the next report
        self.t0 = time.monotonic()  # when this process recorded (send_stale_outboxes)


class LogicalProcess:
    """A Lamport clock, an event sequence and the snapshot state of one process."""

    __slots__ = (
        "name", "tracer", "lock", "clock", "seq", "out", "incoming", "providers",
        "snaps", "pending", "ended", "ended_in", "received", "sent_final", "_append", "_check",
        "__weakref__",
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
        # The incoming FIFO channels that ended most recently (a snapshot's state
        # names them: their sender may mark them after we stopped reading them).
        self.ended_in: collections.deque = collections.deque(maxlen=ENDED_KEPT)
        # Incoming channel -> messages received on it, for the channels whose sender
        # counts its sends (``OutEndpoint.count``; the integration calls ``count_in``).
        self.received: dict[str, int] = {}
        # Outgoing counted channels this process closed -> messages sent on each (final:
        # every later snapshot's state names them, so their receivers can close them).
        self.sent_final: dict[str, int] = {}
        self._append = tracer.recorder.push  # the buffer's own append (C)
        self._check = tracer.recorder.check  # bound check, every CHECK_MASK + 1 events

    def __repr__(self) -> str:
        return f"<LogicalProcess {self.name} seq={self.seq} clock={self.clock}>"

    # -- events ---------------------------------------------------------------

    def send(self, ep: OutEndpoint | None, nbytes: int, payload: bytes | None = None,
             channel: str | None = None):
        """Record a send on ``ep`` (or a bare ``channel`` id that takes no markers).

        Returns ``(seq, lamport, markers)``: the seq of the send event (the
        message id is ``"<name>#<seq>"``; the recorder stores None for it and the
        store derives it) and the Lamport stamp to put on the message, and the
        markers that must be written on the channel *before* it. Call it under
        the channel's own send lock.
        """
        lock = self.lock
        lock.acquire()  # (no exception can happen inside: plain acquire/release is cheaper)
        self.seq = seq = self.seq + 1
        self.clock = lamport = self.clock + 1
        markers = None
        if ep is not None:
            channel = ep.channel
            if ep.pending:
                markers = ep.pending
                ep.pending = []
        lock.release()
        self._append((self.name, seq, lamport, _now(), SEND, channel, None, nbytes, payload, None))
        if not seq & CHECK_MASK:
            self._check()
        if self.pending and not self.incoming:
            # A process that never receives starts an asked-for snapshot here: the
            # exit of its send (the message is its last event before the cut).
            self._record_after_send()
        return seq, lamport, markers

    def recv(self, channel: str | None, msg: str | None, stamp: int | None, nbytes: int,
             payload: bytes | None = None, value: Any = None) -> int:
        """Record a receive of message ``msg`` stamped ``stamp`` on ``channel``.

        Messages that arrive on a channel that an unfinished snapshot of this
        process still records are added to that snapshot's channel state.
        """
        lock = self.lock
        lock.acquire()  # not `with`: __enter__/__exit__ cost twice a plain acquire/release
        try:
            self.seq = seq = self.seq + 1
            c = self.clock
            self.clock = lamport = (c if stamp is None or c > stamp else stamp) + 1
            if channel is not None and channel not in self.incoming:
                self.incoming[channel] = True
            if self.snaps and self.incoming.get(channel):
                for s in self.snaps.values():
                    if channel not in s.closed:
                        s.messages.setdefault(channel, []).append((msg, nbytes, payload, value))
        finally:
            lock.release()
        self._append((self.name, seq, lamport, _now(), RECV, channel, msg, nbytes, payload, None))
        if not seq & CHECK_MASK:
            self._check()
        return seq

    def unframed(self, kind: str, channel: str, nbytes: int, payload: bytes | None = None) -> None:
        """A send or receive on an unframed channel: it ticks the clock; no message id
        (stored as ``""``: a send's None means "derive the id from its seq")."""
        with self.lock:
            self.seq = seq = self.seq + 1
            self.clock = c = self.clock + 1
        self._append((self.name, seq, c, _now(), kind, channel, "", nbytes, payload, None))

    def local(self, label: str, data: dict | None = None) -> int:
        with self.lock:
            self.seq = seq = self.seq + 1
            self.clock = lamport = self.clock + 1
        self._append((self.name, seq, lamport, _now(), LOCAL, None, None, 0, None,
                      {"label": label, **(data or {})}))
        if not seq & CHECK_MASK:
            self._check()
        return seq

    # -- channels ---------------------------------------------------------------

    def add_out(self, ep: OutEndpoint) -> OutEndpoint:
        with self.lock:
            self.out.append(ep)
            # A channel opened after we recorded, while the snapshot still runs,
            # carries no message from before our snapshot event: mark it at once.
            if ep.fifo:
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
            if ep.count is not None and ep.fifo:
                final = self.sent_final
                final[ep.channel] = ep.count
                if len(final) > ENDED_KEPT:
                    del final[next(iter(final))]

    def count_in(self, channel: str) -> None:
        """One more message received on ``channel`` (after its ``recv``), for the
        channels whose sender counts its sends (``close_idle``)."""
        with self.lock:
            self.received[channel] = self.received.get(channel, 0) + 1

    def add_in(self, channel: str, fifo: bool = True) -> None:
        with self.lock:
            self.incoming[channel] = fifo

    def remove_in(self, channel: str) -> None:
        """The incoming ``channel`` ended (end of stream): nothing more can arrive on it,
        so it is closed in every snapshot that still records it."""
        ended = []
        with self.lock:
            fifo = self.incoming.pop(channel, None)
            if fifo:
                self.ended_in.append(channel)
                for s in self.snaps.values():
                    if channel not in s.closed:
                        s.closed.add(channel)
                        ended.append((s, s.messages.pop(channel, [])))
        for s, msgs in ended:
            self._report(s, [channel_record(s.id, self.name, channel, msgs, True)], now=s.done)
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

    def record(self, sid: int, initiator: str, via: str | None = None,
               after_send: bool = False) -> bool:
        """Record the local state for snapshot ``sid`` and queue markers everywhere.

        Call it at a safe point of this process only. ``via`` is the incoming
        channel whose marker caused this (closed, empty). ``after_send``: called
        from inside ``send`` while the integration holds that channel's lock, so
        the markers are flushed later by the recorder thread. Returns False if
        this snapshot was already recorded (or finished) here.
        """
        if sid in self.snaps or sid in self.tracer.finished_snaps.get(self.name, ()):
            return False
        state = self.local_state()  # the application's code runs outside our lock
        sink = self.tracer.snap_sink(sid)  # (a file system lookup: outside it too)
        with self.lock:
            if sid in self.snaps:
                return False
            self.seq = seq = self.seq + 1
            self.clock = lamport = self.clock + 1
            inc = self.incoming
            if via is not None and via not in inc:
                inc[via] = True
            marker = Marker(sid, initiator, seq)
            out, flush, uncovered, sent = [], [], [], dict(self.sent_final)
            for ep in self.out:
                if ep.fifo:
                    ep.pending.append(marker)
                    out.append(ep.channel)
                    flush.append(ep)
                    if ep.count is not None:
                        sent[ep.channel] = ep.count
                else:
                    uncovered.append(ep.channel)
            uncovered.extend(c for c, fifo in inc.items() if not fifo)
            # "ended": incoming channels that ended before this state (nothing can be
            # received on them after it: empty in the cut, whoever marks them later).
            own = {"clock": lamport, "seq": seq, "incoming": sorted(c for c, f in inc.items() if f),
                   "outgoing": out, "uncovered": sorted(uncovered), "ended": list(self.ended_in)}
            if sent:  # counted channels: messages sent on each before this state (close_idle)
                own["sent"] = sent
            s = SnapState(sid, initiator, seq, out, sink)
            if via is not None:
                s.closed.add(via)
            self.snaps[sid] = s
            self.pending = [p for p in self.pending if p[0] != sid]
        self._append((self.name, seq, lamport, _now(), SNAPSHOT, None, None, 0, None,
                      {"snapshot": sid}))
        recs = [state_record(sid, self.name, seq, {**state, "_cutscope": own}, list(out),
                             initiator)]
        if via is not None:
            recs.append(channel_record(sid, self.name, via, [], True))
        self._report(s, recs, now=False)  # sent below, with "done" if it is done at once
        if after_send:
            self.tracer.deferred_flush.extend(flush)
        else:
            for ep in flush:
                if ep.pending and ep.flush is not None:
                    self.tracer.guard(ep.flush, ep)
        self._maybe_done()
        if not s.done:
            self._report(s, [], now=True)
        return True

    def _record_after_send(self) -> None:
        try:
            sid, initiator = self.pending[0]
        except IndexError:
            return
        if not self.record(sid, initiator, after_send=True):
            self._drop_pending(sid)

    def marker(self, channel: str, sid: int, initiator: str) -> None:
        """A marker of snapshot ``sid`` arrived on incoming ``channel``.

        The integration calls it inside a receive, before delivering anything
        that follows the marker: a safe point.
        """
        if sid not in self.snaps:
            if sid in self.tracer.finished_snaps.get(self.name, ()):
                return
            # First marker: record, with this channel closed and empty.
            if self.record(sid, initiator, via=channel):
                return
        with self.lock:
            s = self.snaps.get(sid)
            if s is None or channel in s.closed:
                return
            s.closed.add(channel)
            msgs = s.messages.pop(channel, [])
        self._report(s, [channel_record(sid, self.name, channel, msgs, True)], now=s.done)
        self._maybe_done()

    def close_idle(self, sid: int, channel: str, sent: int, before: int,
                   elsewhere: bool = False) -> bool:
        """Close incoming ``channel`` for snapshot ``sid`` without its marker, when every
        message sent on it before its sender's state has left the channel: this
        process has received ``sent`` of them (the count its sender recorded with its
        state, ``OutEndpoint.count``), or, ``elsewhere``, the channel was closed for
        ``sid`` at another receiver (a queue with several consumers: its marker went
        to one of them). ``before``: the seq of the sender's snapshot event. The
        coordinator asks for it when the marker is late (a queue that nobody reads
        again keeps it in its pipe).

        Why it is exact: the channel is FIFO, so the messages sent before the
        sender's state are the first ``sent`` ones, ahead of the marker, and all of
        them have been taken (by this process, or, when another receiver took the
        marker or counted them all, by someone). Of what this process recorded on
        the channel since its own state, the messages sent before the sender's
        state (seq below ``before``) are in transit across the cut; any other was
        sent after it (outside the cut) and is dropped. Everything that arrives
        from now on was sent after it too. A marker read later is that of a closed
        channel (or of an ended snapshot): consumed, nothing recorded. Returns True
        if the channel is closed for ``sid`` here (now or before)."""
        with self.lock:
            s = self.snaps.get(sid)
            if s is None:
                return False
            if channel in s.closed:
                return True
            if not elsewhere and self.received.get(channel, 0) < sent:
                return False  # messages sent before the sender's state are still on the way
            s.closed.add(channel)
            msgs = [m for m in s.messages.pop(channel, []) if _sent_before(m[0], before)]
        self._report(s, [channel_record(sid, self.name, channel, msgs, True)], now=s.done)
        self._maybe_done()
        return True

    def request(self, sid: int, initiator: str) -> None:
        """Ask this process to start snapshot ``sid`` at its next safe point (any thread)."""
        with self.lock:
            if sid in self.snaps or any(p[0] == sid for p in self.pending):
                return
            if sid in self.tracer.finished_snaps.get(self.name, ()):
                return
            self.pending = self.pending + [(sid, initiator)]

    def _drop_pending(self, sid: int) -> None:
        with self.lock:
            self.pending = [p for p in self.pending if p[0] != sid]

    def safepoint(self) -> None:
        """Start the snapshots that were asked of this process (call it at a safe point)."""
        while self.pending:
            try:
                sid, initiator = self.pending[0]
            except IndexError:
                return
            if not self.record(sid, initiator):
                self._drop_pending(sid)

    def _maybe_done(self) -> None:
        """Report the snapshots whose every registered FIFO incoming channel is closed."""
        done = []
        with self.lock:
            for s in self.snaps.values():
                if not s.done and all(c in s.closed for c, f in self.incoming.items() if f):
                    s.done = True
                    done.append(s)
        for s in done:
            self._report(s, [done_record(s.id, self.name)], now=True)

    def _report(self, s: SnapState, items: list[tuple], now: bool) -> None:
        """Hand snapshot records to ``s``'s sink: the recorder (the store), or the
        coordinator directly, in as few reports as it can: the records wait in
        ``s.outbox`` until ``now`` (the state, "done", anything after "done")."""
        if s.sink is None and not s.outbox:  # the store (final: it never changes)
            other = self.tracer.recorder.other
            for it in items:
                other(it)
            return
        with self.lock:
            sink = s.sink
            if sink is not None and not now:
                s.outbox.extend(items)
                return
            items = s.outbox + items
            s.outbox = []
            if sink is None:
                other = self.tracer.recorder.other
                for it in items:
                    other(it)
                return
        if items:
            self.tracer.snap_send(sink, items)

    def send_stale_outboxes(self, age: float) -> None:
        """Send the records that have waited in an outbox for "done" since this
        process recorded ``age`` seconds ago or more (the recorder thread): a
        process that is never done (a channel whose marker does not come) must
        not hide from its coordinator the channels that did close."""
        if not self.snaps:
            return
        now = time.monotonic()
        for s in list(self.snaps.values()):
            if s.outbox and s.sink is not None and now - s.t0 >= age:
                self._report(s, [], now=True)

    def finish(self, sid: int, complete: bool) -> None:
        """The coordinator ended snapshot ``sid``: stop recording its channels here.

        For a snapshot that did not complete, what the still-open channels
        recorded so far is reported as incomplete channel state.
        """
        with self.lock:
            s = self.snaps.pop(sid, None)
            self.pending = [p for p in self.pending if p[0] != sid]
            for ep in self.out:
                if ep.pending:
                    ep.pending = [m for m in ep.pending if m.snapshot != sid]
        self.tracer.finished_snaps.setdefault(self.name, set()).add(sid)
        if s is not None and not complete:
            other = self.tracer.recorder.other
            with self.lock:
                unsent, s.outbox = s.outbox, []
            # Closed channels not yet reported to the coordinator: their messages
            # are kept as incomplete channel states, like those of the open ones.
            for it in unsent:
                if it.kind == "snap_chan" and it.messages:
                    other(it._replace(complete=False))
            for ch, msgs in s.messages.items():
                other(channel_record(sid, self.name, ch, msgs, False))

    def open_channels(self, sid: int) -> list[str]:
        """The registered FIFO incoming channels snapshot ``sid`` still waits for here."""
        with self.lock:
            s = self.snaps.get(sid)
            if s is None:
                return []
            return sorted(c for c, f in self.incoming.items() if f and c not in s.closed)


def _sent_before(msg: str | None, seq: int) -> bool:
    """Message id ``"<process>#<n>"`` names a send before its sender's event ``seq``."""
    try:
        return int(msg.rpartition("#")[2]) < seq
    except (AttributeError, ValueError):
        return True


def _speedups():
    """The C hot paths (``tracer/_fast.c``): ``LogicalProcess.send`` and ``recv`` become
    its methods (the Python ones above stay the reference, and the C code calls them
    for anything but the common case). None when it is not built, when
    ``CUTSCOPE_SPEEDUPS=0``, or on a free-threaded build of CPython (``t`` in
    ``sys.abiflags``): the C paths rely on the GIL (a section that runs no Python code
    is atomic), so such a build runs the pure-Python paths. The integrations' C paths
    (``integrations/_fastq.c``, ``integrations/sockets/_fastsock.c``) are loaded only
    with this one."""
    if os.environ.get("CUTSCOPE_SPEEDUPS", "1") == "0":
        return None
    if "t" in getattr(sys, "abiflags", ""):
        return None
    try:
        from cutscope.tracer import _fast
    except ImportError:
        return None
    LogicalProcess.send, LogicalProcess.recv = _fast.setup(
        LogicalProcess, OutEndpoint, SEND, RECV, LogicalProcess.send, LogicalProcess.recv)
    return _fast


FAST = _speedups()

# The main logical process of this OS process while a tracer runs (set by Tracer):
# a one-item list, which the C extension reads without a call. A hot path reads
# ``current_var.get() or default_process[0]`` inline; anything else calls current().
default_process: list["LogicalProcess | None"] = [None]


def current() -> LogicalProcess | None:
    """The logical process of the calling thread or task (None if not traced)."""
    return current_var.get() or default_process[0]
