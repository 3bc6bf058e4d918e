"""Where a socket leaves the wrappers: TLS starting on a traced connection, the
close of the last socket object, and detach."""

from __future__ import annotations

from .binding import _unbind
from .common import RAW, _detached, _fault, _inos, _listeners, _orig, _udp_bound
from .conn import Conn
from .registry import _publish, _unregister
from .sendfile import _tcp_conn_of_fd


def tls_begins(sock) -> None:
    """``sock``, an ``ssl.SSLSocket``, is about to do its first I/O in C on a connection
    that cutscope knows (it wraps a socket that was traced plain: a server's accepted
    socket, or STARTTLS): no frame may reach its C code, and its peer must stop framing
    (integrations/tls.py calls this before the socket's first handshake, read or write).
    May raise ``ssl.SSLWantReadError``/``SSLWantWriteError`` on a non-blocking socket
    (call again, as for the handshake itself)."""
    c = _tcp_conn_of_fd(sock.fileno()) if _inos else None
    if c is not None and (c.out_mode != RAW or c.in_mode != RAW):
        c.go_tls(sock, bool(getattr(sock, "server_side", False)))


def _real_close(self, *args, **kw):
    # socket.socket._real_close: every close of the object's descriptor ends here
    # (private: SocketInstrumentor.private_names).
    sid = id(self)
    try:
        if sid in _listeners:
            _unregister(sid, _listeners)
        if sid in _udp_bound:
            _unregister(sid, _udp_bound)
        c = _unbind(self)
        if c is not None:
            c.release(self)
    except Exception as exc:
        _fault(exc, "close")
    return _orig["_real_close"](self, *args, **kw)


def detach(self):
    sid = id(self)
    try:
        if sid in _listeners:  # e.g. wrapped by ssl: its clients must not frame
            _unregister(sid, _listeners)
        if sid in _udp_bound:
            _unregister(sid, _udp_bound)
        c = _unbind(self)
        if c is not None:
            if isinstance(c, Conn):
                c._addrs(self)
                c.nobjs -= 1
                c.refs = [r for r in c.refs if r() is not None and r() is not self]
                if c.nobjs <= 0:
                    c.detached = True
                    try:
                        c.fd = self.fileno()
                    except OSError:
                        c.fd = -1
                    _detached.add(c)
                    if c.key is not None:
                        _publish(c, "r")  # something else reads it now (ssl, C code)
    except Exception as exc:
        _fault(exc, "detach")
    return _orig["detach"](self)
