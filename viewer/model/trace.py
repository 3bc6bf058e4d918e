"""``Trace``: a recorded trace, indexed for causality questions.

The class is put together from the model's parts: the columns, the message
matching, cut queries, the lattice, vector clocks and predicates.
"""

from __future__ import annotations

from array import array
from typing import Iterable, Mapping

from .clocks import ClocksMixin
from .columns import ColumnsMixin, ProcessEvents
from .cuts import CutsMixin
from .cutspec import snapshot_cut
from .lattice import LatticeMixin
from .matching import MatchingMixin, MessagesView
from .predicates import PredicatesMixin
from .records import Message


class Trace(ColumnsMixin, MatchingMixin, CutsMixin, LatticeMixin, ClocksMixin, PredicatesMixin):
    """A recorded trace, indexed for causality questions.

    ``doc`` is the ``cutscope-trace`` document. Construction is linear in the
    number of events (plus a sort when the events are not in process order);
    vector clocks are computed on first use.

    The events are kept in columns (arrays of seqs and Lamport clocks, lists of
    shared kind and channel strings) sorted by (process, seq), each process's
    events a contiguous range of rows, and messages are matched into integer
    arrays (``_peer[row]``: the other end's row). ``events[p]``, ``event()``
    and ``messages`` make dicts and ``Message`` tuples only when asked, so a
    trace of a million events costs tens of bytes per event, not a dict each.

    ``blocks``: the raw event tuples of the store (``store.event_blocks()``,
    with ``doc`` from ``store.load(events=False)``) instead of ``doc["events"]``;
    see ``Trace.from_store``.
    """

    def __init__(self, doc: Mapping, blocks: Iterable[list[tuple]] | None = None,
                 previous: "Trace | None" = None):
        if doc.get("format") not in (None, "cutscope-trace"):
            raise ValueError(f"not a cutscope trace: format {doc.get('format')!r}")
        self.doc = doc
        names: dict[str, None] = {p["name"]: None for p in doc.get("processes", [])}
        self.channels: dict[str, dict] = {c["id"]: c for c in doc.get("channels", [])}
        self.snapshots: list[dict] = list(doc.get("snapshots", []))
        if blocks is None:
            self._from_dicts(names, list(doc.get("events", [])))
        else:
            self._from_rows(names, blocks, previous)
        self.events: dict[str, ProcessEvents] = {
            p: ProcessEvents(self, self._start[i], self._start[i + 1]) for i, p in enumerate(self.processes)}
        self.seqs: dict[str, array] = {
            p: self._seq[self._start[i]:self._start[i + 1]] for i, p in enumerate(self.processes)}
        self.messages: Mapping[str, Message] = MessagesView(self)
        self._match()
        self._vc: dict[str, tuple[list[int], list[tuple[int, ...]]]] | None = None

    @classmethod
    def from_store(cls, store, previous: "Trace | None" = None) -> "Trace":
        """The trace of a store, read block by block into columns (no dict per event).

        ``trace.doc`` is the document without its events (``"events": []``).

        ``previous``: a trace read earlier from the same store (live follow). Only
        the blocks written since are read and decoded, appended to its columns in
        the order read, when that gives the trace a whole read gives: the same
        processes registered, and every block up to the last one read counted (a
        block that committed late under a lower id, as PostgreSQL's concurrent
        writers can, makes the whole trace read again). The analysis (grouping,
        matching, pair indexes) is then built over all the columns, as a whole
        read builds it."""
        doc = store.load(events=False)
        if not hasattr(store, "blocks_after"):
            return cls(doc, store.event_blocks())
        if (previous is not None and previous._raw is not None
                and getattr(previous, "_last_block", None) is not None
                and [p["name"] for p in doc.get("processes", [])]
                == [p["name"] for p in previous.doc.get("processes", [])]):
            new = list(store.blocks_after(previous._last_block))
            last = new[-1][0] if new else previous._last_block
            got = previous._raw_events + sum(len(rows) for _, rows in new)
            if store.events_through(last) == got:
                t = cls(doc, [rows for _, rows in new], previous=previous)
                t._last_block, t._raw_events = last, got
                return t
            del new
        box = [0]  # the last block read

        def blocks():
            for bid, block in store.blocks_after(0, encoded=True):
                box[0] = bid
                yield block
        t = cls(doc, blocks())
        t._last_block, t._raw_events = box[0], len(t._raw[1])
        return t

    def snapshot(self, sid: int) -> dict | None:
        for s in self.snapshots:
            if s["id"] == sid:
                return s
        return None

    def snapshot_cut(self, snapshot) -> dict[str, int]:
        """The cut of a stored snapshot (an id or its dict): ``event_seq - 1`` per process."""
        return snapshot_cut(self.snapshot(snapshot) if isinstance(snapshot, int) else snapshot)
