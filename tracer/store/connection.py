"""An open SQL store: its URL, its connection (``sqlite.SqliteDatabase`` for an
SQLite file, a SQLAlchemy engine otherwise), its tables, the driver SQL that the
other parts run, and the writers' turn-taking on an SQLite file.

``SqlConnection`` is the base of ``sql.SqlStore``; its parts (``writing``,
``coordination``, ``reading``) run their statements through it. Every statement
is driver SQL, written once with the driver's parameter places (``?`` for
sqlite3, ``%s`` for psycopg), so that both dialects run the same text: an
SQLite file goes through the standard library's ``sqlite3`` and never imports
SQLAlchemy; PostgreSQL (and an in-memory or otherwise unusual SQLite URL) goes
through a SQLAlchemy engine, which also creates PostgreSQL's tables from the
models of ``schema.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time

from .interface import DEFAULT_URL, SCHEMA_VERSION, TABLE_NAMES, StoreError
from .sqlite import SQLITE_TABLES, SqliteDatabase
from .sqlite import Error as SqliteError
from .values import stored_message

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


def dicts(result) -> list[dict]:
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


class SqlConnection:
    """The connection, tables, statements and write turns of a SQL store."""

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
        self.notify = not self.sqlite and enabled(self.engine.dialect.driver)
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
            status=f"SELECT status FROM snapshots WHERE id = {ph}",
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

    def listen(self, channels: tuple[str, ...], handle, name: str = "cutscope-notify"):
        """A thread that calls ``handle(channel, payload)`` for each notification on
        ``channels`` (``notify.Listener``); None if this store carries none."""
        if not self.notify:
            return None
        from ..notify import Listener

        return Listener(self.url, channels, handle, name=name)

    # -- direct operations -------------------------------------------------------

    @contextlib.contextmanager
    def reading(self):
        """A connection whose statements all see one state of the store, whatever
        writers commit meanwhile: a read transaction (SQLite's deferred ``BEGIN``,
        which in WAL mode blocks no writer; PostgreSQL's ``REPEATABLE READ``),
        rolled back at the end."""
        with self.engine.connect() as conn:
            if self._file:
                conn.exec_driver_sql("BEGIN")
            elif not self.sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    def execute(self, fn):
        """Run ``fn(conn)`` in one transaction and return its result."""
        with self.engine.begin() as conn:
            return fn(conn)

    def _snap_status(self, conn, sid: int) -> str | None:
        return conn.exec_driver_sql(self._sql["status"], (sid,)).scalar()

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

    def _places(self, n: int) -> str:
        """``n`` parameter places, comma-separated (an IN list)."""
        return ", ".join([self._sql["ph"]] * n)


def message_row(sid: int, channel: str, idx: int, m) -> tuple:
    """A ``snapshot_messages`` row of in-transit message ``m`` (``values.stored_message``)."""
    rec = stored_message(m)
    return (sid, channel, idx, rec["msg"], rec["nbytes"], rec["payload"], rec["value"],
            rec["truncated"])


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # journal_mode=WAL is set once, by _prepare, on a database that is ours: set here
    # it rewrote the header of any file a reader was pointed at (`check --db app.db`).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
