"""multiprocessing: child processes, ``multiprocessing.Queue`` and ``Connection``.

Child processes
---------------
A child started by ``multiprocessing`` is its own logical process, under every
start method. It takes its ``Process.name`` when the program gave one, else
``<parent>/<pid>``:

- fork: the tracer's fork hook already made the child ``<parent>/<pid>``;
  the ``BaseProcess._bootstrap`` wrapper renames it before it records anything.
- spawn / forkserver: the child is a new interpreter. ``BaseProcess.start``
  attaches a small object to the process object that is pickled for the
  child; unpickling it in the child starts cutscope there with the parent's
  store URL, payload capture and strictness (and the explicit name, if any),
  before the child's target runs. A child that already traces (``cutscope
  run`` puts cutscope in every child's ``sitecustomize``) keeps its tracer.
- ``_bootstrap`` ends with ``os._exit()`` (no atexit): the wrapper stops the
  tracer (flushing the recorder) when ``_bootstrap`` returns.

multiprocessing.Queue
---------------------
``put`` (and ``JoinableQueue.put``) send the item in a small picklable
envelope (channel, message id, Lamport stamp, item), recorded with
``lp.send`` under the queue's ``_notempty`` lock, after the pending markers of
the producer's endpoint; the feeder thread pickles them in that order. ``get``
unwraps it. Markers are envelopes too, appended to the feeder's buffer by the
endpoint's ``flush``; they take no slot of the bounded semaphore, so ``qsize``,
``full`` and ``maxsize`` blocking never count them, and ``get`` swallows them
and goes on waiting within the caller's timeout. An envelope unpickled in a
process that does not trace turns back into the bare item.

multiprocessing.connection.Connection
-------------------------------------
``Pipe``, ``Listener`` and ``Client`` read and write with ``os.read`` /
``os.write``, so the socket wrappers never see them. The wrapper sits on
``Connection._send_bytes`` / ``_recv_bytes`` / ``_poll``, under every public
method (``send``, ``recv``, ``send_bytes``, ``recv_bytes``,
``recv_bytes_into``, ``poll``). A direction is framed (a 16-byte magic and a
header inside the multiprocessing message) only when the sender knows that its
peer traces: both ends of a ``Pipe()`` made in a traced process (its children
trace too), and a ``Listener``/``Client`` connection whose authentication
handshake carried the peer's magic (the traced side appends it to its
challenge; an untraced side computes the HMAC over it as over any challenge).
Everything else stays raw and is recorded as events on unframed channels. A
receiver recognises frames by the magic, message by message. Markers travel as
frames of their own on socket-based connections (duplex ``Pipe``,
``Listener``/``Client``), where ``poll`` peeks (``MSG_PEEK``) and consumes a
marker at the head so that it stays truthful; an ``os.pipe`` (``Pipe(duplex=
False)``) cannot be peeked, so its channels carry no markers and are recorded
as not FIFO (a snapshot names them as channels it cannot cover).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import threading
from time import monotonic as _time

from cutscope.tracer.process import OutEndpoint, current_var, default_process
from cutscope.tracer.tracer import active

from ._base import ImportHooks, Instrumentor, register

__all__ = ["MultiprocessingInstrumentor"]

MAGIC = b"\x8fcutscope-mp\x00\x01\xfe\x7f"  # 16 bytes
assert len(MAGIC) == 16
_D, _M = 0x44, 0x4D  # data frame, marker frame
_HDR = struct.Struct(">BQB")  # kind, stamp or snapshot id, len(channel)
OVERHEAD_MAX = 16 + _HDR.size + 255 + 2 + 1024  # the most a frame header adds

_ORIG: dict = {}
_hooks = ImportHooks()  # on while installed


def _lp():
    return current_var.get() or default_process[0]


# -- envelopes for multiprocessing.Queue ---------------------------------------------------

def _open_env(cid, msg, stamp, item):
    """Unpickling an envelope: itself where cutscope traces, else the bare item."""
    if _hooks.on:
        return Env(cid, msg, stamp, item)
    return item


def _open_mark(cid, sid, initiator):
    return MarkEnv(cid, sid, initiator)


class Env:
    __slots__ = ("cid", "msg", "stamp", "item")

    def __init__(self, cid, msg, stamp, item):
        self.cid = cid
        self.msg = msg
        self.stamp = stamp
        self.item = item

    def __reduce__(self):
        return _open_env, (self.cid, self.msg, self.stamp, self.item)


class MarkEnv:
    __slots__ = ("cid", "sid", "initiator")

    def __init__(self, cid, sid, initiator):
        self.cid = cid
        self.sid = sid
        self.initiator = initiator

    def __reduce__(self):
        return _open_mark, (self.cid, self.sid, self.initiator)


class _QS:
    """Per multiprocessing.Queue and process: producer endpoints, channels seen."""

    __slots__ = ("out", "seen", "endpoint", "pid")

    def __init__(self, q):
        self.out: dict = {}
        self.seen: set = set()
        self.pid = os.getpid()
        try:
            name = q._rlock._semlock.name
        except Exception:
            name = None
        self.endpoint = f"mp.queue:{name or hex(id(q))}"


def _qstate(q) -> _QS:
    st = q.__dict__.get("_cutscope_mpq")
    if st is None or st.pid != os.getpid():
        st = _QS(q)
        q.__dict__["_cutscope_mpq"] = st
        for c in (q._reader, q._writer):  # the queue's own pipe: its items are traced here
            c.__dict__["_cutscope_c"] = SKIP
    return st


def _qflush(q):
    import weakref

    ref = weakref.ref(q)

    def flush(ep: OutEndpoint) -> None:
        qq = ref()
        if qq is None or qq._closed:
            ep.process.remove_out(ep)
            return
        with qq._notempty:
            ms = ep.take_markers()
            if not ms:
                return
            if qq._thread is None:
                qq._start_thread()
            for m in ms:
                qq._buffer.append(MarkEnv(ep.channel, m.snapshot, m.initiator))
            qq._notempty.notify()
    return flush


def _q_endpoint(q, lp) -> OutEndpoint:
    st = _qstate(q)
    ep = st.out.get(lp)
    if ep is None:
        t = lp.tracer
        cid = t.new_channel_id()
        ep = OutEndpoint(lp, cid, flush=_qflush(q), fifo=True)
        ep.count = 0  # a pipe: its receiver cannot see a marker at its head (close_idle)
        st.out[lp] = ep
        t.channel(cid, lp.name, None, "mp.queue", st.endpoint, True, True)
        lp.add_out(ep)
    return ep


def _wrap_item(q, lp, ep, obj):
    """Under ``q._notempty``: record the send, queue pending markers; the envelope."""
    t = lp.tracer
    ep.count += 1  # before the send's seq: a snapshot's count never misses a message before it
    seq, lam, markers = lp.send(ep, len(obj) if type(obj) is bytes else 0,
                                obj if t.capture else None)
    if markers:
        for m in markers:
            q._buffer.append(MarkEnv(ep.channel, m.snapshot, m.initiator))
    return Env(ep.channel, f"{lp.name}#{seq}", lam, obj)


def q_put(self, obj, block=True, timeout=None):
    lp = _lp()
    if lp is None:
        return _ORIG["Queue.put"](self, obj, block, timeout)
    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    ep = _q_endpoint(self, lp)
    if not self._sem.acquire(block, timeout):
        from queue import Full

        raise Full
    with self._notempty:
        if self._thread is None:
            self._start_thread()
        try:
            env = _wrap_item(self, lp, ep, obj)
        except Exception as exc:
            lp.tracer.fault(exc, "multiprocessing.Queue.put")
            env = obj
        self._buffer.append(env)
        self._notempty.notify()


def jq_put(self, obj, block=True, timeout=None):
    lp = _lp()
    if lp is None:
        return _ORIG["JoinableQueue.put"](self, obj, block, timeout)
    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    ep = _q_endpoint(self, lp)
    if not self._sem.acquire(block, timeout):
        from queue import Full

        raise Full
    with self._notempty, self._cond:
        if self._thread is None:
            self._start_thread()
        try:
            env = _wrap_item(self, lp, ep, obj)
        except Exception as exc:
            lp.tracer.fault(exc, "multiprocessing.JoinableQueue.put")
            env = obj
        self._buffer.append(env)
        self._unfinished_tasks.release()
        self._notempty.notify()


def q_get(self, block=True, timeout=None):
    lp = _lp()
    if lp is None:
        return _ORIG["Queue.get"](self, block, timeout)
    from queue import Empty

    from multiprocessing.reduction import ForkingPickler

    if self._closed:
        raise ValueError(f"Queue {self!r} is closed")
    if "_cutscope_mpq" not in self.__dict__:
        _qstate(self)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    if block and timeout is not None:
        deadline = _time() + timeout
    while True:
        if block and timeout is None:
            self._rlock.acquire()
        else:
            wait = max(0.0, deadline - _time()) if block else None
            if not self._rlock.acquire(block, wait):
                raise Empty
        try:
            if not (block and timeout is None):
                if block:
                    if not self._poll(max(0.0, deadline - _time())):
                        raise Empty
                elif not self._poll():
                    raise Empty
            res = self._recv_bytes()
            try:
                obj = ForkingPickler.loads(res)
            except BaseException:
                self._sem.release()
                raise
            if type(obj) is MarkEnv:
                mark = obj
            else:
                mark = None
                self._sem.release()
                if type(obj) is Env:
                    obj = _got(self, lp, obj)
        finally:
            self._rlock.release()
        if mark is None:
            return obj
        lp.tracer.guard(lp.marker, mark.cid, mark.sid, mark.initiator)


def q_empty(self):
    """As the original (``not self._poll()``), except that a pipe holding only
    markers is empty: every item put and not yet taken holds a slot of the
    queue's semaphore (``qsize()``), and markers hold none."""
    if _ORIG["Queue.empty"](self):
        return True
    try:
        return self.qsize() == 0
    except NotImplementedError:  # no sem_getvalue (macOS): as the original
        return False


