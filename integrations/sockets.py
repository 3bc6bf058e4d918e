"""The socket integration: in-band framing on TCP, envelopes on UDP, raw otherwise.

Plain functions are installed as attributes of ``socket.socket`` (its I/O
methods are C methods inherited from ``_socket.socket``; ``ssl.SSLSocket`` is a
subclass and is passed through untouched). Measured: a plain function costs a
third of a ``wrapt`` wrapper per call (``benchmarks/bench_tcp.py``); uninstall
restores exactly what was there.

Framing state belongs to the connection, not to the Python object: a ``Conn``
is found from a socket object through ``_objs`` (keyed by ``id``; a weak
reference removes the entry when the object dies) and, for a socket object that has never been seen (``dup``,
``fromfd``, ``socket(fileno=...)``, a fork), through the kernel socket's inode
(``_inos``). A socket that finds no state is passed raw; if its peer is a
traced endpoint (it may be framed) a fault is recorded: it never guesses.

The wire format is ``cutscope.tracer.wire``; the negotiation and the cases that
cannot be traced are described in ``docs/protocol.md``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import ipaddress
import itertools
import json
import operator
import os
import select
import selectors
import socket
import stat
import sys
import threading
import time
import weakref
import _socket

from cutscope.tracer import control as _control
from cutscope.tracer import wire
from cutscope.tracer.process import FAST, OutEndpoint, _current, _default

from ._base import Instrumentor, register

__all__ = ["SocketInstrumentor"]

_Socket = socket.socket
_ss = _socket.socket
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
_tracer = [None]  # the tracer the wrappers record into
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
    return _current.get() or _default[0]


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


# -- the listener registry ------------------------------------------------------------------

def _local_ips() -> set:
    ips = _addr_cache.get(("local-ips",))
    if ips is None:
        ips = set()
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None):
                ips.add(info[4][0])
        except OSError:
            pass
        _addr_cache[("local-ips",)] = ips
    return ips


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def _reg_keys(transport: str, ip: str) -> list[str]:
    """The registry keys under which a listener bound to ``ip`` is registered."""
    hn = socket.gethostname()
    pre = "" if transport == "tcp" else transport + "/"
    if ip in ("0.0.0.0", "::", ""):
        return [f"{pre}{hn}@*"] + [pre + a for a in sorted(_local_ips()) if not _is_loopback(a)]
    if _is_loopback(ip):
        return [f"{pre}{hn}@{ip}"]
    return [pre + ip]


def _lookup_keys(transport: str, ip: str) -> list[str]:
    hn = socket.gethostname()
    pre = "" if transport == "tcp" else transport + "/"
    if _is_loopback(ip):
        return [f"{pre}{hn}@{ip}", f"{pre}{hn}@*"]
    keys = [pre + ip]
    if ip in _local_ips():
        keys.append(f"{pre}{hn}@*")
    return keys


def _register(sock, transport: str, table: dict) -> None:
    t = _tracer[0]
    if t is None:
        return
    try:
        ip, port = sock.getsockname()[:2]
    except OSError:
        return
    lp = _lp()
    regs = []
    for key in _reg_keys(transport, ip):
        t.store.register_listener(key, port, lp.name, os.getpid())
        regs.append((key, port))
    table[id(sock)] = regs
    _lookups.clear()


def _unregister(sock_id: int, table: dict) -> None:
    regs = table.pop(sock_id, None)
    t = _tracer[0]
    if not regs or t is None:
        return
    for key, port in regs:
        try:
            t.store.unregister_listener(key, port, os.getpid())
        except Exception as exc:
            _fault(exc, "unregistering a listener")
    _lookups.clear()


def _traced_peer(transport: str, ip: str, port: int) -> bool:
    """Is ``ip:port`` a listener (or bound UDP socket) of a live traced process?"""
    k = (transport, ip, port)
    hit = _lookups.get(k)
    now = _mono()
    if hit is not None and hit[1] > now:
        return hit[0]
    t = _tracer[0]
    if t is None:
        return False
    row = t.store.lookup_listener(_lookup_keys(transport, ip), port)
    traced = False
    if row is not None:
        traced = True
        if "@" in row["host"] or ip in _local_ips():  # on this machine: is it alive?
            try:
                os.kill(row["pid"], 0)
            except ProcessLookupError:
                traced = False
            except PermissionError:
                pass
    if len(_lookups) > 4096:
        _lookups.clear()
    _lookups[k] = (traced, now + LOOKUP_TTL)
    return traced


# -- the connection registry (docs/protocol.md, "Negotiation") -----------------------------
#
# Each traced end of a TCP connection to or from a registered listener has an entry
# named by its own 4-tuple (local address first) in the control directory's ``c/``:
# "<pid> w" (it reads through the wrappers) or "<pid> r" (its descriptor was detached:
# something else reads it). Its peer looks it up under the reversed 4-tuple. A client
# registers an intent ("i/<ip>,<port>,<pid>,<n>") before it connects and replaces it
# with its entry as soon as connect() returns, so a server that finds no entry for
# its peer but an intent towards its own address knows to wait for it. Ends in this
# process are found in memory first. An end whose peer is on another host is also
# registered in the store (table ``conn_ends``), with its intent: the one registry that
# both hosts share.

_local_conns: dict = {}  # key of one end (its own 4-tuple) -> Conn, ends in this process
_local_intents: dict = {}  # "<ip>,<port>," -> connects in progress from this process
_intent_lock = threading.Lock()
_intent_seq = itertools.count()


def _norm(host) -> str:
    h = str(host).split("%")[0]
    if h.startswith("::ffff:") and "." in h:
        h = h[7:]  # an IPv4 peer of a dual-stack socket
    return h


def _end_key(here, there) -> str:
    return f"{_norm(here[0])},{here[1]},{_norm(there[0])},{there[1]}"


def _forget_intents_after_fork() -> None:
    """A forked child is not in the middle of its parent's connects."""
    _local_intents.clear()
    globals()["_intent_lock"] = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_intents_after_fork)


def _remote(ip) -> bool:
    """Is ``ip`` another host's (as far as this host knows its own addresses)?"""
    h = _norm(ip)
    return not _is_loopback(h) and h not in _local_ips()


def _set_ends(c, here, there) -> None:
    c.laddr, c.raddr = here, there
    c.key = _end_key(here, there)
    c.peer_key = _end_key(there, here)
    c.remote = _remote(there[0])


def _store():
    t = _tracer[0]
    return t.store if t is not None else None


def _publish(c, mode: str = "w") -> None:
    """Register this end of ``c`` (``w``: it reads through the wrappers; ``r``: it does not)."""
    if c.key is None:
        return
    _local_conns[c.key] = c
    _control.put_entry("c", c.key, f"{os.getpid()} {mode}")
    if c.remote and _store() is not None:
        _store().register_end(c.key, socket.gethostname(), os.getpid(), mode)


def _withdraw(c) -> None:
    key = c.key
    if key is None:
        return
    if _local_conns.get(key) is c:
        del _local_conns[key]
    _control.drop_entry("c", key, f"{os.getpid()} ")
    if c.remote and _store() is not None:
        _store().unregister_end(key, os.getpid())


def _peer_mode(c) -> str | None:
    """The other end's registration: ``"w"``, ``"r"``, or None (none, or of a dead process)."""
    p = _local_conns.get(c.peer_key)
    if p is not None and not p.ended:
        return "r" if p.detached else "w"
    v = _control.get_entry("c", c.peer_key)
    if v:
        pid, _, mode = v.partition(" ")
        try:
            if _control.pid_alive(int(pid)):
                return mode[:1] or "w"
        except ValueError:
            pass
    if c.remote and _store() is not None:
        for row in _store().lookup_ends(c.peer_key, exact=True):
            return row["mode"][:1] or "w"
    return None


def _intent(ip: str, port: int) -> str:
    pre = f"{_norm(ip)},{port},"
    with _intent_lock:
        _local_intents[pre] = _local_intents.get(pre, 0) + 1
    name = f"{pre}{os.getpid()},{next(_intent_seq)}"
    _control.put_entry("i", name, str(os.getpid()))
    if _remote(ip) and _store() is not None:
        _store().register_end(f"{pre}>{socket.gethostname()},{name[len(pre):]}",
                              socket.gethostname(), os.getpid(), "i")
    return name


def _intent_done(name: str) -> None:
    pre = name.rsplit(",", 2)[0] + ","
    with _intent_lock:
        n = _local_intents.get(pre, 0) - 1
        if n > 0:
            _local_intents[pre] = n
        else:
            _local_intents.pop(pre, None)
    _control.drop_entry("i", name)
    if _remote(pre.split(",")[0]) and _store() is not None:
        _store().unregister_end(f"{pre}>{socket.gethostname()},{name[len(pre):]}", os.getpid())


def _connecting_to(here, remote: bool = False) -> bool:
    """Is a traced client (of this host; with ``remote``, of any host) connecting to
    ``here`` right now?"""
    pre = f"{_norm(here[0])},{here[1]},"
    if _local_intents.get(pre):
        return True
    me = os.getpid()
    for n in _control.entry_names("i", pre):
        try:
            pid = int(n.rsplit(",", 2)[1])
        except (ValueError, IndexError):
            continue
        if pid != me and _control.pid_alive(pid):
            return True
    return remote and _store() is not None and bool(_store().lookup_ends(pre + ">"))


