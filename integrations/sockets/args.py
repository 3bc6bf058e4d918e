"""Argument checks for the wrappers: the C methods judge bad arguments, so a wrapper
calls the real method with them and lets it raise its own error."""

from __future__ import annotations

import operator
import socket
import sys

from .common import _NOARG, _real, _ss, _tracer


# -- arguments: the C methods judge them ------------------------------------------------------

_BIG = sys.maxsize >> 1  # sizes above this are checked by the C method (overflow, memory)
_ANC_BIG = 0x7FFFFFFF
_dummies: dict = {}


def _as_called(name, sock, args, kw):
    """The socket's own method ``name``, called with the arguments the application gave:
    for arguments the wrappers do not take (a keyword, a missing or extra argument), its
    error is the application's, word for word (``socket.recv() takes no keyword
    arguments``, as ``sock.recv(1, flags=0)`` says untraced)."""
    return _real[name](sock, *args, **kw)


def _into_as_called(name, sock, buffer, nbytes, flags, more, kw):
    """``_as_called`` for recv_into and recvfrom_into, whose ``nbytes`` and ``flags`` may
    come by name (``_NOARG``: not given): the method gets as many arguments as the
    application gave, and counts them as it does untraced."""
    if more:  # all of them by position
        return _as_called(name, sock, (buffer, nbytes, flags, *more), kw)
    named = {k: v for k, v in (("nbytes", nbytes), ("flags", flags)) if v is not _NOARG}
    return _as_called(name, sock, () if buffer is _NOARG else (buffer,), {**named, **kw})


def _check(name: str, sock, args: tuple) -> None:
    """Let the C method judge arguments that are not the usual ones. It is called with
    them on a closed socket of the same family and type: bad arguments raise exactly
    what they raise on a live socket (its type, its message), before any I/O; good ones
    reach the system call, which fails with EBADF, ignored here."""
    try:
        key = (_ss.family.__get__(sock), _ss.type.__get__(sock))
    except OSError:
        key = (socket.AF_INET, socket.SOCK_STREAM)
    d = _dummies.get(key)
    if d is None:
        d = _ss(key[0], key[1])
        _ss.settimeout(d, None)
        _ss.close(d)
        _dummies[key] = d
    try:
        _real[name](d, *args)
    except OSError:
        pass


def _index(v) -> int:
    return v if type(v) is int else operator.index(v)


def _usual_buf(data) -> bool:
    t = type(data)
    return t is bytes or t is bytearray or (t is memoryview and data.c_contiguous)


def _size_ok(n) -> bool:
    return type(n) is int and 0 <= n <= _BIG


def _views(buffers):
    """Byte views of writable C-contiguous buffers (what the C methods accept as ``w*``),
    or None if one is not such a buffer."""
    out = []
    for b in buffers:
        try:
            m = memoryview(b)
        except TypeError:
            return None
        if m.readonly or not m.c_contiguous:
            return None
        out.append(m if (m.ndim == 1 and m.format == "B") else m.cast("B"))
    return out


def _scatter(views, data) -> None:
    """Copy ``data`` into ``views`` in order (recvmsg_into's scatter)."""
    pos = 0
    end = len(data)
    for v in views:
        if pos >= end:
            break
        k = min(len(v), end - pos)
        v[:k] = data[pos:pos + k]
        pos += k


def _gathered(views, n: int) -> bytes:
    if not (_tracer[0] and _tracer[0].capture):
        return b""
    out = bytearray()
    for v in views:
        if len(out) >= n:
            break
        out += v[:n - len(out)]
    return bytes(out)
