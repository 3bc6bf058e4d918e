"""Helpers for testing code that runs under cutscope.

``recording()`` traces the block with an in-memory store (no database file)
and gives back the trace as the interchange document::

    with cutscope.testing.recording() as rec:
        run_my_service()
    doc = rec.trace()          # {"format": "cutscope-trace", "events": [...], ...}
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from cutscope.tracer import Tracer, active
from cutscope.tracer.store import MemoryStore

__all__ = ["Recording", "recording"]


class Recording:
    def __init__(self, tracer: Tracer):
        self.tracer = tracer
        self.store: MemoryStore = tracer.store

    def trace(self) -> dict:
        """Everything recorded so far, as the ``cutscope-trace`` document."""
        if self.tracer.running:
            self.tracer.flush()
        return self.store.load()

    def events(self, process: str | None = None, kind: str | None = None) -> list[dict]:
        return [e for e in self.trace()["events"]
                if (process is None or e["process"] == process) and (kind is None or e["kind"] == kind)]


@contextlib.contextmanager
def recording(name: str = "test", capture_payload: int = 0, instrument: bool = True,
              strict: bool = True) -> Iterator[Recording]:
    """Trace the block into memory; the wrappers are installed unless ``instrument=False``."""
    if active() is not None:
        raise RuntimeError("cutscope is already tracing this process")
    t = Tracer(name=name, capture_payload=capture_payload, strict=strict,
               store=MemoryStore(capture=capture_payload)).start()
    if instrument:
        from cutscope import integrations

        integrations.instrument(t)
    rec = Recording(t)
    try:
        yield rec
    finally:
        if instrument:
            from cutscope import integrations

            integrations.uninstrument()
        t.stop()
