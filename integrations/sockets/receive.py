"""The receive family beyond ``recv``: recv_into, recvfrom, recvfrom_into, recvmsg and
recvmsg_into, all through the same framed-receive decision and parser."""

from __future__ import annotations

from cutscope.tracer.process import current_var, default_process

from .args import (_ANC_BIG, _as_called, _check, _gathered, _index, _into_as_called, _scatter,
    _size_ok, _views)
from .binding import _attach, _conn_of
from .common import (RAW, _NOARG, _NOT_STREAM_FLAGS, _PEEK, _TRUNC, _objs, _real, _recv_into,
    _recvfrom, _tracer)
from .hotpath import _tcp_framed_in, recv
from .udp import _ENVELOPE_ROOM


def _into(self, name, buffer, nbytes, flags):
    """recv_into and recvfrom_into on a framed or UDP socket: the buffer's byte view and
    the size to read, the arguments checked as the C method checks them."""
    try:
        m = memoryview(buffer)
        ok = not m.readonly and m.c_contiguous
    except TypeError:
        ok = False
    if not ok or not _size_ok(nbytes) or type(flags) is not int or nbytes > m.nbytes:
        _check(name, self, (buffer, nbytes, flags))
        nbytes, flags = _index(nbytes), _index(flags)
        m = memoryview(buffer)
    mv = m if (m.ndim == 1 and m.format == "B") else m.cast("B")
    return mv, nbytes or len(mv), flags


def recv_into(self, buffer=_NOARG, nbytes=_NOARG, flags=_NOARG, *more, **kw):
    if buffer is _NOARG or more or kw:  # the C method's own error
        return _into_as_called("recv_into", self, buffer, nbytes, flags, more, kw)
    if nbytes is _NOARG:
        nbytes = 0
    if flags is _NOARG:
        flags = 0
    c = _objs.get(id(self))
    if c is None:
        c = _attach(self)
    k = c.kind
    if k == "pass" or (k == "tcp" and c.in_mode == RAW and not c.raw_held):
        if k == "tcp":
            lp = current_var.get() or default_process[0]
            if lp is not None and lp.pending:
                lp.safepoint()
        n = _recv_into(self, buffer, nbytes, flags)
        if k == "tcp" and not flags & _PEEK:
            c.raw_received(self, memoryview(buffer)[:n] if (_tracer[0] and _tracer[0].capture)
                           else b"", n)
        return n
    mv, size, flags = _into(self, "recv_into", buffer, nbytes, flags)
    try:
        data = recv(self, size, flags)
    except BaseException:
        mv = None  # (no view of the caller's buffer left in the traceback's frame)
        raise
    n = len(data)
    mv[:n] = data
    return n


def recvfrom(self, bufsize=_NOARG, flags=0, /, *more, **kw):
    if bufsize is _NOARG or more or kw:  # the C method's own error
        return _as_called("recvfrom", self,
                          (*(() if bufsize is _NOARG else (bufsize, flags)), *more), kw)
    c = _conn_of(self)
    k = c.kind
    if k == "pass" or (k == "tcp" and c.in_mode == RAW and not c.raw_held):
        data, addr = _recvfrom(self, bufsize, flags)
        if k == "tcp" and not flags & _PEEK:
            c.raw_received(self, data)
        return data, addr
    if not _size_ok(bufsize) or type(flags) is not int:
        _check("recvfrom", self, (bufsize, flags))
        bufsize, flags = _index(bufsize), _index(flags)
    if k == "udp":
        data, addr = _recvfrom(self, bufsize + _ENVELOPE_ROOM, flags)
        return c.received(self, data, addr, bufsize, bool(flags & _PEEK))[0], addr
    return recv(self, bufsize, flags), None  # a connected stream has no address to give


def recvfrom_into(self, buffer=_NOARG, nbytes=_NOARG, flags=_NOARG, *more, **kw):
    if buffer is _NOARG or more or kw:  # the C method's own error
        return _into_as_called("recvfrom_into", self, buffer, nbytes, flags, more, kw)
    if nbytes is _NOARG:
        nbytes = 0
    if flags is _NOARG:
        flags = 0
    c = _conn_of(self)
    k = c.kind
    if k == "pass" or (k == "tcp" and c.in_mode == RAW and not c.raw_held):
        n, addr = _real["recvfrom_into"](self, buffer, nbytes, flags)
        if k == "tcp" and not flags & _PEEK:
            c.raw_received(self, memoryview(buffer)[:n] if (_tracer[0] and _tracer[0].capture)
                           else b"", n)
        return n, addr
    mv, size, flags = _into(self, "recvfrom_into", buffer, nbytes, flags)
    try:
        data, addr = recvfrom(self, size, flags)
    except BaseException:
        mv = None  # (no view of the caller's buffer left in the traceback's frame)
        raise
    n = len(data)
    mv[:n] = data
    return n, addr


