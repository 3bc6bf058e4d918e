"""The store: SQLAlchemy 2.x tables, the SQL writer, and an in-memory twin.

Schema version 1 is documented in ``docs/schema.md``; keep the two in step.
Writes on the hot path of the recorder go through the DB-API ``executemany``
(via ``exec_driver_sql``) in one transaction per batch; reads use Core selects.
``MemoryStore`` keeps the same records in lists (for ``cutscope.testing``) and
both produce the interchange document through ``build_trace``.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from typing import Any, Iterable

from sqlalchemy import (
    JSON, Boolean, ForeignKey, Integer, BigInteger, LargeBinary, String, Text, create_engine, event,
    func, insert, select, update, delete,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError, ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1
DEFAULT_URL = "sqlite:///cutscope.db"
SNAPSHOT_PAYLOAD_CAP = 64 * 1024  # bytes kept per in-transit message in a snapshot


class StoreError(Exception):
    """A store that cannot be used: one clear line for the user."""


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Process(Base):
    __tablename__ = "processes"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    parent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    started_ns: Mapped[int] = mapped_column(BigInteger)
    heartbeat_ns: Mapped[int] = mapped_column(BigInteger)
    ended_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    argv: Mapped[str | None] = mapped_column(Text, nullable=True)


class Channel(Base):
    __tablename__ = "channels"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    src: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dst: Mapped[str | None] = mapped_column(String(255), nullable=True)
    transport: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    framed: Mapped[bool] = mapped_column(Boolean)
    fifo: Mapped[bool] = mapped_column(Boolean, default=True)


class Event(Base):
    __tablename__ = "events"
    process: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lamport: Mapped[int] = mapped_column(BigInteger)
    wall_ns: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    msg: Mapped[str | None] = mapped_column(String(300), nullable=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    data: Mapped[str | None] = mapped_column(Text, nullable=True)


class Listener(Base):
    """Addresses on which a traced process listens (so clients know to frame)."""
    __tablename__ = "listeners"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    registered_ns: Mapped[int] = mapped_column(BigInteger)


class Fault(Base):
    __tablename__ = "faults"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wall_ns: Mapped[int] = mapped_column(BigInteger)
    process: Mapped[str | None] = mapped_column(String(255), nullable=True)
    location: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)


class Snapshot(Base):
    __tablename__ = "snapshots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    initiator: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # running | complete | partial
    requested_ns: Mapped[int] = mapped_column(BigInteger)
    finished_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    missing: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list


class SnapshotRequest(Base):
    """Ask a process (by name) to start snapshot ``snapshot_id`` at its next safe point."""
    __tablename__ = "snapshot_requests"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255), primary_key=True)
    initiator: Mapped[str] = mapped_column(String(255))
    created_ns: Mapped[int] = mapped_column(BigInteger)
    taken: Mapped[bool] = mapped_column(Boolean, default=False)


class SnapshotState(Base):
    __tablename__ = "snapshot_states"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(Text)  # JSON object
    outgoing: Mapped[str] = mapped_column(Text)  # JSON list of channel ids marked
    closed: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list; NULL = not done
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class SnapshotMessage(Base):
    __tablename__ = "snapshot_messages"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    msg: Mapped[str | None] = mapped_column(String(300), nullable=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


EVENT_COLUMNS = ("process", "seq", "lamport", "wall_ns", "kind", "channel", "msg", "nbytes",
                 "payload", "data")


# -- values -------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """The JSON form of a queue item or state value: itself if it is JSON, else its repr."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return json.dumps(jsonable(value)).encode()


def event_row(row: tuple, cap: int) -> tuple:
    """A recorder tuple in the stored form (payload capped, data as JSON)."""
    p, seq, lam, wall, kind, ch, msg, n, payload, data = row
    if payload is not None:
        payload = as_bytes(payload)[:cap] if cap else None
    if data is not None:
        data = json.dumps(data, default=repr)
    return (p, seq, lam, wall, kind, ch, msg, n, payload, data)


def message_record(msg, nbytes, payload, value) -> dict:
    """One in-transit message as a snapshot keeps it (payload capped, truncation marked)."""
    rec: dict = {"msg": msg, "nbytes": nbytes, "payload": None, "value": None, "truncated": False}
    if payload is not None:
        b = as_bytes(payload)
        rec["truncated"] = len(b) > SNAPSHOT_PAYLOAD_CAP or len(b) < nbytes
        rec["payload"] = b[:SNAPSHOT_PAYLOAD_CAP]
    if value is not None:
        rec["value"] = json.dumps(jsonable(value))
        if rec["payload"] is None:
            rec["payload"] = as_bytes(value)[:SNAPSHOT_PAYLOAD_CAP]
    return rec


# -- the interchange document ------------------------------------------------

