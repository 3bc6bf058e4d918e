"""From a socket object to its connection state: the table keyed by the object's id
(a weak reference removes an entry when the object dies) and by the kernel socket's
inode, for socket objects never seen before (dup, fromfd, a fork, a hand-over)."""

from __future__ import annotations

import os
import socket
import weakref

from .common import (RAW, _INET, _Socket, _detached, _fault, _fmt, _inos, _is_ssl, _objs,
    _refs, _tracer)
from .conn import Conn
from .ends import PASS
from .handover import _adopt
from .registry import _publish, _traced_peer
from .udp import UdpConn


def _gone(key):
    def cb(ref):
        if _refs.get(key) is ref:
            del _refs[key]
            c = _objs.pop(key, None)
            if c is not None:
                try:
                    c.release(None)
                except Exception:
                    pass
    return cb


def _unbind(sock):
    """Forget ``sock`` (closed or detached): its Conn, or None if it had none."""
    sid = id(sock)
    r = _refs.get(sid)
    if r is None or r() is not sock:
        return None
    del _refs[sid]
    return _objs.pop(sid, None)


def _bind_obj(sock, conn):
    sid = id(sock)
    r = _refs.get(sid)
    old = _objs.get(sid) if r is not None and r() is sock else None
    _refs[sid] = weakref.ref(sock, _gone(sid))
    _objs[sid] = conn
    if old is not None:
        old.release(sock)
    conn.attach(sock)
    return conn


def _ino(sock) -> int:
    try:
        return os.fstat(sock.fileno()).st_ino
    except OSError:
        return 0


def _attach(sock):
    """The slow path: a socket object seen for the first time; its state (a Conn,
    a UdpConn or PASS)."""
    if type(sock) is not _Socket and _is_ssl(sock):
        return PASS  # never cached: an SSLSocket's state is the ssl module's
    try:
        fam = sock.family
        typ = sock.type
    except OSError:
        return PASS
    if fam not in _INET:
        return _bind_obj(sock, PASS)
    if typ == socket.SOCK_DGRAM:
        return _bind_obj(sock, UdpConn())
    if typ != socket.SOCK_STREAM:
        return _bind_obj(sock, PASS)
    ino = _ino(sock)
    c = None
    if ino and _tracer[0] is not None:
        try:
            c = _adopt(sock, ino)  # handed over by another process (or by this one, before a fork)
        except Exception as exc:
            _fault(exc, "adopting a connection handed over")
        if c is not None:
            old = _inos.get(ino)
            if old is not None and old is not c:
                old.end()
            _inos[ino] = c
            return _bind_obj(sock, c)
    c = _inos.get(ino) if ino else None
    if c is not None and c.detached:
        # A descriptor we saw detached: the same connection if the addresses agree.
        try:
            same = (sock.getsockname(), sock.getpeername()) == (c.laddr, c.raddr) or c.raddr is None
        except OSError:
            same = False
        if not same:
            c = None
        else:
            c.detached = False
            _detached.discard(c)
            if c.key is not None:
                _publish(c)  # read through the wrappers again
    if c is None:
        c = Conn(ino, RAW, RAW)
        if ino:
            _inos[ino] = c
        try:
            peer = sock.getpeername()
            here = sock.getsockname()
        except OSError:
            peer = None
        if peer is not None and _tracer[0] is not None:
            # A connection we did not see open. If a traced endpoint is at either end it
            # may be framed: do not guess, pass it raw and say so.
            try:
                suspect = _traced_peer("tcp", peer[0], peer[1]) or _traced_peer(
                    "tcp", here[0], here[1])
            except Exception:
                suspect = False
            if suspect:
                _fault(RuntimeError(f"connection {_fmt(here)}->{_fmt(peer)} to or from a traced "
                                    "endpoint was opened where cutscope could not see it; "
                                    "passing it raw"), "unknown connection")
    return _bind_obj(sock, c)


def _conn_of(sock):
    c = _objs.get(id(sock))
    if c is None:
        c = _attach(sock)
    return c


def _new_tcp(sock, out_mode: int, in_mode: int, accepted: bool = False) -> "Conn":
    ino = _ino(sock)
    c = Conn(ino, out_mode, in_mode, accepted)
    if ino:
        old = _inos.get(ino)
        if old is not None and old is not c:
            old.end()
        _inos[ino] = c
    _bind_obj(sock, c)
    return c