# -- handing a connection to another process -----------------------------------------------
#
# A descriptor that leaves this process (multiprocessing.reduction.DupFd: a socket
# pickled for a child or a Pool worker; sendmsg with SCM_RIGHTS: socket.send_fds,
# multiprocessing's send_handle) takes its connection's framing state with it: the
# state is written to the control directory's ``h/`` under the kernel socket's inode,
# and the process that next sees a socket object of that inode (``_attach``) adopts it.

_STATE = ("out_mode", "out_cid", "out_name", "out_left", "in_mode", "in_hello", "in_left",
          "in_msg", "in_stamp", "in_n", "in_first", "in_name", "in_cid", "accepted",
          "dest_traced", "key", "peer_key", "remote")


def _export(c) -> None:
    """Write ``c``'s state for the process that receives its descriptor; this process
    stops covering it in snapshots (its frames now come from the receiver)."""
    if c.key is None or c.ended:
        return
    st = {k: getattr(c, k) for k in _STATE}
    st["out_pending"] = base64.b64encode(bytes(c.out_pending)).decode()
    st["in_buf"] = base64.b64encode(bytes(c.in_buf)).decode()
    _control.put_file("h", str(c.ino), json.dumps(st).encode())
    ep, c.ep = c.ep, None
    c._fast()
    _framed.discard(c)
    if ep is not None:
        ep.process.remove_out(ep)
    if c.in_cid is not None and c.in_lp is not None and not c.in_eof:
        c.in_lp.remove_in(c.in_cid)
        c.in_lp = None


def _handover_fd(fd) -> None:
    """``fd`` is about to be handed to another process: export its connection's state."""
    try:
        fd = int(fd)
        c = _inos.get(os.fstat(fd).st_ino)
        if c is not None and not c.ended:
            with _HANDOVER_LOCK:
                _export(c)
    except (OSError, TypeError, ValueError):
        pass
    except Exception as exc:
        _fault(exc, "handing a connection over")


_HANDOVER_LOCK = threading.Lock()


def _adopt(sock, ino: int):
    """The Conn handed over with this descriptor by another process, or None."""
    raw = _control.take_file("h", str(ino))
    if raw is None:
        return None
    st = json.loads(raw)
    here, there = sock.getsockname(), sock.getpeername()
    if _end_key(here, there) != st["key"]:
        return None  # an old entry of an inode since reused
    c = Conn(ino, st["out_mode"], st["in_mode"], st["accepted"])
    for k in _STATE:
        setattr(c, k, st[k])
    c.laddr, c.raddr = here, there
    c.out_pending = bytearray(base64.b64decode(st["out_pending"]))
    c.in_buf = base64.b64decode(st["in_buf"])
    lp = _lp()
    if c.out_mode == FRAMED and c.out_cid is not None and lp is not None:
        c.ep = OutEndpoint(lp, c.out_cid, c._flush, True)
        lp.add_out(c.ep)
        _framed.add(c)
    if c.in_mode == FRAMED and c.in_cid is not None and lp is not None:
        c.in_lp = lp
        lp.add_in(c.in_cid, True)
        _framed.add(c)
    if c.out_mode != RAW or c.in_mode != RAW:
        _publish(c)
    c._fast()
    return c


# -- connections ----------------------------------------------------------------------------

class _Gate:
    """Mutual exclusion for one direction of a connection, cheap on the hot path.

    The owner holds the token: the single item of ``tok``. The hot path takes it
    with ``tok.pop()`` (one C call, atomic under the GIL and on free-threaded
    builds, ~6x cheaper than ``Lock.acquire(False)``; measured with callgrind)
    and puts it back with ``tok.append(True)``; finding the list empty, it takes
    the slow path, which uses the gate as a context manager: ``lock`` orders the
    slow-path users, and the one holding it waits for the token (a fast-path
    owner holds it for one call). ``try_acquire`` never waits (the recorder
    thread's tick)."""

    __slots__ = ("tok", "lock")

    def __init__(self):
        self.tok = [True]
        self.lock = threading.Lock()

    def __enter__(self):
        self.lock.acquire()
        tok = self.tok
        delay = 0.00005
        while True:
            try:
                tok.pop()
                return self
            except IndexError:
                time.sleep(delay)
                if delay < 0.005:
                    delay *= 2

    def __exit__(self, *exc):
        self.tok.append(True)
        self.lock.release()

    def try_acquire(self) -> bool:
        if not self.lock.acquire(False):
            return False
        try:
            self.tok.pop()
            return True
        except IndexError:
            self.lock.release()
            return False

    def release(self) -> None:
        self.tok.append(True)
        self.lock.release()


_HELD = contextlib.nullcontext()  # a gate the caller holds already


class _Pass:
    """Pass-through: not an INET stream or datagram socket, or TLS."""

    kind = "pass"
    fast_in = False  # the hot paths' tests (see Conn)
    fast_lp = None

    def attach(self, sock):
        pass

    def release(self, sock):
        pass


PASS = _Pass()


class RawEnds:
    """The unframed channels of one stream connection, one per direction, whose
    sends and receives are recorded with ``lp.unframed``: a TCP connection's raw
    directions (``Conn``) and a TLS connection's plaintext (integrations/tls.py)."""

    transport = "tcp"
    where = "sockets"  # the faults' prefix

    def __init__(self):
        self.laddr = self.raddr = None
        self.raw_out: str | None = None
        self.raw_in: str | None = None
        self.raw_in_lp = None
        self.in_eof = False

    def _end_in(self) -> None:
        """End of the incoming stream: nothing more can arrive on its channel."""
        if self.in_eof:
            return
        self.in_eof = True
        if self.raw_in is not None and self.raw_in_lp is not None:
            self.raw_in_lp.remove_in(self.raw_in)

    def _addrs(self, sock):
        if self.raddr is None:
            try:
                self.laddr = sock.getsockname()
                self.raddr = sock.getpeername()
            except OSError:
                return "?"
        return None

    def endpoint(self, sock, outgoing: bool) -> str:
        self._addrs(sock)
        if self.raddr is None:
            return "?"
        a, b = _fmt(self.laddr), _fmt(self.raddr)
        return f"{a}->{b}" if outgoing else f"{b}->{a}"

    def raw_sent(self, sock, n: int, data) -> None:
        t = _tracer[0]
        lp = _lp()
        if t is None or lp is None or n <= 0:
            return
        try:
            cid = self.raw_out
            if cid is None:
                cid = self.raw_out = t.channel(None, lp.name, None, self.transport,
                                               self.endpoint(sock, True), False)
            lp.unframed("send", cid, n, bytes(data[:n]) if t.capture else None)
        except Exception as exc:
            t.fault(exc, f"{self.where}: recording a raw send")

    def raw_received(self, sock, data, n: int | None = None) -> None:
        t = _tracer[0]
        lp = _lp()
        if t is None or lp is None:
            return
        try:
            if n is None:
                n = len(data)
            if n == 0:
                self._end_in()
                return
            cid = self.raw_in
            if cid is None:
                cid = self.raw_in = t.channel(None, None, lp.name, self.transport,
                                              self.endpoint(sock, False), False)
                self.raw_in_lp = lp
                lp.add_in(cid, fifo=False)
            lp.unframed("recv", cid, n, bytes(data[:n]) if t.capture else None)
        except Exception as exc:
            t.fault(exc, f"{self.where}: recording a raw receive")


