"""The recorder's writes to a SQL store: a batch of event blocks and records
(processes, channels, heartbeats, faults, snapshot records) in one transaction,
and the claim of a process name."""

from __future__ import annotations

import json
import time

from .codec import BLOCK_ENCODING, encode_block
from .apply import apply_record, takes_report
from .connection import SqlConnection, message_row
from .interface import SNAPSHOT_RECORDS
from .values import state_json


# A process whose heartbeat is younger than this when another process starts under
# its name is still alive: their events collide, and a fault says so.
NAME_IN_USE_NS = 3_000_000_000


class SqlWriting(SqlConnection):
    """What the recorder thread writes."""

    def write(self, rows: list[tuple], others: list[tuple]) -> None:
        cap = self.capture
        if self._urgent:  # a snapshot's write is waiting: let it go first (bounded)
            deadline = time.monotonic() + 0.5
            while self._urgent and time.monotonic() < deadline:
                time.sleep(0.0002)
        with self._writing(), self.engine.begin() as conn:
            # Channel rows first, in id order: processes that upsert the same
            # channels then lock them in one order (PostgreSQL deadlocked otherwise).
            chans = sorted((i[1:] for i in others if i[0] == "channel"), key=lambda c: c[0])
            if chans:
                conn.exec_driver_sql(self._sql["channel"], chans)
            snaps = []
            target = SqlRecords(conn, self._sql, self._rows)
            for item in others:
                if item[0] in SNAPSHOT_RECORDS:
                    snaps.append(item)
                elif item[0] != "channel":
                    apply_record(target, item)
            if snaps:
                self._write_snapshot_records(conn, snaps)
            if self.notify:
                sids = sorted({i[1] for i in others if i[0] in SNAPSHOT_RECORDS})
                if sids:
                    from ..notify import REP, send

                    send(conn, REP, ",".join(map(str, sids)))
            if rows:
                data, n, wall = encode_block(rows, cap)
                conn.exec_driver_sql(self._ins_block, (self.writer, n, wall, BLOCK_ENCODING, data))
            marks = self.marks() if self.marks is not None else {}
            changed = [(s, c, p) for p, (s, c) in marks.items()
                       if self._marked.get(p) != (s, c) and p in self._rows]
            if changed:
                conn.exec_driver_sql(self._set_last, changed)
        if changed:
            self._marked.update((p, (s, c)) for s, c, p in changed)

    def _write_snapshot_records(self, conn, items: list[tuple]) -> None:
        """A recorder's snapshot records, in their order, folded: each snapshot's status
        is read once, each process's state row is written (or read and updated) once,
        the messages of each channel are counted once and inserted in one statement.
        Under load each statement is a round trip that waits for the server: one per
        record (five for a closed channel with messages) held a process's report
        tens of milliseconds. Records of a snapshot that has ended are dropped, except
        the incomplete channel states that follow a partial end."""
        ph = self._ph
        status: dict[int, str | None] = {}
        rows: dict[tuple[int, str], dict | None] = {}  # (sid, process) -> its state row
        counts: dict[tuple[int, str], int] = {}  # (sid, channel) -> messages stored
        msgs: list[tuple] = []

        def state_of(sid: int) -> str | None:
            if sid not in status:
                status[sid] = self._snap_status(conn, sid)
            return status[sid]

        def row_of(sid: int, process: str) -> dict | None:
            key = (sid, process)
            if key not in rows:
                r = conn.exec_driver_sql(f"SELECT closed, done FROM snapshot_states WHERE "
                                         f"snapshot_id = {ph} AND process = {ph}",
                                         (sid, process)).first()
                rows[key] = None if r is None else {"new": None, "closed": json.loads(r[0] or "[]"),
                                                    "done": bool(r[1]), "changed": False}
            return rows[key]

        for item in items:
            kind, sid = item[0], item[1]
            if kind == "snap_state":
                _, sid, process, seq, state, out, _initiator = item
                if takes_report(state_of(sid)) and rows.get((sid, process)) is None:
                    # (inserted unless the row exists: a process records a snapshot once)
                    rows[(sid, process)] = {"new": (seq, state_json(state), json.dumps(out)),
                                            "closed": [], "done": False, "changed": True}
            elif kind == "snap_chan":
                _, sid, process, channel, ms, complete = item
                if not takes_report(state_of(sid), complete):
                    continue  # a report that came after the snapshot ended
                if complete:
                    r = row_of(sid, process)
                    if r is not None and channel not in r["closed"]:
                        r["closed"].append(channel)
                        r["changed"] = True
                if ms:
                    key = (sid, channel)
                    if key not in counts:
                        counts[key] = conn.exec_driver_sql(
                            f"SELECT count(*) FROM snapshot_messages WHERE snapshot_id = {ph} "
                            f"AND channel = {ph}", key).scalar()
                    base = counts[key]
                    msgs.extend(message_row(sid, channel, base + i, m)
                                for i, m in enumerate(ms))
                    counts[key] = base + len(ms)
            elif kind == "snap_done":
                _, sid, process = item
                if takes_report(state_of(sid)):
                    r = row_of(sid, process)
                    if r is not None and not r["done"]:
                        r["done"] = r["changed"] = True
            else:
                raise ValueError(f"unknown record {kind!r}")
        new = [(sid, p, *r["new"], json.dumps(r["closed"]), r["done"])
               for (sid, p), r in rows.items() if r is not None and r["new"] is not None]
        if new:
            conn.exec_driver_sql(self._sql["state"], new)
        upd = [(json.dumps(r["closed"]), r["done"], sid, p)
               for (sid, p), r in rows.items() if r is not None and r["new"] is None and r["changed"]]
        if upd:
            conn.exec_driver_sql(f"UPDATE snapshot_states SET closed = {ph}, done = {ph} WHERE "
                                 f"snapshot_id = {ph} AND process = {ph}", upd)
        if msgs:
            conn.exec_driver_sql(self._sql["message"], msgs)

    # -- names ---------------------------------------------------------------------

    def claim_name(self, base: str, pid: int, host: str, parent: str | None, started_ns: int,
                   argv: str | None) -> str:
        """Register a logical process under ``base`` or, when a live or past process
        of this store already has that name, under the first free ``base#2``,
        ``base#3``, ...; returns the name registered (its ``processes`` row is written).

        Atomic across the processes that share the store: the row's primary key
        decides, each candidate being an ``INSERT ... ON CONFLICT DO NOTHING`` that
        inserts or finds it taken (SQLite and PostgreSQL alike)."""
        ph = self._sql["ph"]
        sel = (f"SELECT name FROM processes WHERE name = {ph} OR "
               f"substr(name, 1, {ph}) = {ph}")
        ins = (f"INSERT INTO processes (name, pid, host, parent, started_ns, heartbeat_ns, "
               f"ended_ns, argv) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph}, NULL, {ph}) "
               f"ON CONFLICT (name) DO NOTHING")
        prefix = base + "#"

        def run(conn):
            taken = {r[0] for r in conn.exec_driver_sql(sel, (base, len(prefix), prefix))}
            n = 1
            while True:
                name = base if n == 1 else f"{prefix}{n}"
                n += 1
                if name in taken:
                    continue
                if conn.exec_driver_sql(ins, (name, pid, host, parent, started_ns, started_ns,
                                              argv)).rowcount == 1:
                    return name

        with self._writing():
            with self.engine.begin() as conn:
                name = run(conn)
        self._rows.add(name)
        return name

    def release_name(self, name: str, pid: int, host: str) -> None:
        """Forget the registration of ``name`` by this OS process (it recorded nothing
        under it and takes another name): the name is free again."""
        ph = self._sql["ph"]
        with self._writing():
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM processes WHERE name = {ph} AND pid = {ph} "
                                     f"AND host = {ph}", (name, pid, host))
        self._rows.discard(name)


