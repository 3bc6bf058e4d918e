"""The hot paths: ``send``, ``sendall`` and ``recv`` (the C extension's versions when it
is there), their general paths, and the decision every receive takes."""

from __future__ import annotations

from cutscope.tracer import wire
from cutscope.tracer.process import FAST, current_var, default_process

from .args import _as_called, _check, _index, _size_ok, _usual_buf
from .binding import _attach
from .common import (FRAMED, HELLO_PENDING, RAW, UNDECIDED, _DATA, _HDR_SIZE, _NOARG,
    _NOT_STREAM_FLAGS, _PEEK, _Socket, _fault, _objs, _pack, _recv, _send, _sendall,
    _tracer, _unpack)
from .conn import Conn
from .udp import _ENVELOPE_ROOM


# The hot paths. `send`, `sendall` and `recv` on a framed blocking connection are
# one syscall, one Lamport event, one struct pack or unpack, a token (_Gate) and
# a few attribute reads; everything else (partial frames, markers owed, flags,
# timeouts, negotiation, raw and UDP sockets) takes the general path below them.
# `send` and `sendall` share their fast path: one factory makes both (a shared
# helper would cost a Python call per message).

def _fast_sender(name, general, ret_n):
    def fast(self, data=_NOARG, flags=0, /, *more, **kw):
        if data is _NOARG or more or kw:  # the C method's own error
            return _as_called(name, self, (*(() if data is _NOARG else (data, flags)), *more), kw)
        c = _objs.get(id(self))
        if c is None:
            c = _attach(self)
        lp = c.fast_lp
        if lp is not None and not flags and type(data) is bytes and \
                (current_var.get() or default_process[0]) is lp:
            tok = c.stok
            try:
                tok.pop()
            except IndexError:
                pass  # another thread sends on this connection: the general path waits
            else:
                try:
                    n = len(data)
                    if not c.out_left and not c.out_pending and 0 < n <= 65536 and \
                            self.gettimeout() is None:
                        endpoint = c.out_endpoint
                        try:
                            seq, lam, markers = lp.send(
                                endpoint, n, data if (_tracer[0].capture or lp.snaps) else None)
                        except Exception as exc:
                            _fault(exc, "recording a send")
                            markers, seq, lam = None, 0, 0
                        if markers:
                            buf = _marker_prefix(c, markers) + _pack(_DATA, n, seq, lam) + data
                        else:
                            buf = _pack(_DATA, n, seq, lam) + data
                        # a blocking socket takes it all (or fails, and the stream is gone)
                        _sendall(self, buf)
                        if endpoint.pending:
                            c._markers_after()
                            c._push(self, block=True)
                        return n if ret_n else None
                finally:
                    tok.append(True)
        return general(self, c, data, flags)
    fast.__name__ = fast.__qualname__ = name
    return fast


def _marker_prefix(c, markers) -> bytes:
    """The control bytes owed on ``c`` with ``markers`` after them, taken (send's fast path)."""
    pend = c.out_pending
    for m in markers:
        pend += wire.marker(m.snapshot, m.initiator)
    out = bytes(pend)
    pend.clear()
    return out


def _send_general(self, c, data, flags):
    if not _usual_buf(data) or type(flags) is not int:
        _check("send", self, (data, flags))
        flags = _index(flags)
    k = c.kind
    if k == "tcp":
        m = c.out_mode
        if m == RAW:
            n = _send(self, data, flags)
            c.raw_sent(self, n, data)
            return n
        if m == UNDECIDED:
            c.decide_out(self)
            m = c.out_mode
        if m == HELLO_PENDING or m == FRAMED:
            c.raw_if_tls(self, data)
            m = c.out_mode
        if m == RAW:
            return send(self, data, flags)
        return c.send_framed(self, data, flags, False)
    if k == "udp" and c.peer is not None:
        return c.sendto(self, data, flags, c.peer, lambda b: _send(self, b, flags))
    return _send(self, data, flags)


def _sendall_general(self, c, data, flags):
    if not _usual_buf(data) or type(flags) is not int:
        _check("sendall", self, (data, flags))
        flags = _index(flags)
    if c.kind == "tcp":
        m = c.out_mode
        if m == RAW:
            r = _sendall(self, data, flags)
            c.raw_sent(self, len(data) if isinstance(data, bytes) else memoryview(data).nbytes, data)
            return r
        if m == UNDECIDED:
            c.decide_out(self)
            m = c.out_mode
        if m == HELLO_PENDING or m == FRAMED:
            c.raw_if_tls(self, data)
            m = c.out_mode
        if m == RAW:
            return sendall(self, data, flags)
        c.send_framed(self, data, flags, True)
        return None
    if c.kind == "udp" and c.peer is not None:
        c.sendto(self, data, flags, c.peer, lambda b: _send(self, b, flags))
        return None
    return _sendall(self, data, flags)


