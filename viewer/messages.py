"""Messages that the viewer's workers and widgets send (small dataclasses).

Textual's ``Message`` initialises itself in ``__post_init__``, so dataclasses work as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass(eq=False)
class TraceLoaded(Message):
    """A worker loaded the trace: the document, its analysis and the explorer model."""

    doc: dict
    explorer: Any  # viewer.explorer.Explorer
    stamp: tuple = ()
    events: int = 0


@dataclass(eq=False)
class LoadFailed(Message):
    error: str


@dataclass(eq=False)
class TraceChanged(Message):
    """The store holds events (or snapshots) that the loaded trace does not."""

    stamp: tuple = field(default_factory=tuple)


@dataclass(eq=False)
class Rendered(Message):
    """The current cut was rendered to ``path`` (or failed with ``error``)."""

    path: str | None
    error: str | None = None


@dataclass(eq=False)
class SnapshotResult(Message):
    text: str
    ok: bool = True


@dataclass(eq=False)
class CutChanged(Message):
    """The explorer's cut changed (posted by the main screen)."""

    cut: dict
    consistent: bool


@dataclass(eq=False)
class FilterDone(Message):
    """A worker computed the rows of a filter (``rows`` None: no filter)."""

    explorer: Any  # the viewer.explorer.Explorer it filtered
    text: str
    rows: Any  # array of display rows, or None
    seq: int = 0  # which filter request this answers


@dataclass(eq=False)
class PredicateDone(Message):
    """A worker answered a predicate (``answer`` a PredicateAnswer, or ``error``)."""

    explorer: Any  # the viewer.explorer.Explorer it asked
    text: str
    answer: Any = None
    error: str | None = None