def _udp_msg(self, c, size, ancbufsize, flags):
    """One datagram through recvmsg: (payload, ancdata, msg_flags, address), the envelope
    stripped; MSG_TRUNC in msg_flags says whether the payload was longer than ``size``."""
    data, anc, mflags, addr = _real["recvmsg"](self, size + _ENVELOPE_ROOM, ancbufsize, flags)
    payload, plen = c.received(self, data, addr, size, bool(flags & _PEEK))
    if plen > size or mflags & _TRUNC:
        mflags |= _TRUNC
    return payload, anc, mflags, addr


def recvmsg(self, *args, **kw):
    c = _conn_of(self)
    k = c.kind
    if kw or not 1 <= len(args) <= 3 or k == "pass":
        return _as_called("recvmsg", self, args, kw)
    bufsize = args[0]
    ancbufsize = args[1] if len(args) > 1 else 0
    flags = args[2] if len(args) > 2 else 0
    if not _size_ok(bufsize) or type(ancbufsize) is not int or type(flags) is not int or \
            not 0 <= ancbufsize <= _ANC_BIG:
        _check("recvmsg", self, args)
        bufsize, ancbufsize, flags = _index(bufsize), _index(ancbufsize), _index(flags)
    if k == "udp":
        return _udp_msg(self, c, bufsize, ancbufsize, flags)
    if _tcp_framed_in(self, c, flags):
        if flags & _PEEK:
            return c.peek_framed(self, bufsize, flags), [], 0, None
        if not flags & _NOT_STREAM_FLAGS:
            anc = [ancbufsize, [], 0]
            return c.recv_framed(self, bufsize, flags, anc=anc), anc[1], anc[2], None
        return _real["recvmsg"](self, bufsize, ancbufsize, flags)  # outside the stream
    r = _real["recvmsg"](self, bufsize, ancbufsize, flags)
    if not flags & _PEEK:
        c.raw_received(self, r[0])
    return r


def recvmsg_into(self, *args, **kw):
    c = _conn_of(self)
    k = c.kind
    if kw or not 1 <= len(args) <= 3 or k == "pass":
        return _as_called("recvmsg_into", self, args, kw)
    buffers = args[0]
    ancbufsize = args[1] if len(args) > 1 else 0
    flags = args[2] if len(args) > 2 else 0
    # Iterables are taken once (the C method, asked to check them, would consume them).
    if type(buffers) is not list and type(buffers) is not tuple:
        try:
            buffers = list(buffers)
        except TypeError:
            return _real["recvmsg_into"](self, *args)
    views = _views(buffers)
    if views is None or type(ancbufsize) is not int or type(flags) is not int or \
            not 0 <= ancbufsize <= _ANC_BIG:
        _check("recvmsg_into", self, (buffers, ancbufsize, flags))
        ancbufsize, flags = _index(ancbufsize), _index(flags)
        views = [memoryview(b).cast("B") for b in buffers]
    try:
        size = sum(len(v) for v in views)
        if k == "udp":
            payload, anc, mflags, addr = _udp_msg(self, c, size, ancbufsize, flags)
            _scatter(views, payload)
            return len(payload), anc, mflags, addr
        if _tcp_framed_in(self, c, flags):
            if flags & _PEEK:
                data = c.peek_framed(self, size, flags)
                anc = [0, [], 0]
            elif not flags & _NOT_STREAM_FLAGS:
                anc = [ancbufsize, [], 0]
                data = c.recv_framed(self, size, flags, anc=anc)
            else:
                return _real["recvmsg_into"](self, buffers, ancbufsize, flags)  # outside the stream
            _scatter(views, data)
            return len(data), anc[1], anc[2], None
        r = _real["recvmsg_into"](self, buffers, ancbufsize, flags)
        if not flags & _PEEK:
            c.raw_received(self, _gathered(views, r[0]), r[0])
        return r
    except BaseException:
        views = None  # (no view of the caller's buffers left in the traceback's frame)
        raise
