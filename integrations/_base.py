"""The Instrumentor base class: idempotent instrument / uninstrument.

Each integration module defines one subclass and registers it with
``@register``. ``_instrument`` pairs every wrap with an unwrap in
``_uninstrument``, and unwraps only what it wrapped.
"""

from __future__ import annotations

import importlib
import logging
import warnings

log = logging.getLogger("cutscope")

# Modules that define instrumentors, in install order.
MODULES: tuple[str, ...] = ("queues", "aio", "mp", "sockets", "tls", "waits", "dask")

_registry: list["Instrumentor"] = []


def register(cls):
    _registry.append(cls())
    return cls


def registry() -> list["Instrumentor"]:
    for m in MODULES:
        importlib.import_module(f"cutscope.integrations.{m}")
    return list(_registry)


class Instrumentor:
    name = "base"

    def __init__(self):
        self.tracer = None
        self.installed = False

    def instrument(self, tracer) -> None:
        if self.installed:
            warnings.warn(f"cutscope: {self.name} is already instrumented", stacklevel=2)
            return
        self.tracer = tracer
        self._instrument(tracer)
        self.installed = True

    def uninstrument(self) -> None:
        if not self.installed:
            return
        try:
            self._uninstrument()
        finally:
            self.installed = False
            self.tracer = None

    def _instrument(self, tracer) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _uninstrument(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
