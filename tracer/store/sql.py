"""The SQL store: SQLite or PostgreSQL.

Events go in as blocks (``codec``); everything else (processes, channels,
snapshots) is a row per record. ``SqlStore`` is its parts over one
connection (``connection.SqlConnection``): the recorder's writes
(``writing``), snapshot coordination and the listener and connection-end
registries (``coordination``), and the readers' queries (``reading``).
"""

from __future__ import annotations

from .connection import resolve_url, sqlite_file
from .coordination import SqlCoordination
from .reading import SqlReading
from .writing import SqlWriting


class SqlStore(SqlWriting, SqlCoordination, SqlReading):
    """A SQLite or PostgreSQL store."""


__all__ = ["SqlStore", "resolve_url", "sqlite_file"]