class Conn(RawEnds):
    """The framing state of one TCP connection (both directions)."""

    kind = "tcp"
    raw_held = b""  # raw bytes read together with the peer's RAW, beyond what was asked
    # What the hot paths read: slots (tracer/_fast.c reads them at their offsets);
    # the rest lives in the instance's __dict__ (RawEnds has none of its own).
    __slots__ = ("fast_lp", "fast_in", "stok", "rtok", "ep", "out_left", "out_pending",
                 "in_left", "in_buf", "in_cid", "in_name")

    def __init__(self, ino: int, out_mode: int, in_mode: int, accepted: bool = False):
        super().__init__()
        self.ino = ino
        self.out_mode = out_mode
        self.in_mode = in_mode
        self.accepted = accepted
        self.slock = _Gate()  # the out direction's state (and the order of its frames)
        self.rlock = _Gate()  # the in direction's state
        self.stok = self.slock.tok  # the hot paths take these tokens directly
        self.rtok = self.rlock.tok
        # The hot paths' tests, recomputed by _fast() at every change of mode:
        # fast_lp: the logical process whose frames may go out on the fast path
        # (the out direction is framed, its HELLO sent, and it is the current
        # sender); fast_in: the in direction is framed and past its HELLO.
        self.fast_lp = None
        self.fast_in = False
        self.refs: list = []  # weak references to the live socket objects of this connection
        self.nobjs = 0
        self.detached = False
        self.ended = False
        # the registry (see "the connection registry" above)
        self.key: str | None = None  # this end's 4-tuple
        self.peer_key: str | None = None  # the other end's
        self.dest_traced = False  # a client whose destination is a traced listener
        self.remote = False  # the peer is on another host: registered in the store too
        self.probe_until = 0.0  # a non-blocking reader waiting for the rest of a HELLO's magic
        self.raw_echo = False  # the peer's RAW arrived: ours is owed (after the current frame)
        self.raw_sent_ = False  # this end sent a RAW (TLS starts): the peer's comes back
        # out direction
        self.ep: OutEndpoint | None = None
        self.out_cid: str | None = None
        self.out_name: str | None = None
        self.out_pending = bytearray()  # control bytes owed to the stream before anything else
        self.out_left = 0  # payload bytes still owed to the current frame
        # in direction
        self.in_hello = True  # the next frame is a HELLO
        self.in_buf = b""  # an incomplete header or control frame (its rest is in the kernel)
        self.in_left = 0
        self.in_msg = None
        self.in_stamp = 0
        self.in_n = 0
        self.in_first = True
        self.in_name = ""
        self.in_cid: str | None = None
        self.in_lp = None
        # The peer sent bytes that are not frames: the WireError until a receive has
        # raised the reset for it, then True (reads give end of stream). See _bad_frames.
        self.in_err = None
        # A kernel error met after some payload of the same call: raised by the next call.
        self.in_oserr = None

    def __repr__(self):
        return f"<Conn out={self.out_mode} in={self.in_mode} ino={self.ino}>"

    def _fast(self) -> None:
        """Recompute the hot paths' tests (after any change of mode or sender)."""
        ep = self.ep
        self.fast_lp = ep.process if (self.out_mode == FRAMED and ep is not None and
                                      self.out_name == ep.process.name and not self.ended) \
            else None
        self.fast_in = self.in_mode == FRAMED and not self.in_hello and not self.ended and \
            self.in_err is None and self.in_oserr is None

    # -- lifecycle -------------------------------------------------------------

    def attach(self, sock) -> None:
        self.nobjs += 1
        self.refs.append(weakref.ref(sock))

    def release(self, sock) -> None:
        self.nobjs -= 1
        self.refs = [r for r in self.refs if r() is not None and r() is not sock]
        if self.nobjs <= 0 and not self.detached:
            self.end()

    def sock(self):
        for r in self.refs:
            s = r()
            if s is not None and s.fileno() >= 0:
                return s
        return None

    def end(self) -> None:
        """The connection is closed: its channels end."""
        if self.ended:
            return
        self.ended = True
        self.fast_lp = None
        self.fast_in = False
        try:
            _withdraw(self)
        except Exception as exc:
            _fault(exc, "unregistering a connection")
        if _inos.get(self.ino) is self:
            del _inos[self.ino]
        _framed.discard(self)
        _detached.discard(self)
        t = _tracer[0]
        if t is None:
            return
        try:
            if self.ep is not None:
                self.ep.process.remove_out(self.ep)
            self._end_in()
        except Exception as exc:
            _fault(exc, "closing a connection")

    def _end_in(self) -> None:
        if not self.in_eof and self.in_cid is not None and self.in_lp is not None:
            self.in_lp.remove_in(self.in_cid)
        super()._end_in()

    # -- negotiation -----------------------------------------------------------

    def _peer(self, sock) -> str | None:
        """What the registry says of the other end: ``"w"`` (traced, reads through the
        wrappers), ``"r"`` (traced, its descriptor detached), ``"?"`` (a traced client
        connecting to this address has not registered within RESOLVE_WAIT), or None
        (not traced, as far as anyone can know)."""
        if self.peer_key is None:
            try:
                _set_ends(self, sock.getsockname(), sock.getpeername())
            except OSError:
                return None
        m = _peer_mode(self)
        if m is not None:
            return m
        if not self.accepted:
            # The server registers when it accepts, which may not have happened yet;
            # its listener is registered (or not).
            return "w" if self.dest_traced else None
        # A traced client registers an intent before connect() and its entry as soon
        # as connect() returns: while one towards this address is in progress, wait.
        deadline = None
        delay = 0.00002
        while _connecting_to(self.laddr, self.remote):
            m = _peer_mode(self)
            if m is not None:
                return m
            now = _mono()
            if deadline is None:
                deadline = now + RESOLVE_WAIT
            elif now > deadline:
                return "?"
            time.sleep(delay)
            if delay < 0.002:
                delay *= 2
        return _peer_mode(self)

    def decide_out(self, sock) -> None:
        """At the first send of this direction: framed if the other end is registered as
        traced and reading through the wrappers, else raw. Decided once, under slock
        (two threads sending first decide together). Nothing is sent here: the HELLO
        goes out in front of the first frame, in the same syscall."""
        with self.slock:
            if self.out_mode != UNDECIDED:
                return
            try:
                m = self._peer(sock)
            except Exception as exc:
                _fault(exc, "looking up a peer")
                m = None
            self.out_mode = HELLO_PENDING if m == "w" else RAW
            self._fast()

    def decide_in(self, sock, flags: int) -> None:
        """At the first receive of this direction (of a connection to or from a traced
        listener): the first bytes say (a HELLO: framed; anything else: raw). The
        registry is not asked first: the other end may have sent everything and closed
        (and withdrawn its entry) before this end reads. Under rlock, decided once: a
        second reader that peeked after the first had consumed the HELLO would see
        frames and call them raw."""
        with self.rlock:
            if self.in_mode == UNDECIDED:
                self._probe(sock, flags)

    def _probe(self, sock, flags: int) -> None:
        """Peek at the head of the stream, blocking as the caller's receive would (its
        timeout, its non-blocking mode) for the first byte: a HELLO or not."""
        nonblock = sock.gettimeout() == 0.0 or bool(flags & _DONTWAIT)
        head = _recv(sock, 16, _PEEK | (flags & _DONTWAIT))  # may raise, as the call would
        if head and len(head) < 16 and _MAGIC.startswith(head) and self._peer(sock) is not None:
            # The start of a HELLO's magic from a traced end (a HELLO leaves in one syscall
            # with its frame: its rest is on the way), or raw bytes that look like it.
            if nonblock:
                now = _mono()
                if not self.probe_until:
                    self.probe_until = now + PREFIX_WAIT
                if now < self.probe_until:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            else:
                deadline = _mono() + PREFIX_WAIT
                while len(head) < 16 and _MAGIC.startswith(head) and _mono() < deadline:
                    time.sleep(0.001)
                    try:
                        head = _recv(sock, 16, _PEEK | _DONTWAIT)
                    except BlockingIOError:
                        pass
                    except OSError:
                        break
        self.in_mode = FRAMED if head == _MAGIC else RAW
        if self.in_mode == FRAMED:
            _framed.add(self)
        self._fast()

    # -- sending (framed) -------------------------------------------------------

    def _open_out(self, sock, lp) -> None:
        """First framed send: the HELLO, the channel, the endpoint for markers."""
        t = _tracer[0]
        cid = self.out_cid = t.new_channel_id()
        t.channel(cid, lp.name, None, "tcp", self.endpoint(sock, True), True)
        self.out_pending += wire.hello(cid, lp.name)
        self.out_name = lp.name
        self.out_mode = FRAMED
        _framed.add(self)
        ep = OutEndpoint(lp, cid, self._flush, True)
        self.ep = ep
        self._fast()
        lp.add_out(ep)

    def _begin_frame(self, sock, n: int, data) -> None:
        """Record the send and queue its header (and markers due before it). Under slock."""
        lp = _lp()
        t = _tracer[0]
        try:
            if self.out_mode == HELLO_PENDING:
                self._open_out(sock, lp)
            payload = bytes(data[:n]) if (t.capture or lp.snaps) else None
            ep = self.ep
            if self.out_name != lp.name:  # another logical process sends on this connection
                self.out_pending += wire.as_frame(lp.name)
                self.out_name = lp.name
                self._fast()
            if ep is not None and lp is ep.process:
                seq, lam, markers = lp.send(ep, n, payload)
            else:
                seq, lam, markers = lp.send(None, n, payload, channel=self.out_cid)
            if markers:
                for m in markers:
                    self.out_pending += wire.marker(m.snapshot, m.initiator)
        except Exception as exc:  # recording failed: the frame still goes out, unstamped
            _fault(exc, "recording a send")
            seq = lam = 0
        self.out_pending += _HDR.pack(_DATA, n, seq, lam)
        self.out_left = n

    def _markers_after(self) -> None:
        ep = self.ep
        if ep is not None and ep.pending and not self.out_left:
            for m in ep.take_markers():
                self.out_pending += wire.marker(m.snapshot, m.initiator)

    def send_framed(self, sock, data, flags: int, whole: bool, anc=()) -> int:
        """Send ``data`` framed (``whole``: sendall). Returns the payload bytes accepted.

        A partial send keeps the rest of the frame owed: the control bytes in
        ``out_pending``, the payload count in ``out_left``; the application's next
        bytes continue that frame before anything else. A timeout or a full buffer
        after some payload went out ends the call with the count sent (``send``); before
        any, it raises as the plain call does. ``anc``: sendmsg's ancillary data, given
        to the kernel with the call's first syscall.
        """
        try:
            timeout = sock.gettimeout()
            mv = data if isinstance(data, bytes) else memoryview(data).cast("B")
            total = len(mv)
            if not total:
                return _send(sock, b"", flags)
            nonblock = timeout == 0.0 or bool(flags & _DONTWAIT)
            deadline = None if (timeout is None or nonblock) else _mono() + timeout
            use_sendall = whole and timeout is None and not nonblock
            sent = 0
            first = True
            with self.slock:
                if self.out_mode == UNFRAMING or self.out_mode == RAW:
                    return self._send_unframing(sock, mv, flags, whole, nonblock, deadline,
                                                use_sendall)
                while True:
                    if not self.out_left:
                        if sent >= total:
                            break
                        self._begin_frame(sock, min(total - sent, wire.MAX_PAYLOAD), mv[sent:])
                    take = min(total - sent, self.out_left)
                    pend = self.out_pending
                    np_ = len(pend)
                    if np_:
                        buf = bytes(pend) + mv[sent:sent + take]
                    elif sent == 0 and take == total:
                        buf = mv
                    else:
                        buf = mv[sent:sent + take]
                    try:
                        if not first and deadline is not None:
                            _wait(sock, True, deadline)
                        first = False
                        if use_sendall:
                            _sendall(sock, buf, flags)
                            n = len(buf)
                        elif anc:
                            n = _ss.sendmsg(sock, [buf], anc, flags)
                            anc = ()
                        else:
                            n = _send(sock, buf, flags)
                    except (BlockingIOError, InterruptedError):
                        if sent and not whole:
                            break
                        raise  # sendall: as the plain call, which cannot say how much went
                    except TimeoutError:
                        if sent and not whole:
                            break
                        raise
                    if n <= np_:
                        del pend[:n]
                    else:
                        if np_:
                            pend.clear()
                        k = n - np_
                        sent += k
                        self.out_left -= k
                        if not self.out_left:
                            self._markers_after()
                    if sent >= total:
                        break
                    if nonblock and sent and not whole:
                        break
                if self.out_pending and not self.out_left:
                    try:
                        self._push(sock, block=not nonblock, deadline=deadline)
                    except (OSError, TimeoutError):
                        pass  # owed control bytes stay pending; the next send writes them first
            return sent
        except BaseException:
            # The traceback keeps this frame: no view of the caller's buffer may stay in
            # it (a bytearray with an export cannot be resized: asyncio clears its write
            # buffer after a failed send).
            mv = buf = None  # noqa: F841
            raise

    def _push(self, sock, block: bool = False, deadline=None) -> None:
        """Write the control bytes owed (markers after a frame). Under slock."""
        pend = self.out_pending
        while pend and not self.out_left:
            try:
                if block:
                    _wait(sock, True, deadline)
                    n = _send(sock, bytes(pend))
                elif sock.gettimeout() in (None, 0.0) or _ready(sock, True):
                    # (with a timeout, CPython waits for the socket before it sends,
                    # MSG_DONTWAIT or not: ask first; without one, the send says)
                    n = _send(sock, bytes(pend), _DONTWAIT)
                else:
                    return
            except (BlockingIOError, InterruptedError):
                return
            del pend[:n]
        if not pend and self.out_mode == UNFRAMING:
            self.out_mode = RAW

    def _send_unframing(self, sock, mv, flags: int, whole: bool, nonblock: bool, deadline,
                        use_sendall: bool):
        """A send on a direction that has stopped framing (TLS): the control bytes still
        owed (the RAW frame) go first, in the same syscall, then the bytes go raw and are
        recorded as such. Under slock. Returns the application's bytes accepted (sendall:
        None when they all went)."""
        pend = self.out_pending
        total = len(mv)
        sent = 0
        first = True
        while True:
            np_ = len(pend)
            buf = bytes(pend) + bytes(mv[sent:]) if np_ else mv[sent:]
            if not first and deadline is not None:
                _wait(sock, True, deadline)
            first = False
            try:
                if use_sendall:
                    _sendall(sock, buf, flags)
                    n = len(buf)
                else:
                    n = _send(sock, buf, flags)
            except (BlockingIOError, InterruptedError, TimeoutError):
                if sent and not whole:
                    break
                raise
            if n <= np_:
                del pend[:n]
            else:
                pend.clear()
                sent += n - np_
            if sent >= total or (sent and not whole):
                break
        if not pend and self.out_mode == UNFRAMING:
            self.out_mode = RAW
        self.raw_sent(sock, sent, mv)
        return sent

    def sendfile(self, sock, out_fd: int, in_fd: int, offset, count: int, real) -> int:
        """``os.sendfile(out_fd, in_fd, offset, count)`` on this framed direction: the
        bytes are read from ``in_fd`` (``os.pread``, at ``offset``, or at its position when
        ``offset`` is None, which then moves by what was sent) and sent framed, one frame per
        chunk read. ``out_fd``'s own blocking mode decides, as it does for the real call: a
        blocking descriptor sends everything (to the file's end), a non-blocking one what
        the kernel takes now, ``BlockingIOError`` if nothing. Returns the bytes sent."""
        nonblock = not os.get_blocking(out_fd)
        pos = offset
        if offset is None:
            try:
                pos = os.lseek(in_fd, 0, os.SEEK_CUR)
            except OSError:
                raise _PassRaw from None  # not a file: the real call fails on it
        if nonblock and sock.gettimeout() and not _ready(sock, True):
            # (a socket with a timeout would wait in send; the descriptor does not)
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        total = 0
        while total < count:
            try:
                data = os.pread(in_fd, min(count - total, _SENDFILE_CHUNK), pos + total)
            except OSError:
                if total:
                    break
                raise _PassRaw from None  # (ESPIPE, EBADF...: the real call's error)
            if not data:
                break  # the end of the file
            try:
                n = self.send_framed(sock, data, _DONTWAIT if nonblock else 0, not nonblock)
            except (BlockingIOError, InterruptedError, TimeoutError):
                if total:
                    break
                raise
            except OSError:
                if total:
                    break  # what went is counted; the next call meets the error again
                raise
            total += n
            if nonblock or n < len(data):
                break
        if offset is None and total:
            os.lseek(in_fd, pos + total, os.SEEK_SET)
        return total

    def _flush(self, ep) -> None:
        """Write the markers queued on an idle outgoing direction (never blocks)."""
        if not self.slock.try_acquire():
            return  # a sender holds it: it writes the markers after its frame
        try:
            if self.out_left or self.ended:
                return  # mid-frame: the application's next send completes it, then the markers
            sock = self.sock()
            if sock is None:
                return
            self._markers_after()
            self._push(sock)
        finally:
            self.slock.release()

    def raw_if_tls(self, sock, data) -> None:
        """TLS starting on this direction, seen from its first record: asyncio's TLS (a
        memory BIO whose records go out through ``send``), which cutscope cannot see as
        ``ssl.SSLSocket``. No frame can travel inside TLS, and the peer may read the
        TLS in C (``ssl`` over its socket), so the direction stops framing:

        * a first write that is a TLS record (``0x16 0x03 0x00``-``0x04``) keeps a
          direction that owes its HELLO raw, HELLO unsent;
        * a framed direction whose next write, at a frame boundary, is a ClientHello or
          ServerHello record ends its frames with a RAW frame in front of it (in the
          same syscall). A ClientHello always: the peer, a TLS server, reads first and
          takes it (through the wrappers, or ``go_tls`` before its C code). A
          ServerHello unless the peer reads in C (registered ``r``): a TLS client in C
          that expects a RAW sent its own first, and this end answered it already.

        A non-TLS protocol whose bytes look the same is left unframed from there on
        (recorded, not stamped)."""
        if type(data) is bytes or type(data) is bytearray:
            if not data or data[0] != 0x16:
                return  # (the common case: one index, no copy)
            head = bytes(data[:6])
        else:
            try:
                head = bytes(memoryview(data).cast("B")[:6])
            except (TypeError, ValueError):
                return
        if len(head) < 3 or head[0] != 0x16 or head[1] != 3 or head[2] > 4:
            return
        with self.slock:
            if self.out_left:
                return  # the rest of a frame
            if self.out_mode == HELLO_PENDING and not self.out_pending:
                self.out_mode = RAW
                self._fast()
            elif self.out_mode == FRAMED and len(head) == 6 and head[5] in (1, 2):
                self._unframe(head[5] == 1 or self._peer_wrapped())

    def _peer_wrapped(self) -> bool:
        """Does the peer read through the wrappers (not registered ``r``, read in C)?"""
        try:
            return _peer_mode(self) != "r"
        except Exception as exc:
            _fault(exc, "looking up a peer")
            return True

    def _unframe(self, announce: bool) -> None:
        """This direction's frames end (TLS starts): with a RAW frame (``announce``) in
        front of the next bytes, or silently. Its channel ends. Under slock."""
        ep, self.ep = self.ep, None
        if announce:
            self.out_pending += wire.RAW_FRAME
            self.out_mode = UNFRAMING
            self.raw_sent_ = True
        else:
            self.out_pending.clear()  # (markers not sent: no frame may follow)
            self.out_mode = RAW
        self._fast()
        if ep is not None:
            ep.process.remove_out(ep)

    def go_tls(self, sock, server_side: bool) -> None:
        """TLS starts here, read and written in C (``ssl.SSLSocket`` on this descriptor).

        A TLS server's handshake reads first: it waits here for the client's first
        bytes, as the handshake would, taking the frames before them up to the
        client's RAW (markers recorded). Then a framed outgoing direction ends with a
        RAW, sent now, before the C code writes: a client's always (its peer, a TLS
        server, reads first and takes it); a server's if the client sent one (it
        awaits the answer) or reads through the wrappers (not registered ``r``; a
        client in C registers before its first TLS byte, so the wait settles it).
        Then a client that sent a RAW takes the frames up to the server's answer; a
        client that sent none expects none. Non-blocking: ``SSLWantWriteError``/
        ``SSLWantReadError`` until done, as the handshake itself."""
        import ssl

        timeout = sock.gettimeout()
        nonblock = timeout == 0.0
        deadline = None if not timeout else _mono() + timeout
        if server_side:
            with self.rlock:
                if self.in_mode == FRAMED:
                    self._read_to_raw(sock, nonblock, deadline, True)  # (answers a RAW)
                elif self.out_mode == FRAMED:
                    if nonblock:
                        if not _ready(sock, False):
                            raise _want(ssl, False)
                    elif deadline is None:
                        _ready(sock, False, -0.001)  # (poll with no timeout)
                    else:
                        _ready(sock, False, max(0.0, deadline - _mono()))
        with self.slock:
            m = self.out_mode
            if m == FRAMED and not self.out_left:
                self._unframe(not server_side or self._peer_wrapped())
            elif m != RAW and m != UNFRAMING:
                if m == FRAMED:
                    _fault(RuntimeError("TLS starts in the middle of a frame"), "TLS")
                self.out_pending.clear()
                self.out_mode = RAW
                self._fast()
            pend = self.out_pending
            while pend:
                try:
                    n = _send(sock, bytes(pend), _DONTWAIT if nonblock else 0)
                except (BlockingIOError, InterruptedError):
                    raise _want(ssl, True)
                del pend[:n]
            if self.out_mode == UNFRAMING:
                self.out_mode = RAW
        with self.rlock:
            if self.in_mode == FRAMED:
                # A client that sent a RAW gets one back; one that sent none, none.
                wait = self.raw_sent_ and not server_side
                self._read_to_raw(sock, nonblock or not wait, deadline, wait)
            if self.in_mode != RAW:
                self.in_mode = RAW
                if self.in_cid is not None and self.in_lp is not None:
                    self.in_lp.remove_in(self.in_cid)
                    self.in_lp = None
                self._fast()

    def _read_to_raw(self, sock, nonblock: bool, deadline, wait: bool) -> None:
        """Consume the frames at the head of the incoming direction up to and with the
        peer's RAW (markers recorded), never a byte past it. Stops at anything else
        (a DATA frame the application has not read, raw bytes): the C code reads those.
        Under rlock."""
        import ssl

        while self.in_mode == FRAMED:
            try:
                if nonblock:
                    if sock.gettimeout() and not _ready(sock, False):
                        # (with a timeout, CPython waits before it reads, MSG_DONTWAIT or not)
                        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                    head = _recv(sock, 4096, _PEEK | _DONTWAIT)
                else:
                    if deadline is not None and not _ready(
                            sock, False, max(0.0, deadline - _mono())):
                        return  # the handshake's own timeout will say
                    head = _recv(sock, 4096, _PEEK)
            except (BlockingIOError, InterruptedError):
                if not wait:
                    return
                raise _want(ssl, False)
            except OSError:
                return  # the C code meets the error
            if not head:
                return
            buf = self.in_buf + head
            pos = 0
            while pos < len(buf):
                if self.in_hello and pos == 0:
                    h = wire.parse_hello(buf, 0)
                    if h is None:
                        break
                    pos = h[2]
                    continue
                if buf[pos] not in (wire.MARKER, wire.AS, wire.RAW):
                    break
                try:
                    c = wire.parse_control(buf, pos)
                except wire.WireError:
                    break
                if c is None:
                    break
                pos = c[2]
                if c[0] == wire.RAW:
                    break
            take = pos - len(self.in_buf)
            if take > 0:
                got = _recv(sock, take)
                recs = []
                self._feed(self.in_buf + got, recs)
                self._apply(sock, recs)
                continue
            if pos < len(buf) or not wait:
                return  # not a frame this end may take: the C code reads it
            # an incomplete control frame: its rest is on the way
            if nonblock:
                raise _want(ssl, False)
            if deadline is not None and _mono() > deadline:
                return
            time.sleep(0.001)

    def _peer_unframed(self, sock) -> None:
        """The peer's RAW arrived: this end's frames end too, with a RAW of its own if its
        direction is framed (the peer may be waiting for it before its C code reads),
        written now without blocking (the rest by the tick); silently if it owes its
        HELLO or is undecided. Waits for no sender: if one holds the direction, the
        tick does it (``raw_echo``)."""
        if not self.slock.try_acquire():
            self.raw_echo = True
            return
        try:
            self.raw_echo = False
            m = self.out_mode
            if m == FRAMED:
                if self.out_left:
                    self.raw_echo = True  # after the current frame (the tick looks again)
                    return
                self._unframe(not self.raw_sent_)
                if self.out_pending:
                    self._push(sock)
            elif m == HELLO_PENDING or m == UNDECIDED:
                self.out_mode = RAW
                self._fast()
        finally:
            self.slock.release()

    # -- receiving (framed) ------------------------------------------------------

    def _feed(self, buf, recs: list) -> list:
        """Parse ``buf`` (held bytes + new bytes): payload pieces out, events into ``recs``.
        Bytes that are not frames stop the parse: the pieces before them come out, and
        ``in_err`` is set (the caller fails the connection, see ``_bad_frames``)."""
        pos = 0
        end = len(buf)
        out = []
        left = self.in_left
        if left:
            take = left if left < end else end
            out.append(buf[:take])
            pos = take
            left -= take
            if not self.in_first:
                self.in_first = True
                recs.append((1, self.in_msg, self.in_stamp, self.in_n, buf[:take]))
        try:
            while pos < end:
                if self.in_hello:
                    h = wire.parse_hello(buf, pos)
                    if h is None:
                        break
                    cid, name, pos = h
                    self.in_hello = False
                    self._fast()
                    recs.append((3, cid, name))
                    self.in_name = name
                    continue
                t = buf[pos]
                if t == _DATA:
                    if end - pos < _HDR_SIZE:
                        break
                    _, n, seq, lam = _HDR.unpack_from(buf, pos)
                    pos += _HDR_SIZE
                    self.in_msg = f"{self.in_name}#{seq}" if seq else None
                    self.in_stamp = lam
                    self.in_n = n
                    left = n
                    take = end - pos
                    if take > n:
                        take = n
                    if take:
                        piece = buf[pos:pos + take]
                        out.append(piece)
                        pos += take
                        left -= take
                        self.in_first = True
                        recs.append((1, self.in_msg, lam, n, piece))
                    else:
                        self.in_first = False
                else:
                    c = wire.parse_control(buf, pos)
                    if c is None:
                        break
                    kind, val, pos = c
                    if kind == wire.MARKER:
                        recs.append((2, val[0], val[1]))
                    elif kind == wire.RAW:
                        # The last frame: the rest is raw (TLS), delivered and recorded
                        # as such.
                        self.in_mode = RAW
                        self._fast()
                        recs.append((4,))
                        if pos < end:
                            piece = buf[pos:]
                            out.append(piece)
                            recs.append((5, piece))
                            pos = end
                        break
                    else:
                        self.in_name = val
        except wire.WireError as exc:
            self.in_err = exc
            self._fast()
            left = 0
            pos = end
        self.in_left = left
        self.in_buf = bytes(buf[pos:]) if pos < end else b""
        return out

    def _need(self) -> int:
        """Bytes still missing from the held (incomplete) control frame: a lower bound."""
        h = self.in_buf
        k = len(h)
        if not k:
            return 0
        try:
            if self.in_hello:
                if k < 18:
                    return 18 - k
                clen = h[17]
                if k < 20 + clen:
                    return 20 + clen - k
                return max(0, 20 + clen + int.from_bytes(h[18 + clen:20 + clen], "big") - k)
            t = h[0]
            if t == _DATA:
                return _HDR_SIZE - k
            if t == wire.MARKER:
                return 11 - k if k < 11 else max(0, 11 + int.from_bytes(h[9:11], "big") - k)
            if t == wire.AS:
                return 3 - k if k < 3 else max(0, 3 + int.from_bytes(h[1:3], "big") - k)
            if t == wire.RAW:
                return 0
        except IndexError:
            return 1
        return 1

    def _apply(self, sock, recs: list) -> None:
        """Record what ``_feed`` found, in stream order; a first marker found behind data
        records the state first (nothing of this call is delivered yet: a safe point)."""
        lp = _lp()
        t = _tracer[0]
        try:
            if len(recs) > 1:
                seen_data = False
                for r in recs:
                    if r[0] == 1:
                        seen_data = True
                    elif r[0] == 2 and seen_data:
                        sid = r[1]
                        if sid not in lp.snaps and sid not in t.finished_snaps.get(lp.name, ()):
                            lp.record(sid, r[2])
            for r in recs:
                k = r[0]
                if k == 1:
                    _, msg, stamp, n, piece = r
                    lp.recv(self.in_cid, msg, stamp, n,
                            bytes(piece) if (t.capture or lp.snaps) else None)
                elif k == 2:
                    lp.marker(self.in_cid, r[1], r[2])
                elif k == 4:  # RAW: the framed channel ends here
                    if self.in_cid is not None and self.in_lp is not None:
                        self.in_lp.remove_in(self.in_cid)
                        self.in_lp = None
                elif k == 5:  # raw bytes after a RAW
                    self.raw_received(sock, r[1])
                else:
                    _, cid, name = r
                    self.in_cid = cid
                    self.in_lp = lp
                    lp.add_in(cid, True)
                    t.channel(cid, None, lp.name, "tcp", self.endpoint(sock, False), True)
        except Exception as exc:
            _fault(exc, "recording a receive")
        if self.in_mode == RAW and recs and recs[-1][0] >= 4:
            try:
                self._peer_unframed(sock)
            except Exception as exc:
                _fault(exc, "ending the frames after the peer's RAW")

    def _bad_frames(self, sock) -> None:
        """The peer sent bytes that are not frames (``in_err``): the connection fails as
        a reset one does. Its reading side is shut down (select and the event loops see
        it readable; the next receive raises the reset, see ``_after_reset``), the
        incoming channel ends, and a fault is recorded (the peer's: never raised, strict
        mode or not)."""
        exc = self.in_err
        self.in_left = 0
        self.in_buf = b""
        self._fast()
        _framed.discard(self)
        try:
            _ss.shutdown(sock, socket.SHUT_RD)
        except OSError:
            pass
        t = _tracer[0]
        if t is not None:
            try:
                t.fault(exc, f"sockets: bytes that are not frames from the peer of "
                        f"{self.endpoint(sock, False)}; connection reset", peer=True)
            except Exception:
                pass
            try:
                self._end_in()
            except Exception as e:
                _fault(e, "closing a connection")

    def _after_reset(self, sock) -> bytes:
        """A receive on a connection failed by ``_bad_frames``: the first raises
        ConnectionResetError and shuts the writing side down too (sends fail with EPIPE
        from then on), the later ones read end of stream: as on a reset socket."""
        if self.in_err is True:
            return b""
        self.in_err = True
        try:
            _ss.shutdown(sock, socket.SHUT_WR)
        except OSError:
            pass
        raise ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))

    def recv_framed(self, sock, bufsize: int, flags: int, pre: bytes | None = None,
                    owned: bool = False, anc: list | None = None) -> bytes:
        """Receive on a framed direction. ``pre``: bytes that recv's hot path read already,
        ``owned``: its caller holds rlock's token (the hot path: between its read and this
        call no other reader may touch the stream, or it would take a header's rest for
        a frame's start). ``anc``: ``[ancbufsize, items, msg_flags]`` to read with
        ``recvmsg`` and collect the kernel's ancillary data and flags (recvmsg on TCP).
        ``bufsize`` and ``flags`` are the caller's, already checked (ints, bufsize >= 0).

        A read that filled its request (the kernel may hold more) but brought fewer
        payload bytes than asked, because control bytes took part of it, reads on
        without waiting: the application gets what an untraced receive would.

        Events are recorded when the call is about to return (``pend``), in stream
        order, so that a first marker that a later read of the same call brings is
        recorded before the data the call delivers (see ``_apply``); a read that brought
        only control bytes records them at once (nothing of the call is delivered yet)."""
        if self.in_err is not None:
            return self._after_reset(sock)
        if self.in_oserr is not None:
            exc, self.in_oserr = self.in_oserr, None
            self._fast()
            raise exc
        if bufsize <= 0:
            return b""
        if self.in_mode == RAW and self.raw_held:
            return self.take_held(bufsize, flags)
        timeout = sock.gettimeout()
        nonblock = timeout == 0.0 or bool(flags & _DONTWAIT)
        deadline = None if (timeout is None or nonblock) else _mono() + timeout
        rflags = flags & ~(_WAITALL | _TRUNC)
        waitall = bool(flags & _WAITALL) and not nonblock
        got = []
        ngot = 0
        first = True
        more = False  # the last read filled its request: the kernel may hold more
        pend = []  # what this call found and has not recorded yet
        eof = False
        with _HELD if owned else self.rlock:
            while True:
                want = bufsize - ngot
                left = self.in_left
                held = len(self.in_buf)
                step = False
                if left >= want:
                    n = want
                elif left and want == self.in_n:
                    # The reader takes frame-sized reads and is mid-frame (its first
                    # read also took a HELLO): finish this frame only, and the next
                    # read starts at a frame's start, where recv's hot path serves it.
                    n = left
                    step = True
                else:
                    n = want + _HDR_SIZE - held
                if held:
                    need = self._need()
                    if n < need:
                        n = need
                if n < 1:
                    n = 1
                if pre is not None:  # read by recv's hot path already (the same first syscall)
                    data, pre = pre, None
                    held = 0
                    left = 0
                    first = False
                    more = len(data) >= bufsize + _HDR_SIZE
                else:
                    rf = rflags
                    if more and ngot:
                        # Topping up: only what is there already. (With a timeout, CPython
                        # waits for readability before the syscall, MSG_DONTWAIT or not.)
                        if timeout and not _ready(sock, False):
                            break
                        rf |= _DONTWAIT
                    elif not first and deadline is not None:
                        try:
                            _wait(sock, False, deadline)
                        except TimeoutError:
                            if ngot:
                                break
                            raise
                    first = False
                    try:
                        if anc is None:
                            data = _recv(sock, n, rf)
                        else:
                            data, items, mflags, _ = _ss.recvmsg(sock, n, anc[0], rf)
                            if items:
                                anc[1].extend(items)
                            anc[2] |= mflags
                    except OSError as exc:
                        if ngot:
                            # The payload read so far; the next call meets the error (the
                            # kernel reports a reset once: it is kept for that call).
                            if not isinstance(exc, (BlockingIOError, InterruptedError,
                                                    TimeoutError)):
                                self.in_oserr = exc
                                self._fast()
                            break
                        raise
                    more = len(data) >= n and not step
                if not data:
                    eof = True
                    break
                if held:
                    data = self.in_buf + data
                if not left and not held and not self.in_hello and data[0] == _DATA and \
                        len(data) >= _HDR_SIZE:
                    # The common case: one whole frame (or its start).
                    _, fn, seq, lam = _HDR.unpack_from(data, 0)
                    if len(data) - _HDR_SIZE <= fn:
                        piece = data[_HDR_SIZE:]
                        k = len(piece)
                        self.in_msg = msg = f"{self.in_name}#{seq}" if seq else None
                        self.in_stamp = lam
                        self.in_n = fn
                        self.in_left = fn - k
                        if k:
                            self.in_first = True
                            pend.append((1, msg, lam, fn, piece))
                            got.append(piece)
                            ngot += k
                        else:
                            self.in_first = False
                        if ngot >= bufsize or (ngot and not waitall and not more):
                            break
                        continue
                pieces = self._feed(data, pend)
                for p in pieces:
                    got.append(p)
                    ngot += len(p)
                if self.in_err is not None:
                    if pend:
                        self._apply(sock, pend)
                        pend = []
                    self._bad_frames(sock)
                    if ngot:
                        break  # what came before the bad bytes; the next receive fails
                    return self._after_reset(sock)
                if self.in_mode == RAW:  # after the peer's RAW: raw from here
                    if pend:
                        self._apply(sock, pend)  # (with the RAW: this end's own RAW goes)
                        pend = []
                    if not ngot:
                        if anc is None:
                            data = _recv(sock, bufsize, rflags)  # (raises as the plain call)
                        else:
                            data, items, mflags, _ = _ss.recvmsg(sock, bufsize, anc[0], rflags)
                            if items:
                                anc[1].extend(items)
                            anc[2] |= mflags
                        self.raw_received(sock, data)
                        return data
                    if ngot > bufsize:
                        # Raw bytes read with the RAW beyond what was asked: the next
                        # receive takes them first.
                        whole = b"".join(got)
                        got = [whole[:bufsize]]
                        self.raw_held = bytes(whole[bufsize:])
                    break
                if ngot >= bufsize or (ngot and not waitall and not more):
                    break
                if not ngot and pend:
                    self._apply(sock, pend)
                    pend = []
                # Only control bytes (a marker, a HELLO, part of a header): as if nothing
                # had arrived. A blocking socket reads on; a non-blocking one reads again
                # and gets BlockingIOError from the kernel when nothing more is there.
            if pend:
                self._apply(sock, pend)
            if eof:
                self._end_in()
        if not got:
            return b""
        r = got[0] if len(got) == 1 else b"".join(got)
        return r if isinstance(r, bytes) else bytes(r)

    def peek_framed(self, sock, bufsize: int, flags: int) -> bytes:
        """MSG_PEEK on a framed direction: payload bytes only, nothing recorded."""
        if self.in_err is not None:
            return b""  # a reset socket peeks end of stream (the reset is a receive's)
        timeout = sock.gettimeout()
        nonblock = timeout == 0.0 or bool(flags & _DONTWAIT)
        deadline = None if (timeout is None or nonblock) else _mono() + timeout
        with self.rlock:
            while True:
                if self.in_mode == RAW:  # past the peer's RAW
                    if self.raw_held:
                        return self.raw_held[:bufsize]
                    return _recv(sock, bufsize, flags)
                if self.in_left:
                    return _recv(sock, min(bufsize, self.in_left), flags)
                held = self.in_buf
                data = _recv(sock, bufsize + 2 * _HDR_SIZE + 512, flags)
                if not data:
                    return b""
                buf = held + data
                out = []
                try:
                    ctrl_end = self._peek_parse(buf, bufsize, out)
                except wire.WireError as exc:
                    if out:
                        return b"".join(out)  # what comes before the bad bytes
                    # Bad bytes at the head: consume what is held and fail as a receive would.
                    self.in_err = exc
                    self._bad_frames(sock)
                    return self._after_reset(sock)
                if out:
                    return b"".join(out)
                if ctrl_end > len(held):
                    # Markers (or the HELLO) at the head: consume them, as a receive would.
                    raw = _recv(sock, ctrl_end - len(held), flags & ~_PEEK)
                    recs = []
                    self._feed(held + raw, recs)
                    self._apply(sock, recs)
                    continue
                if nonblock:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                if deadline is not None and _mono() > deadline:
                    raise _timeout_error()
                time.sleep(0.001)  # part of a header: its rest is on the way

    def _peek_parse(self, buf, bufsize: int, out: list) -> int:
        """Parse ``buf`` without touching the state: payload pieces (at most ``bufsize``
        bytes) into ``out``; returns the end of the control frames at its head. Raises
        WireError on bytes that are not frames."""
        pos = 0
        nout = 0
        hello = self.in_hello
        ctrl_end = 0
        while pos < len(buf) and nout < bufsize:
            if hello:
                h = wire.parse_hello(buf, pos)
                if h is None:
                    break
                pos = h[2]
                hello = False
            elif buf[pos] == _DATA:
                if len(buf) - pos < _HDR_SIZE:
                    break
                _, n, _s, _l = _HDR.unpack_from(buf, pos)
                pos += _HDR_SIZE
                take = min(n, len(buf) - pos, bufsize - nout)
                out.append(buf[pos:pos + take])
                nout += take
                pos += take
                if take < n:
                    break
                continue
            else:
                c = wire.parse_control(buf, pos)
                if c is None:
                    break
                pos = c[2]
                if c[0] == wire.RAW:  # the last frame: raw bytes after it
                    if not out:
                        ctrl_end = pos
                    break
            if not out:
                ctrl_end = pos
        return ctrl_end

    def take_held(self, bufsize: int, flags: int) -> bytes:
        """A receive on a raw direction that holds bytes read with the peer's RAW."""
        held = self.raw_held
        out = held[:bufsize]
        if not flags & _PEEK:
            self.raw_held = held[bufsize:]  # (recorded when they were read)
        return out

    def idle_markers(self) -> None:
        """SPEC 5: once its process has recorded, a marker at the head of an idle incoming
        channel (no application data before it) is consumed here so the snapshot completes."""
        lp = self.in_lp
        cid = self.in_cid
        if lp is None or cid is None or not lp.snaps or self.in_eof:
            return
        if not any(cid not in s.closed for s in list(lp.snaps.values())):
            return
        if not self.rlock.try_acquire():
            return
        try:
            if self.in_left or self.in_buf or self.in_hello:
                return
            sock = self.sock()
            if sock is None or not _ready(sock, False):
                return
            try:
                head = _recv(sock, 4096, _PEEK | _DONTWAIT)
            except OSError:
                return
            pos = 0
            sids = []
            while pos < len(head) and head[pos] == wire.MARKER:
                try:
                    c = wire.parse_control(head, pos)
                except wire.WireError:
                    break  # not a marker: the application's next receive fails the connection
                if c is None:
                    break
                sid = c[1][0]
                if sid not in lp.snaps:  # not recorded here yet: needs a safe point
                    break
                sids.append(c[1])
                pos = c[2]
            if not pos:
                return
            got = _recv(sock, pos, _DONTWAIT)
            if len(got) != pos:  # cannot happen (the bytes were there); never lose them
                raise RuntimeError("idle marker consumption read a short count")
            for sid, initiator in sids:
                lp.marker(cid, sid, initiator)
        finally:
            self.rlock.release()


