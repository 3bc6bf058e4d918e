"""A TCP connection's in direction: the frame parser (HELLO, DATA, markers, RAW),
framed receives and peeks that hand the application its bytes only, frames that are
not cutscope's (the connection is reset for the application), and markers consumed on
idle channels."""

from __future__ import annotations

import errno
import os
import socket
import time

from cutscope.tracer import wire

from .common import (RAW, _DATA, _DONTWAIT, _HDR, _HDR_SIZE, _PEEK, _TRUNC, _WAITALL, _fault,
    _framed, _lp, _mono, _ready, _recv, _ss, _timeout_error, _tracer, _wait)
from .ends import _HELD


class Incoming:
    """Conn's in direction (its state lives in Conn's slots and attributes)."""

    __slots__ = ()

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

    def _data_frames(self, data: bytes):
        """The hot path's read when it holds several DATA frames (a response's headers
        and body, sent by two sends and read by one receive), the last one possibly
        incomplete: their payloads together, each recorded as the general path records
        it. None (nothing consumed, nothing recorded) when the read holds anything else
        (a marker, a name, the peer's RAW, an empty frame, part of a header, a header whose
        payload has not begun): the general path takes it. The read did not fill its
        request (the caller checked), so the general path would not read on either."""
        end = len(data)
        if not end:
            return None  # end of stream: the general path
        pos = 0
        frames = []
        unpack = _HDR.unpack_from
        while pos < end:
            if data[pos] != _DATA or end - pos < _HDR_SIZE:
                return None
            _, n, seq, lam = unpack(data, pos)
            pos += _HDR_SIZE
            if not n or pos == end:  # an empty frame; a header without its first byte
                return None
            frames.append((pos, n, seq, lam))
            pos += n
        name = self.in_name
        cid = self.in_cid
        lp = _lp()
        t = _tracer[0]
        keep = t is not None and (t.capture or lp.snaps)
        out = []
        msg = None
        try:
            for start, n, seq, lam in frames:
                piece = data[start:start + n]
                out.append(piece)
                msg = f"{name}#{seq}" if seq else None
                lp.recv(cid, msg, lam, n, piece if keep else None)
        except Exception as exc:
            _fault(exc, "recording a receive")
        start, n, seq, lam = frames[-1]
        self.in_msg = f"{name}#{seq}" if seq else None
        self.in_stamp = lam
        self.in_n = n
        self.in_left = pos - end  # the last frame's payload still to come
        self.in_first = True
        return b"".join(out)

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
        if pre is not None and owned and not flags and anc is None and \
                len(pre) < bufsize + _HDR_SIZE and not self.in_left and not self.in_buf and \
                not self.in_hello and self.in_err is None and self.in_oserr is None and \
                self.in_mode != RAW:
            r = self._data_frames(pre)
            if r is not None:
                return r
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
        """Once its process has recorded its state, a marker at the head of an idle incoming
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
