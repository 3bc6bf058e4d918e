"""What every store shares: its error, the schema version, the default URL and
the shape of the records the recorder hands it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..notify import Listener

SCHEMA_VERSION = 2
DEFAULT_URL = "sqlite:///cutscope.db"


class StoreError(Exception):
    """A store that cannot be used: one clear line for the user."""


# The tables of this schema version (tracer/store/schema.py, docs/schema.md).
TABLE_NAMES = frozenset({"meta", "processes", "channels", "event_blocks", "listeners", "conn_ends",
                         "faults", "snapshots", "snapshot_requests", "snapshot_states",
                         "snapshot_messages"})

SNAPSHOT_RECORDS = ("snap_state", "snap_chan", "snap_done")  # a recorder's snapshot records

EVENT_COLUMNS = ("process", "seq", "lamport", "wall_ns", "kind", "channel", "msg", "nbytes",
                 "payload", "data")  # the fields of an event tuple, in order


class SnapshotRequest(NamedTuple):
    """A running snapshot's request to a process that was not handed over directly."""

    snapshot: int
    process: str
    initiator: str


class Store(Protocol):
    """What the tracer, the snapshot protocol and the integrations use of a store;
    ``SqlStore`` and ``MemoryStore`` both provide it.

    ``write`` takes the recorder's batches: event tuples (``EVENT_COLUMNS``) and
    other records (``("process", ...)``, ``("channel", ...)``, ``("snap_state",
    ...)`` and the rest of ``SNAPSHOT_RECORDS``). The snapshot operations are short
    transactions that any process may run; the listener and connection-end
    registries are read at connect and accept time (docs/protocol.md)."""

    url: str
    capture: int
    sqlite: bool  # an SQLite file shared by the processes of this host
    notify: bool  # rows that other hosts wait for are announced (PostgreSQL LISTEN/NOTIFY)

    def write(self, rows: list[tuple], others: list[tuple]) -> None: ...
    def claim_name(self, base: str, pid: int, host: str, parent: str | None, started_ns: int,
                   argv: str | None) -> str: ...
    def release_name(self, name: str, pid: int, host: str) -> None: ...
    def listen(self, channels: tuple[str, ...], handle: Callable[[str, str], None],
               name: str = "cutscope-notify") -> Listener | None:
        """Where ``notify`` is true: a started thread that calls ``handle(channel,
        payload)`` for each notification on ``channels``; else None."""
    def dispose_after_fork(self) -> None: ...
    def close(self) -> None: ...

    def new_snapshot(self, initiator: str, requested_ns: int) -> tuple[int, bool]: ...
    def create_snapshot(self, initiator: str, requested_ns: int) -> int: ...
    def add_snapshot_requests(self, sid: int, initiator: str, processes: Iterable[str],
                              created_ns: int, taken: Iterable[str] = (), create=None) -> None: ...
    def snapshot_requests(self, processes: list[str]) -> list[SnapshotRequest]: ...
    def snapshot_progress(self, sid: int, unwritten: bool = False) -> dict | None: ...
    def finish_snapshot(self, sid: int, status: str, missing: list, finished_ns: int,
                        records: Iterable[tuple] = (), create=None) -> bool: ...
    def snapshot_statuses(self, sids: Iterable[int]) -> dict[int, str]: ...
    def snapshot_entry(self, sid: int) -> dict | None: ...
    def live_processes(self, since_ns: int) -> list[str]: ...
    def channel_ends(self, among: Iterable[str] | None = None) -> list[dict]: ...
    def live_and_ends(self, since_ns: int) -> tuple[list[dict], list[dict]]: ...

    def register_listener(self, host: str, port: int, process: str, pid: int) -> None: ...
    def unregister_listener(self, host: str, port: int, pid: int | None = None) -> None: ...
    def lookup_listener(self, hosts: list[str], port: int) -> dict | None: ...
    def register_end(self, key: str, host: str, pid: int, mode: str) -> None: ...
    def unregister_end(self, key: str, pid: int) -> None: ...
    def lookup_ends(self, prefix: str, exact: bool = False) -> list[dict]: ...

    def load(self, events: bool = True) -> dict: ...
    def event_blocks(self) -> Iterator[list[tuple]]: ...
    def processes(self) -> list[dict]: ...
