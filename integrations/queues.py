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
see exactly the items the application put, and nothing else. An item
without metadata (put before ``start()``, or appended to ``q.queue`` directly)
is delivered untouched and unrecorded.

``put`` and ``get`` wrap ``queue.Queue``'s own methods, so blocking, timeouts,
``Full``/``Empty``, ``task_done``/``join`` and, on 3.13, ``shutdown()`` follow the
running interpreter. The recording sits in the hooks that those methods call
under ``q.mutex`` (``_put``, ``_get``, ``_qsize``: the override points that the
stdlib documents for subclasses), told by the wrapper through a thread-local
context which queue and logical process they work for. ``_put`` records the send
and queues the endpoint's pending markers *before* the item, under the queue's
mutex (lock order: queue mutex, then the logical process's lock), so markers keep
FIFO order with the items. An idle endpoint's markers are appended by its
``flush`` under the same mutex, with a ``notify_all`` of the waiting consumers,
without touching ``unfinished_tasks`` or blocking on ``maxsize``.

With the optional C extension (``integrations/_fastq.c``, built with the core's
``tracer/_fast.c``; ``CUTSCOPE_SPEEDUPS=0`` turns both off), ``queue.Queue.put``
and ``get`` are its method descriptors: the hot paths of the two functions below
in C, for a FIFO queue, a producer whose endpoint is open and a consumer that
knows the item's channel, no snapshot asked of the caller and no marker in the
way, an item that goes in or comes out at once. The same state is read and
written, in the same order, under the same mutex, with the same calls
(``lp.send``/``lp.recv``, ``state.sent``, ``tracer.fault``, ``notify``). Any other
case calls the Python function, before anything has been done: it stays the
reference. For the common case the C path does what the stdlib's ``put``/``get``
do there (append or pop the item, count ``unfinished_tasks``, notify the
condition); on 3.13 a shut-down queue (``is_shutdown``, read under the mutex)
always takes the Python path, where the stdlib's ``put`` raises ``ShutDown``,
and a ``get`` that finds an item returns it, as the stdlib's does after
``shutdown()``.

``get`` is a safe point at entry. It consumes markers invisibly: inside a traced
``get``, the ``_qsize`` hook finds markers at the head of the side deque (every
item put before them has been taken), takes them and raises ``_Marks``, which
leaves the stdlib's ``get`` and its mutex; the markers go to the snapshot
protocol, and the stdlib's ``get`` is called again within the caller's timeout.
A queue with several consumers hands each marker that reaches the head to every
consumer seen so far, so each can close its channel (and record its state first,
at its own next ``get``).

LIFO, priority and other subclasses that change ``_put``/``_get``/``_qsize``/
``_init`` are not FIFO: their own ``_put``/``_get`` are wrapped where they are
defined (at the first traced use of such a queue), their events are recorded
(the metadata is found by the identity of the item ``_get`` returns), they carry
no markers, and their channels are registered with ``fifo=False`` so that a
snapshot names them as channels it cannot cover.
"""

from __future__ import annotations

import queue as _queue
import threading
import weakref
from collections import deque
from time import monotonic as _time

from cutscope.tracer import process as _process
from cutscope.tracer.process import LogicalProcess, OutEndpoint, current_var, default_process

from ._base import Instrumentor, register

__all__ = ["QueueInstrumentor", "QueueState"]

_ATTR = "_cutscope_q"  # the per-queue state, an attribute of the queue (its __dict__)

_Q = _queue.Queue
_ORIG = {"put": _Q.put, "get": _Q.get}
_FIFO_HOOKS = {n: _Q.__dict__[n] for n in ("_init", "_qsize", "_put", "_get")}
_Empty = _queue.Empty
_Full = _queue.Full


class QueueMarker:
    """A marker waiting in a queue's side deque."""

    __slots__ = ("cid", "sid", "initiator")

    def __init__(self, cid: str, sid: int, initiator: str):
        self.cid = cid
        self.sid = sid
        self.initiator = initiator

    def __repr__(self) -> str:
        return f"QueueMarker({self.cid}, {self.sid})"


class QueueState:
    """What cutscope keeps about one queue (both ends, this interpreter).

    ``side``: for FIFO queues, ``(item, channel, msg, stamp)`` tuples in the
    order of the items in the queue's container, and ``QueueMarker`` markers between
    them. ``bymap``: for the other queues,
    ``id(item) -> [entries]``. ``out``: producer LP -> its endpoint.
    ``seen``: channel -> the consumer LPs that registered it. ``consumers``:
    consumer LPs of a FIFO queue; ``pend``: consumer LP -> markers that reached
    the head while another consumer was taking them.
    """

    __slots__ = ("ref", "fifo", "lifo", "side", "bymap", "out", "seen", "consumers",
                 "pend", "endpoint", "last", "last_consumer", "last_channel", "__weakref__")

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
        self.last_consumer = self.last_channel = None  # written and read under the queue's mutex

    # -- producer side -----------------------------------------------------------

    def open_out(self, lp, flush) -> OutEndpoint:
        """The endpoint of producer ``lp`` (call it outside the queue's lock)."""
        t = lp.tracer
        cid = t.new_channel_id()
        endpoint = OutEndpoint(lp, cid, flush=flush, fifo=self.fifo)
        have = self.out.setdefault(lp, endpoint)
        if have is not endpoint:
            return have
        t.channel(cid, lp.name, None, "queue", self.endpoint, True, self.fifo)
        if self.fifo:
            # (may flush at once, when a snapshot is running: takes the queue lock)
            lp.add_out(endpoint)
        return endpoint

    def sent(self, item, endpoint: OutEndpoint, msg: str, stamp: int, markers) -> None:
        """Under the queue's lock, right after the item went into the container."""
        if self.fifo:
            side = self.side
            if markers:
                cid = endpoint.channel
                for m in markers:
                    side.append(QueueMarker(cid, m.snapshot, m.initiator))
            side.append((item, endpoint.channel, msg, stamp))
        else:
            self.bymap.setdefault(id(item), []).append((item, endpoint.channel, msg, stamp))

    def add_marks(self, endpoint: OutEndpoint) -> bool:
        """Under the queue's lock: move ``endpoint``'s pending markers into the side deque."""
        ms = endpoint.take_markers()
        if not ms:
            return False
        cid = endpoint.channel
        self.side.extend(QueueMarker(cid, m.snapshot, m.initiator) for m in ms)
        return True

    def idle_close(self) -> list:
        """Under the queue's lock: markers at the head whose consumers all recorded already.

        Once every known consumer has recorded its state for a snapshot, a
        marker at the head of the queue (no item before it) may be consumed by
        cutscope itself (an idle channel). Returns (consumer, QueueMarker) pairs
        to hand over outside the lock.
        """
        side = self.side
        if not self.consumers or not side or type(side[0]) is not QueueMarker:
            return []
        out = []
        while side and type(side[0]) is QueueMarker:
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
        if side and type(side[0]) is QueueMarker:
            head = []
            while side and type(side[0]) is QueueMarker:
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


def is_fifo(cls, base, hooks: dict, ours: dict | None = None) -> bool:
    """Are ``cls``'s container hooks ``base``'s own (``hooks``, or ``ours`` wrapping them)?"""
    for n, f in hooks.items():
        g = getattr(cls, n, None)
        if g is not f and (ours is None or g is not ours.get(n)):
            return False
    return True


def queue_state(q) -> QueueState:
    state = q.__dict__.get(_ATTR)
    if state is None:
        cls = type(q)
        fifo = is_fifo(cls, _Q, _FIFO_HOOKS, _HOOKS)
        lifo = issubclass(cls, _queue.LifoQueue)
        state = q.__dict__.setdefault(_ATTR, QueueState(q, fifo, lifo))
    if not state.fifo and type(q) not in _HOOKED_CLASSES:
        _hook_class(type(q))
    return state


def deliver(lp, marks) -> None:
    """Hand markers to the snapshot protocol (outside every queue lock)."""
    for m in marks:
        lp.marker(m.cid, m.sid, m.initiator)


def _flush_for(state: QueueState):
    def flush(endpoint: OutEndpoint) -> None:
        q = state.ref()
        if q is None:
            endpoint.process.remove_out(endpoint)
            return
        with q.mutex:
            if state.add_marks(endpoint):
                q.not_empty.notify_all()
            closing = state.idle_close()
        for c, m in closing:
            c.marker(m.cid, m.sid, m.initiator)
    return flush


# -- the wrappers: the stdlib's own put / get, with the recording in its hooks ------------
#
# ``put`` and ``get`` call ``queue.Queue``'s own methods, so blocking, timeouts, ``Full``,
# ``Empty``, ``task_done``/``join`` accounting and, on 3.13, ``shutdown()`` (``ShutDown``)
# are the running interpreter's. The recording happens in the hooks that the stdlib
# documents as a subclass's override points, which its put/get call under ``q.mutex``:
# ``_put`` (after the item went in: the send, the markers before the item in the side
# deque), ``_get`` (the receive of the item taken) and ``_qsize`` (inside a traced
# ``get``, markers at the head are taken and ``_Marks`` is raised: ``get`` delivers them
# outside the mutex and calls the stdlib's ``get`` again with the time left). A wrapper
# tells its hooks which queue and logical process they work for through a thread-local
# context; a hook called outside it (``shutdown(immediate=True)`` emptying the queue, an
# untraced thread) only calls the hook it wraps.

_tls = threading.local()


class _Marks(Exception):
    """Raised by the ``_qsize`` hook inside a traced ``get``: markers to deliver first."""

    def __init__(self, marks):
        self.marks = marks


def put(self, item, block=True, timeout=None):
    lp = current_var.get() or default_process[0]
    if lp is None:
        return _ORIG["put"](self, item, block, timeout)
    try:
        state = self._cutscope_q
    except AttributeError:
        state = queue_state(self)
    if not state.fifo and type(self) not in _HOOKED_CLASSES:
        _hook_class(type(self))
    last = state.last  # (producer, endpoint): one attribute, written whole (threads race here)
    if last[0] is lp:
        endpoint = last[1]
    else:
        endpoint = state.out.get(lp)
        if endpoint is None:
            endpoint = state.open_out(lp, _flush_for(state))
        state.last = (lp, endpoint)
    if lp.pending and not lp.incoming:
        return _put_then_safepoint(self, lp, item, block, timeout)
    tls = _tls
    prev = getattr(tls, "put", None)
    c = tls.put = [self, state, lp, endpoint, None]
    try:
        _ORIG["put"](self, item, block, timeout)
    finally:
        tls.put = prev
    if c[4] is not None:  # a fault that the tracer raises (strict mode), after the put
        raise c[4]


def _put_then_safepoint(q, lp, item, block, timeout):
    """A put by a process that never receives, with a snapshot asked of it.

    Such a process records its state at the exit of its next send; the core
    would do it inside ``lp.send``, under the queue's mutex, where a state
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
    lp = current_var.get() or default_process[0]
    if lp is None:
        return _ORIG["get"](self, block, timeout)
    try:
        state = self._cutscope_q
    except AttributeError:
        state = queue_state(self)
    if not state.fifo and type(self) not in _HOOKED_CLASSES:
        _hook_class(type(self))
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    orig = _ORIG["get"]
    endtime = None
    tls = _tls
    while True:
        prev = getattr(tls, "get", None)
        c = tls.get = [self, state, lp, None]
        try:
            item = orig(self, block, timeout)
            if c[3] is not None:  # a fault that the tracer raises (strict mode), after the get
                raise c[3]
            return item
        except _Marks as m:
            marks = m.marks
        finally:
            tls.get = prev
        lp.tracer.guard(deliver, lp, marks)
        # Go on within the caller's timeout (validated by the first call).
        if block and timeout is not None:
            if endtime is None:
                endtime = _time() + timeout
            timeout = max(0.0, endtime - _time())


def _hook_put(orig):
    def _put(self, item):
        c = getattr(_tls, "put", None)
        if c is None or c[0] is not self:
            return orig(self, item)
        _tls.put = None  # recorded once, by the outermost hook (a subclass's super()._put)
        orig(self, item)
        state, lp, endpoint = c[1], c[2], c[3]
        try:
            seq, lam, markers = lp.send(endpoint, len(item) if type(item) is bytes else 0,
                                        item if lp.tracer.capture else None)
            state.sent(item, endpoint, f"{lp.name}#{seq}", lam, markers)
        except Exception as exc:
            try:
                lp.tracer.fault(exc, "queue.put")
            except Exception as raised:
                c[4] = raised
    _put.__wrapped__ = orig
    return _put


def _hook_get(orig):
    def _get(self):
        c = getattr(_tls, "get", None)
        if c is None or c[0] is not self:
            return orig(self)
        _tls.get = None
        item = orig(self)
        state, lp = c[1], c[2]
        try:
            side = state.side
            e = side[0] if side else None
            if type(e) is tuple and e[0] is item:  # a FIFO queue's head entry
                side.popleft()
                cid = e[1]
                if state.last_consumer is not lp or state.last_channel is not cid:
                    s = state.seen.get(cid)
                    if s is None or lp not in s:
                        state.first(lp, cid)
                    state.last_consumer, state.last_channel = lp, cid
                lp.recv(cid, e[2], e[3], len(item) if type(item) is bytes else 0,
                        item if lp.tracer.capture else None, item)
            elif state.fifo or state.bymap:
                state.took(lp, item, _QSIZE(self) if state.fifo else 0)
        except Exception as exc:
            try:
                lp.tracer.fault(exc, "queue.get")
            except Exception as raised:
                c[3] = raised
        return item
    _get.__wrapped__ = orig
    return _get


def _hook_qsize(orig):
    def _qsize(self):
        c = getattr(_tls, "get", None)
        if c is not None and c[0] is self:
            state = c[1]
            side = state.side
            if state.pend or (side and type(side[0]) is QueueMarker):
                marks = state.take_marks(c[2])
                if state.pend:
                    self.not_empty.notify_all()  # the other consumers have markers to take too
                if marks:
                    raise _Marks(marks)
        return orig(self)
    _qsize.__wrapped__ = orig
    return _qsize


_QSIZE = _FIFO_HOOKS["_qsize"]
# queue.Queue's own hooks while tracing (a FIFO queue is one whose hooks are these).
_HOOKS = {"_put": _hook_put(_FIFO_HOOKS["_put"]), "_get": _hook_get(_FIFO_HOOKS["_get"]),
          "_qsize": _hook_qsize(_FIFO_HOOKS["_qsize"])}
_HOOKED: list = []  # (class, name, original, ours): the hooks installed, to remove
_HOOKED_CLASSES: set = set()  # queue classes whose own _put/_get are wrapped


def _hook_class(cls) -> None:
    """A queue class with its own ``_put``/``_get`` (LIFO, priority, the application's):
    wrap them where they are defined, so that its items are recorded too."""
    _HOOKED_CLASSES.add(cls)
    for name, make in (("_put", _hook_put), ("_get", _hook_get)):
        for k in cls.__mro__:
            f = k.__dict__.get(name)
            if f is None:
                continue
            if k is not _Q and not any(h[0] is k and h[1] == name for h in _HOOKED) and \
                    callable(f) and not isinstance(f, (staticmethod, classmethod)):
                ours = make(f)
                setattr(k, name, ours)
                _HOOKED.append((k, name, f, ours))
            break


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

    put, get = FASTQ.setup(_Q, QueueState, LogicalProcess, OutEndpoint, deque, _thread.LockType,
                           current_var, default_process, _HOOKS["_qsize"], put, get)


@register
class QueueInstrumentor(Instrumentor):
    """Wraps ``queue.Queue.put`` / ``get`` (inherited by every subclass) and the hooks
    ``_put`` / ``_get`` / ``_qsize`` that they call."""

    name = "queues"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # queue.Queue's hooks _init/_qsize/_put/_get (wrapped: they see each item), and
    # threading.Condition's _waiters (the C path notifies only when someone waits).
    private_names = ("queue.Queue._init", "queue.Queue._qsize", "queue.Queue._put",
                     "queue.Queue._get", "threading.Condition()._waiters")
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
        for attr, fn in _HOOKS.items():
            if _Q.__dict__[attr] is _FIFO_HOOKS[attr]:
                setattr(_Q, attr, fn)
                _HOOKED.append((_Q, attr, _FIFO_HOOKS[attr], fn))
        for attr, fn in self.TARGETS:
            setattr(_Q, attr, fn)

    def _uninstrument(self) -> None:
        for attr, fn in self.TARGETS:
            if _Q.__dict__.get(attr) is fn:
                setattr(_Q, attr, _ORIG[attr])
        _HOOKED_CLASSES.clear()
        while _HOOKED:
            cls, attr, orig, ours = _HOOKED.pop()
            if cls.__dict__.get(attr) is ours:
                setattr(cls, attr, orig)

