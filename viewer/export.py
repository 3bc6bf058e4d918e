"""Reading a trace out of the store: the interchange document (docs/format.md)."""

from __future__ import annotations

import json
from typing import IO

from cutscope.tracer.store import open_store


def load(db: str | None = None) -> dict:
    """The trace in ``db`` as the ``cutscope-trace`` document. Raises StoreError."""
    store = open_store(db, create=False)
    try:
        return store.load()
    finally:
        store.close()


def load_trace(db: str | None = None):
    """The trace in ``db`` analysed (``model.Trace``), read from the store's event
    blocks into columns, without the document's dict per event (about half the time
    and memory of ``Trace(load(db))`` at a million events). ``trace.doc`` is the
    document without its events. Raises StoreError."""
    from .model import Trace

    store = open_store(db, create=False)
    try:
        return Trace.from_store(store)
    finally:
        store.close()


def write_json(doc: dict, out: IO[str]) -> None:
    json.dump(doc, out, indent=1)
    out.write("\n")
