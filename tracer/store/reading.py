"""Reading a SQL store: the interchange document, the event blocks, and what
the viewer's follow mode polls."""

from __future__ import annotations

from typing import Iterator

from .codec import EncodedBlock, decode_block
from .connection import SqlConnection, dicts
from .document import build_trace

# Every event block in the order written (load, event_blocks).
EVENT_BLOCKS = "SELECT id, encoding, data FROM event_blocks ORDER BY id"


class SqlReading(SqlConnection):
    """The trace as readers see it."""

    def load(self, events: bool = True) -> dict:
        """The whole trace as the interchange document.

        ``events=False``: everything but the events (``"events": []``), for a
        reader that takes them from ``event_blocks()`` (the viewer, which keeps
        them in columns rather than a dict per event).
        """
        with self.reading() as conn:  # one state of the store: a consistent trace
            q = conn.exec_driver_sql
            procs = dicts(q("SELECT * FROM processes ORDER BY started_ns"))
            chans = dicts(q("SELECT * FROM channels ORDER BY id"))
            events = [e for r in q(EVENT_BLOCKS).all() for e in decode_block(*r)] if events else []
            snaps = dicts(q("SELECT * FROM snapshots"))
            states = dicts(q("SELECT * FROM snapshot_states"))
            msgs = dicts(q("SELECT * FROM snapshot_messages"))
        return build_trace(procs, chans, events, snaps, states, msgs)

    def document_and_blocks(self) -> Iterator:
        """``load(events=False)``, then each decoded event block as ``event_blocks()``
        gives it, all read in one read transaction (a consistent trace, as ``load()``
        reads it) without holding every event at once: the first item is the
        document, the others are blocks."""
        with self.reading() as conn:
            q = conn.exec_driver_sql
            procs = dicts(q("SELECT * FROM processes ORDER BY started_ns"))
            chans = dicts(q("SELECT * FROM channels ORDER BY id"))
            snaps = dicts(q("SELECT * FROM snapshots"))
            states = dicts(q("SELECT * FROM snapshot_states"))
            msgs = dicts(q("SELECT * FROM snapshot_messages"))
            yield build_trace(procs, chans, [], snaps, states, msgs)
            for r in q(EVENT_BLOCKS):
                yield decode_block(*r)

    def event_blocks(self) -> Iterator[list[tuple]]:
        """The stored event tuples (``EVENT_COLUMNS``), one decoded block at a time, in
        the order written. Raw: a send's msg is None (its id is ``"<process>#<seq>"``),
        an unframed event's is ""; duplicates of one (process, seq) are all there
        (``load()`` keeps the first written)."""
        with self.engine.connect() as conn:
            for r in conn.exec_driver_sql(EVENT_BLOCKS):
                yield decode_block(*r)

    def blocks_after(self, after: int = 0, encoded: bool = False) -> Iterator[tuple[int, list[tuple]]]:
        """``(id, event tuples)`` of each event block with an id above ``after``, in id
        order, decoded one at a time (as ``event_blocks()``): what a reader that has
        the blocks up to ``after`` lacks (the viewer's live follow). ``encoded``: each
        block as stored, an ``EncodedBlock`` (for ``codec.decode_columns``), in place of
        its tuples."""
        with self.engine.connect() as conn:
            for r in conn.exec_driver_sql(f"SELECT id, encoding, data FROM event_blocks WHERE id > "
                                          f"{self._ph} ORDER BY id", (after,)):
                yield r[0], EncodedBlock(*r) if encoded else decode_block(*r)

    def events_through(self, block_id: int) -> int:
        """The number of events in the blocks with an id up to ``block_id``: a reader
        that read that many has every one of them (a block that committed late, under
        a lower id than one already read, makes the two differ)."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT COALESCE(SUM(n), 0) FROM event_blocks WHERE id <= "
                                        f"{self._ph}", (block_id,)).scalar()

    def last_event(self, process: str) -> tuple[int, int]:
        """(seq, lamport) of the last stored event of ``process``; (0, 0) if none."""
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql(f"SELECT last_seq, last_lamport FROM processes WHERE name = "
                                       f"{self._ph}", (process,)).first()
        return (row[0] or 0, row[1] or 0) if row else (0, 0)

    def stamp(self) -> tuple:
        """What changes when the trace grows (the viewer's follow mode polls it)."""
        def q(conn):
            q = conn.exec_driver_sql
            ev = q("SELECT COALESCE(SUM(n), 0), COALESCE(MAX(id), 0) FROM event_blocks").first()
            sn = q(f"SELECT count(*), COALESCE(SUM(CASE WHEN status = {self._ph} THEN 0 ELSE 1 END), 0) "
                   f"FROM snapshots", ("running",)).first()
            st = q("SELECT count(*) FROM snapshot_states").first()
            return (tuple(ev), tuple(sn), tuple(st))
        return self.execute(q)

    def processes(self) -> list[dict]:
        with self.engine.connect() as conn:
            return dicts(conn.exec_driver_sql("SELECT * FROM processes"))
