"""The Instrumentor base class: idempotent instrument / uninstrument.

Each integration module defines one subclass and registers it with
``@register``. ``_instrument`` pairs every wrap with an unwrap in
``_uninstrument``, and unwraps only what it wrapped.

Each instrumentor declares the Pythons it supports (``python_versions``) and the
standard library's private names it relies on (``private_names``, each justified
where it is used). On another Python, or when one of those names is missing,
``instrument`` installs nothing and records a fault: the application runs untraced
by that instrumentor rather than traced wrongly. tests/test_private_names.py
checks every declared name on each supported Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
import warnings

log = logging.getLogger("cutscope")

# Modules that define instrumentors, in install order.
MODULES: tuple[str, ...] = ("queues", "aio", "mp", "sockets", "tls", "waits", "dask")

# The Pythons cutscope supports (major, minor); an instrumentor may declare fewer.
SUPPORTED_PYTHONS: tuple[tuple[int, int], ...] = ((3, 11), (3, 12), (3, 13))

_registry: list["Instrumentor"] = []


def register(cls):
    _registry.append(cls())
    return cls


def registry() -> list["Instrumentor"]:
    for m in MODULES:
        importlib.import_module(f"cutscope.integrations.{m}")
    return list(_registry)


class ImportHooks:
    """An instrumentor's post-import hooks (wrapt): each installs wrappers on its module
    when the module is, or gets, imported, while the hooks are on. wrapt keeps a hook
    for the life of the process, so each is registered once, at the first ``start``;
    a hook must do nothing while ``on`` is false. ``tracer``: the tracer the
    instrumentor's wrappers record into (None while off)."""

    def __init__(self):
        self.on = False
        self.tracer = None
        self.registered = False

    def start(self, tracer, *hooks) -> None:
        """On; ``hooks``: (module name, hook) pairs; a hook is called with the module,
        at once if it is imported already."""
        self.on = True
        self.tracer = tracer
        if not self.registered:
            import wrapt

            self.registered = True
            for module, hook in hooks:
                wrapt.register_post_import_hook(hook, module)
        else:
            for module, hook in hooks:
                if module in sys.modules:
                    hook(sys.modules[module])

    def stop(self) -> None:
        self.on = False
        self.tracer = None


class NotYetImported(LookupError):
    """A private name whose module is not imported yet (or that names an instance's
    attribute): it cannot be checked without importing or creating something."""


def resolve(path: str, create: bool = False):
    """The object a private name names: ``"module.Class.attr"``, or, with ``create``,
    ``"module.factory().attr"`` (an instance's attribute: the factory is called, and
    what it made is closed if it can be).
    Without ``create`` nothing is imported or called: a module not imported yet, or a
    name with ``()``, raises ``NotYetImported``. A missing attribute raises
    ``AttributeError``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if "(" in head:
            continue
        module = sys.modules.get(head)
        if module is None and create:
            try:
                module = importlib.import_module(head)
            except ImportError:
                continue
        if module is not None:
            break
    else:
        raise NotYetImported(path)
    obj = module
    made = []  # the objects created to look inside them: closed at the end
    try:
        for part in parts[i:]:
            call = part.endswith("()")
            if call and not create:
                raise NotYetImported(path)
            name = part[:-2] if call else part
            if isinstance(obj, types.ModuleType) and hasattr(obj, "__path__") and \
                    not hasattr(obj, name) and \
                    importlib.util.find_spec(f"{obj.__name__}.{name}") is not None:
                raise NotYetImported(path)  # a submodule not imported yet
            obj = getattr(obj, name)
            if call:
                obj = obj()
                made.append(obj)
        return obj
    finally:
        for thing in made:
            close = getattr(thing, "close", None)
            if callable(close):
                close()


class Instrumentor:
    name = "base"
    # The Pythons this instrumentor is written for and tested on.
    python_versions: tuple[tuple[int, int], ...] = ()
    # The standard library's private names it relies on (see ``resolve``).
    private_names: tuple[str, ...] = ()

    def __init__(self):
        self.tracer = None
        self.installed = False

    def unsupported(self) -> str | None:
        """Why this instrumentor cannot be installed on the running Python, or None.
        Private names of modules not imported yet are not judged here (their
        instrumentor installs when the module is imported; the tests check them)."""
        version = sys.version_info[:2]
        if version not in self.python_versions:
            return "Python %d.%d is not among its versions (%s)" % (
                *version, ", ".join("%d.%d" % v for v in self.python_versions))
        for path in self.private_names:
            try:
                resolve(path)
            except NotYetImported:
                continue
            except AttributeError:
                return f"the standard library has no {path}"
        return None

    def instrument(self, tracer) -> None:
        if self.installed:
            warnings.warn(f"cutscope: {self.name} is already instrumented", stacklevel=2)
            return
        why = self.unsupported()
        if why is not None:
            tracer.fault(RuntimeError(f"{self.name} is not installed: {why}"), "integrations")
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
