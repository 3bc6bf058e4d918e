"""``queue.Queue`` (and its subclasses): items as messages, markers in band.

What a traced queue looks like
------------------------------
A queue carries one channel per (producer logical process, queue): the first
``put`` of a producer opens an ``OutEndpoint`` and records the channel
(``transport="queue"``, ``endpoint="queue:<Class>@<id>"``); the first consumer
that receives from it fills in ``dst``.

The application's items are never wrapped. The per-item metadata (channel,
message id, Lamport stamp) lives in a *side deque* kept in step with the queue's
own container (``q.queue``), and markers live only there. So ``q.queue``,
``qsize``, ``empty``, ``full``, ``maxsize`` blocking and ``task_done``/``join``
see exactly the items the application put, and nothing else (SPEC 4.5). An item
without metadata (put before ``start()``, or appended to ``q.queue`` directly)
is delivered untouched and unrecorded.

``put`` and ``get`` are re-implemented as plain functions on ``queue.Queue``
(the same code as CPython's, plus the bookkeeping under ``q.mutex``). ``put``
records the send and queues the endpoint's pending markers *before* the item,
under the queue's mutex (lock order: queue mutex, then the logical process's
lock), so markers keep FIFO order with the items. An idle endpoint's markers are
appended by its ``flush`` under the same mutex, with a ``notify_all`` of the
waiting consumers, without touching ``unfinished_tasks`` or blocking on
``maxsize``.

With the optional C extension (``integrations/_fastq.c``, built with the core's
``tracer/_fast.c``; ``CUTSCOPE_SPEEDUPS=0`` turns both off), ``queue.Queue.put``
and ``get`` are its method descriptors: the hot paths of the two functions below
in C, for a FIFO queue, a producer whose endpoint is open and a consumer that
knows the item's channel, no snapshot asked of the caller and no marker in the
way, an item that goes in or comes out at once. The same state is read and
written, in the same order, under the same mutex, with the same calls
(``lp.send``/``lp.recv``, ``st.sent``, ``tracer.fault``, ``notify``). Any other
case calls the Python function, before anything has been done: it stays the
reference.

``get`` is a safe point at entry. It consumes markers invisibly: markers at the
head of the side deque (every item put before them has been taken) are handed
to the snapshot protocol outside the mutex, then ``get`` goes on waiting for an
item within the caller's timeout. A queue with several consumers hands each
marker that reaches the head to every consumer seen so far, so each can close
its channel (and record its state first, at its own next ``get``).

LIFO, priority and other subclasses that change ``_put``/``_get``/``_qsize``/
``_init`` are not FIFO: their events are recorded (the metadata is found by
the identity of the item ``_get`` returns), they carry no markers, and their
channels are registered with ``fifo=False`` so that a snapshot names them as
channels it cannot cover.
"""

from __future__ import annotations

import queue as _queue
import weakref
from collections import deque
from time import monotonic as _time

from cutscope.tracer import process as _process
from cutscope.tracer.process import LogicalProcess, OutEndpoint, _current, _default

from ._base import Instrumentor, register

__all__ = ["QueueInstrumentor", "QState"]

_ATTR = "_cutscope_q"  # the per-queue state, an attribute of the queue (its __dict__)

_Q = _queue.Queue
_ORIG = {"put": _Q.put, "get": _Q.get}
_FIFO_HOOKS = {n: _Q.__dict__[n] for n in ("_init", "_qsize", "_put", "_get")}
_Empty = _queue.Empty
_Full = _queue.Full


class Mk:
    """A marker waiting in a queue's side deque."""

    __slots__ = ("cid", "sid", "initiator")

    def __init__(self, cid: str, sid: int, initiator: str):
        self.cid = cid
        self.sid = sid
        self.initiator = initiator

    def __repr__(self) -> str:
        return f"Mk({self.cid}, {self.sid})"


