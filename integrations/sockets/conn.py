"""``Conn``, the framing state of one TCP connection: its life (attach, release,
end), the negotiation of each direction (framed or raw), and the hand-over to TLS (both
ends stop framing before the handshake). Its out direction is ``outgoing.Outgoing``, its
in direction ``incoming.Incoming``."""

from __future__ import annotations

import errno
import time
import weakref

from cutscope.tracer import wire
from cutscope.tracer.process import OutEndpoint

from .common import (FRAMED, HELLO_PENDING, PREFIX_WAIT, RAW, RESOLVE_WAIT, UNDECIDED,
    UNFRAMING, _DONTWAIT, _MAGIC, _PEEK, _detached, _fault, _framed, _inos, _mono, _ready,
    _recv, _send, _tracer)
from .ends import RawEnds, _Gate
from .incoming import Incoming
from .outgoing import Outgoing
from .registry import _connecting_to, _peer_mode, _set_ends, _withdraw


def _want(ssl, write: bool):
    """The SSLWantReadError (SSLWantWriteError) that ssl's C code raises: its args are
    ``(SSL_ERROR_WANT_READ, message)``, which callers test (``err.args[0]``)."""
    if write:
        return ssl.SSLWantWriteError(int(ssl.SSL_ERROR_WANT_WRITE),
                                     "The operation did not complete (write)")
    return ssl.SSLWantReadError(int(ssl.SSL_ERROR_WANT_READ),
                                "The operation did not complete (read)")


class Conn(Outgoing, Incoming, RawEnds):
    """The framing state of one TCP connection (both directions)."""

    kind = "tcp"
    raw_held = b""  # raw bytes read together with the peer's RAW, beyond what was asked
    # What the hot paths read: slots (integrations/sockets/_fastsock.c reads them at their offsets);
    # the rest lives in the instance's __dict__ (RawEnds has none of its own).
    __slots__ = ("fast_lp", "fast_in", "stok", "rtok", "out_endpoint", "out_left", "out_pending",
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
        self.out_endpoint: OutEndpoint | None = None
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
        endpoint = self.out_endpoint
        self.fast_lp = endpoint.process if (
            self.out_mode == FRAMED and endpoint is not None and
            self.out_name == endpoint.process.name and not self.ended) else None
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
            if self.out_endpoint is not None:
                self.out_endpoint.process.remove_out(self.out_endpoint)
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
        endpoint, self.out_endpoint = self.out_endpoint, None
        if announce:
            self.out_pending += wire.RAW_FRAME
            self.out_mode = UNFRAMING
            self.raw_sent_ = True
        else:
            self.out_pending.clear()  # (markers not sent: no frame may follow)
            self.out_mode = RAW
        self._fast()
        if endpoint is not None:
            endpoint.process.remove_out(endpoint)

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
