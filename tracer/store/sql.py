"""The SQL store: SQLite or PostgreSQL.

Events go in as blocks (``codec``); everything else (processes, channels,
snapshots) is a row per record. Every statement is driver SQL, written once
here with the driver's parameter places (``?`` for sqlite3, ``%s`` for
psycopg), so that both dialects run the same text: an SQLite file goes
through the standard library's ``sqlite3`` (``sqlite.SqliteDatabase``) and
never imports SQLAlchemy; PostgreSQL (and an in-memory or otherwise unusual
SQLite URL) goes through a SQLAlchemy engine, which also creates PostgreSQL's
tables from the models of ``schema.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from typing import Iterable, Iterator

from .codec import BLOCK_ENCODING, decode_block, encode_block
from .document import build_trace
from .folding import fold_reports, progress_row, snapshot_record_order
from .interface import DEFAULT_URL, SCHEMA_VERSION, SNAPSHOT_RECORDS, TABLE_NAMES, StoreError
from .sqlite import SQLITE_TABLES, SqliteDatabase
from .sqlite import Error as SqliteError
from .values import state_json, stored_message

# A process whose heartbeat is younger than this when another process starts under
# its name is still alive: their events collide, and a fault says so.
NAME_IN_USE_NS = 3_000_000_000

# Every event block in the order written (load, event_blocks).
EVENT_BLOCKS = "SELECT id, encoding, data FROM event_blocks ORDER BY id"

# sqlite:///relative/path, sqlite:////absolute/path (the driver may be named): a file
# that sqlite3 opens directly. Anything else SQLAlchemy parses.
_SQLITE_FILE = re.compile(r"sqlite(\+pysqlite)?:///([^?]+)")


def sqlite_file(url: str) -> str | None:
    """The path of the SQLite file that ``url`` names, if it names one plainly (no
    in-memory database, no query parameters); else None."""
    m = _SQLITE_FILE.fullmatch(url)
    if m is None or m.group(2) == ":memory:":
        return None
    return m.group(2)


def _dicts(result) -> list[dict]:
    keys = list(result.keys())
    return [dict(zip(keys, r)) for r in result]


def resolve_url(url: str | None) -> str:
    """The store URL to use: explicit, else ``CUTSCOPE_DB``, else ./cutscope.db (made absolute)."""
    url = url or os.environ.get("CUTSCOPE_DB") or DEFAULT_URL
    if "://" not in url:  # a bare path
        url = "sqlite:///" + os.path.abspath(url)
    path = sqlite_file(url)
    if path is not None:
        return url[: url.index(":///") + 4] + os.path.abspath(path)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r}") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        url = u.set(database=os.path.abspath(u.database)).render_as_string(hide_password=False)
    return url


class SqlStore:
    """A SQLite or PostgreSQL store."""

    def __init__(self, url: str | None = None, create: bool = True, capture: int = 0):
        self.url = resolve_url(url)
        self.capture = capture
        path = sqlite_file(self.url)
        if path is None:
            from sqlalchemy.engine import make_url

            u = make_url(self.url)
            self.sqlite = u.get_backend_name() == "sqlite"
            if self.sqlite and u.database and u.database != ":memory:":
                path = u.database
        else:
            self.sqlite = True
        if path is not None:
            if not os.path.exists(path):
                if not create:
                    raise StoreError(f"no cutscope database at {path}")
                d = os.path.dirname(path)
                if d and not os.path.isdir(d):
                    raise StoreError(f"directory does not exist: {d}")
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            elif not create and os.path.getsize(path) == 0:
                raise StoreError(f"{path} is empty, not a cutscope database")
        self._file = sqlite_file(self.url) is not None  # sqlite3, without SQLAlchemy
        self._errors: tuple = (SqliteError,)  # what a failed statement raises
        if self._file:
            self.engine = SqliteDatabase(path, timeout=30)
            ph = "?"
        else:
            from sqlalchemy import create_engine, event
            from sqlalchemy.exc import SQLAlchemyError

            self._errors = (SqliteError, SQLAlchemyError)
            kw: dict = {}
            if self.sqlite:
                kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
            try:
                self.engine = create_engine(self.url, **kw)
            except Exception as exc:  # missing driver, bad URL
                raise StoreError(f"cannot open {self._safe_url()}: {exc}") from None
            if self.sqlite:
                event.listen(self.engine, "connect", _sqlite_pragmas)
            ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._ph = ph
        self._lock = threading.Lock()
        self._urgent = 0  # snapshot writes waiting for the lock (see _write_now)
        # SQLite: the writers of one file take turns through a kernel lock (_writing).
        self._lockpath = path + ".lock" if path is not None else None
        self._lockfd: int | None = None
        self._urgentfd: int | None = None
        self._ulock = threading.Lock()  # a snapshot write's own lock files (_writing_urgent)
        self._ufds: tuple[int, int] | None = None
        self._prepare(create)
        from ..notify import enabled

        # PostgreSQL: the rows that other hosts wait for are announced with
        # LISTEN/NOTIFY in the transaction that writes them (tracer/notify.py).
        self.notify = enabled(self)
        self._ins_block = (f"INSERT INTO event_blocks (writer, n, wall_ns, encoding, data) "
                           f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph})")
        self._set_last = (f"UPDATE processes SET last_seq = {ph}, last_lamport = {ph} "
                          f"WHERE name = {ph}")
        # The records of every process's start, connections and heartbeats, as driver
        # SQL built once: SQLAlchemy's first compile of each ORM statement held the
        # recorder thread (and the GIL) for tens of milliseconds, and every later
        # call still cost a cache-key walk. Both dialects take ON CONFLICT ... excluded.
        self._sql = dict(
            process_old=f"SELECT pid, host, heartbeat_ns, ended_ns, last_seq FROM processes "
                        f"WHERE name = {ph}",
            process=(f"INSERT INTO processes (name, pid, host, parent, started_ns, heartbeat_ns, "
                     f"ended_ns, argv) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph}, NULL, {ph}) "
                     f"ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
                     f"heartbeat_ns = excluded.heartbeat_ns, ended_ns = NULL"),
            heartbeat=f"UPDATE processes SET heartbeat_ns = {ph} WHERE name = {ph}",
            ended=f"UPDATE processes SET ended_ns = {ph} WHERE name = {ph}",
            channel=(f"INSERT INTO channels (id, src, dst, transport, endpoint, framed, fifo) "
                     f"VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph}, {ph}) ON CONFLICT (id) DO UPDATE "
                     f"SET src = COALESCE(excluded.src, channels.src), "
                     f"dst = COALESCE(excluded.dst, channels.dst), "
                     f"endpoint = COALESCE(excluded.endpoint, channels.endpoint)"),
            fault=f"INSERT INTO faults (wall_ns, process, location, detail) VALUES ({ph}, {ph}, {ph}, {ph})",
            # polled by every interpreter's recorder (snapshot_requests); ends "IN (" + places
            requests=(f"SELECT r.snapshot_id, r.process, r.initiator FROM snapshot_requests r "
                      f"JOIN snapshots s ON s.id = r.snapshot_id WHERE r.taken = {ph} "
                      f"AND s.status = {ph} AND r.process IN ("),
            live=(f"SELECT name, pid, host FROM processes WHERE ended_ns IS NULL "
                  f"AND heartbeat_ns >= {ph}"),
            ends="SELECT id, src, dst, fifo FROM channels",
            state=(f"INSERT INTO snapshot_states (snapshot_id, process, event_seq, state, outgoing, "
                   f"closed, done) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph}, {ph}) "
                   f"ON CONFLICT (snapshot_id, process) DO NOTHING"),
            message=(f"INSERT INTO snapshot_messages (snapshot_id, channel, idx, msg, nbytes, payload, "
                     f"value, truncated) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph}, {ph}, {ph})"),
            request=(f"INSERT INTO snapshot_requests (snapshot_id, process, initiator, created_ns, "
                     f"taken) VALUES ({ph}, {ph}, {ph}, {ph}, {ph}) "
                     f"ON CONFLICT (snapshot_id, process) DO NOTHING"),
            ph=ph,
        )
        # Set by the tracer: () -> {process: (seq, clock)} of its logical processes,
        # stored with each batch so that a later process of the same name continues.
        self.marks = None
        self.writer = "?"
        self._marked: dict[str, tuple[int, int]] = {}
        self._rows: set[str] = set()  # processes whose row this store has written

    def _safe_url(self) -> str:
        if sqlite_file(self.url) is not None:
            return self.url
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def _prepare(self, create: bool) -> None:
        try:
            with self.engine.begin() as conn:
                if self.sqlite:
                    conn.exec_driver_sql("PRAGMA schema_version").fetchone()  # is it SQLite at all?
                if self.sqlite:
                    tables = {r[0] for r in conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite~_%' ESCAPE '~'")}
                else:
                    tables = set(self.engine.dialect.get_table_names(conn))
                if "meta" in tables:
                    row = conn.exec_driver_sql(f'SELECT value FROM meta WHERE "key" = {self._ph}',
                                               ("schema_version",)).first()
                    if (row is None and not create) or (row is not None and row[0] != str(SCHEMA_VERSION)):
                        have = row[0] if row else "unknown"
                        raise StoreError(
                            f"{self._safe_url()} has cutscope schema version {have}; "
                            f"this cutscope reads version {SCHEMA_VERSION}")
                elif tables and (not create or not tables & TABLE_NAMES):
                    # Someone else's database (a typo for --db): never add our tables to it.
                    raise StoreError(f"{self._safe_url()} is a database, but not a cutscope trace")
                elif not create:
                    raise StoreError(f"{self._safe_url()} holds no cutscope trace")
            if create:
                # One creator at a time: SQLite through the store's file lock (the
                # writers' turn-taking), PostgreSQL through an advisory lock.
                with self._writing():
                    self._create()
        except StoreError:
            raise
        except self._errors as exc:
            msg = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise StoreError(f"cannot use {self._safe_url()}: {msg}") from None

    def _create(self) -> None:
        if self.sqlite:  # only once it is ours: WAL is the file's mode from then on
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        for attempt in range(10):  # a creator without our lock (an older cutscope)
            try:
                with self.engine.begin() as conn:
                    if self._file:
                        for ddl in SQLITE_TABLES:
                            conn.exec_driver_sql(ddl)
                    else:
                        from .schema import Base

                        if not self.sqlite:
                            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72431)")
                        Base.metadata.create_all(conn)
                    ph = self._ph
                    if conn.exec_driver_sql(f'SELECT value FROM meta WHERE "key" = {ph}',
                                            ("schema_version",)).first() is None:
                        conn.exec_driver_sql(f'INSERT INTO meta ("key", value) VALUES ({ph}, {ph})',
                                             ("schema_version", str(SCHEMA_VERSION)))
                return
            except self._errors as exc:
                if attempt == 9 or not any(m in str(exc) for m in (
                        "already exists", "database is locked", "UNIQUE constraint")):
                    raise
                time.sleep(0.05)

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)
        # A lock that another parent thread held at the fork stays held in the child
        # (its holder does not exist there): the child gets fresh ones.
        self._lock = threading.Lock()
        self._ulock = threading.Lock()
        self._urgent = 0
        self._marked = {}
        self._rows = set()
        # A flock belongs to the open file: the child must not share the parent's.
        self._close_locks()

    def close(self) -> None:
        self.engine.dispose()
        self._close_locks()

    def _close_locks(self) -> None:
        fd, self._lockfd = self._lockfd, None
        ufd, self._urgentfd = self._urgentfd, None
        ufds, self._ufds = self._ufds, None
        for f in (fd, ufd, *(ufds or ())):
            if f is not None:
                os.close(f)

    @contextlib.contextmanager
    def _writing(self, urgent: bool = False):
        """Hold the right to write: this process's lock, and with SQLite a kernel lock
        that the writers of the file share.

        SQLite's own busy handler makes a waiting writer sleep and poll, up to
        100 ms at a time: with a dozen processes' recorders on one file, one of
        them can lose the race for seconds (its heartbeats, its snapshot
        records). Waiting on ``flock`` instead, a writer sleeps until the lock
        is released, and SQLite's write lock is then free at once.
        """
        if urgent and self._lockpath is not None:
            with self._writing_urgent():
                yield
            return
        with self._lock:
            if self._lockpath is None:
                yield
                return
            if self._lockfd is None:
                self._lockfd = os.open(self._lockpath, os.O_CREAT | os.O_RDWR, 0o600)
                self._urgentfd = os.open(self._lockpath + ".urgent", os.O_CREAT | os.O_RDWR, 0o600)
            # Wait while a snapshot's write waits for the lock (``_writing_urgent``).
            fcntl.flock(self._urgentfd, fcntl.LOCK_SH)
            fcntl.flock(self._urgentfd, fcntl.LOCK_UN)
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lockfd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _writing_urgent(self):
        """The right to write, ahead of the other writers of the file: a snapshot's
        write holds ``<db>.lock.urgent`` while it waits for ``<db>.lock``, so the
        writers that come later wait behind it instead of taking turns ahead of it
        (on a busy store that took seconds). Its own open files: it does not queue
        behind this process's recorder either (which may be waiting for the lock)."""
        with self._ulock:
            if self._ufds is None:
                self._ufds = (os.open(self._lockpath, os.O_CREAT | os.O_RDWR, 0o600),
                              os.open(self._lockpath + ".urgent", os.O_CREAT | os.O_RDWR, 0o600))
            main, urgent = self._ufds
            fcntl.flock(urgent, fcntl.LOCK_EX)
            try:
                fcntl.flock(main, fcntl.LOCK_EX)
            finally:
                fcntl.flock(urgent, fcntl.LOCK_UN)
            try:
                yield
            finally:
                fcntl.flock(main, fcntl.LOCK_UN)

    # -- writing (recorder thread) ---------------------------------------------

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
            for item in others:
                if item[0] in SNAPSHOT_RECORDS:
                    snaps.append(item)
                elif item[0] != "channel":
                    self._write_other(conn, item)
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
                if state_of(sid) in (None, "running") and rows.get((sid, process)) is None:
                    # (inserted unless the row exists: a process records a snapshot once)
                    rows[(sid, process)] = {"new": (seq, state_json(state), json.dumps(out)),
                                            "closed": [], "done": False, "changed": True}
            elif kind == "snap_chan":
                _, sid, process, channel, ms, complete = item
                st = state_of(sid)
                if not (st in (None, "running") or (st == "partial" and not complete)):
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
                    msgs.extend(self._message_row(sid, channel, base + i, m)
                                for i, m in enumerate(ms))
                    counts[key] = base + len(ms)
            elif kind == "snap_done":
                _, sid, process = item
                if state_of(sid) in (None, "running"):
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

    def _write_other(self, conn, item: tuple) -> None:
        kind = item[0]
        sql = self._sql
        if kind == "process":
            _, name, pid, host, parent, started, argv, *rest = item
            seq0 = rest[0] if rest else None  # the seq this process started from
            old = conn.exec_driver_sql(sql["process_old"], (name,)).first()
            if old is not None and (old[0], old[1]) != (pid, host) and (
                    (old[3] is None and started - old[2] < NAME_IN_USE_NS)
                    or (seq0 is not None and (old[4] or 0) > seq0)):
                # The events of two processes with one name collide (same seqs): both
                # live, or the other stored seqs past where this one started (it read
                # the last seq before they were stored). The export keeps the first
                # written of each; say so where it is seen.
                conn.exec_driver_sql(sql["fault"], (
                    started, name, "store.write",
                    f"two live processes share the name {name!r} ({old[1]}:{old[0]} and "
                    f"{host}:{pid}): their events collide; give each its own --name"))
            conn.exec_driver_sql(sql["process"], (name, pid, host, parent, started, started, argv))
            self._rows.add(name)
        elif kind == "heartbeat":
            _, names, ns = item
            if names:
                conn.exec_driver_sql(sql["heartbeat"], [(ns, n) for n in names])
        elif kind == "ended":
            _, name, ns = item
            conn.exec_driver_sql(sql["ended"], (ns, name))
        elif kind == "channel":
            conn.exec_driver_sql(sql["channel"], item[1:])
        elif kind == "fault":
            conn.exec_driver_sql(sql["fault"], item[1:])
        elif kind == "snap_state":
            _, sid, process, seq, state, out, _initiator = item
            if self._snap_status(conn, sid) in (None, "running"):
                conn.exec_driver_sql(self._sql["state"], (sid, process, seq, state_json(state),
                                                          json.dumps(out), "[]", False))
        elif kind == "snap_chan":
            _, sid, process, channel, msgs, complete = item
            status = self._snap_status(conn, sid)
            if not (status in (None, "running") or (status == "partial" and not complete)):
                return  # a report that came after the snapshot ended
            ph = self._ph
            if complete:
                row = conn.exec_driver_sql(f"SELECT closed FROM snapshot_states WHERE snapshot_id = "
                                           f"{ph} AND process = {ph}", (sid, process)).first()
                if row is not None:
                    closed = json.loads(row[0] or "[]")
                    if channel not in closed:
                        closed.append(channel)
                        conn.exec_driver_sql(f"UPDATE snapshot_states SET closed = {ph} WHERE "
                                             f"snapshot_id = {ph} AND process = {ph}",
                                             (json.dumps(closed), sid, process))
            if msgs:
                base = conn.exec_driver_sql(f"SELECT count(*) FROM snapshot_messages WHERE "
                                            f"snapshot_id = {ph} AND channel = {ph}",
                                            (sid, channel)).scalar()
                conn.exec_driver_sql(self._sql["message"], [
                    self._message_row(sid, channel, base + i, m) for i, m in enumerate(msgs)])
        elif kind == "snap_done":
            _, sid, process = item
            if self._snap_status(conn, sid) in (None, "running"):
                conn.exec_driver_sql(f"UPDATE snapshot_states SET done = {self._ph} WHERE "
                                     f"snapshot_id = {self._ph} AND process = {self._ph}",
                                     (True, sid, process))
        else:
            raise ValueError(f"unknown record {kind!r}")

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

    # -- direct operations (snapshot coordination, listeners) ----------------------

    def execute(self, fn):
        """Run ``fn(conn)`` in one transaction and return its result."""
        with self.engine.begin() as conn:
            return fn(conn)

    # -- snapshot coordination (tracer/snapshot/coordinator.py): short transactions, any process

    def _snap_status(self, conn, sid: int) -> str | None:
        return conn.exec_driver_sql(f"SELECT status FROM snapshots WHERE id = {self._ph}",
                                    (sid,)).scalar()

    @staticmethod
    def _message_row(sid: int, channel: str, idx: int, m) -> tuple:
        rec = stored_message(m)
        return (sid, channel, idx, rec["msg"], rec["nbytes"], rec["payload"], rec["value"],
                rec["truncated"])

    def _write_now(self, fn):
        """Run ``fn(conn)`` in one write transaction, ahead of this process's recorder
        (it waits while ``_urgent``): the coordinator's few writes must not queue
        behind a recorder that has a backlog to write."""
        self._urgent += 1
        try:
            with self._writing(urgent=True), self.engine.begin() as conn:
                return fn(conn)
        finally:
            self._urgent -= 1

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

    def snapshot_requests(self, processes: list[str]) -> list[tuple[int, str, str]]:
        """The requests of running snapshots for ``processes`` that were not handed over
        directly: ``[(snapshot id, process, initiator)]``. Read only (the recorder
        thread of each interpreter polls it; it remembers what it took)."""
        if not processes:
            return []
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(self._sql["requests"] + self._places(len(processes)) + ")",
                                        (False, "running", *processes)).all()
        return [(int(r[0]), r[1], r[2]) for r in rows]

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
                self._message_row(sid, ch, base.get(ch, 0) + i, m)
                for ch, ms in msgs.items() for i, m in enumerate(ms)])
        for item in rest:  # records of a process whose state went to the store
            self._write_other(conn, item)

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
            snaps = _dicts(conn.exec_driver_sql(f"SELECT * FROM snapshots WHERE id = {ph}", (sid,)))
            if not snaps:
                return None
            states = _dicts(conn.exec_driver_sql(
                f"SELECT * FROM snapshot_states WHERE snapshot_id = {ph}", (sid,)))
            msgs = _dicts(conn.exec_driver_sql(
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

    def _places(self, n: int) -> str:
        """``n`` parameter places, comma-separated (an IN list)."""
        return ", ".join([self._sql["ph"]] * n)

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
            rows = _dicts(conn.exec_driver_sql(
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
            return _dicts(conn.exec_driver_sql(sql, args))

    # -- reading ----------------------------------------------------------------

    def load(self, events: bool = True) -> dict:
        """The whole trace as the interchange document.

        ``events=False``: everything but the events (``"events": []``), for a
        reader that takes them from ``event_blocks()`` (the viewer, which keeps
        them in columns rather than a dict per event).
        """
        with self.engine.connect() as conn:  # one read transaction: a consistent trace
            q = conn.exec_driver_sql
            procs = _dicts(q("SELECT * FROM processes ORDER BY started_ns"))
            chans = _dicts(q("SELECT * FROM channels ORDER BY id"))
            events = [e for r in q(EVENT_BLOCKS).all() for e in decode_block(*r)] if events else []
            snaps = _dicts(q("SELECT * FROM snapshots"))
            states = _dicts(q("SELECT * FROM snapshot_states"))
            msgs = _dicts(q("SELECT * FROM snapshot_messages"))
        return build_trace(procs, chans, events, snaps, states, msgs)

    def event_blocks(self) -> Iterator[list[tuple]]:
        """The stored event tuples (``EVENT_COLUMNS``), one decoded block at a time, in
        the order written. Raw: a send's msg is None (its id is ``"<process>#<seq>"``),
        an unframed event's is ""; duplicates of one (process, seq) are all there
        (``load()`` keeps the first written)."""
        with self.engine.connect() as conn:
            for r in conn.exec_driver_sql(EVENT_BLOCKS):
                yield decode_block(*r)

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
            return _dicts(conn.exec_driver_sql("SELECT * FROM processes"))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # journal_mode=WAL is set once, by _prepare, on a database that is ours: set here
    # it rewrote the header of any file a reader was pointed at (`check --db app.db`).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