class UdpConn:
    """Per-socket UDP state: channel ids per destination and per source."""

    kind = "udp"
    fast_in = False  # the hot paths' tests (see Conn)
    fast_lp = None

    def __init__(self):
        self.out: dict = {}  # destination -> channel id (enveloped)
        self.raw_out: dict = {}
        self.raw_in: dict = {}
        self.seen_in: set = set()
        self.peer = None  # connected UDP socket's peer

    def attach(self, sock):
        pass

    def release(self, sock):
        pass

    def sendto(self, sock, data, flags, address, call):
        t = _tracer[0]
        lp = _lp()
        try:
            ip = _resolve(address[0]) if isinstance(address, tuple) else None
            traced = ip is not None and ((ip, address[1]) in _learned or
                                         _traced_peer("udp", ip, address[1]))
        except Exception as exc:
            _fault(exc, "looking up a UDP peer")
            traced = False
        if not traced:
            n = call(data)
            try:
                key = (ip, address[1]) if isinstance(address, tuple) else address
                cid = self.raw_out.get(key)
                if cid is None:
                    cid = self.raw_out[key] = t.channel(None, lp.name, None, "udp",
                                                        self._ep(sock, address, True), False, False)
                lp.unframed("send", cid, n, bytes(data[:n]) if t.capture else None)
            except Exception as exc:
                _fault(exc, "recording a UDP send")
            return n
        mv = data if isinstance(data, bytes) else memoryview(data).cast("B")
        n = len(mv)
        try:
            key = (ip, address[1])
            cid = self.out.get(key)
            if cid is None:
                cid = self.out[key] = t.channel(None, lp.name, None, "udp",
                                                self._ep(sock, address, True), True, False)
            seq, lam, _ = lp.send(None, n, bytes(mv) if (t.capture or lp.snaps) else None,
                                  channel=cid)
            env = wire.envelope(cid, lp.name, seq, lam)
        except Exception as exc:
            _fault(exc, "recording a UDP send")
            env = wire.envelope("c0", lp.name if lp else "?", 0, 0)
        sent = call(env + mv)
        return max(0, sent - len(env)) if sent < len(env) + n else n

    def _ep(self, sock, addr, outgoing):
        try:
            here = sock.getsockname()
        except OSError:
            here = ("?", 0)
        a, b = _fmt(here), _fmt(addr)
        return f"{a}->{b}" if outgoing else f"{b}->{a}"

    def received(self, sock, data, addr, bufsize: int, peek: bool):
        """Strip an envelope; record the receive. Returns the payload (at most bufsize)
        and the length of the whole payload that ``data`` holds."""
        env = wire.parse_envelope(data) if data[:2] == _MAGIC[:2] else None
        if env is None:
            if not peek:
                self._raw_in(sock, data[:bufsize], addr)
            return data[:bufsize], len(data)
        cid, name, seq, lam, off = env
        payload = data[off:off + bufsize]
        if peek:
            return payload, len(data) - off
        t = _tracer[0]
        lp = _lp()
        try:
            if isinstance(addr, tuple):
                _learned.add((addr[0], addr[1]))
            if cid not in self.seen_in:
                self.seen_in.add(cid)
                lp.add_in(cid, fifo=False)
                t.channel(cid, None, lp.name, "udp", self._ep(sock, addr, False), True, False)
            lp.recv(cid, f"{name}#{seq}" if seq else None, lam, len(data) - off,
                    bytes(payload) if (t.capture or lp.snaps) else None)
        except Exception as exc:
            _fault(exc, "recording a UDP receive")
        return payload, len(data) - off

    def _raw_in(self, sock, data, addr):
        t = _tracer[0]
        lp = _lp()
        try:
            key = addr if isinstance(addr, tuple) else str(addr)
            cid = self.raw_in.get(key)
            if cid is None:
                cid = self.raw_in[key] = t.channel(None, None, lp.name, "udp",
                                                   self._ep(sock, addr, False), False, False)
                lp.add_in(cid, fifo=False)
            lp.unframed("recv", cid, len(data), bytes(data) if t.capture else None)
        except Exception as exc:
            _fault(exc, "recording a UDP receive")