def _got(q, lp, env: Env):
    item = env.item
    try:
        cid = env.cid
        st = _qstate(q)
        if (cid, lp) not in st.seen:
            st.seen.add((cid, lp))
            lp.add_in(cid, True)
            lp.tracer.channel(cid, None, lp.name, "mp.queue", st.endpoint, True, True)
        t = lp.tracer
        lp.recv(cid, env.msg, env.stamp, len(item) if type(item) is bytes else 0,
                item if t.capture else None, item)
        lp.count_in(cid)  # after the receive: counted once it is in the channel's state
    except Exception as exc:
        lp.tracer.fault(exc, "multiprocessing.Queue.get")
    return item


def _feed(buffer, notempty, send_bytes, writelock, reader_close, writer_close, ignore_epipe,
          onerror, queue_sem):
    """The feeder thread, with the application's error hook given the bare item."""
    def on_error(e, obj):
        return onerror(e, obj.item if type(obj) is Env else obj)

    return _ORIG["Queue._feed"](buffer, notempty, send_bytes, writelock, reader_close,
                                writer_close, ignore_epipe, on_error, queue_sem)


def q_init(self, *a, **kw):
    _ORIG["Queue.__init__"](self, *a, **kw)
    for c in (self._reader, self._writer):  # the queue's own pipe: its items are traced above
        c.__dict__["_cutscope_c"] = SKIP


