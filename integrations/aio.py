"""``asyncio.Queue`` (and its subclasses): the same design as ``queues.py``.

Items are never wrapped: the metadata of each item and the markers live in the
queue's side deque (``queues.QueueState``), in step with ``_queue``. The wrappers
call the stdlib's own methods, so ``QueueFull``/``QueueEmpty`` and, on 3.13,
``shutdown()``/``QueueShutDown`` are the running interpreter's. ``put_nowait``
(which ``put`` calls) records the send and queues pending markers before the
item right after the stdlib's ``put_nowait`` (nothing else runs on the loop in
between). ``get_nowait`` is a safe point that delivers the markers at the head
before calling the stdlib's. ``get`` calls the stdlib's ``get`` (which calls
``get_nowait``); a getter woken for markers alone sees ``empty()`` say False,
so the stdlib's ``get`` calls ``get_nowait``, which delivers them and raises
``_Marks``, and ``get`` calls the stdlib's ``get`` again to go on waiting,
exactly as if nothing had arrived. An idle endpoint's markers are appended by
its ``flush`` and every waiting getter is woken to take them; a flush asked from
another thread (the recorder thread, another logical process) is handed to the
queue's event loop with ``call_soon_threadsafe``.

asyncio tasks are logical processes through ``cutscope.process(name)`` (a
``contextvars`` variable, so each task keeps its own).
"""

from __future__ import annotations

import contextvars
import threading

from cutscope.tracer.process import OutEndpoint, current_var, default_process

from ._base import ImportHooks, Instrumentor, register
from .queues import QueueState, _ATTR, deliver, is_fifo, QueueMarker

__all__ = ["AsyncioQueueInstrumentor"]

_ORIG: dict = {}
_Q = None  # asyncio.Queue, once imported


def _state(q) -> QueueState:
    state = q.__dict__.get(_ATTR)
    if state is None:
        import asyncio

        cls = type(q)
        fifo = is_fifo(cls, _Q, _HOOKS)
        lifo = issubclass(cls, asyncio.LifoQueue)
        state = q.__dict__.setdefault(_ATTR, QueueState(q, fifo, lifo))
    return state


def _wake_all(q) -> None:
    getters = q._getters  # (private: AsyncioQueueInstrumentor.private_names)
    while getters:
        g = getters.popleft()
        if not g.done():
            g.set_result(None)


def _flush_for(state: QueueState):
    def flush_here(endpoint: OutEndpoint) -> None:
        q = state.ref()
        if q is None:
            endpoint.process.remove_out(endpoint)
            return
        if state.add_marks(endpoint):
            _wake_all(q)
        for c, m in state.idle_close():
            c.marker(m.cid, m.sid, m.initiator)

    def flush(endpoint: OutEndpoint) -> None:
        q = state.ref()
        if q is None:
            endpoint.process.remove_out(endpoint)
            return
        # the queue's loop and its thread (private: AsyncioQueueInstrumentor.private_names)
        loop = getattr(q, "_loop", None)
        if loop is not None and loop.is_running() and getattr(loop, "_thread_id", None) != \
                threading.get_ident():
            loop.call_soon_threadsafe(endpoint.process.tracer.guard, flush_here, endpoint)
        else:
            flush_here(endpoint)
    return flush


def put_nowait(self, item):
    lp = current_var.get() or default_process[0]
    if lp is None:
        return _ORIG["put_nowait"](self, item)
    state = self.__dict__.get(_ATTR) or _state(self)
    endpoint = state.out.get(lp)
    if endpoint is None:
        endpoint = state.open_out(lp, _flush_for(state))
    # The stdlib's put_nowait (QueueFull, and QueueShutDown on 3.13, as without cutscope);
    # nothing else runs on the loop before the recording below.
    _ORIG["put_nowait"](self, item)
    try:
        t = lp.tracer
        seq, lam, markers = lp.send(endpoint, len(item) if type(item) is bytes else 0,
                                    item if t.capture else None)
        state.sent(item, endpoint, f"{lp.name}#{seq}", lam, markers)
    except Exception as exc:
        lp.tracer.fault(exc, "asyncio.Queue.put")


def _marks(state: QueueState, lp):
    side = state.side
    if state.pend or (side and type(side[0]) is QueueMarker):
        marks = state.take_marks(lp)
        if state.pend:
            q = state.ref()
            if q is not None:
                _wake_all(q)  # the other consumers have markers to take too
        return marks
    return None


