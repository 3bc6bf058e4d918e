"""The other sending wrappers: sendmsg (with descriptors handed over by SCM_RIGHTS)
and sendto."""

from __future__ import annotations

from .args import _as_called, _check, _index, _usual_buf
from .binding import _conn_of
from .common import FRAMED, HELLO_PENDING, RAW, UNDECIDED, _inos, _real, _sendto, _tracer
from .handover import _handover_anc
from .hotpath import send


def sendmsg(self, *args, **kw):
    if kw or not 1 <= len(args) <= 4:
        return _as_called("sendmsg", self, args, kw)  # (bad arguments: the C method's error)
    c = _conn_of(self)
    buffers = args[0]
    ancdata = args[1] if len(args) > 1 else ()
    flags = args[2] if len(args) > 2 else 0
    address = args[3] if len(args) > 3 else None
    # Iterables are taken once (the C method, asked to check them, would consume them).
    if type(buffers) is not list and type(buffers) is not tuple:
        try:
            buffers = list(buffers)
        except TypeError:
            return _real["sendmsg"](self, *args)
    if type(ancdata) is not list and type(ancdata) is not tuple:
        try:
            ancdata = list(ancdata)
        except TypeError:
            return _real["sendmsg"](self, *args)
    if ancdata or type(flags) is not int or address is not None or \
            not all(map(_usual_buf, buffers)):
        _check("sendmsg", self, (buffers, ancdata, flags, address))
        flags = _index(flags)
    try:
        return _sendmsg(self, c, buffers, ancdata, flags, address)
    except BaseException:
        # The traceback keeps these frames: no view of the caller's buffers may stay in
        # them (asyncio resizes its write buffer after a failed send).
        args = buffers = None  # noqa: F841
        raise


def _sendmsg(self, c, buffers, ancdata, flags, address):
    if c.kind == "tcp" and c.out_mode != RAW:
        data = b"".join(buffers)
        if c.out_mode == UNDECIDED:
            c.decide_out(self)
        if c.out_mode == HELLO_PENDING or c.out_mode == FRAMED:
            c.raw_if_tls(self, data)
        if c.out_mode == RAW:
            return sendmsg(self, [data], ancdata, flags, address)
        # (TCP ignores the address, as the kernel does; ancillary data goes with the
        # first bytes of the call, as the kernel takes it)
        return c.send_framed(self, data, flags, False, ancdata)
    if c.kind == "udp" and not ancdata:
        dest = address if address is not None else c.peer
        if dest is not None:
            data = b"".join(buffers)
            if address is None:
                return c.sendto(self, data, flags, dest, lambda b: _real["sendmsg"](self, [b], (), flags))
            return c.sendto(self, data, flags, dest,
                            lambda b: _real["sendmsg"](self, [b], (), flags, address))
    if ancdata and c.kind == "pass" and _inos:
        _handover_anc(ancdata)
    if address is None:
        n = _real["sendmsg"](self, buffers, ancdata, flags)
    else:
        n = _real["sendmsg"](self, buffers, ancdata, flags, address)
    if c.kind == "tcp":
        c.raw_sent(self, n, b"".join(buffers) if _tracer[0] and _tracer[0].capture else b"")
    return n


def sendto(self, *args, **kw):
    if kw or not 2 <= len(args) <= 3:
        return _as_called("sendto", self, args, kw)  # (bad arguments: the C method's error)
    if len(args) == 2:
        data, address = args
        flags = 0
    else:
        data, flags, address = args
    c = _conn_of(self)
    if c.kind == "pass":
        return _real["sendto"](self, *args)
    if not _usual_buf(data) or type(flags) is not int or type(address) is not tuple:
        _check("sendto", self, args)
        flags = _index(flags)
    if c.kind == "udp":
        return c.sendto(self, data, flags, address, lambda b: _sendto(self, b, flags, address))
    if c.kind == "tcp" and c.out_mode != RAW:
        return send(self, data, flags)  # TCP ignores the address, as the kernel does
    return _real["sendto"](self, *args)