class QState:
    """What cutscope keeps about one queue (both ends, this interpreter).

    ``side``: for FIFO queues, ``(item, channel, msg, stamp)`` tuples in the
    order of the items in the queue's container, and ``Mk`` markers between
    them. ``bymap``: for the other queues,
    ``id(item) -> [entries]``. ``out``: producer LP -> its endpoint.
    ``seen``: channel -> the consumer LPs that registered it. ``consumers``:
    consumer LPs of a FIFO queue; ``pend``: consumer LP -> markers that reached
    the head while another consumer was taking them.
    """

    __slots__ = ("ref", "fifo", "lifo", "side", "bymap", "out", "seen", "consumers",
                 "pend", "endpoint", "last", "rlp", "rcid", "__weakref__")

    def __init__(self, q, fifo: bool, lifo: bool = False):
        self.ref = weakref.ref(q)
        self.fifo = fifo
        self.lifo = lifo
        self.side: deque = deque()
        self.bymap: dict[int, list] = {}
        self.out: dict = {}
        self.seen: dict = {}
        self.consumers: set = set()
        self.pend: dict = {}
        self.endpoint = f"queue:{type(q).__name__}@{id(q):x}"
        # The last producer and its endpoint; the last consumer and a channel it knows
        # (the hot path compares identities instead of looking them up).
        self.last = (None, None)
        self.rlp = self.rcid = None  # written and read under the queue's mutex

    # -- producer side -----------------------------------------------------------

    def open_out(self, lp, flush) -> OutEndpoint:
        """The endpoint of producer ``lp`` (call it outside the queue's lock)."""
        t = lp.tracer
        cid = t.new_channel_id()
        ep = OutEndpoint(lp, cid, flush=flush, fifo=self.fifo)
        have = self.out.setdefault(lp, ep)
        if have is not ep:
            return have
        t.channel(cid, lp.name, None, "queue", self.endpoint, True, self.fifo)
        if self.fifo:
            lp.add_out(ep)  # may flush at once (a snapshot is running): takes the queue lock
        return ep

    def sent(self, item, ep: OutEndpoint, msg: str, stamp: int, markers) -> None:
        """Under the queue's lock, right after the item went into the container."""
        if self.fifo:
            side = self.side
            if markers:
                cid = ep.channel
                for m in markers:
                    side.append(Mk(cid, m.snapshot, m.initiator))
            side.append((item, ep.channel, msg, stamp))
        else:
            self.bymap.setdefault(id(item), []).append((item, ep.channel, msg, stamp))

    def add_marks(self, ep: OutEndpoint) -> bool:
        """Under the queue's lock: move ``ep``'s pending markers into the side deque."""
        ms = ep.take_markers()
        if not ms:
            return False
        cid = ep.channel
        self.side.extend(Mk(cid, m.snapshot, m.initiator) for m in ms)
        return True

    def idle_close(self) -> list:
        """Under the queue's lock: markers at the head whose consumers all recorded already.

        Once every known consumer has recorded its state for a snapshot, a
        marker at the head of the queue (no item before it) may be consumed by
        cutscope itself (SPEC 5, idle channels). Returns (consumer, Mk) pairs
        to hand over outside the lock.
        """
        side = self.side
        if not self.consumers or not side or type(side[0]) is not Mk:
            return []
        out = []
        while side and type(side[0]) is Mk:
            m = side[0]
            if not all(m.sid in c.snaps for c in self.consumers):
                break
            side.popleft()
            out.extend((c, m) for c in self.consumers)
        return out

    # -- consumer side -----------------------------------------------------------

    def take_marks(self, lp) -> list | None:
        """Under the queue's lock: the markers ``lp`` must process before its next item."""
        out = None
        if self.pend:
            out = self.pend.pop(lp, None)
        side = self.side
        if side and type(side[0]) is Mk:
            head = []
            while side and type(side[0]) is Mk:
                head.append(side.popleft())
            others = [c for c in self.consumers if c is not lp]
            for c in others:
                self.pend.setdefault(c, []).extend(head)
            out = head if out is None else out + head
        return out

    def took(self, lp, x, remaining: int):
        """Under the queue's lock: ``x`` was taken; find its metadata and record the receive.

        ``remaining``: items left in the container (to skip stale entries after
        the application emptied ``q.queue`` behind our back).
        """
        e = None
        if self.fifo:
            side = self.side
            if side:
                e = side[0]
                if type(e) is tuple and e[0] is x:
                    side.popleft()
                else:
                    e = self._resync(x, remaining)
        else:
            lst = self.bymap.get(id(x))
            if lst:
                idx = len(lst) - 1 if self.lifo else 0
                for i in (range(idx, -1, -1) if self.lifo else range(len(lst))):
                    if lst[i][0] is x:
                        e = lst.pop(i)
                        break
                if not lst:
                    del self.bymap[id(x)]
        if e is None:
            return
        cid = e[1]
        s = self.seen.get(cid)
        if s is None or lp not in s:
            self.first(lp, cid)
        t = lp.tracer
        lp.recv(cid, e[2], e[3], len(x) if type(x) is bytes else 0,
                x if t.capture else None, x)

    def _resync(self, x, remaining: int):
        """``x`` is not the item at the head of the side deque: either it was never
        traced (put before start, appended directly), or the application emptied
        the container behind our back and the head entries are stale."""
        side = self.side
        n = sum(1 for e in side if type(e) is tuple)
        while side and n > remaining + 1:
            e = side.popleft()  # stale: its item left the container without a get
            if type(e) is tuple:
                n -= 1
        if side and type(side[0]) is tuple and side[0][0] is x:
            return side.popleft()
        return None

    def first(self, lp, cid: str) -> None:
        self.seen.setdefault(cid, set()).add(lp)
        lp.add_in(cid, self.fifo)
        lp.tracer.channel(cid, None, lp.name, "queue", self.endpoint, True, self.fifo)
        if self.fifo:
            self.consumers.add(lp)


