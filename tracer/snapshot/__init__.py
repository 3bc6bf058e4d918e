"""Chandy-Lamport snapshots across processes.

``coordinator`` starts a snapshot, follows its progress and stores the result;
``participant`` is a traced interpreter's side (requests, ended processes,
the end); ``polling`` is what its recorder thread does every tick; ``result``
is what a snapshot gives back.
"""

from __future__ import annotations

from .coordinator import Coordinator, take
from .result import Snapshot, SnapshotError

__all__ = ["Coordinator", "Snapshot", "SnapshotError", "take"]