# -- Connection ------------------------------------------------------------------------------

class _CS:
    """Tracing state of one Connection object (this process)."""

    __slots__ = ("framed", "sock", "lock", "eps", "raw_out", "raw_in", "seen", "pid")

    def __init__(self, framed: bool):
        self.framed = framed  # our direction carries frames (the peer traces)
        self.sock = None  # is the descriptor a socket (peekable, markers allowed)? None: unknown
        self.lock = threading.Lock()
        self.eps: dict = {}  # logical process -> its endpoint on this connection
        self.raw_out = None
        self.raw_in = None
        self.seen: set = set()  # (channel, logical process) registered as incoming
        self.pid = os.getpid()


SKIP = _CS(False)


def _cstate(conn, create_framed: bool | None = None):
    st = conn.__dict__.get("_cutscope_c")
    if st is not None and st is not SKIP and st.pid != os.getpid():
        st = _CS(st.framed)  # inherited through fork: a new end of the same connection
        conn.__dict__["_cutscope_c"] = st
    if st is None and create_framed is not None:
        st = _CS(create_framed)
        conn.__dict__["_cutscope_c"] = st
    return st


def _is_sock(conn, st: _CS) -> bool:
    if st.sock is None:
        try:
            st.sock = stat.S_ISSOCK(os.fstat(conn.fileno()).st_mode)
        except OSError:
            st.sock = False
    return st.sock


def _endpoint(conn) -> str:
    try:
        fd = conn.fileno()
    except OSError:
        return "connection"
    return f"mp.connection:fd{fd}@{os.getpid()}"


def _flush_conn(conn):
    import weakref

    ref = weakref.ref(conn)

    def flush(ep: OutEndpoint) -> None:
        c = ref()
        if c is None or c.closed:
            ep.process.remove_out(ep)
            return
        st = c.__dict__.get("_cutscope_c")
        with st.lock:
            for m in ep.take_markers():
                _ORIG["Connection._send_bytes"](c, _mark_frame(ep.channel, m.snapshot, m.initiator))
    return flush


def _mark_frame(cid: str, sid: int, initiator: str) -> bytes:
    c = cid.encode()
    i = initiator.encode()
    return MAGIC + _HDR.pack(_M, sid, len(c)) + c + struct.pack(">H", len(i)) + i


def _data_header(cid: str, msg: str, stamp: int) -> bytes:
    c = cid.encode()
    m = msg.encode()
    return MAGIC + _HDR.pack(_D, stamp, len(c)) + c + struct.pack(">H", len(m)) + m


def _open_out(conn, st: _CS, lp) -> OutEndpoint:
    """``lp``'s endpoint on ``conn`` (outside ``st.lock``: ``add_out`` may flush at once)."""
    t = lp.tracer
    cid = t.new_channel_id()
    fifo = _is_sock(conn, st)
    ep = OutEndpoint(lp, cid, flush=_flush_conn(conn), fifo=fifo)
    have = st.eps.setdefault(lp, ep)
    if have is not ep:
        return have
    t.channel(cid, lp.name, None, "mp.connection", _endpoint(conn), True, fifo)
    if fifo:
        lp.add_out(ep)
    return ep


