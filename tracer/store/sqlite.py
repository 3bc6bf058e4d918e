"""SQLite through the standard library's ``sqlite3``: the embedded store's
connections, without SQLAlchemy (whose import costs a traced process half a
second at start-up).

``SqliteDatabase`` offers what ``SqlStore`` uses of a SQLAlchemy ``Engine``:
``begin()`` (one transaction, committed at the end, rolled back on an error)
and ``connect()`` (reads), each giving a connection whose ``exec_driver_sql``
runs driver SQL (``?`` parameters; a list of tuples runs it for each) and
returns a cursor with SQLAlchemy's ``first``, ``scalar``, ``all`` and ``keys``.
The tables are created from ``SQLITE_TABLES``, the DDL that SQLAlchemy emits
for the models of ``schema.py`` (a test compares the two).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Iterator

# CREATE TABLE statements of schema version 2 for SQLite, as SQLAlchemy's
# metadata.create_all emits them for the models of schema.py.
SQLITE_TABLES = (
    "CREATE TABLE IF NOT EXISTS channels (id VARCHAR(64) NOT NULL, src VARCHAR(255), "
    "dst VARCHAR(255), transport VARCHAR(32) NOT NULL, endpoint TEXT, framed BOOLEAN NOT NULL, "
    "fifo BOOLEAN NOT NULL, PRIMARY KEY (id))",
    "CREATE TABLE IF NOT EXISTS conn_ends (\"key\" VARCHAR(255) NOT NULL, host VARCHAR(255) NOT NULL, "
    "pid INTEGER NOT NULL, mode VARCHAR(8) NOT NULL, registered_ns BIGINT NOT NULL, "
    "PRIMARY KEY (\"key\"))",
    "CREATE TABLE IF NOT EXISTS event_blocks (id INTEGER NOT NULL, writer VARCHAR(255) NOT NULL, "
    "n INTEGER NOT NULL, wall_ns BIGINT NOT NULL, encoding VARCHAR(32) NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (id))",
    "CREATE TABLE IF NOT EXISTS faults (id INTEGER NOT NULL, wall_ns BIGINT NOT NULL, "
    "process VARCHAR(255), location TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (id))",
    "CREATE TABLE IF NOT EXISTS listeners (host VARCHAR(255) NOT NULL, port INTEGER NOT NULL, "
    "process VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, registered_ns BIGINT NOT NULL, "
    "PRIMARY KEY (host, port))",
    "CREATE TABLE IF NOT EXISTS meta (\"key\" VARCHAR(64) NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (\"key\"))",
    "CREATE TABLE IF NOT EXISTS processes (name VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, "
    "host VARCHAR(255) NOT NULL, parent VARCHAR(255), started_ns BIGINT NOT NULL, "
    "heartbeat_ns BIGINT NOT NULL, ended_ns BIGINT, argv TEXT, last_seq BIGINT, "
    "last_lamport BIGINT, PRIMARY KEY (name))",
    "CREATE TABLE IF NOT EXISTS snapshot_messages (snapshot_id INTEGER NOT NULL, "
    "channel VARCHAR(64) NOT NULL, idx INTEGER NOT NULL, msg VARCHAR(300), nbytes BIGINT NOT NULL, "
    "payload BLOB, value TEXT, truncated BOOLEAN NOT NULL, PRIMARY KEY (snapshot_id, channel, idx))",
    "CREATE TABLE IF NOT EXISTS snapshot_requests (snapshot_id INTEGER NOT NULL, "
    "process VARCHAR(255) NOT NULL, initiator VARCHAR(255) NOT NULL, created_ns BIGINT NOT NULL, "
    "taken BOOLEAN NOT NULL, PRIMARY KEY (snapshot_id, process))",
    "CREATE TABLE IF NOT EXISTS snapshot_states (snapshot_id INTEGER NOT NULL, "
    "process VARCHAR(255) NOT NULL, event_seq BIGINT NOT NULL, state TEXT NOT NULL, "
    "outgoing TEXT NOT NULL, closed TEXT, done BOOLEAN NOT NULL, PRIMARY KEY (snapshot_id, process))",
    "CREATE TABLE IF NOT EXISTS snapshots (id INTEGER NOT NULL, initiator VARCHAR(255) NOT NULL, "
    "status VARCHAR(16) NOT NULL, requested_ns BIGINT NOT NULL, finished_ns BIGINT, missing TEXT, "
    "PRIMARY KEY (id))",
)

Error = sqlite3.Error


class Cursor(sqlite3.Cursor):
    """A cursor that reads like SQLAlchemy's result: ``first``, ``scalar``, ``all``, ``keys``."""

    def first(self):
        return self.fetchone()

    def scalar(self):
        row = self.fetchone()
        return None if row is None else row[0]

    def all(self) -> list:
        return self.fetchall()

    def keys(self) -> list[str]:
        return [d[0] for d in self.description or ()]


class Connection:
    """One ``sqlite3`` connection, as ``SqlStore`` uses a SQLAlchemy connection."""

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw

    def exec_driver_sql(self, sql: str, params=()) -> Cursor:
        cur = self.raw.cursor(Cursor)
        if isinstance(params, list):
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
        return cur


class SqliteDatabase:
    """The connections to one SQLite file, pooled (any thread may use any)."""

    paramstyle = "qmark"

    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        raw = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        # journal_mode=WAL is set once, by the store, on a database that is ours: set
        # here it would rewrite the header of any file a reader was pointed at.
        raw.execute("PRAGMA synchronous=NORMAL")
        raw.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return raw

    def _give(self, raw: sqlite3.Connection) -> None:
        with self._lock:
            self._idle.append(raw)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        raw = self._take()
        try:
            yield Connection(raw)
            raw.commit()
        except BaseException:
            self._discard_on_error(raw)
            raise
        self._give(raw)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (whatever it leaves open is rolled back)."""
        raw = self._take()
        try:
            yield Connection(raw)
            raw.rollback()
        except BaseException:
            self._discard_on_error(raw)
            raise
        self._give(raw)

    def _discard_on_error(self, raw: sqlite3.Connection) -> None:
        try:
            raw.rollback()
        except sqlite3.Error:
            raw.close()
            return
        self._give(raw)

    def dispose(self, close: bool = True) -> None:
        """Forget the idle connections (``close=False`` after a fork: the parent's
        connections are not this process's to close)."""
        with self._lock:
            idle, self._idle = self._idle, []
        if close:
            for raw in idle:
                raw.close()
