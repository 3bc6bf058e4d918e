"""``multiprocessing.Queue`` and ``JoinableQueue``.

``put`` sends the item in a small picklable envelope (channel, message id,
Lamport stamp, item), recorded with ``lp.send`` under the queue's
``_notempty`` lock, after the pending markers of the producer's endpoint; the
feeder thread pickles them in that order. ``get`` unwraps it. Markers are
envelopes too, appended to the feeder's buffer by the endpoint's ``flush``;
they take no slot of the bounded semaphore, so ``qsize``, ``full`` and
``maxsize`` blocking never count them, and ``get`` swallows them and goes on
waiting within the caller's timeout. An envelope unpickled in a process that
does not trace turns back into the bare item.
"""

from __future__ import annotations

import os
from time import monotonic as _time

from cutscope.tracer.process import OutEndpoint

from .connstate import SKIP, STATE_KEY
from .patching import current_lp, hooks, originals

QUEUE_KEY = "_cutscope_mpq"  # a queue's QueueState (its __dict__)


def _open_envelope(cid, msg, stamp, item):
    """Unpickling an envelope: itself where cutscope traces, else the bare item."""
    if hooks.on:
        return Envelope(cid, msg, stamp, item)
    return item


def _open_marker(cid, sid, initiator):
    return MarkerEnvelope(cid, sid, initiator)


class Envelope:
    """An item put on a traced queue, with its channel, message id and Lamport stamp."""

    __slots__ = ("cid", "msg", "stamp", "item")

    def __init__(self, cid, msg, stamp, item):
        self.cid = cid
        self.msg = msg
        self.stamp = stamp
        self.item = item

    def __reduce__(self):
        return _open_envelope, (self.cid, self.msg, self.stamp, self.item)


class MarkerEnvelope:
    """A snapshot's marker on a queue's channel."""

    __slots__ = ("cid", "sid", "initiator")

    def __init__(self, cid, sid, initiator):
        self.cid = cid
        self.sid = sid
        self.initiator = initiator

    def __reduce__(self):
        return _open_marker, (self.cid, self.sid, self.initiator)


class QueueState:
    """Per multiprocessing.Queue and process: producer endpoints, channels seen."""

    __slots__ = ("out", "seen", "endpoint", "pid")

    def __init__(self, q):
        self.out: dict = {}
        self.seen: set = set()
        self.pid = os.getpid()
        try:
            name = q._rlock._semlock.name
        except Exception:
            name = None
        self.endpoint = f"mp.queue:{name or hex(id(q))}"


def _queue_state(q) -> QueueState:
    state = q.__dict__.get(QUEUE_KEY)
    if state is None or state.pid != os.getpid():
        state = QueueState(q)
        q.__dict__[QUEUE_KEY] = state
        for c in (q._reader, q._writer):  # the queue's own pipe: its items are traced here
            c.__dict__[STATE_KEY] = SKIP
    return state


def _queue_flush(q):
    import weakref

    ref = weakref.ref(q)

    def flush(endpoint: OutEndpoint) -> None:
        qq = ref()
        if qq is None or qq._closed:
            endpoint.process.remove_out(endpoint)
            return
        with qq._notempty:
            ms = endpoint.take_markers()
            if not ms:
                return
            if qq._thread is None:
                qq._start_thread()
            for m in ms:
                qq._buffer.append(MarkerEnvelope(endpoint.channel, m.snapshot, m.initiator))
            qq._notempty.notify()
    return flush


def _queue_endpoint(q, lp) -> OutEndpoint:
    state = _queue_state(q)
    endpoint = state.out.get(lp)
    if endpoint is None:
        t = lp.tracer
        cid = t.new_channel_id()
        endpoint = OutEndpoint(lp, cid, flush=_queue_flush(q), fifo=True)
        endpoint.count = 0  # a pipe: its receiver cannot see a marker at its head (close_idle)
        state.out[lp] = endpoint
        t.channel(cid, lp.name, None, "mp.queue", state.endpoint, True, True)
        lp.add_out(endpoint)
    return endpoint


def _wrap_item(q, lp, endpoint, obj):
    """Under ``q._notempty``: record the send, queue pending markers; the envelope."""
    t = lp.tracer
    # Counted before the send's seq: a snapshot's count never misses a message before it.
    endpoint.count += 1
    seq, lam, markers = lp.send(endpoint, len(obj) if type(obj) is bytes else 0,
                                obj if t.capture else None)
    if markers:
        for m in markers:
            q._buffer.append(MarkerEnvelope(endpoint.channel, m.snapshot, m.initiator))
    return Envelope(endpoint.channel, f"{lp.name}#{seq}", lam, obj)