_ENVELOPE_ROOM = 16 + 17 + 255 + 2 + 512


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


def _bind_obj(sock, conn) -> tuple:
    sid = id(sock)
    r = _refs.get(sid)
    old = _objs.get(sid) if r is not None and r() is sock else None
    _refs[sid] = weakref.ref(sock, _gone(sid))
    _objs[sid] = conn
    if old is not None:
        old.release(sock)
    conn.attach(sock)
    return (None, conn)


def _ino(sock) -> int:
    try:
        return os.fstat(sock.fileno()).st_ino
    except OSError:
        return 0


def _attach(sock) -> tuple:
    """The slow path: a socket object seen for the first time."""
    if type(sock) is not _Socket and _is_ssl(sock):
        return (None, PASS)  # never cached: an SSLSocket's state is the ssl module's
    try:
        fam = sock.family
        typ = sock.type
    except OSError:
        return (None, PASS)
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
        c = _attach(sock)[1]
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


# The hot paths. `send`, `sendall` and `recv` on a framed blocking connection are
# one syscall, one Lamport event, one struct pack or unpack, a token (_Gate) and
# a few attribute reads; everything else (partial frames, markers owed, flags,
# timeouts, negotiation, raw and UDP sockets) takes the general path below them.
# `send` and `sendall` share their fast path: one factory makes both (a shared
# helper would cost a Python call per message).

