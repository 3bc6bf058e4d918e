"""dask.distributed: the local state of a scheduler and of a worker, for snapshots.

Nothing is wrapped: dask's own sockets and queues are traced by the other
integrations. When ``distributed.scheduler`` or ``distributed.worker`` is
imported in a traced process (a post-import hook, so import order does not
matter), a state provider is added to the process's main logical process
(``Tracer.add_main_provider``). At a snapshot it reads the servers of this
process from the classes' own registries (``Scheduler._instances``,
``Worker._instances``, the WeakSets dask keeps of its live servers) and
records, under ``"dask"``:

- for a scheduler: its address, its task counts by state
  (``{"memory": 2900, "processing": 100}``), and its number of workers;
- for a worker: its address, its task counts by state
  (``Worker.state.tasks``), and how many it is executing.

It reads plain attributes only, copies each collection before counting
(``dict(...)``: the event loop may be changing it from another thread) and
fails soft: anything unexpected is recorded as ``"error"`` in that server's
entry, never raised.
"""

from __future__ import annotations

import collections
import sys

from ._base import ImportHooks, Instrumentor, register

__all__ = ["DaskInstrumentor"]

_hooks = ImportHooks()  # on while installed; its tracer is the one recorded into


def _counts(tasks) -> dict[str, int]:
    for _ in range(3):  # a dict changed during the copy raises RuntimeError: again
        try:
            values = list(dict(tasks).values())
            break
        except RuntimeError:
            continue
    else:
        values = []
    return dict(collections.Counter(str(getattr(ts, "state", "?")) for ts in values))


def _server(kind: str, srv) -> dict:
    out: dict = {"kind": kind}
    try:
        out["address"] = str(getattr(srv, "address_safe", None) or getattr(srv, "address", ""))
    except Exception:
        pass
    try:
        if kind == "scheduler":
            out["tasks"] = _counts(srv.tasks)
            out["workers"] = len(srv.workers)
        else:
            ws = srv.state
            out["tasks"] = _counts(ws.tasks)
            out["executing"] = len(ws.executing)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def dask_state() -> dict:
    """The "dask" entry of this process's local state (empty when it runs no server)."""
    servers = []
    for modname, cls, kind in (("distributed.scheduler", "Scheduler", "scheduler"),
                               ("distributed.worker", "Worker", "worker")):
        mod = sys.modules.get(modname)
        try:
            live = list(getattr(getattr(mod, cls), "_instances", ())) if mod else []
        except Exception:
            live = []
        for srv in live:
            status = str(getattr(srv, "status", ""))
            if status.endswith(("closed", "closing", "failed")):
                continue
            servers.append(_server(kind, srv))
    return {"dask": servers} if servers else {}


def _on_import(module=None) -> None:
    t = _hooks.tracer
    if _hooks.on and t is not None:
        t.add_main_provider(dask_state)


_HOOKS = ("distributed.scheduler", "distributed.worker")


@register
class DaskInstrumentor(Instrumentor):
    """A state provider for dask.distributed's schedulers and workers (see the module doc)."""

    name = "dask"
    python_versions = ((3, 11), (3, 12), (3, 13))
    # dask.distributed's registries of its live servers (WeakSets on the classes).
    private_names = ("distributed.scheduler.Scheduler._instances",
                     "distributed.worker.Worker._instances")

    def _instrument(self, tracer) -> None:
        _hooks.start(tracer, *((mod, _on_import) for mod in _HOOKS))

    def _uninstrument(self) -> None:
        t = _hooks.tracer
        _hooks.stop()
        if t is not None:
            with t._lock:
                if dask_state in t.main_providers:
                    t.main_providers.remove(dask_state)
                if dask_state in t.main.providers:
                    t.main.providers.remove(dask_state)
