"""cutscope.integrations: the wrappers, one module per thing wrapped.

Depends on ``cutscope.tracer`` only. ``instrument(tracer)`` installs every
instrumentor whose target exists; ``uninstrument()`` removes them.
"""

from __future__ import annotations

from ._base import Instrumentor, registry

__all__ = ["Instrumentor", "instrument", "uninstrument", "registry"]


def instrument(tracer) -> None:
    for inst in registry():
        inst.instrument(tracer)


def uninstrument() -> None:
    for inst in reversed(registry()):
        inst.uninstrument()
