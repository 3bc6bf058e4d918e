"""The socket integration's shared parts: the wire constants it uses, the modes of a
direction, the real ``_socket.socket`` methods, the process-wide tables (socket objects,
inodes, framed and detached connections, registered listeners, lookups) and small
helpers (the current logical process, faults, waiting for readiness, resolving)."""

from __future__ import annotations

import _socket
import ipaddress
import select
import socket
import sys
import time

from cutscope.tracer import wire
from cutscope.tracer.process import current_var, default_process


_Socket = socket.socket
_ss = _socket.socket  # the C type socket.socket subclasses (private: SocketInstrumentor.private_names)
_now = time.time_ns
_mono = time.monotonic
_HDR = wire.HDR
_HDR_SIZE = wire.HDR_SIZE
_pack = _HDR.pack
_unpack = _HDR.unpack_from
_DATA = wire.DATA
_MAGIC = wire.MAGIC
# Plain ints: the socket module's flags are IntFlag members, whose `&` costs a
# microsecond in Python.
_PEEK = int(socket.MSG_PEEK)
_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))
_WAITALL = int(getattr(socket, "MSG_WAITALL", 0))
_TRUNC = int(getattr(socket, "MSG_TRUNC", 0))
# Flags a framed receive handles itself; any other (MSG_OOB, MSG_ERRQUEUE) goes to the
# kernel untouched. (MSG_PEEK is handled apart.)
_NOT_STREAM_FLAGS = ~(_DONTWAIT | _WAITALL | _TRUNC)
_INET = (socket.AF_INET, socket.AF_INET6)

# The longest a traced end waits for a connect in progress towards its own address
# to register (seconds): the gap between a client's connect() returning and its
# registration, microseconds normally.
RESOLVE_WAIT = 0.5
# The longest a receiver waits for the rest of a HELLO's 16-byte magic once its first
# bytes are there (they leave in one syscall: normally no wait at all).
PREFIX_WAIT = 0.2
# How long a registry answer is trusted (seconds).
LOOKUP_TTL = 0.5
# Modules whose listeners hand the descriptor to code that reads it with
# os.read (multiprocessing.connection): never registered, so never framed.
_NO_REGISTER = ("multiprocessing.connection",)

# Modes of a direction. HELLO_PENDING: framed, the HELLO goes in front of the first frame.
# UNFRAMING (outgoing only): raw once the control bytes owed (ending with a RAW frame:
# TLS starts) have gone, in front of the application's next bytes.
RAW, FRAMED, UNDECIDED, HELLO_PENDING, UNFRAMING = 0, 1, 2, 3, 4

_real = {n: getattr(_ss, n) for n in (
    "connect", "connect_ex", "listen", "bind", "send", "sendall", "sendto", "sendmsg", "recv",
    "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into")}
_send = _ss.send
_sendall = _ss.sendall
_recv = _ss.recv
_recv_into = _ss.recv_into
_sendto = _ss.sendto
_recvfrom = _ss.recvfrom

_NOARG = object()  # an argument not given (the C method then raises its own error)
# The tracer the wrappers record into: a one-item list, which the socket extension
# (_fastsock) reads without a call.
_tracer = [None]
# id(socket object) -> its Conn. An entry lives exactly as long as its socket object:
# the weak reference in _refs removes it when the object dies (CPython calls the
# callback at once, before the id can be reused), so the hot path trusts the id.
_objs: dict[int, object] = {}
_refs: dict[int, "weakref.ref"] = {}  # id(socket object) -> weak reference (with the callback)
_inos: dict[int, "Conn"] = {}  # inode of the kernel socket -> Conn
_framed: set = set()  # Conns with a framed direction (tick: markers, idle channels)
_detached: set = set()
_listeners: dict[int, list] = {}  # id(listening socket) -> [(key, port)] registered
_udp_bound: dict[int, list] = {}
_lookups: dict = {}  # (transport, ip, port) -> (traced, expiry)
_learned: set = set()  # UDP addresses that sent us envelopes
_addr_cache: dict = {}


def _lp():
    return current_var.get() or default_process[0]


def _fault(exc, where):
    t = _tracer[0]
    if t is not None:
        t.fault(exc, "sockets: " + where)


def _fmt(addr) -> str:
    try:
        h, p = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{h}]:{p}" if ":" in str(h) else f"{h}:{p}"


def _is_ssl(sock) -> bool:
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)


def _timeout_error():
    return TimeoutError("timed out")


def _wait(sock, writing: bool, deadline: float | None) -> None:
    """Wait until ``sock`` is ready, or raise ``TimeoutError`` at ``deadline``."""
    if deadline is None:
        return
    remaining = deadline - _mono()
    if remaining <= 0:
        raise _timeout_error()
    p = select.poll()
    p.register(sock.fileno(), select.POLLOUT if writing else select.POLLIN)
    if not p.poll(remaining * 1000.0):
        raise _timeout_error()


def _ready(sock, writing: bool, wait: float = 0.0) -> bool:
    """Is ``sock`` ready (within ``wait`` seconds)?"""
    p = select.poll()
    p.register(sock.fileno(), select.POLLOUT if writing else select.POLLIN)
    return bool(p.poll(wait * 1000.0))


def _resolve(host, family: int = 0) -> str | None:
    """An IP literal for ``host`` (of ``family``, as a socket of that family connects to
    it; cached); None if it cannot be resolved quickly."""
    k = (host, family) if family else host
    r = _addr_cache.get(k)
    if r is not None:
        return r
    try:
        ipaddress.ip_address(host)
        r = host
    except ValueError:
        try:
            r = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM if family else 0)[0][4][0]
        except (OSError, UnicodeError):
            return None
    if len(_addr_cache) > 4096:
        _addr_cache.clear()
    _addr_cache[k] = r
    return r


# name -> what socket.socket had in its own __dict__ (absent: inherited); "os.sendfile":
# the os.sendfile that os_sendfile replaced
_orig: dict = {}
_MISSING = object()
