"""A TCP connection's out direction: the HELLO, frame headers in front of the
application's bytes, markers owed (sent between frames), sendfile on a framed direction,
and the switch to raw (a RAW frame ahead of TLS)."""

from __future__ import annotations

import errno
import os

from cutscope.tracer import wire
from cutscope.tracer.process import OutEndpoint

from .common import (FRAMED, HELLO_PENDING, RAW, UNFRAMING, _DATA, _DONTWAIT, _HDR, _fault,
    _framed, _lp, _mono, _ready, _send, _sendall, _ss, _tracer, _wait)


_SENDFILE_CHUNK = 1 << 20  # bytes read from the file per frame


class _PassRaw(Exception):
    """Conn.sendfile: nothing was sent; the real os.sendfile is right (or says why not)."""


class Outgoing:
    """Conn's out direction (its state lives in Conn's slots and attributes)."""

    __slots__ = ()

    def _open_out(self, sock, lp) -> None:
        """First framed send: the HELLO, the channel, the endpoint for markers."""
        t = _tracer[0]
        cid = self.out_cid = t.new_channel_id()
        t.channel(cid, lp.name, None, "tcp", self.endpoint(sock, True), True)
        self.out_pending += wire.hello(cid, lp.name)
        self.out_name = lp.name
        self.out_mode = FRAMED
        _framed.add(self)
        endpoint = OutEndpoint(lp, cid, self._flush, True)
        self.out_endpoint = endpoint
        self._fast()
        lp.add_out(endpoint)

    def _begin_frame(self, sock, n: int, data) -> None:
        """Record the send and queue its header (and markers due before it). Under slock."""
        lp = _lp()
        t = _tracer[0]
        try:
            if self.out_mode == HELLO_PENDING:
                self._open_out(sock, lp)
            payload = bytes(data[:n]) if (t.capture or lp.snaps) else None
            endpoint = self.out_endpoint
            if self.out_name != lp.name:  # another logical process sends on this connection
                self.out_pending += wire.as_frame(lp.name)
                self.out_name = lp.name
                self._fast()
            if endpoint is not None and lp is endpoint.process:
                seq, lam, markers = lp.send(endpoint, n, payload)
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
        endpoint = self.out_endpoint
        if endpoint is not None and endpoint.pending and not self.out_left:
            for m in endpoint.take_markers():
                self.out_pending += wire.marker(m.snapshot, m.initiator)

    def _send_one_nonblocking(self, sock, data: bytes):
        """``send(data)`` on a non-blocking framed socket (asyncio's transports) at a frame
        boundary, nothing owed, sent by the logical process that owns the channel: the
        frame recorded, then its header (after the markers due) and payload in one
        syscall. Returns the payload bytes accepted; None when this case does not apply
        (send_framed's general loop takes the call). The state it leaves is the general
        loop's: a full buffer (BlockingIOError, raised) leaves the frame begun with its
        header owed; part of the payload accepted leaves the rest of the frame owed; part
        of the header accepted goes on in the general loop, as its next turn would."""
        if self.out_left or self.out_pending or sock.gettimeout() != 0.0:
            return None
        lp = _lp()
        endpoint = self.out_endpoint
        if endpoint is None or lp is not endpoint.process or self.out_name != lp.name:
            return None
        n = len(data)
        with self.slock:
            if self.out_left or self.out_pending:
                return None
            t = _tracer[0]
            try:
                seq, lam, markers = lp.send(endpoint, n, data if (t.capture or lp.snaps) else None)
            except Exception as exc:  # recording failed: the frame still goes out, unstamped
                _fault(exc, "recording a send")
                seq = lam = 0
                markers = None
            head = _HDR.pack(_DATA, n, seq, lam)
            if markers:
                pend = self.out_pending
                for m in markers:
                    pend += wire.marker(m.snapshot, m.initiator)
                head = bytes(pend) + head
                pend.clear()
            hl = len(head)
            try:
                k = _send(sock, head + data)
            except BaseException:
                self.out_pending += head
                self.out_left = n
                raise
            if k >= hl + n:
                if endpoint.pending:
                    self._markers_after()
                    if self.out_pending:
                        try:
                            self._push(sock)
                        except (OSError, TimeoutError):
                            pass  # owed control bytes stay pending; the next send writes them first
                return n
            if k > hl:
                self.out_left = n - (k - hl)
                return k - hl
            self.out_pending += head[k:]
            self.out_left = n
        return self.send_framed(sock, data, 0, False)

    def send_framed(self, sock, data, flags: int, whole: bool, anc=()) -> int:
        """Send ``data`` framed (``whole``: sendall). Returns the payload bytes accepted.

        A partial send keeps the rest of the frame owed: the control bytes in
        ``out_pending``, the payload count in ``out_left``; the application's next
        bytes continue that frame before anything else. A timeout or a full buffer
        after some payload went out ends the call with the count sent (``send``); before
        any, it raises as the plain call does. ``anc``: sendmsg's ancillary data, given
        to the kernel with the call's first syscall.
        """
        if not whole and not flags and not anc and type(data) is bytes and \
                self.out_mode == FRAMED and 0 < len(data) <= wire.MAX_PAYLOAD:
            r = self._send_one_nonblocking(sock, data)
            if r is not None:
                return r
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

    def _flush(self, endpoint) -> None:
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
