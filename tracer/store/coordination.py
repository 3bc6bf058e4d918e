"""Snapshot coordination in a SQL store (tracer/snapshot/coordinator.py): short
transactions that any process may run; and the registries of traced listeners
and connection ends, written and read synchronously (a peer looks them up at once)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import Iterable

from .apply import apply_record
from .connection import SqlConnection, dicts, message_row
from .document import build_trace
from .folding import fold_reports, progress_row, snapshot_record_order
from .interface import SnapshotRequest
from .writing import SqlRecords


class SqlCoordination(SqlConnection):
    """Snapshots' rows, requests and progress; listeners; connection ends."""

    def create_snapshot(self, initiator: str, requested_ns: int) -> int:
        """A new ``running`` snapshot; returns its id."""
        if self._lockpath is not None:
            sid = self._next_snapshot_id()
            self._write_now(lambda conn: self._insert_snapshot(conn, sid, initiator, requested_ns))
            return sid
        ph = self._ph
        return self._write_now(lambda conn: int(conn.exec_driver_sql(
            f"INSERT INTO snapshots (initiator, status, requested_ns) VALUES ({ph}, {ph}, {ph}) "
            f"RETURNING id", (initiator, "running", requested_ns)).scalar()))

    def new_snapshot(self, initiator: str, requested_ns: int) -> tuple[int, bool]:
        """An id for a new snapshot, and whether its ``snapshots`` row is written.

        SQLite: the id comes from a counter file next to the database (under its
        own lock), so that starting a snapshot does not wait for a write turn on
        a busy store; the row is written with the snapshot's first write that
        needs it (``add_snapshot_requests``, ``finish_snapshot``: pass
        ``create``). Elsewhere the row is written at once."""
        if self._lockpath is None:
            return self.create_snapshot(initiator, requested_ns), True
        return self._next_snapshot_id(), False

    def _next_snapshot_id(self) -> int:
        fd = os.open(self._lockpath[: -len(".lock")] + ".snapid", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            last = int(raw) if raw.isdigit() else 0
            with self.engine.connect() as conn:  # ids written by anyone else too
                top = conn.exec_driver_sql("SELECT max(id) FROM snapshots").scalar() or 0
            sid = max(last, int(top)) + 1
            os.pwrite(fd, b"%20d\n" % sid, 0)
            return sid
        finally:
            os.close(fd)  # (releases the lock)

    def _insert_snapshot(self, conn, sid: int, initiator: str, requested_ns: int) -> None:
        ph = self._ph
        conn.exec_driver_sql(f"INSERT INTO snapshots (id, initiator, status, requested_ns) "
                             f"VALUES ({ph}, {ph}, {ph}, {ph})", (sid, initiator, "running", requested_ns))

    def _ensure_snapshot(self, conn, sid: int, create) -> None:
        """The row of snapshot ``sid`` (``create``: (initiator, requested_ns)) if it is
        not written yet."""
        if create is not None and self._snap_status(conn, sid) is None:
            self._insert_snapshot(conn, sid, *create)

    def add_snapshot_requests(self, sid: int, initiator: str, processes: Iterable[str],
                              created_ns: int, taken: Iterable[str] = (), create=None) -> None:
        """Ask ``processes`` to start snapshot ``sid`` (``taken``: already told directly;
        ``create``: (initiator, requested_ns) if its row is not written yet)."""
        taken = set(taken)
        processes = list(processes)
        rows = [(sid, p, initiator, created_ns, p in taken) for p in processes]
        if not rows:
            return

        asked = [p for p in processes if p not in taken]

        def run(conn):
            self._ensure_snapshot(conn, sid, create)
            conn.exec_driver_sql(self._sql["request"], rows)
            if self.notify and asked:
                from ..notify import REQ, request_payload, send

                send(conn, REQ, request_payload(sid, initiator, asked))
        self._write_now(run)

    def snapshot_requests(self, processes: list[str]) -> list[SnapshotRequest]:
        """The requests of running snapshots for ``processes`` that were not handed over
        directly: ``[(snapshot id, process, initiator)]``. Read only (the recorder
        thread of each interpreter polls it; it remembers what it took)."""
        if not processes:
            return []
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(self._sql["requests"] + self._places(len(processes)) + ")",
                                        (False, "running", *processes)).all()
        return [SnapshotRequest(int(r[0]), r[1], r[2]) for r in rows]

    def snapshot_progress(self, sid: int, unwritten: bool = False) -> dict | None:
        """``{"status", "initiator", "states": {process: {event_seq, outgoing, closed, done,
        own}}}`` where ``own`` is the tracer's part of the recorded state; None if no such id
        (``unwritten``: its row is not written yet: running)."""
        with self.engine.connect() as conn:
            snap = conn.exec_driver_sql(f"SELECT status, initiator FROM snapshots WHERE id = {self._ph}",
                                        (sid,)).first()
            if snap is None:
                if not unwritten:
                    return None
                snap = ("running", None)
            rows = conn.exec_driver_sql(
                f"SELECT process, event_seq, state, outgoing, closed, done FROM snapshot_states "
                f"WHERE snapshot_id = {self._ph}", (sid,)).all()
        return {"status": snap[0], "initiator": snap[1],
                "states": {r[0]: progress_row(r[1], r[2], r[3], r[4], r[5]) for r in rows}}

    def finish_snapshot(self, sid: int, status: str, missing: list, finished_ns: int,
                        records: Iterable[tuple] = (), create=None) -> bool:
        """End a running snapshot; False if it had already ended. ``records``: the
        snapshot records that processes reported to the coordinator directly
        (``snap_state``, ``snap_chan``, ``snap_done``), written in the same transaction;
        ``create``: (initiator, requested_ns) if its row is not written yet."""
        ph = self._ph
        stmt = (f"UPDATE snapshots SET status = {ph}, missing = {ph}, finished_ns = {ph} "
                f"WHERE id = {ph} AND status = {ph}")
        args = (status, json.dumps(missing), finished_ns, sid, "running")
        records = sorted(records, key=snapshot_record_order)

        def run(conn):
            self._ensure_snapshot(conn, sid, create)
            if records and self._snap_status(conn, sid) == "running":
                self._write_reports(conn, sid, records)
            ended = conn.exec_driver_sql(stmt, args).rowcount > 0
            if ended and self.notify:
                from ..notify import END, send

                send(conn, END, json.dumps({"sid": sid, "status": status}))
            return ended
        return self._write_now(run)

    def _write_reports(self, conn, sid: int, records: list[tuple]) -> None:
        """A coordinator's records of a running snapshot, folded into one row per
        process and one insert of all the messages (hundreds of records: one
        statement each took a third of a second)."""
        states, msgs, rest = fold_reports(records)
        if states:
            conn.exec_driver_sql(self._sql["state"], [
                (st["snapshot_id"], st["process"], st["event_seq"], st["state"], st["outgoing"],
                 st["closed"], st["done"]) for st in states])
        if msgs:
            chans = list(msgs)
            base = dict(conn.exec_driver_sql(
                f"SELECT channel, count(*) FROM snapshot_messages WHERE snapshot_id = {self._ph} "
                f"AND channel IN ({self._places(len(chans))}) GROUP BY channel", (sid, *chans)).all())
            conn.exec_driver_sql(self._sql["message"], [
                message_row(sid, ch, base.get(ch, 0) + i, m)
                for ch, ms in msgs.items() for i, m in enumerate(ms)])
        target = SqlRecords(conn, self._sql, self._rows)
        for item in rest:  # records of a process whose state went to the store
            apply_record(target, item)

    def snapshot_statuses(self, sids: Iterable[int]) -> dict[int, str]:
        sids = list(sids)
        if not sids:
            return {}
        with self.engine.connect() as conn:  # (every interpreter's recorder polls it)
            return {int(i): s for i, s in conn.exec_driver_sql(
                f"SELECT id, status FROM snapshots WHERE id IN ({self._places(len(sids))})",
                tuple(sids))}

    def snapshot_entry(self, sid: int) -> dict | None:
        """Snapshot ``sid`` as the interchange document shows it (docs/format.md); None if unknown."""
        with self.engine.connect() as conn:
            ph = self._ph
            snaps = dicts(conn.exec_driver_sql(f"SELECT * FROM snapshots WHERE id = {ph}", (sid,)))
            if not snaps:
                return None
            states = dicts(conn.exec_driver_sql(
                f"SELECT * FROM snapshot_states WHERE snapshot_id = {ph}", (sid,)))
            msgs = dicts(conn.exec_driver_sql(
                f"SELECT * FROM snapshot_messages WHERE snapshot_id = {ph}", (sid,)))
        return build_trace([], [], [], snaps, states, msgs)["snapshots"][0]

    def live_processes(self, since_ns: int) -> list[str]:
        """Processes that have not ended and whose recorder beat at or after ``since_ns``."""
        with self.engine.connect() as conn:
            return sorted(r["name"] for r in self._live(conn, since_ns))

    def channel_ends(self, among: Iterable[str] | None = None) -> list[dict]:
        """``[{id, src, dst, fifo}]`` of every channel (``among``: of the channels that
        one of these processes sends or receives on)."""
        with self.engine.connect() as conn:
            return self._ends(conn, among)

    def live_and_ends(self, since_ns: int) -> tuple[list[dict], list[dict]]:
        """``[{name, pid, host}]`` of the live processes (as ``live_processes``) and
        ``channel_ends()``, in one read: a snapshot's start, on a store that every
        recorder is writing."""
        with self.engine.connect() as conn:
            return self._live(conn, since_ns), self._ends(conn)

    def _live(self, conn, since_ns: int) -> list[dict]:
        return [dict(name=r[0], pid=r[1], host=r[2])
                for r in conn.exec_driver_sql(self._sql["live"], (since_ns,))]

    def _ends(self, conn, among: Iterable[str] | None = None) -> list[dict]:
        sql, args = self._sql["ends"], ()
        if among is not None:
            args = tuple(sorted(set(among)))
            if not args:
                return []
            places = self._places(len(args))
            sql += f" WHERE src IN ({places}) OR dst IN ({places})"
            args += args
        return [dict(id=r[0], src=r[1], dst=r[2], fifo=bool(r[3]))
                for r in conn.exec_driver_sql(sql, args)]

    # -- listeners: direct, synchronous (a client connecting right after listen() must see it)

    def register_listener(self, host: str, port: int, process: str, pid: int) -> None:
        """Record that ``process`` (OS pid ``pid``) listens, traced, on ``host``/``port``."""
        ph = self._ph
        vals = (host, port, process, pid, time.time_ns())

        def run(conn):
            conn.exec_driver_sql(f"DELETE FROM listeners WHERE host = {ph} AND port = {ph}", (host, port))
            conn.exec_driver_sql(f"INSERT INTO listeners (host, port, process, pid, registered_ns) "
                                 f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph})", vals)
        with self._lock:
            self.execute(run)

    def unregister_listener(self, host: str, port: int, pid: int | None = None) -> None:
        ph = self._ph
        sql, args = f"DELETE FROM listeners WHERE host = {ph} AND port = {ph}", (host, port)
        if pid is not None:
            sql, args = sql + f" AND pid = {ph}", args + (pid,)
        with self._lock:
            self.execute(lambda conn: conn.exec_driver_sql(sql, args))

    def lookup_listener(self, hosts: list[str], port: int) -> dict | None:
        """The registration of a traced listener on ``port`` under one of ``hosts``, or None."""
        if not hosts:
            return None
        with self.engine.connect() as conn:
            rows = dicts(conn.exec_driver_sql(
                f"SELECT * FROM listeners WHERE port = {self._ph} AND host IN "
                f"({self._places(len(hosts))})", (port, *hosts)))
        return rows[0] if rows else None

    # -- connection ends between hosts: direct, synchronous (the peer looks them up at once)

    def register_end(self, key: str, host: str, pid: int, mode: str) -> None:
        ph = self._ph
        vals = (key, host, pid, mode, time.time_ns())

        def run(conn):
            conn.exec_driver_sql(f'DELETE FROM conn_ends WHERE "key" = {ph}', (key,))
            conn.exec_driver_sql(f'INSERT INTO conn_ends ("key", host, pid, mode, registered_ns) '
                                 f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph})", vals)
        with self._lock:
            self.execute(run)

    def unregister_end(self, key: str, pid: int) -> None:
        with self._lock:
            self.execute(lambda conn: conn.exec_driver_sql(
                f'DELETE FROM conn_ends WHERE "key" = {self._ph} AND pid = {self._ph}', (key, pid)))

    def lookup_ends(self, prefix: str, exact: bool = False) -> list[dict]:
        """The registered ends whose key is ``prefix`` (``exact``) or starts with it."""
        ph = self._ph
        if exact:
            sql, args = f'SELECT * FROM conn_ends WHERE "key" = {ph}', (prefix,)
        else:
            sql, args = f'SELECT * FROM conn_ends WHERE substr("key", 1, {ph}) = {ph}', (len(prefix), prefix)
        with self.engine.connect() as conn:
            return dicts(conn.exec_driver_sql(sql, args))