def _fast_sender(name, general, ret_n):
    real = _real[name]

    def fast(self, data=_NOARG, flags=0, /, *more):
        if data is _NOARG or more:  # the C method's own error
            return real(self, *(() if data is _NOARG else (data, flags)), *more)
        c = _objs.get(id(self))
        if c is None:
            c = _attach(self)[1]
        fl = c.fast_lp
        if fl is not None and not flags and type(data) is bytes and \
                (_current.get() or _default[0]) is fl:
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
                        ep = c.ep
                        try:
                            seq, lam, markers = fl.send(
                                ep, n, data if (_tracer[0].capture or fl.snaps) else None)
                        except Exception as exc:
                            _fault(exc, "recording a send")
                            markers, seq, lam = None, 0, 0
                        if markers:
                            buf = _marker_prefix(c, markers) + _pack(_DATA, n, seq, lam) + data
                        else:
                            buf = _pack(_DATA, n, seq, lam) + data
                        # a blocking socket takes it all (or fails, and the stream is gone)
                        _sendall(self, buf)
                        if ep.pending:
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


def sendmsg(self, *args, **kw):
    if kw or not 1 <= len(args) <= 4:
        return _real["sendmsg"](self, *args, **kw)  # (bad arguments: the C method's error)
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


def _handover_anc(ancdata) -> None:
    """Descriptors leaving with SCM_RIGHTS (socket.send_fds, multiprocessing's
    send_handle): hand their connections' state over with them."""
    import array

    try:
        for level, typ, data in ancdata:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = array.array("i")
                mv = memoryview(data).cast("B")
                fds.frombytes(bytes(mv[:len(mv) - len(mv) % fds.itemsize]))
                for fd in fds:
                    _handover_fd(fd)
    except Exception as exc:
        _fault(exc, "handing descriptors over")