class SqlRecords:
    """The writes of ``apply_record`` on one connection of a SQL store, a statement
    each; ``written``: the processes whose row the store has written (the
    store's, updated here)."""

    def __init__(self, conn, sql: dict, written: set[str]):
        self.conn = conn
        self.sql = sql
        self.ph = sql["ph"]
        self.written = written

    def snapshot_status(self, sid: int) -> str | None:
        return self.conn.exec_driver_sql(self.sql["status"], (sid,)).scalar()

    def put_process(self, name: str, pid: int, host: str, parent: str | None, started_ns: int,
                    argv: str | None, seq0: int | None) -> None:
        sql, q = self.sql, self.conn.exec_driver_sql
        old = q(sql["process_old"], (name,)).first()
        if old is not None and (old[0], old[1]) != (pid, host) and (
                (old[3] is None and started_ns - old[2] < NAME_IN_USE_NS)
                or (seq0 is not None and (old[4] or 0) > seq0)):
            # The events of two processes with one name collide (same seqs): both
            # live, or the other stored seqs past where this one started (it read
            # the last seq before they were stored). The export keeps the first
            # written of each; say so where it is seen.
            q(sql["fault"], (
                started_ns, name, "store.write",
                f"two live processes share the name {name!r} ({old[1]}:{old[0]} and "
                f"{host}:{pid}): their events collide; give each its own --name"))
        q(sql["process"], (name, pid, host, parent, started_ns, started_ns, argv))
        self.written.add(name)

    def put_heartbeats(self, names: list[str], ns: int) -> None:
        self.conn.exec_driver_sql(self.sql["heartbeat"], [(ns, n) for n in names])

    def put_ended(self, name: str, ns: int) -> None:
        self.conn.exec_driver_sql(self.sql["ended"], (ns, name))

    def put_channel(self, cid: str, src, dst, transport: str, endpoint, framed: bool,
                    fifo: bool) -> None:
        self.conn.exec_driver_sql(self.sql["channel"], (cid, src, dst, transport, endpoint, framed,
                                                        fifo))

    def put_fault(self, wall_ns: int, process: str, location: str, detail: str) -> None:
        self.conn.exec_driver_sql(self.sql["fault"], (wall_ns, process, location, detail))

    def put_state(self, sid: int, process: str, seq: int, state: str, outgoing: str) -> None:
        self.conn.exec_driver_sql(self.sql["state"], (sid, process, seq, state, outgoing, "[]", False))

    def close_channel(self, sid: int, process: str, channel: str) -> None:
        ph, q = self.ph, self.conn.exec_driver_sql
        row = q(f"SELECT closed FROM snapshot_states WHERE snapshot_id = {ph} AND process = {ph}",
                (sid, process)).first()
        if row is not None:
            closed = json.loads(row[0] or "[]")
            if channel not in closed:
                closed.append(channel)
                q(f"UPDATE snapshot_states SET closed = {ph} WHERE snapshot_id = {ph} "
                  f"AND process = {ph}", (json.dumps(closed), sid, process))

    def put_messages(self, sid: int, channel: str, msgs: list) -> None:
        ph, q = self.ph, self.conn.exec_driver_sql
        base = q(f"SELECT count(*) FROM snapshot_messages WHERE snapshot_id = {ph} AND channel = {ph}",
                 (sid, channel)).scalar()
        q(self.sql["message"], [message_row(sid, channel, base + i, m) for i, m in enumerate(msgs)])

    def set_done(self, sid: int, process: str) -> None:
        ph = self.ph
        self.conn.exec_driver_sql(f"UPDATE snapshot_states SET done = {ph} WHERE snapshot_id = {ph} "
                                  f"AND process = {ph}", (True, sid, process))
