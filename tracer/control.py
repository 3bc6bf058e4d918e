"""Local control sockets: snapshot requests and reports without the store's write lock.

A coordinator reaches a process through the store or through a local control
socket that only the owner can use. Through the store alone, a request waits
for the process's recorder thread to poll it (every 50 ms, and not at all while
that thread is blocked in a write), and every record of the snapshot (a state,
a closed channel, "done") waits for a write turn on the store, which all the
traced processes of a machine share. Here:

- every traced interpreter serves a Unix stream socket, ``<dir>/p<pid>.sock``,
  from a thread of its own that does nothing else (``ControlServer``): a
  request sets ``lp.pending`` about a millisecond after it was sent, whatever
  the recorder is doing;
- a coordinator listens on a socket of its own (``Inbox``), at a path that
  every local process of the same store derives from the store and the
  snapshot's id (``inbox_path``): nobody needs telling where to report. A
  process sends its snapshot records (state, closed channels, done) straight
  to it, and the coordinator writes them to the store in one transaction,
  together with the snapshot's end.

``<dir>`` is ``$CUTSCOPE_CONTROL_DIR`` or ``/tmp/cutscope-<uid>``, a directory
of mode 0700 owned by the user (anything else, and the control sockets are not
used: the store path still works). Processes on another host, or without a
socket, are reached through the store as before.

The same directory holds the socket integration's registry (``registry_dir``):
small entries written atomically, one subdirectory per kind: ``c/`` the traced
ends of TCP connections, ``i/`` connects in progress, ``h/`` connection states
handed to another process (docs/protocol.md, "Negotiation").

Messages are frames: a 4-byte big-endian length, then a JSON object. The
sockets are ``_socket.socket`` objects, so the socket integration never sees
them (they are cutscope's own traffic, not the application's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import struct
import threading
import time
import _socket

from .records import RECORD_TYPES

log = logging.getLogger("cutscope")

_LEN = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
SEND_TIMEOUT = 1.0  # seconds a sender waits on a peer that does not read


def control_dir() -> str | None:
    """The per-user directory of the control sockets (created 0700), or None if it
    cannot be made private (then only the store is used)."""
    d = os.environ.get("CUTSCOPE_CONTROL_DIR") or f"/tmp/cutscope-{os.geteuid()}"
    try:
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return d


def process_path(d: str, pid: int) -> str:
    return os.path.join(d, f"p{pid}.sock")


def inbox_path(d: str, store_url: str, sid: int) -> str:
    """The inbox of the coordinator of snapshot ``sid`` of the store at ``store_url``
    (while it runs): a process that records for that snapshot reports there if the
    socket exists, else to the store (the coordinator is on another host)."""
    key = hashlib.sha1(store_url.encode()).hexdigest()[:12]
    return os.path.join(d, f"s{key}-{sid}.sock")


# -- the registry: small entries named by a key, one directory per kind -------------------

_reg_dirs: dict = {}  # (pid, kind) -> directory, or None where it cannot be private


def registry_dir(kind: str) -> str | None:
    """``<control dir>/<kind>`` (created 0700), or None. Cached per process."""
    k = (os.getpid(), kind)
    if k in _reg_dirs:
        return _reg_dirs[k]
    base = control_dir()
    d = None
    if base is not None:
        d = os.path.join(base, kind)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError:
            d = None
    _reg_dirs[k] = d
    return d


def put_entry(kind: str, name: str, value: str) -> bool:
    """Write entry ``name`` = ``value`` atomically: a symbolic link whose target is the
    value, created in place if there is none, else created beside it and renamed over
    it (a reader sees the old value, the new one, or none)."""
    d = registry_dir(kind)
    if d is None:
        return False
    path = os.path.join(d, name)
    try:
        os.symlink(value, path)  # a new entry: one syscall
        return True
    except FileExistsError:
        pass
    except OSError:
        return False
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        try:
            os.symlink(value, tmp)
        except FileExistsError:
            os.unlink(tmp)
            os.symlink(value, tmp)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def get_entry(kind: str, name: str) -> str | None:
    d = registry_dir(kind)
    if d is None:
        return None
    try:
        return os.readlink(os.path.join(d, name))
    except OSError:
        return None


def drop_entry(kind: str, name: str, prefix: str = "") -> None:
    """Remove entry ``name`` if its value starts with ``prefix`` (an owner's pid)."""
    d = registry_dir(kind)
    if d is None:
        return
    path = os.path.join(d, name)
    try:
        if prefix and not os.readlink(path).startswith(prefix):
            return
        os.unlink(path)
    except OSError:
        pass


def entry_names(kind: str, prefix: str) -> list[str]:
    """The names of the entries of ``kind`` that start with ``prefix``."""
    d = registry_dir(kind)
    if d is None:
        return []
    try:
        return [n for n in os.listdir(d)
                if n.startswith(prefix) and not n.endswith((".tmp", ".take"))]
    except OSError:
        return []


def put_file(kind: str, name: str, data: bytes) -> bool:
    """Write entry ``name`` as a file (for values too long for ``put_entry``), atomically."""
    d = registry_dir(kind)
    if d is None:
        return False
    path = os.path.join(d, name)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def take_file(kind: str, name: str) -> bytes | None:
    """Read and remove the file entry ``name``: its bytes, or None if there is none (or
    another process took it first)."""
    d = registry_dir(kind)
    if d is None:
        return None
    path = os.path.join(d, name)
    mine = f"{path}.{os.getpid()}.{threading.get_ident()}.take"
    try:
        os.rename(path, mine)  # one taker wins
    except OSError:
        return None
    try:
        with open(mine, "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        try:
            os.unlink(mine)
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


# -- frames ---------------------------------------------------------------------------

def _recv_exact(s, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frames(s):
    """The messages on one connection, until its end."""
    while True:
        head = _recv_exact(s, 4)
        if head is None:
            return
        (n,) = _LEN.unpack(head)
        if n > MAX_FRAME:
            raise ValueError(f"control frame of {n} bytes")
        body = _recv_exact(s, n)
        if body is None:
            return
        yield json.loads(body)


def frame(msg: dict) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


def send(path: str, *msgs: dict, timeout: float = SEND_TIMEOUT) -> bool:
    """Send ``msgs`` on one connection to the socket at ``path``; False if nobody is there."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"".join(frame(m) for m in msgs))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Connector:
    """Sends to several sockets at once: connect and write to all, then close all
    (a request reaches every process before any of them has to run)."""

    def __init__(self):
        self.socks: list = []

    def send(self, path: str, *msgs: dict) -> bool:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.settimeout(SEND_TIMEOUT)
            s.connect(path)
            s.sendall(b"".join(frame(m) for m in msgs))
        except OSError:
            s.close()
            return False
        self.socks.append(s)
        return True

    def close(self) -> None:
        socks, self.socks = self.socks, []
        for s in socks:
            s.close()


# -- records in transit -------------------------------------------------------------------

def encode_records(items: list[tuple]) -> list:
    """Snapshot records (the recorder's ``snap_*`` tuples) in a JSON form; states
    and in-transit messages already in their stored form (``decode_records``)."""
    from .store.values import message_record

    out = []
    for it in items:
        kind = it[0]
        if kind == "snap_state":
            _, sid, p, seq, state, marked, initiator = it
            out.append([kind, sid, p, seq, json.dumps(state, default=repr), list(marked), initiator])
        elif kind == "snap_chan":
            _, sid, p, ch, msgs, complete = it
            recs = []
            for m in msgs:
                r = m if isinstance(m, dict) else message_record(*m)
                r = dict(r)
                if r.get("payload") is not None:
                    r["payload"] = base64.b64encode(r["payload"]).decode()
                recs.append(r)
            out.append([kind, sid, p, ch, recs, complete])
        else:
            out.append(list(it))
    return out


def decode_records(items: list) -> list[tuple]:
    """Records from ``encode_records``' form, as the named tuples of ``records.py``."""
    out = []
    for it in items:
        if it[0] == "snap_chan":
            recs = []
            for r in it[4]:
                r = dict(r)
                if r.get("payload") is not None:
                    r["payload"] = base64.b64decode(r["payload"])
                recs.append(r)
            it = it[:4] + [recs] + it[5:]
        out.append(RECORD_TYPES[it[0]](*it))
    return out


# -- serving ----------------------------------------------------------------------------

class _Listener:
    """A Unix stream socket served by a daemon thread; ``handle(msg)`` per message."""

    def __init__(self, path: str, name: str):
        self.path = path
        self.sock = s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s.bind(path)
        # (No umask around bind: it is the whole process's, and the application's
        # other threads create files too. The 0700 directory keeps others out.)
        os.chmod(path, 0o600)
        s.listen(128)
        s.settimeout(0.5)
        self.running = True
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        s = self.sock
        while self.running:
            try:
                fd, _ = s._accept()
            except TimeoutError:
                continue
            except OSError:
                if not self.running:
                    return
                time.sleep(0.01)
                continue
            c = _socket.socket(fileno=fd)
            try:
                c.settimeout(SEND_TIMEOUT)
                for msg in read_frames(c):
                    self.handle(msg)
            except Exception as exc:
                if self.running:
                    self.error(exc)
            finally:
                c.close()

    def handle(self, msg: dict) -> None:  # pragma: no cover - overridden
        pass

    def error(self, exc: BaseException) -> None:
        log.debug("cutscope: control socket: %s", exc)

    def close(self) -> None:
        self.running = False
        if os.getpid() == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


class ControlServer(_Listener):
    """An interpreter's control socket: snapshot requests, the end."""

    def __init__(self, tracer, d: str, on_message):
        """``on_message(tracer, msg)`` handles each request (the snapshot protocol's
        ``snapshot.on_control``); this module only carries the messages."""
        self.tracer = tracer
        self.dir = d
        self.on_message = on_message
        super().__init__(process_path(d, os.getpid()), "cutscope-control")

    def handle(self, msg: dict) -> None:
        if msg.get("store") != self.tracer.store.url:  # a stale socket name reused by another trace
            return
        self.on_message(self.tracer, msg)

    def error(self, exc: BaseException) -> None:
        self.tracer._writer_error(exc)


class Records:
    """A coordinator's inbox: the records the processes report, and a wake-up per report."""

    path = None

    def __init__(self):
        self.records: list[tuple] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def put(self, recs: list[tuple]) -> None:
        with self.lock:
            self.records.extend(recs)
        self.wake.set()

    def take(self) -> list[tuple]:
        with self.lock:
            out, self.records = self.records, []
        return out

    def close(self) -> None:
        pass


class Inbox(_Listener, Records):
    """An inbox on a control socket (``inbox_path``): the other interpreters of this
    host report to it."""

    def __init__(self, d: str, store_url: str, sid: int):
        Records.__init__(self)
        _Listener.__init__(self, inbox_path(d, store_url, sid), f"cutscope-inbox-{sid}")

    def handle(self, msg: dict) -> None:
        if msg.get("op") == "rec":
            recs = decode_records(msg.get("items") or [])
            self.put(recs)


__all__ = ["control_dir", "process_path", "ControlServer", "Inbox", "Connector", "send",
           "encode_records", "decode_records", "registry_dir", "put_entry", "get_entry",
           "drop_entry", "entry_names", "put_file", "take_file", "pid_alive"]
