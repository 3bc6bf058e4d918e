"""Installing the multiprocessing integration: post-import hooks replace the
standard library's functions and methods with the wrappers of ``children``,
``queues``, ``connection`` and ``handshake``; uninstalling puts back what is
still ours."""

from __future__ import annotations

from .._base import Instrumentor, register
from . import children, connection, handshake, queues
from .patching import hooks, originals, patched, replace


def _patch_process(module=None) -> None:
    if not hooks.on:
        return
    from multiprocessing import process as P

    replace(P.BaseProcess, "start", "BaseProcess.start", children.start)
    replace(P.BaseProcess, "_bootstrap", "BaseProcess._bootstrap", children.bootstrap)


_FEED = staticmethod(queues.feed)  # Queue._feed is a staticmethod


def _patch_queues(module=None) -> None:
    if not hooks.on:
        return
    from multiprocessing import queues as Q

    replace(Q.Queue, "__init__", "Queue.__init__", queues.init)
    replace(Q.Queue, "put", "Queue.put", queues.put)
    replace(Q.Queue, "get", "Queue.get", queues.get)
    replace(Q.Queue, "empty", "Queue.empty", queues.empty)
    replace(Q.JoinableQueue, "put", "JoinableQueue.put", queues.joinable_put)
    replace(Q.Queue, "_feed", "Queue._feed", _FEED)


def _patch_connection(module=None) -> None:
    if not hooks.on:
        return
    from multiprocessing import connection as C
    from multiprocessing.reduction import ForkingPickler

    replace(C.Connection, "_send_bytes", "Connection._send_bytes", connection.send_bytes)
    replace(C.Connection, "_recv_bytes", "Connection._recv_bytes", connection.recv_bytes)
    replace(C.Connection, "_poll", "Connection._poll", connection.poll)
    replace(C, "Pipe", "Pipe", connection.Pipe)
    replace(C, "wait", "wait", connection.wait)
    replace(C, "Client", "Client", handshake.Client)
    replace(C.Listener, "accept", "Listener.accept", handshake.accept)
    replace(C, "deliver_challenge", "deliver_challenge", handshake.deliver_challenge)
    replace(C, "answer_challenge", "answer_challenge", handshake.answer_challenge)
    red = ForkingPickler._extra_reducers
    if red.get(C.Connection) is C.reduce_connection:
        originals["reduce_connection"] = C.reduce_connection
        red[C.Connection] = connection.reduce_connection
        patched.append((red, C.Connection, C.reduce_connection, connection.reduce_connection, True))


_HOOKS = (("multiprocessing.process", _patch_process), ("multiprocessing.queues", _patch_queues),
          ("multiprocessing.connection", _patch_connection))


@register
class MultiprocessingInstrumentor(Instrumentor):
    """Child processes, ``multiprocessing.Queue`` and ``Connection`` (see the package doc)."""

    name = "mp"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # The names the modules' docs describe: a child's bootstrap, Connection's byte-level
    # I/O, a queue's feeder thread, buffer, locks, semaphore and pipe (put and get
    # wrap them: queues.py), a process's identity and name, and the pickler's table
    # of reducers (a connection pickled with its tracing state: connection.py).
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
        "multiprocessing.Queue()._buffer", "multiprocessing.Queue()._sem",
        "multiprocessing.Queue()._poll", "multiprocessing.Queue()._recv_bytes",
        "multiprocessing.JoinableQueue()._unfinished_tasks", "multiprocessing.JoinableQueue()._cond",
        "multiprocessing.reduction.ForkingPickler._extra_reducers")

    def _instrument(self, tracer) -> None:
        hooks.start(tracer, *_HOOKS)

    def _uninstrument(self) -> None:
        hooks.stop()
        while patched:
            owner, attr, orig, ours, is_dict = patched.pop()
            if is_dict:
                if owner.get(attr) is ours:
                    owner[attr] = orig
            elif (owner.__dict__.get(attr) if isinstance(owner, type)
                  else getattr(owner, attr, None)) is ours:
                setattr(owner, attr, orig)