def build_trace(processes: Iterable[dict], channels: Iterable[dict], events: Iterable[tuple],
                snapshots: Iterable[dict], states: Iterable[dict],
                messages: Iterable[dict]) -> dict:
    """Assemble the ``cutscope-trace`` document (SPEC 7) from stored records."""
    doc: dict = {"format": "cutscope-trace", "version": 1}
    doc["processes"] = [
        {"name": p["name"], "pid": p["pid"], "host": p["host"], "parent": p.get("parent")}
        for p in processes
    ]
    doc["channels"] = [
        {"id": c["id"], "src": c["src"], "dst": c["dst"], "transport": c["transport"],
         "endpoint": c["endpoint"], "framed": bool(c["framed"]), "fifo": bool(c["fifo"])}
        for c in channels
    ]
    evs = []
    for p, seq, lam, wall, kind, ch, msg, n, payload, data in events:
        e = {"process": p, "seq": seq, "lamport": lam, "kind": kind, "channel": ch, "msg": msg,
             "nbytes": n, "wall_ns": wall}
        if data is not None:
            d = json.loads(data) if isinstance(data, str) else data
            if kind == "snapshot":
                e["snapshot"] = d.get("snapshot")
            else:
                e["data"] = d
        if payload is not None:
            e["payload_b64"] = base64.b64encode(payload).decode()
        evs.append(e)
    evs.sort(key=lambda e: (e["process"], e["seq"]))
    doc["events"] = evs
    by_snap_states: dict[int, list[dict]] = {}
    for st in states:
        by_snap_states.setdefault(st["snapshot_id"], []).append(st)
    by_snap_msgs: dict[int, dict[str, list[dict]]] = {}
    for m in sorted(messages, key=lambda m: (m["snapshot_id"], m["channel"], m["idx"])):
        by_snap_msgs.setdefault(m["snapshot_id"], {}).setdefault(m["channel"], []).append(m)
    snaps = []
    for s in sorted(snapshots, key=lambda s: s["id"]):
        sid = s["id"]
        procs = {}
        chans: dict[str, dict] = {}
        for st in by_snap_states.get(sid, []):
            procs[st["process"]] = {"event_seq": st["event_seq"], "state": _loads(st["state"]),
                                    "done": bool(st["done"])}
            for c in _loads(st["closed"]) or []:
                chans.setdefault(c, {"channel": c, "complete": True, "messages": []})
        for c, ms in by_snap_msgs.get(sid, {}).items():
            entry = chans.setdefault(c, {"channel": c, "complete": False, "messages": []})
            for m in ms:
                out = {"msg": m["msg"], "nbytes": m["nbytes"]}
                if m["payload"] is not None:
                    out["payload_b64"] = base64.b64encode(m["payload"]).decode()
                if m["value"] is not None:
                    out["value"] = json.loads(m["value"])
                if m["truncated"]:
                    out["truncated"] = True
                entry["messages"].append(out)
        snaps.append({"id": sid, "initiator": s["initiator"], "status": s["status"],
                      "requested_ns": s["requested_ns"], "finished_ns": s["finished_ns"],
                      "processes": procs, "channels": sorted(chans.values(), key=lambda c: c["channel"]),
                      "missing": _loads(s["missing"]) or []})
    doc["snapshots"] = snaps
    return doc


def _loads(v):
    if v is None or not isinstance(v, str):
        return v
    return json.loads(v)


# -- SQL ------------------------------------------------------------------------

def resolve_url(url: str | None) -> str:
    """The store URL to use: explicit, else ``CUTSCOPE_DB``, else ./cutscope.db (made absolute)."""
    url = url or os.environ.get("CUTSCOPE_DB") or DEFAULT_URL
    if "://" not in url:  # a bare path
        url = "sqlite:///" + os.path.abspath(url)
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r}") from None
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        url = u.set(database=os.path.abspath(u.database)).render_as_string(hide_password=False)
    return url


