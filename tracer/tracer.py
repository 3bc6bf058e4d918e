"""The Tracer: one per OS process; owns the store, the recorder and the logical processes."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
import traceback
from typing import Callable

from . import process as _process
from .process import LogicalProcess, current_var
from .recorder import Recorder
from .records import (channel_ends_record, ended_record, fault_record, heartbeat_record,
                      process_record)
from .store import open_store

log = logging.getLogger("cutscope")

HEARTBEAT_S = 1.0  # how often the recorder says the processes of this interpreter are alive
FORK_CLAIM_S = 2.0  # at most this long a fork child waits to register its name in the store

# The running tracer of this interpreter, if any: set by start and stop (_set_active),
# read through active().
_active_tracer: "Tracer | None" = None


def _set_active(tracer: "Tracer | None", main) -> None:
    """Make ``tracer`` (and its main logical process ``main``) the running ones."""
    global _active_tracer
    _active_tracer = tracer
    _process.default_process[0] = main


def strict_default() -> bool:
    return os.environ.get("CUTSCOPE_STRICT", "") not in ("", "0", "false", "no")


def default_name() -> str:
    """This OS process's logical-process name.

    ``CUTSCOPE_NAME`` if set, else ``<parent>/<pid>`` when a traced parent
    launched us (``CUTSCOPE_PARENT``), else ``host:pid``.
    """
    name = os.environ.get("CUTSCOPE_NAME")
    if name:
        return name
    parent = os.environ.get("CUTSCOPE_PARENT")
    if parent:
        return f"{parent}/{os.getpid()}"
    return f"{socket.gethostname()}:{os.getpid()}"


class Tracer:
    """Records the events of the logical processes of this OS process."""

    def __init__(self, db: str | None = None, name: str | None = None, capture_payload: int = 0,
                 strict: bool | None = None, store=None, drop: bool = False):
        self.strict = strict_default() if strict is None else strict
        self.capture = int(capture_payload or 0)
        self.store = store if store is not None else open_store(db, capture=self.capture)
        self.store.capture = self.capture
        self.recorder = Recorder(self.store, drop=drop, tick=self._tick, on_error=self._writer_error)
        self.processes: dict[str, LogicalProcess] = {}  # by the name registered
        self.asked: dict[str, LogicalProcess] = {}  # by the name asked for (process())
        self.finished_snaps: dict[str, set[int]] = {}
        self.deferred_flush: list = []  # endpoints whose markers the recorder thread writes
        self.snapshot_signals = 0  # SIGUSR1s received; the recorder thread starts a snapshot each
        # snapshot id -> where this interpreter's records of it go: a coordinator's
        # control socket path, or a coordinator of this interpreter (a callable).
        self.snap_sinks: dict[int, object] = {}
        self.control = None  # the control socket server (tracer/control.py), once started
        self.listener = None  # PostgreSQL notifications (tracer/notify.py), once started
        self._sink_lock = threading.Lock()
        from .snapshot.polling import Poller  # polls requests, ends snapshots, flushes markers

        self.tick_hooks: list[Callable[[Tracer], None]] = [Poller()]
        self._lock = threading.RLock()
        self._last_beat = 0.0
        self.host = socket.gethostname()
        self.faults = 0
        # () -> the name a fork child takes, or None for "<parent>/<pid>": asked in the
        # child, at the fork (integrations/mp/children.py: the Process being started).
        self.fork_name: Callable[[], str | None] | None = None
        # The main name came from whoever created this OS process (a multiprocessing
        # Process's name, or its parent's choice): nothing renames it later.
        self.named = False
        self.main = None
        self.main = self._new_process(name or default_name(), parent=os.environ.get("CUTSCOPE_PARENT"),
                                      argv=" ".join(sys.argv))
        # State providers of the main logical process that do not come from the
        # program: CUTSCOPE_STATE's (tracer/providers.py) and the integrations' own
        # (a dask scheduler's tasks). A fork child's main process gets them too.
        from .providers import from_env

        self.main_providers: list[Callable[[], dict]] = from_env()
        self.main.providers.extend(self.main_providers)
        self.store.marks = self._marks
        self.store.writer = self.main.name
        self.running = False

    # -- logical processes ----------------------------------------------------------

    def _new_process(self, name: str, parent: str | None = None, clock: int = 0,
                     argv: str | None = None, bounded: bool = False) -> LogicalProcess:
        """A new logical process, registered in the store under ``name`` made unique
        (``claim``). ``bounded``: in a fork child, the registration runs in the
        recorder's thread and is waited for at most ``FORK_CLAIM_S``."""
        now = time.time_ns()
        claim = self._claim_bounded if bounded else self._claim
        name = claim(name, parent, argv, now)
        lp = LogicalProcess(self, name, seq=0, clock=clock)
        self.processes[name] = lp
        return lp

    def _claim(self, name: str, parent: str | None, argv: str | None, now: int) -> str:
        """Register ``name`` (or ``name#2``, ``name#3``, ...: the first that no process
        of the store has had) and return the name registered. If the store cannot do
        it, the name is used as it is, and the fault recorded."""
        try:
            return self.store.claim_name(name, os.getpid(), self.host, parent, now, argv)
        except Exception as exc:
            self.recorder.other(process_record(name, os.getpid(), self.host, parent, now, argv, 0))
            self.fault(exc, f"registering the name {name!r}")
            return name

    def _claim_bounded(self, name: str, parent: str | None, argv: str | None, now: int) -> str:
        """``_claim`` from a fork child: another thread of the parent may have held a
        lock of the database library at the fork, so the store is used from the
        recorder's thread (``Recorder.call``), and the application goes on after
        ``FORK_CLAIM_S`` whatever it does (with the name as it is, the fault recorded)."""
        late = threading.Event()
        pid, host = os.getpid(), self.host

        def claim():
            got = self.store.claim_name(name, pid, host, parent, now, argv)
            if late.is_set() and got != name:  # we went on under `name`: give it back
                self.store.release_name(got, pid, host)
            return got

        box = self.recorder.call(claim, FORK_CLAIM_S)
        late.set()
        if box and box[0][0]:
            return box[0][1]
        why = box[0][1] if box else TimeoutError(f"no answer from the store in {FORK_CLAIM_S} s")
        self.recorder.other(process_record(name, pid, host, parent, now, argv, 0))
        self.faults += 1
        log.warning("cutscope: registering the name %r: %s", name, why)
        self.recorder.other(fault_record(time.time_ns(), name, f"registering the name {name!r}",
                                         repr(why)))
        return name

    def _marks(self) -> dict[str, tuple[int, int]]:
        """{name: (seq, clock)} of this interpreter's logical processes (the store keeps
        them with each batch)."""
        return {n: (lp.seq, lp.clock) for n, lp in list(self.processes.items())}

    def process(self, name: str) -> LogicalProcess:
        """The logical process called ``name`` in this interpreter (created on first use)."""
        with self._lock:
            lp = self.asked.get(name) or self.processes.get(name)
            if lp is None:
                parent = current_var.get() or self.main
                lp = self.asked[name] = self._new_process(name, parent=self.main.name,
                                                          clock=parent.clock)
            elif lp.ended:
                lp.ended = False
                self.recorder.other(process_record(lp.name, os.getpid(), self.host,
                                                   self.main.name, time.time_ns(), None))
            return lp

    def add_main_provider(self, fn: Callable[[], dict]) -> None:
        """Register ``fn`` as a state provider of this OS process's main logical
        process, and of the main process of its fork children (once)."""
        with self._lock:
            if fn not in self.main_providers:
                self.main_providers.append(fn)
                self.main.providers.append(fn)

    def end_process(self, lp: LogicalProcess) -> None:
        lp.ended = True
        self.recorder.other(ended_record(lp.name, time.time_ns()))

    # -- channels ---------------------------------------------------------------------

    def new_channel_id(self) -> str:
        return "c" + os.urandom(6).hex()

    def channel(self, cid: str | None, src: str | None, dst: str | None, transport: str,
                endpoint: str | None, framed: bool, fifo: bool = True) -> str:
        """Record a channel (or what this end knows of it); returns its id."""
        cid = cid or self.new_channel_id()
        self.recorder.other(channel_ends_record(cid, src, dst, transport, endpoint, framed, fifo))
        return cid

    # -- faults -----------------------------------------------------------------------

    def fault(self, exc: BaseException, where: str, peer: bool = False) -> None:
        """An error inside cutscope: logged, recorded, raised only in strict mode.
        ``peer``: the error is the peer's (bytes that are not frames), not cutscope's:
        logged and recorded, never raised."""
        self.faults += 1
        lp = current_var.get() or self.main
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log.warning("cutscope: %s: %s", where, detail)
        try:
            process = lp.name if lp else None
            self.recorder.other(fault_record(time.time_ns(), process, where, detail))
        except Exception:
            pass
        if self.strict and not peer:
            raise exc

    def guard(self, fn: Callable, *args):
        try:
            return fn(*args)
        except Exception as exc:
            self.fault(exc, getattr(fn, "__qualname__", repr(fn)))
            return None

    def _writer_error(self, exc: BaseException) -> None:
        self.faults += 1
        log.warning("cutscope: recorder: %s", exc)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> "Tracer":
        if self.running:
            return self
        self.running = True
        # Children we launch name themselves after us, not after our name.
        os.environ.pop("CUTSCOPE_NAME", None)
        os.environ["CUTSCOPE_PARENT"] = self.main.name
        _set_active(self, self.main)
        self.recorder.start()
        self._start_control()
        self._start_listener()
        atexit.register(self._atexit)
        _install_fork_hooks()
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self._stop_control()
        self._stop_listener()
        for lp in list(self.processes.values()):
            if not lp.ended:
                self.recorder.other(ended_record(lp.name, time.time_ns()))
        try:
            self.recorder.close()
        except Exception as exc:  # the store refused the last batches
            if _active_tracer is self:
                _set_active(None, None)
            self.fault(exc, f"flushing {self.recorder.buffered()} events at stop")
        if _active_tracer is self:
            _set_active(None, None)
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        self.store.close()

    def flush(self) -> None:
        self.recorder.flush()

    def _atexit(self) -> None:
        try:
            self.stop()
        except Exception:
            log.exception("cutscope: flush at exit failed")

    # -- control socket (snapshots; tracer/control.py) ------------------------------------

    def _start_control(self) -> None:
        if self.store.url == "memory:" or os.environ.get(
                "CUTSCOPE_CONTROL", "1") in ("0", "no", "false"):
            return
        from .control import ControlServer, control_dir
        from .snapshot.participant import on_control

        d = control_dir()
        if d is None:
            return
        try:
            self.control = ControlServer(self, d, on_control)
        except OSError as exc:  # no Unix sockets here: the store alone reaches us
            log.debug("cutscope: no control socket: %s", exc)

    def _stop_control(self) -> None:
        c, self.control = self.control, None
        if c is not None:
            c.close()

    # -- PostgreSQL notifications (snapshots across hosts; tracer/notify.py) ----------------

    def note_snapshot_signal(self) -> None:
        """SIGUSR1 arrived (the signal handler: no I/O): the recorder thread starts a snapshot."""
        self.snapshot_signals += 1

    def take_snapshot_signals(self) -> int:
        """The SIGUSR1s counted since the last call (the recorder thread)."""
        n, self.snapshot_signals = self.snapshot_signals, 0
        return n

    def _start_listener(self) -> None:
        from . import notify

        try:
            self.listener = self.store.listen((notify.REQ, notify.END), self._notified)
        except Exception as exc:  # the store's poll still reaches us
            log.debug("cutscope: no notifications: %s", exc)

    def _stop_listener(self) -> None:
        lst, self.listener = self.listener, None
        if lst is not None:
            lst.close()

    def _notified(self, channel: str, payload: str) -> None:
        """A notification (the listener's thread): a snapshot request for processes
        of this interpreter, or the end of a snapshot."""
        import json

        from . import notify
        from .snapshot.participant import on_end

        d = json.loads(payload)
        sid = int(d["sid"])
        if channel == notify.END:
            on_end(self, sid, d.get("status") == "complete")
            return
        names = d.get("names")
        procs = self.processes
        if names is None:  # too many to name: read this interpreter's requests
            own = [n for n, lp in list(procs.items()) if not lp.ended]
            todo = [(n, i) for s_, n, i in self.store.snapshot_requests(own) if s_ == sid]
        else:
            todo = [(n, d["initiator"]) for n in names]
        for name, initiator in todo:
            lp = procs.get(name)
            if lp is not None and not lp.ended:
                lp.request(sid, initiator)

    def snap_sink(self, sid: int):
        """Where this interpreter's records of snapshot ``sid`` go (``LogicalProcess.record``):
        the coordinator that said so (a request, or one of this interpreter); else,
        while this interpreter serves a control socket, the inbox of a coordinator of
        this host if it exists (``control.inbox_path``: a coordinator opens it before
        it asks anyone, so a marker cannot outrun it); else the store (None)."""
        with self._sink_lock:
            sink = self.snap_sinks.get(sid)
        c = self.control
        if sink is not None or c is None:
            return sink
        from .control import inbox_path

        path = inbox_path(c.dir, self.store.url, sid)
        if not os.path.exists(path):
            return None
        with self._sink_lock:
            return self.snap_sinks.setdefault(sid, path)

    def resolve_sink(self, sid: int, sink) -> None:
        """Snapshot ``sid``'s records go to ``sink`` (a coordinator's inbox path, or a
        callable of a coordinator of this interpreter)."""
        with self._sink_lock:
            self.snap_sinks.setdefault(sid, sink)

    def snap_send(self, sink, items: list[tuple]) -> None:
        """Snapshot records to the coordinator that asked for them (``SnapState.sink``);
        if it cannot be reached, to the store (which ignores them once it has ended)."""
        try:
            if callable(sink):
                sink(items)
                return
            from .control import encode_records, send

            if send(sink, {"op": "rec", "items": encode_records(items)}):
                return
        except Exception as exc:
            self.fault(exc, "reporting to the snapshot's coordinator")
        for it in items:
            self.recorder.other(it)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            names = [n for n, lp in self.processes.items() if not lp.ended]
            self.recorder.other(heartbeat_record(names, time.time_ns()))
        for hook in list(self.tick_hooks):
            try:
                hook(self)
            except Exception as exc:
                self._writer_error(exc)

    # -- fork ---------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self.recorder.before_fork()

    def _after_fork_parent(self) -> None:
        self.recorder.after_fork_parent()

    def _after_fork_child(self) -> None:
        """The child is its own logical process: ``<parent>/<pid>``, its clock inherited."""
        forker = current_var.get() or self.main
        parent_name = self.main.name
        self.store.dispose_after_fork()
        self._lock = threading.RLock()
        self.processes = {}
        self.asked = {}
        self.finished_snaps = {}
        self.deferred_flush = []
        self.snap_sinks = {}
        self._sink_lock = threading.Lock()
        if self.control is not None:  # the parent's; the child serves a socket of its own
            self.control.running = False
            try:
                self.control.sock.close()
            except OSError:
                pass
            self.control = None
        self.recorder.after_fork_child()
        os.environ.pop("CUTSCOPE_NAME", None)
        name = None
        self.named = False
        if self.fork_name is not None:  # a multiprocessing Process being started: its name
            try:
                name = self.fork_name()
            except Exception:
                name = None
            self.named = name is not None
        # The store is used from the recorder thread, bounded: another parent thread may have
        # been inside the database library at the fork, and its locks are copied held.
        self.main = self._new_process(name or f"{parent_name}/{os.getpid()}", parent=parent_name,
                                      clock=forker.clock, argv=" ".join(sys.argv), bounded=True)
        self.main.providers.extend(self.main_providers)
        os.environ["CUTSCOPE_PARENT"] = self.main.name
        self.store.writer = self.main.name
        _process.default_process[0] = self.main
        current_var.set(None)
        if self.listener is not None:  # the parent's: its connection is the parent's too
            self.listener.orphan()
            self.listener = None
        if self.running:
            self._start_control()
            self._start_listener()

    def rename_main(self, name: str) -> None:
        """Give this OS process's main logical process another name (``name``, made
        unique), before it records anything: the old name's registration is removed,
        so that the OS process has one name in the store. (If the old one recorded
        events already, it stays, ended.)"""
        old = self.main
        if old.name == name:
            return
        with self._lock:
            self.main = lp = self._new_process(name, parent=old.name.rpartition("/")[0] or None,
                                               clock=old.clock, argv=" ".join(sys.argv))
            lp.providers.extend(old.providers)
            self.processes.pop(old.name, None)
            if old.seq == 0 and not old.out and not old.incoming:
                try:
                    self.store.release_name(old.name, os.getpid(), self.host)
                except Exception as exc:
                    self.fault(exc, f"releasing the name {old.name!r}")
            else:
                self.recorder.other(ended_record(old.name, time.time_ns()))
            self.store.writer = lp.name
            _process.default_process[0] = lp


_fork_hooks_installed = False


def _install_fork_hooks() -> None:
    global _fork_hooks_installed
    if _fork_hooks_installed or not hasattr(os, "register_at_fork"):
        return
    _fork_hooks_installed = True

    def before():
        t = _active_tracer
        if t is not None:
            t._before_fork()

    def parent():
        t = _active_tracer
        if t is not None:
            t._after_fork_parent()

    def child():
        t = _active_tracer
        if t is not None:
            t._after_fork_child()

    os.register_at_fork(before=before, after_in_parent=parent, after_in_child=child)


def active() -> Tracer | None:
    """The running tracer of this interpreter, or None."""
    return _active_tracer