def put(self, obj, block=True, timeout=None):
    lp = current_lp()
    if lp is None:
        return originals["Queue.put"](self, obj, block, timeout)
    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    endpoint = _queue_endpoint(self, lp)
    if not self._sem.acquire(block, timeout):
        from queue import Full

        raise Full
    with self._notempty:
        if self._thread is None:
            self._start_thread()
        try:
            envelope = _wrap_item(self, lp, endpoint, obj)
        except Exception as exc:
            lp.tracer.fault(exc, "multiprocessing.Queue.put")
            envelope = obj
        self._buffer.append(envelope)
        self._notempty.notify()


def joinable_put(self, obj, block=True, timeout=None):
    lp = current_lp()
    if lp is None:
        return originals["JoinableQueue.put"](self, obj, block, timeout)
    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    endpoint = _queue_endpoint(self, lp)
    if not self._sem.acquire(block, timeout):
        from queue import Full

        raise Full
    with self._notempty, self._cond:
        if self._thread is None:
            self._start_thread()
        try:
            envelope = _wrap_item(self, lp, endpoint, obj)
        except Exception as exc:
            lp.tracer.fault(exc, "multiprocessing.JoinableQueue.put")
            envelope = obj
        self._buffer.append(envelope)
        self._unfinished_tasks.release()
        self._notempty.notify()


def get(self, block=True, timeout=None):
    lp = current_lp()
    if lp is None:
        return originals["Queue.get"](self, block, timeout)
    from queue import Empty

    from multiprocessing.reduction import ForkingPickler

    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    if QUEUE_KEY not in self.__dict__:
        _queue_state(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    if block and timeout is not None:
        deadline = _time() + timeout
    while True:
        if block and timeout is None:
            self._rlock.acquire()
        else:
            wait = max(0.0, deadline - _time()) if block else None
            if not self._rlock.acquire(block, wait):
                raise Empty
        try:
            if not (block and timeout is None):
                if block:
                    if not self._poll(max(0.0, deadline - _time())):
                        raise Empty
                elif not self._poll():
                    raise Empty
            res = self._recv_bytes()
            try:
                obj = ForkingPickler.loads(res)
            except BaseException:
                self._sem.release()
                raise
            if type(obj) is MarkerEnvelope:
                mark = obj
            else:
                mark = None
                self._sem.release()
                if type(obj) is Envelope:
                    obj = _received(self, lp, obj)
        finally:
            self._rlock.release()
        if mark is None:
            return obj
        lp.tracer.guard(lp.marker, mark.cid, mark.sid, mark.initiator)


def empty(self):
    """As the original (``not self._poll()``), except that a pipe holding only
    markers is empty: every item put and not yet taken holds a slot of the
    queue's semaphore (``qsize()``), and markers hold none."""
    if originals["Queue.empty"](self):
        return True
    try:
        return self.qsize() == 0
    except NotImplementedError:  # no sem_getvalue (macOS): as the original
        return False


def _received(q, lp, envelope: Envelope):
    item = envelope.item
    try:
        cid = envelope.cid
        state = _queue_state(q)
        if (cid, lp) not in state.seen:
            state.seen.add((cid, lp))
            lp.add_in(cid, True)
            lp.tracer.channel(cid, None, lp.name, "mp.queue", state.endpoint, True, True)
        t = lp.tracer
        lp.recv(cid, envelope.msg, envelope.stamp, len(item) if type(item) is bytes else 0,
                item if t.capture else None, item)
        lp.count_in(cid)  # after the receive: counted once it is in the channel's state
    except Exception as exc:
        lp.tracer.fault(exc, "multiprocessing.Queue.get")
    return item


def feed(buffer, notempty, send_bytes, writelock, reader_close, writer_close, ignore_epipe,
         onerror, queue_sem):
    """The feeder thread, with the application's error hook given the bare item."""
    def on_error(e, obj):
        return onerror(e, obj.item if type(obj) is Envelope else obj)

    return originals["Queue._feed"](buffer, notempty, send_bytes, writelock, reader_close,
                                    writer_close, ignore_epipe, on_error, queue_sem)


def init(self, *a, **kw):
    originals["Queue.__init__"](self, *a, **kw)
    for c in (self._reader, self._writer):  # the queue's own pipe: its items are traced above
        c.__dict__[STATE_KEY] = SKIP
