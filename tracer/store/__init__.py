"""The store: where the recorders write a trace and every reader reads it.

``sql`` writes SQLite or PostgreSQL through SQLAlchemy (tables in ``schema``,
event blocks in ``codec``); ``memory`` keeps the same records in lists (for
``cutscope.testing``); both produce the interchange document through
``document.build_trace``.
"""

from __future__ import annotations

from .interface import DEFAULT_URL, SCHEMA_VERSION, StoreError
from .memory import MemoryStore
from .sql import SqlStore, resolve_url


def open_store(url: str | None = None, create: bool = True, capture: int = 0):
    """A store for ``url`` (``memory:`` for an in-memory one)."""
    if url == "memory:":
        return MemoryStore(capture=capture)
    return SqlStore(url, create=create, capture=capture)


__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "MemoryStore", "SqlStore", "StoreError", "open_store",
           "resolve_url"]