def _dupfd(original):
    """multiprocessing.reduction.DupFd: a socket pickled for another process (a child
    started by spawn or forkserver, a Pool worker through the resource sharer)."""
    def DupFd(fd):
        if _inos:
            _handover_fd(fd)
        return original(fd)

    DupFd.__wrapped__ = original
    return DupFd


_dupfd_saved: list = []


def _patch_reduction(module=None) -> None:
    mod = module or sys.modules.get("multiprocessing.reduction")
    if mod is None or _tracer[0] is None or _dupfd_saved:
        return
    orig = mod.__dict__.get("DupFd")
    if orig is None or getattr(orig, "__wrapped__", None) is not None:
        return
    mod.DupFd = _dupfd(orig)
    _dupfd_saved.append((mod, orig))


def _unpatch_reduction() -> None:
    while _dupfd_saved:
        mod, orig = _dupfd_saved.pop()
        if getattr(mod.DupFd, "__wrapped__", None) is orig:
            mod.DupFd = orig


_reduction_hooked = [False]


def _withdraw_all() -> None:
    """At exit: this process's entries go (a peer ignores those of a dead pid anyway)."""
    for c in list(_local_conns.values()):
        try:
            _withdraw(c)
        except Exception:
            pass


def sendto(self, *args, **kw):
    if kw or not 2 <= len(args) <= 3:
        return _real["sendto"](self, *args, **kw)  # (bad arguments: the C method's error)
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


