"""State providers named from outside the program: ``module:function``.

``cutscope run --state module:function`` (repeatable) and ``CUTSCOPE_STATE``
(specs separated by commas) name functions that return a JSON-serialisable dict
of the process's local state, as ``cutscope.state(fn)`` registers them from
inside. Every traced process of the run gets them (the environment is
inherited), on its main logical process.

A function is imported lazily, when its process records its first snapshot,
not at start: the state function of a program usually lives in the program
itself, which is ``__main__`` by then (importing ``app`` at start, from
``sitecustomize``, would run ``app.py`` a second time, before the program).
So a spec whose module is the running ``__main__`` (``python app.py`` or
``python -m pkg.app``) resolves to it; any other module is imported. A spec
that cannot be resolved (no such module in this process, no such function)
records ``{"_error:<spec>": "<why>"}`` in the state and a warning, once: a
child that runs another program is not broken by its parent's spec.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import threading
from typing import Callable

log = logging.getLogger("cutscope")

ENV = "CUTSCOPE_STATE"
_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def check_spec(spec: str) -> str:
    """``spec`` stripped, if it reads ``module:function``; else ValueError (one line)."""
    s = spec.strip()
    if not _SPEC.match(s):
        raise ValueError(f"not module:function (e.g. myapp.state:snapshot_state): {spec!r}")
    return s


def parse_specs(text: str | None) -> list[str]:
    """The specs of a ``CUTSCOPE_STATE`` value (comma-separated); ValueError on a bad one."""
    return [check_spec(p) for p in (text or "").split(",") if p.strip()]


def _main_module(name: str):
    """The running ``__main__`` (or a spawn child's ``__mp_main__``) if it is module
    ``name``: ``python -m name``, or ``python name.py`` for a top-level name."""
    for key in ("__main__", "__mp_main__"):
        m = sys.modules.get(key)
        if m is None:
            continue
        spec = getattr(m, "__spec__", None)
        if spec is not None and spec.name == name:
            return m
        f = getattr(m, "__file__", None)
        if f and "." not in name and os.path.splitext(os.path.basename(f))[0] == name:
            return m
    return None


class NamedProvider:
    """A state provider given as ``module:function``, resolved at its first call."""

    def __init__(self, spec: str):
        self.spec = spec
        self.__name__ = spec
        self._fn: Callable[[], dict] | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<state provider {self.spec}>"

    def _resolve(self) -> None:
        mod_name, _, attr = self.spec.partition(":")
        mod = sys.modules.get(mod_name) or _main_module(mod_name)
        if mod is None:
            mod = importlib.import_module(mod_name)
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{attr} in {mod_name} is not callable")
        self._fn = obj

    def __call__(self) -> dict:
        if self._fn is None and self._error is None:
            with self._lock:
                if self._fn is None and self._error is None:
                    try:
                        self._resolve()
                    except Exception as exc:
                        self._error = f"{type(exc).__name__}: {exc}"
                        log.warning("cutscope: state provider %s: %s", self.spec, self._error)
        if self._fn is None:
            return {f"_error:{self.spec}": self._error}
        return self._fn()


def from_env() -> list[NamedProvider]:
    """The providers ``CUTSCOPE_STATE`` names (a bad spec is skipped, with a warning)."""
    out = []
    for part in os.environ.get(ENV, "").split(","):
        if not part.strip():
            continue
        try:
            out.append(NamedProvider(check_spec(part)))
        except ValueError as exc:
            log.warning("cutscope: %s: %s", ENV, exc)
    return out
