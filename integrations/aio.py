"""``asyncio.Queue`` (and its subclasses): the same design as ``queues.py``.

Items are never wrapped: the metadata of each item and the markers live in the
queue's side deque (``queues.QState``), in step with ``_queue``. ``put_nowait``
(which ``put`` calls) records the send and queues pending markers before the
item; ``get``/``get_nowait`` are safe points that consume markers invisibly
and go on waiting (``get``) or raise ``QueueEmpty`` (``get_nowait``) exactly
as if nothing had arrived. An idle endpoint's markers are appended by its
``flush`` and every waiting getter is woken to take them; a flush asked from
another thread (the recorder thread, another logical process) is handed to the
queue's event loop with ``call_soon_threadsafe``.

asyncio tasks are logical processes through ``cutscope.process(name)`` (a
``contextvars`` variable, so each task keeps its own).
"""

from __future__ import annotations

import threading

from cutscope.tracer.process import OutEndpoint, _current, _default

from ._base import Instrumentor, register
from .queues import QState, _ATTR, deliver, is_fifo, Mk

__all__ = ["AsyncioQueueInstrumentor"]

_ORIG: dict = {}
_Q = None  # asyncio.Queue, once imported


def _state(q) -> QState:
    st = q.__dict__.get(_ATTR)
    if st is None:
        import asyncio

        cls = type(q)
        fifo = is_fifo(cls, _Q, _HOOKS)
        st = q.__dict__.setdefault(_ATTR, QState(q, fifo, issubclass(cls, asyncio.LifoQueue)))
    return st


def _wake_all(q) -> None:
    getters = q._getters
    while getters:
        g = getters.popleft()
        if not g.done():
            g.set_result(None)


def _flush_for(st: QState):
    def flush_here(ep: OutEndpoint) -> None:
        q = st.ref()
        if q is None:
            ep.process.remove_out(ep)
            return
        if st.add_marks(ep):
            _wake_all(q)
        for c, m in st.idle_close():
            c.marker(m.cid, m.sid, m.initiator)

    def flush(ep: OutEndpoint) -> None:
        q = st.ref()
        if q is None:
            ep.process.remove_out(ep)
            return
        loop = getattr(q, "_loop", None)
        if loop is not None and loop.is_running() and getattr(loop, "_thread_id", None) != \
                threading.get_ident():
            loop.call_soon_threadsafe(ep.process.tracer.guard, flush_here, ep)
        else:
            flush_here(ep)
    return flush


def put_nowait(self, item):
    lp = _current.get() or _default[0]
    if lp is None:
        return _ORIG["put_nowait"](self, item)
    if self.full():
        import asyncio

        raise asyncio.QueueFull
    st = self.__dict__.get(_ATTR) or _state(self)
    ep = st.out.get(lp)
    if ep is None:
        ep = st.open_out(lp, _flush_for(st))
    self._put(item)
    self._unfinished_tasks += 1
    self._finished.clear()
    try:
        t = lp.tracer
        seq, lam, markers = lp.send(ep, len(item) if type(item) is bytes else 0,
                                    item if t.capture else None)
        st.sent(item, ep, f"{lp.name}#{seq}", lam, markers)
    except Exception as exc:
        lp.tracer.fault(exc, "asyncio.Queue.put")
    self._wakeup_next(self._getters)


def _marks(st: QState, lp):
    side = st.side
    if st.pend or (side and type(side[0]) is Mk):
        marks = st.take_marks(lp)
        if st.pend:
            q = st.ref()
            if q is not None:
                _wake_all(q)  # the other consumers have markers to take too
        return marks
    return None


def get_nowait(self):
    lp = _current.get() or _default[0]
    if lp is None:
        return _ORIG["get_nowait"](self)
    st = self.__dict__.get(_ATTR) or _state(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    marks = _marks(st, lp)
    while marks:
        lp.tracer.guard(deliver, lp, marks)
        marks = _marks(st, lp)
    return _take(self, st, lp)


def _take(self, st: QState, lp):
    if self.empty():
        import asyncio

        raise asyncio.QueueEmpty
    item = self._get()
    self._wakeup_next(self._putters)
    try:
        st.took(lp, item, self.qsize())
    except Exception as exc:
        lp.tracer.fault(exc, "asyncio.Queue.get")
    return item


async def get(self):
    lp = _current.get() or _default[0]
    if lp is None:
        return await _ORIG["get"](self)
    st = self.__dict__.get(_ATTR) or _state(self)
    while True:
        if lp.pending:
            lp.tracer.guard(lp.safepoint)
        marks = _marks(st, lp)
        if marks:
            lp.tracer.guard(deliver, lp, marks)
            continue
        if not self.empty():
            return _take(self, st, lp)
        getter = self._get_loop().create_future()
        self._getters.append(getter)
        try:
            await getter
        except:  # noqa: E722 - the same clean-up as asyncio.Queue.get
            getter.cancel()
            try:
                self._getters.remove(getter)
            except ValueError:
                pass
            if not self.empty() and not getter.cancelled():
                self._wakeup_next(self._getters)
            raise


_HOOKS: dict = {}
_TARGETS = (("put_nowait", put_nowait), ("get_nowait", get_nowait), ("get", get))


def _patch(module=None) -> None:
    """Install the wrappers on ``asyncio.queues.Queue`` (when it is, or gets, imported)."""
    global _Q
    if not _want[0]:
        return
    import asyncio.queues

    Q = asyncio.queues.Queue
    if not _ORIG:
        for attr, _fn in _TARGETS:
            _ORIG[attr] = Q.__dict__[attr]
        _HOOKS.update({n: Q.__dict__[n] for n in ("_init", "_put", "_get")})
    _Q = Q
    for attr, fn in _TARGETS:
        if Q.__dict__.get(attr) is _ORIG[attr]:
            setattr(Q, attr, fn)


_want = [False]
_hooked = [False]


@register
class AsyncioQueueInstrumentor(Instrumentor):
    """Re-implements ``asyncio.Queue.put_nowait`` / ``get_nowait`` / ``get``.

    Installed through ``wrapt.when_imported("asyncio.queues")``, so a program
    that imports asyncio after ``cutscope.start()`` is traced too.
    """

    name = "aio"

    def _instrument(self, tracer) -> None:
        _want[0] = True
        if not _hooked[0]:
            import wrapt

            _hooked[0] = True
            wrapt.register_post_import_hook(_patch, "asyncio.queues")
        else:
            import sys

            if "asyncio.queues" in sys.modules:
                _patch()

    def _uninstrument(self) -> None:
        _want[0] = False
        Q = _Q
        if Q is None:
            return
        for attr, fn in _TARGETS:
            if Q.__dict__.get(attr) is fn:
                setattr(Q, attr, _ORIG[attr])
