"""``multiprocessing.connection.Connection``: its byte-level I/O, ``poll``,
``wait``, ``Pipe`` and the pickling of a connection.

``Pipe``, ``Listener`` and ``Client`` read and write with ``os.read`` /
``os.write``, so the socket wrappers never see them. The wrappers sit on
``Connection._send_bytes`` / ``_recv_bytes`` / ``_poll``, under every public
method (``send``, ``recv``, ``send_bytes``, ``recv_bytes``,
``recv_bytes_into``, ``poll``). A direction is framed (``frames``) only when
the sender knows that its peer traces: both ends of a ``Pipe()`` made in a
traced process (its children trace too), and a ``Listener``/``Client``
connection whose authentication handshake carried the peer's magic
(``handshake``). Everything else stays raw and is recorded as events on
unframed channels. A receiver recognises frames by the magic, message by
message. Markers travel as frames of their own on socket-based connections
(duplex ``Pipe``, ``Listener``/``Client``), where ``poll`` peeks
(``MSG_PEEK``) and consumes a marker at the head so that it stays truthful; an
``os.pipe`` (``Pipe(duplex=False)``) cannot be peeked, so its channels carry
no markers and are recorded as not FIFO (a snapshot names them as channels it
cannot cover).
"""

from __future__ import annotations

import io
import os
from time import monotonic as _time

from cutscope.tracer.process import OutEndpoint
from cutscope.tracer.tracer import active

from . import frames
from .connstate import (SKIP, STATE_KEY, ConnectionState, connection_state, endpoint_name,
                        is_socket)
from .handshake import HANDSHAKE_KEY, handshake_recv, handshake_send
from .patching import current_lp, originals


def _flush_conn(conn):
    import weakref

    ref = weakref.ref(conn)

    def flush(endpoint: OutEndpoint) -> None:
        c = ref()
        if c is None or c.closed:
            endpoint.process.remove_out(endpoint)
            return
        state = c.__dict__.get(STATE_KEY)
        with state.lock:
            for m in endpoint.take_markers():
                originals["Connection._send_bytes"](
                    c, frames.marker_frame(endpoint.channel, m.snapshot, m.initiator))
    return flush


def _open_out(conn, state: ConnectionState, lp) -> tuple:
    """``lp``'s endpoint on ``conn`` and its ``DataFramer`` (outside ``state.lock``:
    ``add_out`` may flush at once)."""
    t = lp.tracer
    cid = t.new_channel_id()
    fifo = is_socket(conn, state)
    endpoint = OutEndpoint(lp, cid, flush=_flush_conn(conn), fifo=fifo)
    mine = (endpoint, frames.DataFramer(cid, lp.name))
    have = state.endpoints.setdefault(lp, mine)
    if have is not mine:
        return have
    t.channel(cid, lp.name, None, "mp.connection", endpoint_name(conn), True, fifo)
    if fifo:
        lp.add_out(endpoint)
    return mine


def send_bytes(self, buf):
    state = self.__dict__.get(STATE_KEY)
    if state is SKIP:
        hs = self.__dict__.get(HANDSHAKE_KEY)
        if hs is not None:
            return handshake_send(self, hs, buf)
        return originals["Connection._send_bytes"](self, buf)
    lp = current_lp()
    if lp is None:
        return originals["Connection._send_bytes"](self, buf)
    if state is None or state.pid != os.getpid():
        # A connection made before tracing, or by an untraced parent: raw, recorded.
        state = connection_state(self, create_framed=False)
    send = originals["Connection._send_bytes"]
    n = len(buf)
    if not state.framed:
        t = lp.tracer
        try:
            if state.raw_out is None:
                state.raw_out = t.channel(None, lp.name, None, "mp.connection",
                                          endpoint_name(self), False, False)
            lp.unframed("send", state.raw_out, n, bytes(buf) if t.capture else None)
        except Exception as exc:
            t.fault(exc, "Connection.send (raw)")
        return send(self, buf)
    out = state.endpoints.get(lp)
    if out is None:
        try:
            out = _open_out(self, state, lp)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.send")
            return send(self, buf)
    endpoint, framer = out
    with state.lock:
        try:
            seq, lam, markers = lp.send(endpoint, n, bytes(buf) if lp.tracer.capture else None)
            frame = framer.frame(seq, lam, buf)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.send")
            return send(self, buf)  # unreachable in strict mode; a raw message otherwise
        if markers:
            for m in markers:
                send(self, frames.marker_frame(endpoint.channel, m.snapshot, m.initiator))
        return send(self, frame)