def recv(self, bufsize=_NOARG, flags=0, /, *more):
    if bufsize is _NOARG or more:  # the C method's own error
        return _recv(self, *(() if bufsize is _NOARG else (bufsize, flags)), *more)
    c = _objs.get(id(self))
    if c is None:
        c = _attach(self)[1]
    if c.fast_in and not flags:
        lp = _current.get() or _default[0]
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


# -- arguments: the C methods judge them ------------------------------------------------------

_BIG = sys.maxsize >> 1  # sizes above this are checked by the C method (overflow, memory)
_ANC_BIG = 0x7FFFFFFF
_dummies: dict = {}


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


# -- the receive family -------------------------------------------------------------------------
# Every entry point takes the same decisions (_tcp_framed_in) and, on a framed direction, the
# same parser (Conn.recv_framed / peek_framed): cutscope's bytes never reach the application.

def _tcp_framed_in(self, c, flags) -> bool:
    """Before a receive on TCP: a safe point, the incoming direction decided. True if
    that direction is framed."""
    lp = _current.get() or _default[0]
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


def recv_into(self, buffer=_NOARG, nbytes=0, flags=0, *more):
    if buffer is _NOARG or more:  # the C method's own error
        return _recv_into(self, *(() if buffer is _NOARG else (buffer, nbytes, flags)), *more)
    c = _objs.get(id(self))
    if c is None:
        c = _attach(self)[1]
    k = c.kind
    if k == "pass" or (k == "tcp" and c.in_mode == RAW and not c.raw_held):
        if k == "tcp":
            lp = _current.get() or _default[0]
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


def recvfrom(self, bufsize=_NOARG, flags=0, /, *more):
    if bufsize is _NOARG or more:  # the C method's own error
        return _recvfrom(self, *(() if bufsize is _NOARG else (bufsize, flags)), *more)
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


def recvfrom_into(self, buffer=_NOARG, nbytes=0, flags=0, *more):
    if buffer is _NOARG or more:  # the C method's own error
        return _real["recvfrom_into"](
            self, *(() if buffer is _NOARG else (buffer, nbytes, flags)), *more)
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
        return _real["recvmsg"](self, *args, **kw)
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
        return _real["recvmsg_into"](self, *args, **kw)
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


def sendfile(self, file, offset=0, count=None):
    if type(self) is not _Socket and _is_ssl(self):
        return _orig["sendfile"](self, file, offset, count)
    c = _conn_of(self)
    if c.kind == "tcp":
        if c.out_mode == UNDECIDED:
            c.decide_out(self)
        if c.out_mode != RAW or c.out_pending:
            return self._sendfile_use_send(file, offset, count)  # through send: framed
    # Raw: the real socket.sendfile, whose os.sendfile calls os_sendfile records.
    return _orig["sendfile"](self, file, offset, count)


# os.sendfile writes a file into a descriptor in the kernel, bypassing the socket
# methods (asyncio's loop.sock_sendfile and transports' sendfile, socket.sendfile,
# user code). Wrapped so that a framed direction stays framed; everything else keeps
# the real call.
_SENDFILE_CHUNK = 1 << 20  # bytes read from the file per frame
_os_sendfile = [None]  # the os.sendfile that os_sendfile replaced


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
    real = _os_sendfile[0]
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


def _want(ssl, write: bool):
    """The SSLWantReadError (SSLWantWriteError) that ssl's C code raises: its args are
    ``(SSL_ERROR_WANT_READ, message)``, which callers test (``err.args[0]``)."""
    if write:
        return ssl.SSLWantWriteError(int(ssl.SSL_ERROR_WANT_WRITE),
                                     "The operation did not complete (write)")
    return ssl.SSLWantReadError(int(ssl.SSL_ERROR_WANT_READ),
                                "The operation did not complete (read)")


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


class _PassRaw(Exception):
    """Conn.sendfile: nothing was sent; the real os.sendfile is right (or says why not)."""


def _real_close(self, *args, **kw):
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


# With the C extension (tracer/_fast.c), the three hot paths above are its method
# descriptors: the same tests and state, in C; they call the Python functions above
# (kept as the reference) whenever a test fails, before doing anything.
if FAST is not None:
    send, sendall, recv = FAST.setup_sockets(
        _Socket, Conn, _objs, _current, _default, _tracer, _fault, _marker_prefix, _sendall,
        _recv, send, sendall, recv)

_WRAPPERS = {
    "connect": connect, "connect_ex": connect_ex, "accept": accept, "listen": listen,
    "bind": bind, "send": send, "sendall": sendall, "sendmsg": sendmsg, "sendto": sendto,
    "recv": recv, "recv_into": recv_into, "recvfrom": recvfrom, "recvfrom_into": recvfrom_into,
    "recvmsg": recvmsg, "recvmsg_into": recvmsg_into, "sendfile": sendfile,
    "_real_close": _real_close, "detach": detach,
}
_orig: dict = {}  # name -> what socket.socket had in its own __dict__ (absent: inherited)
_MISSING = object()


def _tick(tracer) -> None:
    """Recorder thread, about every 50 ms: markers on idle directions, idle incoming
    markers, descriptors that were detached and since closed."""
    for c in list(_framed):
        if c.ended:
            continue
        try:
            if c.ep is not None and (c.ep.pending or c.out_pending):
                c._flush(c.ep)
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
            _os_sendfile[0] = os.sendfile
            os.sendfile = os_sendfile
        tracer.tick_hooks.append(_tick)
        if not _reduction_hooked[0]:
            import wrapt

            _reduction_hooked[0] = True
            wrapt.register_post_import_hook(_patch_reduction, "multiprocessing.reduction")
        _patch_reduction()
        atexit.register(_withdraw_all)

    def _uninstrument(self) -> None:
        t = _tracer[0]
        _unpatch_reduction()
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
            os.sendfile = _os_sendfile[0]  # (someone who patched over us keeps theirs)
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
