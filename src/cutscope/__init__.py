"""cutscope: a distributed-debugging tracer for Python services.

The front door. ``start()`` records every send and receive of this process's
sockets and queues, Lamport-stamped, into a store; ``process()`` makes a thread
or task its own logical process; ``state()`` registers what a snapshot records
of it; ``event()`` records a local event.
"""

from __future__ import annotations

import contextvars
import functools
import os
from typing import Any, Callable

from cutscope.tracer import Tracer, active, current
from cutscope.tracer.process import current_var

__version__ = "0.1.0"

__all__ = ["start", "stop", "process", "state", "event", "safepoint", "snapshot", "Snapshot",
           "active", "Tracer", "__version__"]

from cutscope.tracer.snapshot.result import Snapshot, SnapshotError  # noqa: E402


def start(db: str | None = None, name: str | None = None, capture_payload: int | None = None,
          *, strict: bool | None = None, instrument: bool = True) -> Tracer:
    """Start tracing this OS process (idempotent: a running tracer is returned as is).

    ``db`` defaults to ``CUTSCOPE_DB`` or ``sqlite:///cutscope.db``; ``name`` to
    ``CUTSCOPE_NAME`` or ``host:pid``; ``capture_payload`` (bytes of payload kept
    per event) to ``CUTSCOPE_CAPTURE_PAYLOAD`` or 0.
    """
    t = active()
    if t is not None:
        return t
    if capture_payload is None:
        capture_payload = int(os.environ.get("CUTSCOPE_CAPTURE_PAYLOAD") or 0)
    t = Tracer(db=db, name=name, capture_payload=capture_payload, strict=strict).start()
    _install_sigusr1(t)
    if instrument:
        from cutscope import integrations

        integrations.instrument(t)
    return t


def stop() -> None:
    """Remove the wrappers and flush everything recorded to the store."""
    t = active()
    if t is None:
        return
    from cutscope import integrations

    integrations.uninstrument()
    _remove_sigusr1()
    t.stop()


class process:
    """This thread (or asyncio task) is logical process ``name``.

    As a context manager: ``with cutscope.process("branch-2"): ...``; as a
    decorator: ``@cutscope.process("branch-2")``. Without a running tracer it
    does nothing, so code that uses it runs untraced too.
    """

    def __init__(self, name: str):
        self.name = name
        self._tokens: list[contextvars.Token] = []

    def __enter__(self):
        t = active()
        if t is None:
            self._tokens.append(None)
            return None
        lp = t.process(self.name)
        self._tokens.append(current_var.set(lp))
        return lp

    def __exit__(self, *exc) -> None:
        token = self._tokens.pop()
        if token is not None:
            lp = current_var.get()
            current_var.reset(token)
            t = active()
            if t is not None and lp is not None and lp is not t.main:
                t.end_process(lp)

    def __call__(self, fn: Callable) -> Callable:
        if _is_coroutine(fn):
            @functools.wraps(fn)
            async def arun(*a, **kw):
                with process(self.name):
                    return await fn(*a, **kw)
            return arun

        @functools.wraps(fn)
        def run(*a, **kw):
            with process(self.name):
                return fn(*a, **kw)
        return run


def _is_coroutine(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def state(fn: Callable[[], dict]) -> Callable[[], dict]:
    """Register ``fn`` as a local-state provider of the calling logical process.

    ``fn`` returns a JSON-serialisable dict; several providers are merged. A
    snapshot calls them when the process records its state. Usable as a
    decorator; returns ``fn``.
    """
    lp = current()
    if lp is not None:
        lp.providers.append(fn)
    return fn


def event(label: str, **data: Any) -> None:
    """Record a ``local`` event of the calling logical process."""
    lp = current()
    if lp is not None:
        lp.local(label, data)


def safepoint() -> None:
    """Say that this process's state agrees with its events here.

    A snapshot asked of this process from outside starts at such a point (or at
    the entry of its next receive).
    """
    lp = current()
    if lp is not None and lp.pending:
        lp.safepoint()


def snapshot(initiator: str | None = None, timeout: float = 10.0) -> Snapshot:
    """Take a Chandy-Lamport snapshot of the traced system and wait for it.

    ``initiator`` names the logical process that starts it (any live traced
    process, in this interpreter or another one sharing the store); None means
    the calling logical process, which records its state at once (this call is
    a safe point). Another initiator starts at its next safe point. Returns a
    ``Snapshot`` whose ``status`` is ``complete``, or ``partial`` (``missing``
    says what) when it could not complete within ``timeout`` seconds.

    The calling thread waits: it must not be the only reader of channels the
    snapshot waits for (a logical process blocked here cannot receive the
    markers on its own incoming channels). Take snapshots from a thread of its
    own, or name an initiator.
    """
    from cutscope.tracer.snapshot.coordinator import take

    t = active()
    if t is None:
        raise RuntimeError("cutscope is not tracing: call cutscope.start() first")
    return take(t.store, initiator=initiator, timeout=timeout, tracer=t, caller=current())


# -- SIGUSR1: a snapshot with this OS process as initiator ---------------------------

_sig_installed: list = []


def _install_sigusr1(t: Tracer) -> None:
    """Install the SIGUSR1 handler unless the application has its own (main thread only)."""
    import signal
    import threading

    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
            return  # the application's own handler wins

        def handler(signum, frame):
            # No I/O in a signal handler: count it; the recorder thread starts the snapshot.
            t.note_snapshot_signal()

        signal.signal(signal.SIGUSR1, handler)
        _sig_installed[:] = [handler]
    except (ValueError, OSError):
        pass


def _remove_sigusr1() -> None:
    import signal

    if not _sig_installed:
        return
    try:
        if signal.getsignal(signal.SIGUSR1) is _sig_installed[0]:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    _sig_installed.clear()
