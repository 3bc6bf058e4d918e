"""Child processes: each is its own logical process, under every start method.

It takes its ``Process.name`` when the program gave one, else ``<parent>/<pid>``:

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
"""

from __future__ import annotations

import os
import threading

from cutscope.tracer.records import ended_record
from cutscope.tracer.tracer import active

from .patching import originals


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
        return originals["BaseProcess.start"](self)
    cfg = {"db": t.store.url, "capture": t.capture, "strict": t.strict, "parent": t.main.name,
           "name": _explicit_name(self, t.main.name)}
    self.__dict__["_cutscope_boot"] = _Boot(cfg)
    _starting.cfg = cfg
    t.fork_name = _fork_name
    try:
        return originals["BaseProcess.start"](self)
    finally:
        _starting.cfg = None
        self.__dict__.pop("_cutscope_boot", None)


TERM_FLUSH_S = 3.0  # at most this long to flush when SIGTERM ends a child (Pool.terminate)


# A SIGTERM that comes while the child's tracer stops (the end of _bootstrap) waits
# for the stop, then ends the process: _stopping while it stops, _term_deferred once
# such a SIGTERM arrived.
_stopping = False
_term_deferred = False


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

    global _term_deferred
    if _stopping:
        # Interrupting Tracer.stop(), whose last write is on this thread's stack: a
        # flush from here would return at once (the writer is us) and the process
        # would die with that write half done. Pool workers see this: the sentinel
        # ends their loop just as Pool.terminate() sends SIGTERM.
        _term_deferred = True
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
            t.recorder.other(ended_record(lp.name, _t.time_ns()))
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


def bootstrap(self, *a, **kw):
    global _stopping
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
        return originals["BaseProcess._bootstrap"](self, *a, **kw)
    finally:
        t = active()
        if t is not None:  # os._exit() follows: no atexit, so flush now
            _stopping = True
            try:
                from cutscope import integrations

                integrations.uninstrument()
                t.stop()
            except Exception:
                pass
            finally:
                _stopping = False
            if _term_deferred:  # what the SIGTERM would have done, now that the events are out
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