send = _fast_sender("send", _send_general, True)
sendall = _fast_sender("sendall", _sendall_general, False)


def recv(self, bufsize=_NOARG, flags=0, /, *more, **kw):
    if bufsize is _NOARG or more or kw:  # the C method's own error
        return _as_called("recv", self, (*(() if bufsize is _NOARG else (bufsize, flags)), *more), kw)
    c = _objs.get(id(self))
    if c is None:
        c = _attach(self)
    if c.fast_in and not flags:
        lp = current_var.get() or default_process[0]
        if lp is not None and not lp.pending and type(bufsize) is int and bufsize > 0:
            tok = c.rtok
            try:
                tok.pop()
            except IndexError:  # another thread reads this connection: the general path waits
                return c.recv_framed(self, bufsize, 0)
            try:
                if c.in_left or c.in_buf:
                    data = None
                else:
                    # At a frame boundary: header and payload in one syscall (a timeout or
                    # a non-blocking socket raises here exactly as the plain call would).
                    data = _recv(self, bufsize + _HDR_SIZE)
                    if len(data) > _HDR_SIZE and data[0] == _DATA:
                        _, n, seq, lam = _unpack(data)
                        if len(data) - _HDR_SIZE == n:  # one whole frame
                            piece = data[_HDR_SIZE:]
                            try:
                                lp.recv(c.in_cid, f"{c.in_name}#{seq}" if seq else None, lam, n,
                                        piece if (_tracer[0].capture or lp.snaps) else None)
                            except Exception as exc:
                                _fault(exc, "recording a receive")
                            return piece
                # the general path, still holding the token (see recv_framed)
                return c.recv_framed(self, bufsize, 0, data, True)
            finally:
                tok.append(True)
    return _recv_general(self, c, bufsize, flags)


# -- the receive family -------------------------------------------------------------------------
# Every entry point takes the same decisions (_tcp_framed_in) and, on a framed direction, the
# same parser (Conn.recv_framed / peek_framed): cutscope's bytes never reach the application.

def _tcp_framed_in(self, c, flags) -> bool:
    """Before a receive on TCP: a safe point, the incoming direction decided. True if
    that direction is framed."""
    lp = current_var.get() or default_process[0]
    if lp is not None and lp.pending:
        lp.safepoint()
    m = c.in_mode
    if m == RAW:
        return bool(c.raw_held)  # (bytes read with the peer's RAW: recv_framed serves them)
    if m == UNDECIDED:
        c.decide_in(self, flags)
        return c.in_mode != RAW
    return True


def _recv_general(self, c, bufsize, flags):
    if not _size_ok(bufsize) or type(flags) is not int:
        _check("recv", self, (bufsize, flags))
        bufsize, flags = _index(bufsize), _index(flags)
    k = c.kind
    if k == "tcp":
        if not _tcp_framed_in(self, c, flags):
            data = _recv(self, bufsize, flags)
            if not flags & _PEEK:
                c.raw_received(self, data)
            return data
        if flags & _PEEK:
            return c.peek_framed(self, bufsize, flags)
        if flags & _NOT_STREAM_FLAGS:
            return _recv(self, bufsize, flags)  # MSG_OOB and the like: outside the stream
        return c.recv_framed(self, bufsize, flags)
    if k == "udp":
        data = _recv(self, bufsize + _ENVELOPE_ROOM, flags)
        return c.received(self, data, c.peer, bufsize, bool(flags & _PEEK))[0]
    return _recv(self, bufsize, flags)


# With the socket integration's C extension (integrations/sockets/_fastsock.c, which
# records through the core's C entry points and so is loaded only with them), the three
# hot paths above are its method descriptors: the same tests and state, in C; they call
# the Python functions above (kept as the reference) whenever a test fails, before doing
# anything.
FASTSOCK = None
if FAST is not None:
    try:
        from cutscope.integrations.sockets import _fastsock as FASTSOCK
    except ImportError:
        FASTSOCK = None
if FASTSOCK is not None:
    send, sendall, recv = FASTSOCK.setup(
        _Socket, Conn, _objs, current_var, default_process, _tracer, _fault, _marker_prefix,
        _sendall, _recv, send, sendall, recv)
