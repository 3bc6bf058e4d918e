"""cutscope.tracer: clocks, events, the recorder, the store and the snapshot protocol.

This room imports nothing from ``cutscope.integrations`` or ``cutscope.viewer``.
"""

from .process import LogicalProcess, Marker, OutEndpoint, current
from .store import SCHEMA_VERSION, MemoryStore, SqlStore, StoreError, open_store
from .tracer import Tracer, active

__all__ = [
    "LogicalProcess", "Marker", "OutEndpoint", "current", "SCHEMA_VERSION", "MemoryStore",
    "SqlStore", "StoreError", "open_store", "Tracer", "active",
]