def is_fifo(cls, base, hooks: dict) -> bool:
    return all(getattr(cls, n, None) is f for n, f in hooks.items())


def state(q) -> QState:
    st = q.__dict__.get(_ATTR)
    if st is None:
        cls = type(q)
        fifo = is_fifo(cls, _Q, _FIFO_HOOKS)
        lifo = issubclass(cls, _queue.LifoQueue)
        st = q.__dict__.setdefault(_ATTR, QState(q, fifo, lifo))
    return st


def deliver(lp, marks) -> None:
    """Hand markers to the snapshot protocol (outside every queue lock)."""
    for m in marks:
        lp.marker(m.cid, m.sid, m.initiator)


def _flush_for(st: QState):
    def flush(ep: OutEndpoint) -> None:
        q = st.ref()
        if q is None:
            ep.process.remove_out(ep)
            return
        with q.mutex:
            if st.add_marks(ep):
                q.not_empty.notify_all()
            closing = st.idle_close()
        for c, m in closing:
            c.marker(m.cid, m.sid, m.initiator)
    return flush


# -- the wrappers: CPython 3.11's Queue.put / Queue.get plus the bookkeeping ----------
#
# The hot path (a FIFO queue, no snapshot running) is written for the instruction
# count (benchmarks/bench_queue.py): the queue's mutex is taken directly (it is the
# lock of ``not_empty``/``not_full``; no ``with`` on a Condition, whose
# ``__enter__``/``__exit__`` are Python calls), a FIFO queue's container is used
# directly (its ``_put``/``_get``/``_qsize`` are CPython's, checked once per queue),
# and a condition is notified only when a thread waits on it (``Condition.notify``
# is a no-op then, after two Python calls). Same lock, same waits, same wake-ups.

def put(self, item, block=True, timeout=None):
    lp = _current.get() or _default[0]
    if lp is None:
        return _ORIG["put"](self, item, block, timeout)
    try:
        st = self._cutscope_q
    except AttributeError:
        st = state(self)
    last = st.last  # (producer, endpoint): one attribute, written whole (threads race here)
    if last[0] is lp:
        ep = last[1]
    else:
        ep = st.out.get(lp)
        if ep is None:
            ep = st.open_out(lp, _flush_for(st))
        st.last = (lp, ep)
    if lp.pending and not lp.incoming:
        return _put_then_safepoint(self, lp, item, block, timeout)
    mutex = self.mutex
    mutex.acquire()
    try:
        if self.maxsize > 0:
            qsize = self._qsize
            if not block:
                if qsize() >= self.maxsize:
                    raise _Full
            elif timeout is None:
                while qsize() >= self.maxsize:
                    self.not_full.wait()
            elif timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            else:
                endtime = _time() + timeout
                while qsize() >= self.maxsize:
                    remaining = endtime - _time()
                    if remaining <= 0.0:
                        raise _Full
                    self.not_full.wait(remaining)
        fifo = st.fifo
        if fifo:
            self.queue.append(item)
        else:
            self._put(item)
        self.unfinished_tasks += 1
        try:
            seq, lam, markers = lp.send(ep, len(item) if type(item) is bytes else 0,
                                        item if lp.tracer.capture else None)
            if fifo and not markers:
                st.side.append((item, ep.channel, f"{lp.name}#{seq}", lam))
            else:
                st.sent(item, ep, f"{lp.name}#{seq}", lam, markers)
        except Exception as exc:
            lp.tracer.fault(exc, "queue.put")
        cond = self.not_empty
        try:
            waiting = cond._waiters
        except AttributeError:  # not CPython's Condition: let notify decide
            waiting = True
        if waiting:
            cond.notify()
    finally:
        mutex.release()


def _put_then_safepoint(q, lp, item, block, timeout):
    """A put by a process that never receives, with a snapshot asked of it.

    Such a process records its state at the exit of its next send (SPEC 5); the
    core would do it inside ``lp.send``, under the queue's mutex, where a state
    provider that reads the queue (``q.qsize()``) would deadlock. So the request
    is held back during the put and served right after it, outside the mutex.
    """
    with lp.lock:
        held, lp.pending = lp.pending, []
    try:
        return put(q, item, block, timeout)
    finally:
        with lp.lock:
            lp.pending = held + [p for p in lp.pending if p not in held]
        if lp.pending:
            lp.tracer.guard(lp.safepoint)


