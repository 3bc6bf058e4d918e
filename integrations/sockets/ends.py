"""The pieces a connection is made of: the gate (a direction's lock, whose token
the hot paths take directly), the pass-through state of a socket that is never traced
(``PASS``), and ``RawEnds``, the unframed channels of a stream connection."""

from __future__ import annotations

import contextlib
import threading
import time

from .common import _fmt, _lp, _tracer


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
