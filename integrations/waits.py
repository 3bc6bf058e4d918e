"""Safe points at the entry of a wait: ``selectors`` ``select()``.

A snapshot asked of a process from outside starts at its next safe point
(docs/snapshots.md). The entry of a receive is one; so is the entry of a
selector's ``select()``: the application is about to wait for input, so its
state agrees with the events it has recorded, exactly as at a receive. This
matters for servers that sit in ``select()`` between requests
(``socketserver``'s ``serve_forever`` polls every 0.5 s, asyncio's event loop
selects between callbacks): without it an idle server never reaches a safe
point and a snapshot it should start ends ``partial``.

Nothing is recorded here; the wrapper costs one context-variable read per
``select()`` call.
"""

from __future__ import annotations

import selectors

from cutscope.tracer import current

from ._base import Instrumentor, register


def _defining_classes() -> list[type]:
    """The classes that define the select() of each selector the platform has
    (PollSelector and EpollSelector inherit theirs from a private base)."""
    out: list[type] = []
    for n in ("SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector",
              "KqueueSelector"):
        c = getattr(selectors, n, None)
        if c is None:
            continue
        owner = next(k for k in c.__mro__ if "select" in k.__dict__)
        if owner is not selectors.BaseSelector and owner not in out:
            out.append(owner)
    return out


_CLASSES = _defining_classes()


def _wrap(original):
    def select(self, timeout=None):
        lp = current()
        if lp is not None and lp.pending:
            lp.safepoint()
        return original(self, timeout)

    select.__wrapped__ = original
    select.__name__ = original.__name__
    select.__qualname__ = original.__qualname__
    select.__doc__ = original.__doc__
    return select


@register
class WaitsInstrumentor(Instrumentor):
    name = "waits"
    python_versions = ((3, 11), (3, 12), (3, 13))

    def _instrument(self, tracer) -> None:
        self._saved = []
        for cls in _CLASSES:
            original = cls.__dict__["select"]
            self._saved.append((cls, original))
            cls.select = _wrap(original)

    def _uninstrument(self) -> None:
        for cls, original in self._saved:
            cls.select = original
        self._saved = []