# Inside a traced get(): (queue, its state, the logical process), for this task only.
_in_get: contextvars.ContextVar = contextvars.ContextVar("cutscope_aio_get", default=None)


class _Marks(Exception):
    """Raised by get_nowait inside a traced get when it found only markers: get waits again."""


def get_nowait(self):
    lp = current_var.get() or default_process[0]
    if lp is None:
        return _ORIG["get_nowait"](self)
    state = self.__dict__.get(_ATTR) or _state(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    marks = _marks(state, lp)
    if marks:
        while marks:
            lp.tracer.guard(deliver, lp, marks)
            marks = _marks(state, lp)
        c = _in_get.get()
        if c is not None and c[0] is self and _ORIG["empty"](self):
            raise _Marks  # only markers: the stdlib's get waits again (see get)
    item = _ORIG["get_nowait"](self)  # QueueEmpty, and QueueShutDown on 3.13
    try:
        state.took(lp, item, self.qsize())
    except Exception as exc:
        lp.tracer.fault(exc, "asyncio.Queue.get")
    return item


def empty(self):
    """The stdlib's ``empty()``; inside a traced ``get`` whose consumer has markers
    waiting it says False, so that the stdlib's ``get`` calls ``get_nowait``, which
    delivers them."""
    r = _ORIG["empty"](self)
    if r:
        c = _in_get.get()
        if c is not None and c[0] is self:
            state, lp = c[1], c[2]
            side = state.side
            if lp in state.pend or (side and type(side[0]) is QueueMarker):
                return False
    return r


async def get(self):
    lp = current_var.get() or default_process[0]
    if lp is None:
        return await _ORIG["get"](self)
    state = self.__dict__.get(_ATTR) or _state(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    token = _in_get.set((self, state, lp))
    try:
        while True:
            try:
                return await _ORIG["get"](self)  # the stdlib's; it calls get_nowait
            except _Marks:
                continue
    finally:
        _in_get.reset(token)


_HOOKS: dict = {}
_TARGETS = (("put_nowait", put_nowait), ("get_nowait", get_nowait), ("get", get),
            ("empty", empty))


def _patch(module=None) -> None:
    """Install the wrappers on ``asyncio.queues.Queue`` (when it is, or gets, imported)."""
    global _Q
    if not _hooks.on:
        return
    # From the module itself: wrapt 1 calls this hook while ``asyncio`` is still
    # importing it, before the package has its ``queues`` attribute.
    from asyncio import queues

    Q = queues.Queue
    if not _ORIG:
        for attr, _fn in _TARGETS:
            _ORIG[attr] = Q.__dict__[attr]
        _HOOKS.update({n: Q.__dict__[n] for n in ("_init", "_put", "_get")})
    _Q = Q
    for attr, fn in _TARGETS:
        if Q.__dict__.get(attr) is _ORIG[attr]:
            setattr(Q, attr, fn)


_hooks = ImportHooks()


@register
class AsyncioQueueInstrumentor(Instrumentor):
    """Wraps ``asyncio.Queue.put_nowait`` / ``get_nowait`` / ``get`` / ``empty``.

    Installed through ``wrapt.when_imported("asyncio.queues")``, so a program
    that imports asyncio after ``cutscope.start()`` is traced too.
    """

    name = "aio"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # asyncio.Queue's hooks _init/_put/_get (is the queue FIFO: a subclass may override
    # them), its waiting getters (woken when markers arrive) and its loop (markers from
    # another thread are handed to it; BaseEventLoop's _thread_id says which thread runs it).
    private_names = ("asyncio.Queue._init", "asyncio.Queue._put", "asyncio.Queue._get",
                     "asyncio.Queue()._getters", "asyncio.Queue()._loop",
                     "asyncio.base_events.BaseEventLoop()._thread_id")

    def _instrument(self, tracer) -> None:
        _hooks.start(tracer, ("asyncio.queues", _patch))

    def _uninstrument(self) -> None:
        _hooks.stop()
        Q = _Q
        if Q is None:
            return
        for attr, fn in _TARGETS:
            if Q.__dict__.get(attr) is fn:
                setattr(Q, attr, _ORIG[attr])