def recv_bytes(self, maxsize=None):
    state = self.__dict__.get(STATE_KEY)
    recv = originals["Connection._recv_bytes"]
    if state is SKIP:
        hs = self.__dict__.get(HANDSHAKE_KEY)
        if hs is not None:
            return handshake_recv(self, hs, maxsize)
        return recv(self, maxsize)
    lp = current_lp()
    if lp is None:
        return recv(self, maxsize)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    while True:
        buf = recv(self, None if maxsize is None else maxsize + frames.OVERHEAD_MAX)
        if buf is None:
            return None
        with buf.getbuffer() as view:
            framed = frames.is_frame(view)
            if framed:
                kind, number, cid, text, header_len = frames.parse_tuple(view)
                if kind != frames.MARKER:
                    n = len(view) - header_len
                    if maxsize is not None and n > maxsize:
                        return None
                    out = io.BytesIO()
                    out.write(view[header_len:])
            else:
                n = len(view)
                if maxsize is not None and n > maxsize:
                    return None
        if not framed:
            _record_raw_in(self, state, lp, n, buf)
            return buf
        if kind == frames.MARKER:
            lp.tracer.guard(lp.marker, cid, number, text)
            continue
        try:
            if state is None or state.pid != os.getpid():
                state = connection_state(self, create_framed=False)
            if (cid, lp) not in state.seen:
                state.seen.add((cid, lp))
                fifo = is_socket(self, state)
                lp.add_in(cid, fifo)
                lp.tracer.channel(cid, None, lp.name, "mp.connection", None, True, fifo)
            lp.recv(cid, text, number, n,
                    out.getvalue() if lp.tracer.capture or lp.snaps else None)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.recv")
        return out


def _record_raw_in(conn, state, lp, n, buf) -> None:
    if state is None or state.pid != os.getpid():
        state = connection_state(conn, create_framed=False)
    t = lp.tracer
    try:
        if state.raw_in is None:
            state.raw_in = t.channel(None, None, lp.name, "mp.connection", endpoint_name(conn),
                                     False, False)
            lp.add_in(state.raw_in, False)
        lp.recv(state.raw_in, None, None, n, buf.getvalue() if t.capture else None)
    except Exception as exc:
        t.fault(exc, "Connection.recv (raw)")


def _marker_at_head(conn) -> bool:
    import _socket

    s = _socket.socket(fileno=conn.fileno())
    try:
        head = s.recv(4 + 16 + 1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
    finally:
        s.detach()
    # (multiprocessing's 4-byte length prefix, then the frame's magic and kind)
    return len(head) == 21 and head[4:20] == frames.MAGIC and head[20] == frames.MARKER


def _take_marker(conn) -> None:
    """Read the marker frame at the head of ``conn`` and hand it to the protocol."""
    buf = originals["Connection._recv_bytes"](conn, None)
    with buf.getbuffer() as view:
        frame = frames.parse(view)
    lp = current_lp()
    if lp is not None and frame.kind == frames.MARKER:
        lp.tracer.guard(lp.marker, frame.channel, frame.number, frame.text)


def poll(self, timeout):
    """Truthful readiness: a marker alone at the head is consumed, never reported."""
    orig = originals["Connection._poll"]
    state = self.__dict__.get(STATE_KEY)
    lp = current_lp()
    if state is SKIP or lp is None:
        return orig(self, timeout)
    deadline = None if timeout is None else _time() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - _time())
        if not orig(self, left):
            return False
        if state is None:
            state = connection_state(self, create_framed=False)
        if not is_socket(self, state) or not _marker_at_head(self):
            return True
        if lp.pending:
            lp.tracer.guard(lp.safepoint)
        _take_marker(self)


def wait(object_list, timeout=None):
    """``multiprocessing.connection.wait``, truthful: a marker alone is consumed (a safe
    point, as in ``poll``) and does not make its connection ready."""
    orig = originals["wait"]
    lp = current_lp()
    if lp is None:
        return orig(object_list, timeout)
    deadline = None if timeout is None else _time() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - _time())
        ready = orig(object_list, left)
        out = []
        took = False
        for o in ready:
            state = getattr(o, "__dict__", {}).get(STATE_KEY)
            if state is None or state is SKIP or not is_socket(o, state) or \
                    not _marker_at_head(o):
                out.append(o)
                continue
            while _marker_at_head(o):
                if lp.pending:
                    lp.tracer.guard(lp.safepoint)
                _take_marker(o)
            took = True
            if orig([o], 0):  # data (or end of stream) behind the marker
                out.append(o)
        if out or not took:
            return out
        if deadline is not None and _time() >= deadline:
            return []


def Pipe(duplex=True):
    a, b = originals["Pipe"](duplex)
    if active() is not None:
        for c in (a, b):
            c.__dict__[STATE_KEY] = ConnectionState(True)  # both ends stay in traced processes
    return a, b


def _rebuild_conn(fn, args, flag):
    c = fn(*args)
    if flag == "skip":
        c.__dict__[STATE_KEY] = SKIP
    elif flag is not None:
        c.__dict__[STATE_KEY] = ConnectionState(flag == "framed")
    return c


def reduce_connection(conn):
    fn, args = originals["reduce_connection"](conn)
    state = conn.__dict__.get(STATE_KEY)
    if state is None:
        flag = None
    else:
        flag = "skip" if state is SKIP else "framed" if state.framed else "raw"
    return _rebuild_conn, (fn, args, flag)