def get(self, block=True, timeout=None):
    lp = _current.get() or _default[0]
    if lp is None:
        return _ORIG["get"](self, block, timeout)
    try:
        st = self._cutscope_q
    except AttributeError:
        st = state(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    if not block or timeout is None:
        endtime = None
    elif timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    else:
        endtime = _time() + timeout
    side = st.side
    fifo = st.fifo
    mutex = self.mutex
    while True:
        mutex.acquire()
        try:
            if fifo and side and not st.pend:
                # The hot path: the head of the side deque is the head item's entry.
                e = side[0]
                container = self.queue
                if type(e) is tuple and container and e[0] is container[0]:
                    item = container.popleft()
                    side.popleft()
                    cond = self.not_full
                    try:
                        waiting = cond._waiters
                    except AttributeError:
                        waiting = True
                    if waiting:
                        cond.notify()
                    try:
                        cid = e[1]
                        if st.rlp is not lp or st.rcid is not cid:
                            s = st.seen.get(cid)
                            if s is None or lp not in s:
                                st.first(lp, cid)
                            st.rlp, st.rcid = lp, cid
                        lp.recv(cid, e[2], e[3], len(item) if type(item) is bytes else 0,
                                item if lp.tracer.capture else None, item)
                    except Exception as exc:
                        lp.tracer.fault(exc, "queue.get")
                    return item
            if st.pend or (side and type(side[0]) is Mk):
                marks = st.take_marks(lp)
                if st.pend:
                    self.not_empty.notify_all()  # the other consumers have markers to take too
            else:
                marks = None
            if not marks:
                if fifo:
                    container = self.queue
                    item = container.popleft() if container else _NONE
                else:
                    item = self._get() if self._qsize() else _NONE
                if item is not _NONE:
                    cond = self.not_full
                    try:
                        waiting = cond._waiters
                    except AttributeError:
                        waiting = True
                    if waiting:
                        cond.notify()
                    try:
                        if side:
                            e = side[0]
                            if type(e) is tuple and e[0] is item:
                                side.popleft()
                                cid = e[1]
                                if st.rlp is not lp or st.rcid is not cid:
                                    s = st.seen.get(cid)
                                    if s is None or lp not in s:
                                        st.first(lp, cid)
                                    st.rlp, st.rcid = lp, cid
                                lp.recv(cid, e[2], e[3], len(item) if type(item) is bytes else 0,
                                        item if lp.tracer.capture else None, item)
                            else:
                                st.took(lp, item, self._qsize())
                        elif not fifo:
                            st.took(lp, item, self._qsize())
                    except Exception as exc:
                        lp.tracer.fault(exc, "queue.get")
                    return item
                if not block:
                    raise _Empty
                if endtime is None:
                    self.not_empty.wait()
                else:
                    remaining = endtime - _time()
                    if remaining <= 0.0:
                        raise _Empty
                    self.not_empty.wait(remaining)
                continue
        finally:
            mutex.release()
        lp.tracer.guard(deliver, lp, marks)


_NONE = object()  # no item taken (an item may be None)


# With the C extension (integrations/_fastq.c), put and get are its method descriptors:
# the hot paths above (an endpoint already open, no marker, no snapshot asked, an item
# that goes in or comes out at once), the same tests and state, in C; for anything
# else they call the Python functions above (kept as the reference), before doing
# anything. Off with the core's C paths (tracer/_fast.c; CUTSCOPE_SPEEDUPS=0).
FASTQ = None
if _process.FAST is not None:
    try:
        from cutscope.integrations import _fastq as FASTQ
    except ImportError:
        FASTQ = None
if FASTQ is not None:
    import _thread

    put, get = FASTQ.setup(_Q, QState, LogicalProcess, OutEndpoint, deque, _thread.LockType,
                           _current, _default, _FIFO_HOOKS["_qsize"], put, get)


@register
class QueueInstrumentor(Instrumentor):
    """Re-implements ``queue.Queue.put`` / ``get`` (inherited by every subclass)."""

    name = "queues"
    TARGETS = (("put", put), ("get", get))

    def _instrument(self, tracer) -> None:
        for attr, fn in self.TARGETS:
            if _Q.__dict__[attr] is not _ORIG[attr]:
                # Someone else patched the queue: re-implementing put/get would undo
                # their patch. Leave queue.Queue alone (not traced), and say so.
                import logging

                logging.getLogger("cutscope").warning(
                    "cutscope: queue.Queue.%s is patched by someone else: queues not traced", attr)
                return
        for attr, fn in self.TARGETS:
            setattr(_Q, attr, fn)

    def _uninstrument(self) -> None:
        for attr, fn in self.TARGETS:
            if _Q.__dict__.get(attr) is fn:
                setattr(_Q, attr, _ORIG[attr])