def c_send_bytes(self, buf):
    st = self.__dict__.get("_cutscope_c")
    if st is SKIP:
        hs = self.__dict__.get(_HS)
        if hs is not None:
            return _hs_send(self, hs, buf)
        return _ORIG["Connection._send_bytes"](self, buf)
    lp = _lp()
    if lp is None:
        return _ORIG["Connection._send_bytes"](self, buf)
    if st is None or st.pid != os.getpid():
        # A connection made before tracing, or by an untraced parent: raw, recorded.
        st = _cstate(self, create_framed=False)
    send = _ORIG["Connection._send_bytes"]
    n = len(buf)
    if not st.framed:
        t = lp.tracer
        try:
            if st.raw_out is None:
                st.raw_out = t.channel(None, lp.name, None, "mp.connection", _endpoint(self),
                                       False, False)
            lp.unframed("send", st.raw_out, n, bytes(buf) if t.capture else None)
        except Exception as exc:
            t.fault(exc, "Connection.send (raw)")
        return send(self, buf)
    ep = st.eps.get(lp)
    if ep is None:
        try:
            ep = _open_out(self, st, lp)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.send")
            return send(self, buf)
    with st.lock:
        try:
            t = lp.tracer
            seq, lam, markers = lp.send(ep, n, bytes(buf) if t.capture else None)
            frame = _data_header(ep.channel, f"{lp.name}#{seq}", lam) + bytes(buf)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.send")
            return send(self, buf)  # unreachable in strict mode; a raw message otherwise
        if markers:
            for m in markers:
                send(self, _mark_frame(ep.channel, m.snapshot, m.initiator))
        return send(self, frame)


def _parse(view):
    """(kind, number, channel, text, header length) of a frame."""
    kind, num, lc = _HDR.unpack_from(view, 16)
    off = 16 + _HDR.size
    cid = bytes(view[off:off + lc]).decode()
    off += lc
    (lt,) = struct.unpack_from(">H", view, off)
    off += 2
    text = bytes(view[off:off + lt]).decode()
    return kind, num, cid, text, off + lt


def c_recv_bytes(self, maxsize=None):
    st = self.__dict__.get("_cutscope_c")
    recv = _ORIG["Connection._recv_bytes"]
    if st is SKIP:
        hs = self.__dict__.get(_HS)
        if hs is not None:
            return _hs_recv(self, hs, maxsize)
        return recv(self, maxsize)
    lp = _lp()
    if lp is None:
        return recv(self, maxsize)
    if lp.pending:
        lp.tracer.guard(lp.safepoint)
    while True:
        buf = recv(self, None if maxsize is None else maxsize + OVERHEAD_MAX)
        if buf is None:
            return None
        with buf.getbuffer() as view:
            framed = len(view) >= 16 + _HDR.size and view[:16] == MAGIC
            if framed:
                kind, num, cid, text, hl = _parse(view)
                if kind == _M:
                    mark = (cid, num, text)
                else:
                    mark = None
                    n = len(view) - hl
                    if maxsize is not None and n > maxsize:
                        return None
                    out = io.BytesIO()
                    out.write(view[hl:])
            else:
                n = len(view)
                if maxsize is not None and n > maxsize:
                    return None
        if not framed:
            _record_raw_in(self, st, lp, n, buf)
            return buf
        if mark is not None:
            lp.tracer.guard(lp.marker, *mark)
            continue
        try:
            if st is None or st.pid != os.getpid():
                st = _cstate(self, create_framed=False)
            if (cid, lp) not in st.seen:
                st.seen.add((cid, lp))
                fifo = _is_sock(self, st)
                lp.add_in(cid, fifo)
                lp.tracer.channel(cid, None, lp.name, "mp.connection", None, True, fifo)
            t = lp.tracer
            lp.recv(cid, text, num, n, out.getvalue() if t.capture or lp.snaps else None)
        except Exception as exc:
            lp.tracer.fault(exc, "Connection.recv")
        return out


def _record_raw_in(conn, st, lp, n, buf) -> None:
    if st is None or st.pid != os.getpid():
        st = _cstate(conn, create_framed=False)
    t = lp.tracer
    try:
        if st.raw_in is None:
            st.raw_in = t.channel(None, None, lp.name, "mp.connection", _endpoint(conn), False,
                                  False)
            lp.add_in(st.raw_in, False)
        lp.recv(st.raw_in, None, None, n, buf.getvalue() if t.capture else None)
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
    return len(head) == 21 and head[4:20] == MAGIC and head[20] == _M


