"""TLS: what an ``ssl.SSLSocket`` sends and receives, recorded on unframed channels.

An ``SSLSocket`` does its I/O in C through the ``_ssl`` object, so nothing can
be framed inside it without the peer's TLS code seeing the frames: the socket
wrappers pass it through untouched (docs/protocol.md). Its plaintext sends and
receives are still recorded (SPEC 4: "recorded as unframed"), so an HTTPS call
shows on the space-time diagram: events on channels of transport ``tls``, one
per direction and connection, with the plaintext sizes (the handshake and the
records' overhead are not events) and no message ids. No marker can travel in
them, so a snapshot names them among the channels it cannot cover, as it does
raw TCP.

Wrapped on ``ssl.SSLSocket``: ``read`` (``recv``, ``recv_into`` and ``makefile``
reads go through it), ``write`` and ``send`` (``sendall``, ``sendfile`` and
``makefile`` writes go through ``send``), and ``_real_close``, where the incoming
channel ends, as at the end of the stream. The wrappers call the original first
and record only what it returned; an exception (``SSLWantReadError`` on a
non-blocking socket, a timeout, a closed socket) passes through unrecorded.
"""

from __future__ import annotations

import os
import sys
import weakref

from cutscope.tracer.process import _current, _default

from ._base import Instrumentor, register
from .sockets import _fmt

__all__ = ["TLSInstrumentor"]

_tracer: list = [None]
_orig: dict = {}
# id(SSLSocket) -> [weak reference, outgoing channel, incoming channel, its receiver]
_state: dict[int, list] = {}


def _fault(exc, where: str) -> None:
    t = _tracer[0]
    if t is not None:
        t.fault(exc, "tls: " + where)


def _entry(sock) -> list:
    k = id(sock)
    st = _state.get(k)
    if st is None or st[0]() is not sock:
        def gone(ref, k=k):
            cur = _state.get(k)
            if cur is not None and cur[0] is ref:
                del _state[k]

        st = _state[k] = [weakref.ref(sock, gone), None, None, None]
    return st


def _endpoint(sock, outgoing: bool) -> str:
    try:
        a, b = _fmt(sock.getsockname()), _fmt(sock.getpeername())
    except OSError:
        return "?"
    return f"{a}->{b}" if outgoing else f"{b}->{a}"


def _sent(sock, n, data) -> None:
    t = _tracer[0]
    lp = _current.get() or _default[0]
    if t is None or lp is None or type(n) is not int or n <= 0:
        return
    try:
        st = _entry(sock)
        cid = st[1]
        if cid is None:
            cid = st[1] = t.channel(None, lp.name, None, "tls", _endpoint(sock, True), False)
        lp.unframed("send", cid, n, bytes(memoryview(data).cast("B")[:n]) if t.capture else None)
    except Exception as exc:
        _fault(exc, "recording a send")


def _received(sock, n: int, data) -> None:
    t = _tracer[0]
    lp = _current.get() or _default[0]
    if t is None or lp is None:
        return
    try:
        st = _entry(sock)
        cid = st[2]
        if n <= 0:  # end of stream: nothing more can arrive on it
            if cid is not None and st[3] is not None:
                st[3].remove_in(cid)
            return
        if cid is None:
            cid = st[2] = t.channel(None, None, lp.name, "tls", _endpoint(sock, False), False)
            st[3] = lp
            lp.add_in(cid, fifo=False)
        lp.unframed("recv", cid, n, bytes(memoryview(data).cast("B")[:n]) if t.capture else None)
    except Exception as exc:
        _fault(exc, "recording a receive")


def read(self, *args, **kwargs):
    r = _orig["read"](self, *args, **kwargs)
    if type(r) is int:  # read into a buffer: the count
        buf = args[1] if len(args) > 1 else kwargs.get("buffer")
        _received(self, r, buf)
    else:
        _received(self, len(r), r)
    return r


def write(self, data):
    n = _orig["write"](self, data)
    _sent(self, n, data)
    return n


def send(self, data, flags=0):
    n = _orig["send"](self, data, flags)
    _sent(self, n, data)
    return n


def _real_close(self, *args, **kwargs):
    """Closed: its incoming channel ends (a snapshot no longer waits on it)."""
    try:
        st = _state.pop(id(self), None)
        if st is not None and st[0]() is self and st[2] is not None and st[3] is not None:
            st[3].remove_in(st[2])
    except Exception as exc:
        _fault(exc, "close")
    return _orig["_real_close"](self, *args, **kwargs)


_WRAPPERS = {"read": read, "write": write, "send": send, "_real_close": _real_close}


def _forget_after_fork() -> None:
    _state.clear()  # the child is another logical process: channels of its own


os.register_at_fork(after_in_child=_forget_after_fork)


_want = [False]
_hooked = [False]


def _patch(module=None) -> None:
    """Install the wrappers on ``ssl.SSLSocket`` (when ssl is, or gets, imported)."""
    if not _want[0]:
        return
    import ssl

    cls = ssl.SSLSocket
    for name, fn in _WRAPPERS.items():
        cur = cls.__dict__[name]
        if cur is not fn:
            _orig[name] = cur
            setattr(cls, name, fn)


@register
class TLSInstrumentor(Instrumentor):
    """Records the plaintext sends and receives of ``ssl.SSLSocket`` (unframed).

    Installed through a post-import hook on ``ssl`` (``wrapt``), so a program
    that never uses TLS does not import it, and one that imports it after
    ``cutscope.start()`` is recorded too."""

    name = "tls"

    def _instrument(self, tracer) -> None:
        _tracer[0] = tracer
        _want[0] = True
        if not _hooked[0]:
            import wrapt

            _hooked[0] = True
            wrapt.register_post_import_hook(_patch, "ssl")  # (at once if ssl is imported)
        elif "ssl" in sys.modules:
            _patch()

    def _uninstrument(self) -> None:
        _want[0] = False
        ssl = sys.modules.get("ssl")
        if ssl is not None:
            cls = ssl.SSLSocket
            for name, fn in _WRAPPERS.items():
                if cls.__dict__.get(name) is fn and name in _orig:
                    setattr(cls, name, _orig[name])  # (someone who patched over us keeps theirs)
        _orig.clear()
        _state.clear()
        _tracer[0] = None
