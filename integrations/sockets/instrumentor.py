"""``SocketInstrumentor``: installs the wrappers on ``socket.socket`` (and
``os.sendfile``, and multiprocessing.reduction's hook), the recorder's tick (markers on
idle channels, detached descriptors since closed), and uninstall."""

from __future__ import annotations

import atexit
import os

from .._base import Instrumentor, register

from .common import (UNFRAMING, _MISSING, _Socket, _detached, _fault, _framed, _inos, _learned,
    _listeners, _lookups, _objs, _orig, _refs, _tracer, _udp_bound)
from .connect import accept, bind, connect, connect_ex, listen
from .detach import _real_close, detach
from .handover import _patch_reduction, _unpatch_reduction, reduction_hooks
from .hotpath import recv, send, sendall
from .receive import recv_into, recvfrom, recvfrom_into, recvmsg, recvmsg_into
from .registry import _local_conns, _unregister, _withdraw, _withdraw_all
from .send import sendmsg, sendto
from .sendfile import os_sendfile, sendfile


_WRAPPERS = {
    "connect": connect, "connect_ex": connect_ex, "accept": accept, "listen": listen,
    "bind": bind, "send": send, "sendall": sendall, "sendmsg": sendmsg, "sendto": sendto,
    "recv": recv, "recv_into": recv_into, "recvfrom": recvfrom, "recvfrom_into": recvfrom_into,
    "recvmsg": recvmsg, "recvmsg_into": recvmsg_into, "sendfile": sendfile,
    "_real_close": _real_close, "detach": detach,
}


def _tick(tracer) -> None:
    """Recorder thread, about every 50 ms: markers on idle directions, idle incoming
    markers, descriptors that were detached and since closed."""
    for c in list(_framed):
        if c.ended:
            continue
        try:
            if c.out_endpoint is not None and (c.out_endpoint.pending or c.out_pending):
                c._flush(c.out_endpoint)
            elif c.raw_echo:
                sock = c.sock()
                if sock is not None:
                    c._peer_unframed(sock)
            elif c.out_mode == UNFRAMING and c.out_pending:
                c._flush(None)  # the RAW owed, when no send came to take it
            if c.in_cid is not None:
                c.idle_markers()
        except Exception as exc:
            _fault(exc, "tick")
    for c in list(_detached):
        fd = getattr(c, "fd", -1)
        try:
            alive = fd >= 0 and os.fstat(fd).st_ino == c.ino
        except OSError:
            alive = False
        if not alive:
            c.detached = False
            c.end()


@register
class SocketInstrumentor(Instrumentor):
    """TCP framing, UDP envelopes, raw recording of everything else on ``socket.socket``."""

    name = "sockets"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # _socket.socket: the C type socket.socket subclasses; its methods are the real calls.
    # socket.socket._real_close: where every close of a socket object's descriptor ends.
    # socket.socket._sendfile_use_send: sendfile's own way through send() (framed).
    # sys._getframe: which module calls listen() (multiprocessing.connection is not framed).
    private_names = ("_socket.socket", "socket.socket._real_close",
                     "socket.socket._sendfile_use_send", "sys._getframe")

    def _instrument(self, tracer) -> None:
        _tracer[0] = tracer
        _orig.clear()
        for name, fn in _WRAPPERS.items():
            _orig[name] = _Socket.__dict__.get(name, _MISSING)
            if _orig[name] is _MISSING:
                _orig[name] = getattr(_Socket, name)  # inherited C method, called directly
                _orig["_inherited_" + name] = True
            setattr(_Socket, name, fn)
        if hasattr(os, "sendfile") and os.sendfile is not os_sendfile:
            _orig["os.sendfile"] = os.sendfile
            os.sendfile = os_sendfile
        tracer.tick_hooks.append(_tick)
        reduction_hooks.start(tracer, ("multiprocessing.reduction", _patch_reduction))
        atexit.register(_withdraw_all)

    def _uninstrument(self) -> None:
        t = _tracer[0]
        _unpatch_reduction()
        reduction_hooks.stop()
        try:
            atexit.unregister(_withdraw_all)
        except Exception:
            pass
        for sid in list(_listeners):
            _unregister(sid, _listeners)
        for sid in list(_udp_bound):
            _unregister(sid, _udp_bound)
        for name, fn in _WRAPPERS.items():
            if _Socket.__dict__.get(name) is not fn:
                continue  # someone patched over us: leave theirs
            if _orig.pop("_inherited_" + name, False):
                delattr(_Socket, name)
            else:
                setattr(_Socket, name, _orig[name])
        if getattr(os, "sendfile", None) is os_sendfile:
            os.sendfile = _orig["os.sendfile"]  # (someone who patched over us keeps theirs)
        if t is not None:
            try:
                t.tick_hooks.remove(_tick)
            except ValueError:
                pass
        for c in list(_inos.values()):
            c.ended = True
        _objs.clear()
        _refs.clear()
        _inos.clear()
        for c in list(_local_conns.values()):
            try:
                _withdraw(c)
            except Exception:
                pass
        _local_conns.clear()
        _framed.clear()
        _detached.clear()
        _lookups.clear()
        _learned.clear()
        _tracer[0] = None