class SqlStore:
    """A SQLite or PostgreSQL store behind SQLAlchemy."""

    def __init__(self, url: str | None = None, create: bool = True, capture: int = 0):
        self.url = resolve_url(url)
        self.capture = capture
        u = make_url(self.url)
        self.sqlite = u.get_backend_name() == "sqlite"
        if self.sqlite and u.database and u.database != ":memory:":
            path = u.database
            if not os.path.exists(path):
                if not create:
                    raise StoreError(f"no cutscope database at {path}")
                d = os.path.dirname(path)
                if d and not os.path.isdir(d):
                    raise StoreError(f"directory does not exist: {d}")
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            elif not create and os.path.getsize(path) == 0:
                raise StoreError(f"{path} is empty, not a cutscope database")
        kw: dict = {}
        if self.sqlite:
            kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
        try:
            self.engine: Engine = create_engine(self.url, **kw)
        except Exception as exc:  # missing driver, bad URL
            raise StoreError(f"cannot open {self._safe_url()}: {exc}") from None
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._lock = threading.Lock()
        self._prepare(create)
        ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._ins_events = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
                            f"({', '.join([ph] * len(EVENT_COLUMNS))})")

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def _prepare(self, create: bool) -> None:
        try:
            with self.engine.begin() as conn:
                if self.sqlite:
                    conn.exec_driver_sql("PRAGMA schema_version").fetchone()  # is it SQLite at all?
                tables = set(self.engine.dialect.get_table_names(conn))
                if "meta" in tables:
                    row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()
                    if row is None or row[0] != str(SCHEMA_VERSION):
                        have = row[0] if row else "unknown"
                        raise StoreError(
                            f"{self._safe_url()} has cutscope schema version {have}; "
                            f"this cutscope reads version {SCHEMA_VERSION}")
                elif tables and not create:
                    raise StoreError(f"{self._safe_url()} is a database, but not a cutscope trace")
                elif not create:
                    raise StoreError(f"{self._safe_url()} holds no cutscope trace")
            if create:
                Base.metadata.create_all(self.engine)
                with self.engine.begin() as conn:
                    if conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first() is None:
                        try:
                            conn.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                        except SQLAlchemyError:
                            pass  # another process created it at the same moment
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            msg = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise StoreError(f"cannot use {self._safe_url()}: {msg}") from None

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing (recorder thread) ---------------------------------------------

    def write(self, rows: list[tuple], others: list[tuple]) -> None:
        cap = self.capture
        with self._lock, self.engine.begin() as conn:
            for item in others:
                self._write_other(conn, item)
            if rows:
                conn.exec_driver_sql(self._ins_events, [event_row(r, cap) for r in rows])

    def _upsert(self, conn, model, values: dict, keys: list[str], merge: list[str]) -> None:
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert as dinsert
        else:
            from sqlalchemy.dialects.postgresql import insert as dinsert
        stmt = dinsert(model).values(**values)
        setters = {c: func.coalesce(stmt.excluded[c], getattr(model, c)) for c in merge}
        if setters:
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=setters)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        conn.execute(stmt)

    def _write_other(self, conn, item: tuple) -> None:
        kind = item[0]
        if kind == "process":
            _, name, pid, host, parent, started, argv = item
            self._upsert(conn, Process, dict(name=name, pid=pid, host=host, parent=parent,
                                             started_ns=started, heartbeat_ns=started, ended_ns=None,
                                             argv=argv),
                         ["name"], [])
            conn.execute(update(Process).where(Process.name == name).values(
                pid=pid, host=host, heartbeat_ns=started, ended_ns=None))
        elif kind == "heartbeat":
            _, names, ns = item
            if names:
                conn.execute(update(Process).where(Process.name.in_(names)).values(heartbeat_ns=ns))
        elif kind == "ended":
            _, name, ns = item
            conn.execute(update(Process).where(Process.name == name).values(ended_ns=ns))
        elif kind == "channel":
            _, cid, src, dst, transport, endpoint, framed, fifo = item
            self._upsert(conn, Channel, dict(id=cid, src=src, dst=dst, transport=transport,
                                             endpoint=endpoint, framed=framed, fifo=fifo),
                         ["id"], ["src", "dst", "endpoint"])
        elif kind == "fault":
            _, ns, process, location, detail = item
            conn.execute(insert(Fault).values(wall_ns=ns, process=process, location=location,
                                              detail=detail))
        elif kind == "snap_state":
            _, sid, process, seq, state, out, _initiator = item
            self._upsert(conn, SnapshotState, dict(
                snapshot_id=sid, process=process, event_seq=seq,
                state=json.dumps(state, default=repr), outgoing=json.dumps(out), closed=None,
                done=False), ["snapshot_id", "process"], [])
        elif kind == "snap_done":
            _, sid, process, closed, messages = item
            conn.execute(update(SnapshotState).where(
                SnapshotState.snapshot_id == sid, SnapshotState.process == process).values(
                closed=json.dumps(closed), done=True))
            rows = []
            for ch, msgs in messages.items():
                for i, m in enumerate(msgs):
                    rows.append(dict(snapshot_id=sid, channel=ch, idx=i, **message_record(*m)))
            if rows:
                conn.execute(insert(SnapshotMessage), rows)
        else:
            raise ValueError(f"unknown record {kind!r}")

    # -- direct operations (snapshot coordination, listeners) ----------------------

    def execute(self, fn):
        """Run ``fn(conn)`` in one transaction and return its result."""
        with self.engine.begin() as conn:
            return fn(conn)

    # -- reading ----------------------------------------------------------------

    def load(self) -> dict:
        """The whole trace as the interchange document."""
        with self.engine.connect() as conn:
            procs = [dict(r._mapping) for r in
                     conn.execute(select(Process.__table__).order_by(Process.started_ns))]
            chans = [dict(r._mapping) for r in conn.execute(select(Channel.__table__).order_by(Channel.id))]
            events = [tuple(r) for r in conn.exec_driver_sql(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY process, seq")]
            snaps = [dict(r._mapping) for r in conn.execute(select(Snapshot.__table__))]
            states = [dict(r._mapping) for r in conn.execute(select(SnapshotState.__table__))]
            msgs = [dict(r._mapping) for r in conn.execute(select(SnapshotMessage.__table__))]
        return build_trace(procs, chans, events, snaps, states, msgs)

    def last_event(self, process: str) -> tuple[int, int]:
        """(seq, lamport) of the last stored event of ``process``; (0, 0) if none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(func.max(Event.seq), func.max(Event.lamport)).where(
                Event.process == process)).first()
        return (row[0] or 0, row[1] or 0) if row else (0, 0)

    def processes(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(Process.__table__))]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# -- memory ---------------------------------------------------------------------

class MemoryStore:
    """The same records as ``SqlStore``, in lists: for tests and ``cutscope.testing``."""

    sqlite = False

    def __init__(self, capture: int = 0):
        self.capture = capture
        self.url = "memory:"
        self._lock = threading.RLock()
        self.processes_: dict[str, dict] = {}
        self.channels: dict[str, dict] = {}
        self.events: list[tuple] = []
        self.faults: list[dict] = []
        self.snapshots: dict[int, dict] = {}
        self.requests: dict[tuple[int, str], dict] = {}
        self.states: dict[tuple[int, str], dict] = {}
        self.messages: list[dict] = []
        self.listeners: dict[tuple[str, int], dict] = {}

    def dispose_after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, rows: list[tuple], others: list[tuple]) -> None:
        with self._lock:
            for item in others:
                self._write_other(item)
            self.events.extend(event_row(r, self.capture) for r in rows)

    def _write_other(self, item: tuple) -> None:
        kind = item[0]
        if kind == "process":
            _, name, pid, host, parent, started, argv = item
            p = self.processes_.setdefault(name, dict(name=name, parent=parent, started_ns=started,
                                                      argv=argv))
            p.update(pid=pid, host=host, heartbeat_ns=started, ended_ns=None)
        elif kind == "heartbeat":
            _, names, ns = item
            for n in names:
                if n in self.processes_:
                    self.processes_[n]["heartbeat_ns"] = ns
        elif kind == "ended":
            _, name, ns = item
            if name in self.processes_:
                self.processes_[name]["ended_ns"] = ns
        elif kind == "channel":
            _, cid, src, dst, transport, endpoint, framed, fifo = item
            c = self.channels.get(cid)
            if c is None:
                self.channels[cid] = dict(id=cid, src=src, dst=dst, transport=transport,
                                          endpoint=endpoint, framed=framed, fifo=fifo)
            else:
                for k, v in (("src", src), ("dst", dst), ("endpoint", endpoint)):
                    if v is not None:
                        c[k] = v
        elif kind == "fault":
            _, ns, process, location, detail = item
            self.faults.append(dict(wall_ns=ns, process=process, location=location, detail=detail))
        elif kind == "snap_state":
            _, sid, process, seq, state, out, _initiator = item
            self.states.setdefault((sid, process), dict(
                snapshot_id=sid, process=process, event_seq=seq,
                state=json.dumps(state, default=repr), outgoing=json.dumps(out), closed=None,
                done=False))
        elif kind == "snap_done":
            _, sid, process, closed, messages = item
            st = self.states.get((sid, process))
            if st is not None:
                st.update(closed=json.dumps(closed), done=True)
            for ch, msgs in messages.items():
                for i, m in enumerate(msgs):
                    self.messages.append(dict(snapshot_id=sid, channel=ch, idx=i, **message_record(*m)))
        else:
            raise ValueError(f"unknown record {kind!r}")

    def load(self) -> dict:
        with self._lock:
            procs = sorted(self.processes_.values(), key=lambda p: p["started_ns"])
            return build_trace(procs, sorted(self.channels.values(), key=lambda c: c["id"]),
                               list(self.events), list(self.snapshots.values()),
                               list(self.states.values()), list(self.messages))

    def processes(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self.processes_.values()]


def open_store(url: str | None = None, create: bool = True, capture: int = 0):
    """A store for ``url`` (``memory:`` for an in-memory one)."""
    if url == "memory:":
        return MemoryStore(capture=capture)
    return SqlStore(url, create=create, capture=capture)