def _take_marker(conn) -> None:
    """Read the marker frame at the head of ``conn`` and hand it to the protocol."""
    buf = _ORIG["Connection._recv_bytes"](conn, None)
    with buf.getbuffer() as view:
        kind, num, cid, text, _hl = _parse(view)
    lp = _lp()
    if lp is not None and kind == _M:
        lp.tracer.guard(lp.marker, cid, num, text)


def c_poll(self, timeout):
    """Truthful readiness: a marker alone at the head is consumed, never reported."""
    poll = _ORIG["Connection._poll"]
    st = self.__dict__.get("_cutscope_c")
    lp = _lp()
    if st is SKIP or lp is None:
        return poll(self, timeout)
    deadline = None if timeout is None else _time() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - _time())
        if not poll(self, left):
            return False
        if st is None:
            st = _cstate(self, create_framed=False)
        if not _is_sock(self, st) or not _marker_at_head(self):
            return True
        if lp.pending:
            lp.tracer.guard(lp.safepoint)
        _take_marker(self)


def wait(object_list, timeout=None):
    """``multiprocessing.connection.wait``, truthful: a marker alone is consumed (a safe
    point, as in ``poll``) and does not make its connection ready."""
    orig = _ORIG["wait"]
    lp = _lp()
    if lp is None:
        return orig(object_list, timeout)
    deadline = None if timeout is None else _time() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - _time())
        ready = orig(object_list, left)
        out = []
        took = False
        for o in ready:
            st = getattr(o, "__dict__", {}).get("_cutscope_c")
            if st is None or st is SKIP or not _is_sock(o, st) or not _marker_at_head(o):
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
    a, b = _ORIG["Pipe"](duplex)
    if active() is not None:
        for c in (a, b):
            c.__dict__["_cutscope_c"] = _CS(True)  # both ends stay in traced processes
    return a, b


def _rebuild_conn(fn, args, flag):
    c = fn(*args)
    if flag == "skip":
        c.__dict__["_cutscope_c"] = SKIP
    elif flag is not None:
        c.__dict__["_cutscope_c"] = _CS(flag == "framed")
    return c


def reduce_connection(conn):
    fn, args = _ORIG["reduce_connection"](conn)
    st = conn.__dict__.get("_cutscope_c")
    flag = None if st is None else "skip" if st is SKIP else "framed" if st.framed else "raw"
    return _rebuild_conn, (fn, args, flag)


# -- Listener / Client: the authentication handshake says who traces ------------------------
#
# multiprocessing's own deliver_challenge / answer_challenge run; the wrappers only mark the
# connection, and the Connection wrappers act on the handshake's messages:
# - delivering: the challenge goes out with MAGIC appended (the peer learns that we trace).
#   A challenge without a digest prefix (3.11's bare 20 bytes) also gets the prefix
#   b"{md5}", because 3.12+ answers an unprefixed challenge only at its legacy length.
#   The peer answers with a MAC over the challenge it received; when that MAC is valid
#   for the authkey, the stdlib's check receives the MAC over its own challenge (a bare
#   HMAC-MD5 for a bare challenge, else the same kind as the peer's answer), so it accepts
#   exactly the answers it would accept without cutscope. An invalid answer is handed on
#   unchanged and fails as before.
# - answering: a challenge that ends with MAGIC comes from a traced peer; it is answered
#   unchanged (the MAC covers the magic).
# The MAC formats are the protocol's: a bare HMAC-MD5 (3.11 and 3.12+'s legacy mode), or
# b"{digest}" + HMAC (3.12+).

class _Deliver:
    __slots__ = ("authkey", "challenge", "sent", "answered")

    def __init__(self, authkey: bytes):
        self.authkey = authkey
        self.challenge = None  # the challenge as the stdlib made it
        self.sent = None  # the challenge as it went out
        self.answered = False


class _Answer:
    __slots__ = ("peer",)

    def __init__(self):
        self.peer = False


_HS = "_cutscope_hs"
CHALLENGE = b"#CHALLENGE#"  # how the challenge message starts (every version's protocol)
_LEGACY_LENGTHS = (16, 20)  # the answers without a digest prefix (HMAC-MD5, HMAC-SHA1)


