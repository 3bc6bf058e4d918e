"""sendfile: ``socket.socket.sendfile`` and ``os.sendfile`` on a framed direction send
frames (the real calls otherwise)."""

from __future__ import annotations

import os
import stat

from .binding import _conn_of
from .common import RAW, UNDECIDED, _Socket, _fault, _inos, _is_ssl, _orig
from .outgoing import _PassRaw


def sendfile(self, file, offset=0, count=None):
    if type(self) is not _Socket and _is_ssl(self):
        return _orig["sendfile"](self, file, offset, count)
    c = _conn_of(self)
    if c.kind == "tcp":
        if c.out_mode == UNDECIDED:
            c.decide_out(self)
        if c.out_mode != RAW or c.out_pending:
            return self._sendfile_use_send(file, offset, count)  # through send: framed (private: SocketInstrumentor.private_names)
    # Raw: the real socket.sendfile, whose os.sendfile calls os_sendfile records.
    return _orig["sendfile"](self, file, offset, count)


# os.sendfile writes a file into a descriptor in the kernel, bypassing the socket
# methods (asyncio's loop.sock_sendfile and transports' sendfile, socket.sendfile,
# user code). Wrapped so that a framed direction stays framed; everything else keeps
# the real call (the os.sendfile it replaced: _orig["os.sendfile"]).


def _tcp_conn_of_fd(fd):
    """The Conn of the TCP connection behind descriptor ``fd``, or None (not a socket,
    not a connection cutscope knows, a bad descriptor: the real call says)."""
    if type(fd) is not int or not _inos:
        return None
    try:
        st = os.fstat(fd)
    except (OSError, ValueError, OverflowError):
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    c = _inos.get(st.st_ino)
    return None if c is None or c.ended else c


def os_sendfile(out_fd, in_fd, offset, count):
    """``os.sendfile``: the real call, unless ``out_fd`` is a traced TCP connection's
    descriptor whose outgoing direction is framed (or undecided, or owes its HELLO):
    then the file's bytes are read with ``os.pread`` and sent framed (``Conn.sendfile``),
    with os.sendfile's return value, partial counts, ``EAGAIN`` and offset semantics.
    A raw direction keeps the real call and records one raw send per call."""
    real = _orig["os.sendfile"]
    c = _tcp_conn_of_fd(out_fd)
    if c is None or type(count) is not int or count <= 0 or not (
            offset is None or (type(offset) is int and offset >= 0)):
        return real(out_fd, in_fd, offset, count)  # (its errors, as they are)
    try:
        if c.out_mode != RAW or c.out_pending:
            sock = c.sock()
            if sock is not None:
                if c.out_mode == UNDECIDED:
                    c.decide_out(sock)
                if c.out_mode != RAW or c.out_pending:
                    return c.sendfile(sock, out_fd, in_fd, offset, count, real)
            else:
                _fault(RuntimeError("os.sendfile on a framed connection that has no socket "
                                    "object left: sent raw"), "os.sendfile")
    except _PassRaw:
        pass
    n = real(out_fd, in_fd, offset, count)
    sock = c.sock()
    if sock is not None:
        c.raw_sent(sock, n, b"")
    return n
