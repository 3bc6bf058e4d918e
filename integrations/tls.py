"""TLS: what an ``ssl.SSLSocket`` sends and receives, recorded on unframed channels.

An ``SSLSocket`` does its I/O in C through the ``_ssl`` object, so nothing can
be framed inside it without the peer's TLS code seeing the frames: the socket
wrappers pass it through untouched (docs/protocol.md). Its plaintext sends and
receives are still recorded, as what cannot be framed is: unframed. An HTTPS
call shows on the space-time diagram: events on channels of transport ``tls``,
one per direction and connection, with the plaintext sizes (the handshake and
the records' overhead are not events) and no message ids. No marker can travel in
them, so a snapshot names them among the channels it cannot cover, as it does
raw TCP.

Wrapped on ``ssl.SSLSocket``: ``read`` (``recv``, ``recv_into`` and ``makefile``
reads go through it), ``write`` and ``send`` (``sendall``, ``sendfile`` and
``makefile`` writes go through ``send``), ``do_handshake`` and ``unwrap``, and
``_real_close``, where the incoming channel ends, as at the end of the stream.
The wrappers call the original first and record only what it returned; an
exception (``SSLWantReadError`` on a non-blocking socket, a timeout, a closed
socket) passes through unrecorded.

An ``SSLSocket`` made from a plain socket that cutscope traced (a server's
accepted socket, STARTTLS after plaintext) may sit on a framed connection: before
its first I/O in C, ``sockets.tls_begins`` ends the frames of both directions
(docs/protocol.md, "TLS on a traced connection"), so that its C code and its peer
see exactly the TLS bytes.
"""

from __future__ import annotations

import os
import sys
import weakref

from ._base import ImportHooks, Instrumentor, register
from .sockets.detach import tls_begins
from .sockets.ends import RawEnds

__all__ = ["TLSInstrumentor"]

_hooks = ImportHooks()  # on while installed; its tracer is the one recorded into
_orig: dict = {}


class _TLSEnds(RawEnds):
    """The two plaintext channels of one ``SSLSocket`` (``ref``: a weak reference to it).
    Recorded as the socket integration records raw TCP, with its tracer."""

    transport = "tls"
    where = "tls"
    ref: weakref.ref
    begun = False  # the connection under it has stopped framing (_begin)


_state: dict[int, _TLSEnds] = {}  # id(SSLSocket) -> its channels


def _ends(sock) -> _TLSEnds:
    k = id(sock)
    ends = _state.get(k)
    if ends is None or ends.ref() is not sock:
        def gone(ref, k=k):
            cur = _state.get(k)
            if cur is not None and cur.ref is ref:
                del _state[k]

        ends = _state[k] = _TLSEnds()
        ends.ref = weakref.ref(sock, gone)
    return ends


def _begin(self, ends) -> None:
    """Before this SSLSocket's first I/O in C: the plain connection under it stops
    framing (sockets.tls_begins). Done once; a non-blocking socket may be asked again
    (its SSLWantReadError/SSLWantWriteError pass through, as the handshake's would)."""
    try:
        tls_begins(self)
    except ssl_want_errors():
        raise
    except Exception as exc:
        t = _hooks.tracer
        if t is not None:
            t.fault(exc, "tls: the connection under TLS stops framing")
    ends.begun = True


def ssl_want_errors():
    import ssl

    return (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def do_handshake(self, *args, **kwargs):
    ends = _ends(self)
    if not ends.begun:
        _begin(self, ends)
    return _orig["do_handshake"](self, *args, **kwargs)


def unwrap(self, *args, **kwargs):
    ends = _ends(self)
    if not ends.begun:
        _begin(self, ends)
    return _orig["unwrap"](self, *args, **kwargs)


def read(self, *args, **kwargs):
    ends = _ends(self)
    if not ends.begun:
        _begin(self, ends)
    r = _orig["read"](self, *args, **kwargs)
    if type(r) is int:  # read into a buffer: the count
        ends.raw_received(self, args[1] if len(args) > 1 else kwargs.get("buffer"), r)
    else:
        ends.raw_received(self, r)
    return r


def write(self, data):
    ends = _ends(self)
    if not ends.begun:
        _begin(self, ends)
    n = _orig["write"](self, data)
    ends.raw_sent(self, n, data)
    return n


def send(self, data, flags=0):
    ends = _ends(self)
    if not ends.begun:
        _begin(self, ends)
    n = _orig["send"](self, data, flags)
    ends.raw_sent(self, n, data)
    return n


def _real_close(self, *args, **kwargs):
    # ssl.SSLSocket._real_close (private: TLSInstrumentor.private_names)
    """Closed: its incoming channel ends (a snapshot no longer waits on it)."""
    try:
        ends = _state.pop(id(self), None)
        if ends is not None and ends.ref() is self:
            ends._end_in()
    except Exception as exc:
        t = _hooks.tracer
        if t is not None:
            t.fault(exc, "tls: close")
    return _orig["_real_close"](self, *args, **kwargs)


_WRAPPERS = {"read": read, "write": write, "send": send, "do_handshake": do_handshake,
             "unwrap": unwrap, "_real_close": _real_close}


def _forget_after_fork() -> None:
    _state.clear()  # the child is another logical process: channels of its own


os.register_at_fork(after_in_child=_forget_after_fork)


def _patch(module=None) -> None:
    """Install the wrappers on ``ssl.SSLSocket`` (when ssl is, or gets, imported)."""
    if not _hooks.on:
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
    python_versions = ((3, 11), (3, 12), (3, 13))
    # ssl.SSLSocket._real_close: where the plaintext incoming channel ends (as at EOF).
    private_names = ("ssl.SSLSocket._real_close",)

    def _instrument(self, tracer) -> None:
        _hooks.start(tracer, ("ssl", _patch))  # (at once if ssl is imported)

    def _uninstrument(self) -> None:
        _hooks.stop()
        ssl = sys.modules.get("ssl")
        if ssl is not None:
            cls = ssl.SSLSocket
            for name, fn in _WRAPPERS.items():
                if cls.__dict__.get(name) is fn and name in _orig:
                    setattr(cls, name, _orig[name])  # (someone who patched over us keeps theirs)
        _orig.clear()
        _state.clear()