def _mac_for(authkey: bytes, response: bytes, signed: bytes, bare: bytes):
    """``response`` is a valid MAC over ``signed``: the MAC over ``bare`` that the stdlib's
    check of ``bare`` accepts, else None."""
    import hmac

    name, mac, prefix = "md5", response, b""
    # As the stdlib reads an answer: at a legacy length (a bare HMAC-MD5 or -SHA1) it
    # has no prefix, even when its first byte happens to be b"{".
    if len(response) not in _LEGACY_LENGTHS and response[:1] == b"{":
        end = response.find(b"}", 1, 22)
        if end < 0:
            return None
        try:
            name = response[1:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        mac, prefix = response[end + 1:], response[:end + 1]
    try:
        expected = hmac.new(authkey, signed, name).digest()
    except ValueError:
        return None
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        return None
    if bare[:1] != b"{":
        return hmac.new(authkey, bare, "md5").digest()
    return prefix + hmac.new(authkey, bare, name).digest()


def _hs_send(conn, hs, buf):
    """A handshake message going out (the connection is SKIP)."""
    if type(hs) is _Deliver and hs.challenge is None:
        b = bytes(buf)
        if b.startswith(CHALLENGE):
            hs.challenge = b[len(CHALLENGE):]
            hs.sent = (hs.challenge if hs.challenge[:1] == b"{" else
                       b"{md5}" + hs.challenge) + MAGIC
            return _ORIG["Connection._send_bytes"](conn, CHALLENGE + hs.sent)
    return _ORIG["Connection._send_bytes"](conn, buf)


def _hs_recv(conn, hs, maxsize):
    """A handshake message coming in (the connection is SKIP)."""
    buf = _ORIG["Connection._recv_bytes"](conn, maxsize)
    if buf is None:
        return buf
    if type(hs) is _Deliver:
        if hs.challenge is not None and not hs.answered:
            hs.answered = True
            mac = _mac_for(hs.authkey, buf.getvalue(), hs.sent, hs.challenge)
            if mac is not None:
                return io.BytesIO(mac)
    elif type(hs) is _Answer:
        with buf.getbuffer() as view:
            if len(view) >= len(CHALLENGE) + 16 and view[-16:] == MAGIC and \
                    view[:len(CHALLENGE)] == CHALLENGE:
                hs.peer = True
    return buf


def deliver_challenge(connection, authkey, *a, **kw):
    orig = _ORIG["deliver_challenge"]
    if not isinstance(authkey, bytes) or active() is None:
        return orig(connection, authkey, *a, **kw)
    _in_handshake(connection)
    d = connection.__dict__
    d[_HS] = _Deliver(authkey)
    try:
        r = orig(connection, authkey, *a, **kw)
    finally:
        d.pop(_HS, None)
    _handshake_step(connection, "_cutscope_delivered", "_cutscope_answered")
    return r


def answer_challenge(connection, authkey, *a, **kw):
    orig = _ORIG["answer_challenge"]
    if not isinstance(authkey, bytes) or active() is None:
        return orig(connection, authkey, *a, **kw)
    _in_handshake(connection)
    d = connection.__dict__
    hs = d[_HS] = _Answer()
    try:
        r = orig(connection, authkey, *a, **kw)
    finally:
        d.pop(_HS, None)
    if hs.peer:
        d["_cutscope_peer"] = True  # the peer traces
    _handshake_step(connection, "_cutscope_answered", "_cutscope_delivered")
    return r


def _handshake_step(c, mine: str, other: str) -> None:
    """The handshake is over when both halves ran (server: deliver then answer; client:
    answer then deliver); from then on our direction carries frames if the peer traces.
    The handshake itself stays raw."""
    d = c.__dict__
    if d.pop(other, False):
        _handshaken(c)
    else:
        d[mine] = True


def _handshaken(c):
    d = c.__dict__
    peer = d.pop("_cutscope_peer", False)
    st = d.get("_cutscope_c")
    if st is None or st is SKIP or st.pid != os.getpid():
        d["_cutscope_c"] = _CS(peer)
    elif peer:
        st.framed = True
    return c


def _in_handshake(c) -> None:
    """The handshake's own messages are neither framed nor recorded."""
    d = c.__dict__
    if d.get("_cutscope_c") is None:
        d["_cutscope_c"] = SKIP


def _made(c):
    if c.__dict__.get("_cutscope_c") is None and active() is not None:
        c.__dict__["_cutscope_c"] = _CS(False)
    return c


def Client(*a, **kw):
    return _made(_ORIG["Client"](*a, **kw))


def accept(self):
    return _made(_ORIG["Listener.accept"](self))


# -- processes -----------------------------------------------------------------------------------

def _explicit_name(proc, parent: str) -> str | None:
    """The child's logical-process name: the name the program gave, else None.

    multiprocessing.Pool names its workers itself (``ForkPoolWorker-N``): such a
    name is qualified with the parent (``<parent>/ForkPoolWorker-1``), so that two
    programs with a Pool on one store keep their workers apart.
    """
    try:
        default = type(proc).__name__ + "-" + ":".join(str(i) for i in proc._identity)
        name = proc._name
    except Exception:
        return None
    if not name or name == default:
        return None
    if name == default.replace("Process", "PoolWorker"):
        return f"{parent}/{name}"
    return name


class _Boot:
    """Pickled with a process object for spawn/forkserver: starts cutscope in the child."""

    __slots__ = ("cfg",)

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def __reduce__(self):
        return _boot_child, (self.cfg,)


def _boot_child(cfg: dict):
    if active() is not None:
        return None
    try:
        from cutscope import integrations
        from cutscope.tracer.tracer import Tracer

        if cfg.get("parent"):
            os.environ["CUTSCOPE_PARENT"] = cfg["parent"]
        name = cfg.get("name")
        if name is None and cfg.get("parent"):
            name = f"{cfg['parent']}/{os.getpid()}"
        t = Tracer(db=cfg.get("db"), name=name, capture_payload=cfg.get("capture", 0),
                   strict=cfg.get("strict"))
        t.named = True  # _bootstrap keeps it (it is unique already: Process.name#2 ...)
        t.start()
        integrations.instrument(t)
    except Exception as exc:  # the child runs on, untraced
        import logging

        logging.getLogger("cutscope").warning("cutscope: could not trace child: %s", exc)
        if cfg.get("strict"):
            raise
    return None


# The Process that the calling thread is starting (BaseProcess.start): a fork child
# (this thread, copied) takes its name at the fork (Tracer.fork_name -> _fork_name).
_starting = threading.local()


def _fork_name() -> str | None:
    cfg = getattr(_starting, "cfg", None)
    if cfg is None:
        return None
    return cfg["name"] or f"{cfg['parent']}/{os.getpid()}"


def start(self):
    t = active()
    if t is None:
        return _ORIG["BaseProcess.start"](self)
    url = getattr(t.store, "url", None)
    cfg = {"db": url, "capture": t.capture, "strict": t.strict, "parent": t.main.name,
           "name": _explicit_name(self, t.main.name)}
    self.__dict__["_cutscope_boot"] = _Boot(cfg)
    _starting.cfg = cfg
    t.fork_name = _fork_name
    try:
        return _ORIG["BaseProcess.start"](self)
    finally:
        _starting.cfg = None
        self.__dict__.pop("_cutscope_boot", None)


TERM_FLUSH_S = 3.0  # at most this long to flush when SIGTERM ends a child (Pool.terminate)


# [stopping, SIGTERM arrived meanwhile]: a SIGTERM that comes while the child's
# tracer stops (the end of _bootstrap) waits for the stop, then ends the process.
_term = [False, False]


def _on_sigterm(signum, frame):
    """SIGTERM in a child that had no handler: flush what was recorded, then die of it.

    The handler runs on the main thread between two bytecodes of whatever it was
    doing, possibly inside the tracer with one of its locks held (the recorder's
    wake-up event, its buffer). Taking such a lock here would wait forever, so the
    flush runs on a thread of its own (started with ``_thread``, which takes no
    lock of ``threading``), and the handler waits for it at most ``TERM_FLUSH_S``:
    if the interrupted code held a lock the flush needs, the last events are lost
    and the process dies on time, as it would without cutscope."""
    import _thread
    import signal

    if _term[0]:
        # Interrupting Tracer.stop(), whose last write is on this thread's stack: a
        # flush from here would return at once (the writer is us) and the process
        # would die with that write half done. Pool workers see this: the sentinel
        # ends their loop just as Pool.terminate() sends SIGTERM.
        _term[1] = True
        return
    t = active()
    if t is not None:
        done = _thread.allocate_lock()
        done.acquire()
        try:
            _thread.start_new_thread(_term_flush, (t, done))
        except Exception:
            pass
        else:
            done.acquire(timeout=TERM_FLUSH_S + 0.5)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _term_flush(t, done) -> None:
    import time as _t

    try:
        for lp in list(t.processes.values()):
            t.recorder.other(("ended", lp.name, _t.time_ns()))
        t.recorder.flush(timeout=TERM_FLUSH_S)
    except Exception:
        pass
    finally:
        done.release()


def _install_sigterm() -> None:
    import signal

    try:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        pass


def _bootstrap(self, *a, **kw):
    t = active()
    if t is not None:
        # In the child our name is "<parent>/<pid>" (or, under spawn, the name the
        # parent chose): the parent is what comes before the last "/".
        # A child forked by BaseProcess.start, or spawned and traced by _boot_child,
        # has its name already (t.named); one traced before it knew its Process
        # (`cutscope run`'s sitecustomize in a spawn child, a forkserver's child)
        # takes it now, and gives back the name it had.
        name = _explicit_name(self, t.main.name.rpartition("/")[0] or t.main.name)
        if name and not t.named and t.main.name != name:
            t.guard(t.rename_main, name)
        t.named = True
        # Pool.terminate() (and `with Pool() as p`) SIGTERMs its workers: without a
        # handler they die before the recorder thread writes their last events.
        _install_sigterm()
    try:
        return _ORIG["BaseProcess._bootstrap"](self, *a, **kw)
    finally:
        t = active()
        if t is not None:  # os._exit() follows: no atexit, so flush now
            _term[0] = True
            try:
                from cutscope import integrations

                integrations.uninstrument()
                t.stop()
            except Exception:
                pass
            finally:
                _term[0] = False
            if _term[1]:  # what the SIGTERM would have done, now that the events are out
                # multiprocessing's exit finalizers (a Queue's feeder thread writes
                # its buffer and is joined) run inside _bootstrap up to 3.12, and
                # after it returns, as an atexit function, from 3.13. The signal takes
                # effect after them in both: at once if they ran (util._exiting, read
                # only where it exists), else as the last finalizer.
                from multiprocessing import util

                if getattr(util, "_exiting", True) is False:
                    util.Finalize(None, _die_of_sigterm, exitpriority=-1000)
                else:
                    _die_of_sigterm()


def _die_of_sigterm() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# -- installing ---------------------------------------------------------------------------------

def _patch_process(module=None) -> None:
    if not _hooks.on:
        return
    from multiprocessing import process as P

    _set(P.BaseProcess, "start", "BaseProcess.start", start)
    _set(P.BaseProcess, "_bootstrap", "BaseProcess._bootstrap", _bootstrap)


def _patch_queues(module=None) -> None:
    if not _hooks.on:
        return
    from multiprocessing import queues as Q

    _set(Q.Queue, "__init__", "Queue.__init__", q_init)
    _set(Q.Queue, "put", "Queue.put", q_put)
    _set(Q.Queue, "get", "Queue.get", q_get)
    _set(Q.Queue, "empty", "Queue.empty", q_empty)
    _set(Q.JoinableQueue, "put", "JoinableQueue.put", jq_put)
    _set(Q.Queue, "_feed", "Queue._feed", _FEED)


def _patch_connection(module=None) -> None:
    if not _hooks.on:
        return
    from multiprocessing import connection as C
    from multiprocessing.reduction import ForkingPickler

    _set(C.Connection, "_send_bytes", "Connection._send_bytes", c_send_bytes)
    _set(C.Connection, "_recv_bytes", "Connection._recv_bytes", c_recv_bytes)
    _set(C.Connection, "_poll", "Connection._poll", c_poll)
    _set(C, "Pipe", "Pipe", Pipe)
    _set(C, "wait", "wait", wait)
    _set(C, "Client", "Client", Client)
    _set(C.Listener, "accept", "Listener.accept", accept)
    _set(C, "deliver_challenge", "deliver_challenge", deliver_challenge)
    _set(C, "answer_challenge", "answer_challenge", answer_challenge)
    red = ForkingPickler._extra_reducers
    if red.get(C.Connection) is C.reduce_connection:
        _ORIG["reduce_connection"] = C.reduce_connection
        red[C.Connection] = reduce_connection
        _PATCHED.append((red, C.Connection, C.reduce_connection, reduce_connection, True))


_PATCHED: list = []  # (owner, attr, original, ours, is_dict)
_FEED = staticmethod(_feed)


def _set(owner, attr: str, key: str, fn) -> None:
    cur = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if cur is fn:
        return
    _ORIG[key] = cur
    setattr(owner, attr, fn)
    _PATCHED.append((owner, attr, cur, fn, False))


_HOOKS = (("multiprocessing.process", _patch_process), ("multiprocessing.queues", _patch_queues),
          ("multiprocessing.connection", _patch_connection))


@register
class MultiprocessingInstrumentor(Instrumentor):
    """Child processes, ``multiprocessing.Queue`` and ``Connection`` (see the module doc)."""

    name = "mp"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # The names the module doc describes: a child's bootstrap, Connection's byte-level
    # I/O, the queue's feeder thread and its buffer, a process's identity and name.
    private_names = (
        "multiprocessing.process.BaseProcess._bootstrap",
        "multiprocessing.Process()._identity", "multiprocessing.Process()._name",
        "multiprocessing.connection.Connection._send_bytes",
        "multiprocessing.connection.Connection._recv_bytes",
        "multiprocessing.connection.Connection._poll",
        "multiprocessing.queues.Queue._feed", "multiprocessing.queues.Queue._start_thread",
        "multiprocessing.Queue()._rlock._semlock", "multiprocessing.Queue()._reader",
        "multiprocessing.Queue()._writer", "multiprocessing.Queue()._closed",
        "multiprocessing.Queue()._notempty", "multiprocessing.Queue()._thread",
        "multiprocessing.Queue()._buffer")

    def _instrument(self, tracer) -> None:
        _hooks.start(tracer, *_HOOKS)

    def _uninstrument(self) -> None:
        _hooks.stop()
        while _PATCHED:
            owner, attr, orig, ours, is_dict = _PATCHED.pop()
            if is_dict:
                if owner.get(attr) is ours:
                    owner[attr] = orig
            elif (owner.__dict__.get(attr) if isinstance(owner, type)
                  else getattr(owner, attr, None)) is ours:
                setattr(owner, attr, orig)
