"""The wrappers that open connections and endpoints: connect, connect_ex, accept,
listen and bind (registration and the decision to frame)."""

from __future__ import annotations

import errno
import socket
import sys

from .binding import _conn_of, _new_tcp
from .common import (RAW, UNDECIDED, _INET, _NO_REGISTER, _Socket, _fault, _is_ssl, _listeners,
    _orig, _real, _resolve, _udp_bound)
from .registry import _intent, _intent_done, _publish, _register, _set_ends, _traced_peer
from .udp import UdpConn


# -- the wrappers ----------------------------------------------------------------------------

def connect(self, address):
    pre = _before_connect(self, address)
    try:
        r = _real["connect"](self, address)
    except (BlockingIOError, InterruptedError) as exc:
        if exc.errno in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            _after_connect(self, address, pre)
        elif pre is not None:
            _connect_failed(pre)
        raise
    except BaseException:
        if pre is not None:
            _connect_failed(pre)
        raise
    _after_connect(self, address, pre)
    return r


def connect_ex(self, address):
    pre = _before_connect(self, address)
    try:
        r = _real["connect_ex"](self, address)
    except BaseException:
        if pre is not None:
            _connect_failed(pre)
        raise
    if r in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
        _after_connect(self, address, pre)
    elif pre is not None:
        _connect_failed(pre)
    return r


def _before_connect(sock, address):
    """A TCP connect about to start: ``(ip, destination traced, intent)``, or None for
    anything else. Towards a traced listener, an intent is registered first (so the
    server, if it speaks at once, waits for this client's entry rather than sending raw)."""
    if type(sock) is not _Socket and _is_ssl(sock):
        return None
    try:
        if sock.family not in _INET or sock.type != socket.SOCK_STREAM:
            return None
        ip = _resolve(address[0], sock.family)
        traced = ip is not None and _traced_peer("tcp", ip, address[1])
        return (ip, traced, _intent(ip, address[1]) if traced else None)
    except Exception as exc:
        _fault(exc, "before connect")
        return None


def _connect_failed(pre) -> None:
    try:
        if pre[2] is not None:
            _intent_done(pre[2])
    except Exception as exc:
        _fault(exc, "after a failed connect")


def _after_connect(sock, address, pre=None) -> None:
    if type(sock) is not _Socket and _is_ssl(sock):
        return
    try:
        fam, typ = sock.family, sock.type
        if fam not in _INET:
            return
        if typ == socket.SOCK_DGRAM:
            c = _conn_of(sock)
            if isinstance(c, UdpConn):
                c.peer = address
            return
        if typ != socket.SOCK_STREAM or pre is None:
            return
        ip, traced, intent = pre
        try:
            c = _new_tcp(sock, UNDECIDED if traced else RAW, UNDECIDED if traced else RAW)
            if traced:
                c.dest_traced = True
                try:
                    there = sock.getpeername()
                except OSError:  # a connect in progress: its local address is known already
                    there = (ip, address[1]) + tuple(address[2:])
                _set_ends(c, sock.getsockname(), there)
                _publish(c)
        finally:
            if intent is not None:
                _intent_done(intent)
    except Exception as exc:
        _fault(exc, "after connect")


def accept(self):
    sock, addr = _orig["accept"](self)
    if type(self) is _Socket or not _is_ssl(self):
        try:
            if self.family in _INET:
                if id(self) in _listeners:
                    c = _new_tcp(sock, UNDECIDED, UNDECIDED, accepted=True)
                    _set_ends(c, sock.getsockname(), addr)
                    _publish(c)
                else:
                    _new_tcp(sock, RAW, RAW, accepted=True)
        except Exception as exc:
            _fault(exc, "after accept")
    return sock, addr


def listen(self, *args):
    r = _real["listen"](self, *args)
    if (type(self) is _Socket or not _is_ssl(self)) and self.family in _INET and \
            self.type == socket.SOCK_STREAM:
        # who calls listen() (private: SocketInstrumentor.private_names)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller not in _NO_REGISTER:
            try:
                _register(self, "tcp", _listeners)
            except Exception as exc:
                _fault(exc, "registering a listener")
    return r


def bind(self, address):
    r = _real["bind"](self, address)
    if (type(self) is _Socket or not _is_ssl(self)) and self.family in _INET and \
            self.type == socket.SOCK_DGRAM:
        try:
            _register(self, "udp", _udp_bound)
        except Exception as exc:
            _fault(exc, "registering a UDP address")
    return r
