"""The store: SQLAlchemy 2.x tables, the SQL writer, and an in-memory twin.

Schema version 2 is documented in ``docs/schema.md``; keep the two in step.
The recorder's events go in as *blocks*: one row per batch, the batch's event
tuples serialised with ``marshal`` (a row per event cost 3-7 us of SQLite work
per event on this project's machines, a block well under 1 us). Everything else
(processes, channels, snapshots) is a row per record through Core statements.
``MemoryStore`` keeps the same records in lists (for ``cutscope.testing``) and
both produce the interchange document through ``build_trace``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import marshal
import os
import threading
import time
import zlib
from typing import Any, Iterable, Iterator

from cutscope.tracer.process import FAST  # the C extension, or None

from sqlalchemy import (
    Boolean, Integer, BigInteger, LargeBinary, String, Text, case, create_engine,
    event,
    func, insert, select, update, delete,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError, ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 2
# event_blocks.encoding of what this version writes: "cs2+zlib" with the C extension
# (tracer/_fast.c encodes; a tenth of marshal's time), else "marshal4+zlib"; all read
# (and "cs1+zlib", the older compact encoding).
BLOCK_ENCODING = "cs2+zlib" if FAST is not None else "marshal4+zlib"
BLOCK_ENCODINGS = ("cs2+zlib", "cs1+zlib", "marshal4+zlib")
DEFAULT_URL = "sqlite:///cutscope.db"
SNAPSHOT_PAYLOAD_CAP = 64 * 1024
LIVE_NS = 3_000_000_000  # a process whose heartbeat is younger than this is alive  # bytes kept per in-transit message in a snapshot


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
    # seq and Lamport clock of the process at its interpreter's latest write: a
    # process of this name started later continues from there
    last_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_lamport: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Channel(Base):
    __tablename__ = "channels"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    src: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dst: Mapped[str | None] = mapped_column(String(255), nullable=True)
    transport: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    framed: Mapped[bool] = mapped_column(Boolean)
    fifo: Mapped[bool] = mapped_column(Boolean, default=True)


class EventBlock(Base):
    """One batch of events as a recorder wrote it (see docs/schema.md)."""
    __tablename__ = "event_blocks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    writer: Mapped[str] = mapped_column(String(255))  # main logical process of the interpreter
    n: Mapped[int] = mapped_column(Integer)  # events in the block
    wall_ns: Mapped[int] = mapped_column(BigInteger)  # wall clock of its last event
    encoding: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Listener(Base):
    """Addresses on which a traced process listens (so clients know to frame)."""
    __tablename__ = "listeners"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    registered_ns: Mapped[int] = mapped_column(BigInteger)


class ConnEnd(Base):
    """Traced ends of TCP connections between hosts, and connects in progress towards
    another host (the socket integration's registry; docs/protocol.md, "Negotiation")."""
    __tablename__ = "conn_ends"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(8))
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


# Every event block in the order written (load, event_blocks).
_BLOCKS = select(EventBlock.id, EventBlock.encoding, EventBlock.data).order_by(EventBlock.id)


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


_SNAP_RECORDS = ("snap_state", "snap_chan", "snap_done")  # a recorder's snapshot records

EVENT_COLUMNS = ("process", "seq", "lamport", "wall_ns", "kind", "channel", "msg", "nbytes",
                 "payload", "data")  # the fields of an event tuple, in order


def encode_block(rows: list, cap: int) -> tuple[bytes, int, int]:
    """The ``data`` of an event block (encoding ``BLOCK_ENCODING``), its number of events
    and the wall clock of the last. ``rows``: event tuples and, from the C paths, chunks
    of them. The stored form of each event (``event_row``), as cs1 (below) or marshal'd,
    then zlib level 1 (5x smaller, at no cost in time: the write shrinks as much as the
    compression costs, and zlib lets the application's threads run meanwhile)."""
    if FAST is not None:
        raw, n, wall = FAST.encode(rows, event_row, cap)
        return zlib.compress(raw, 1), n, wall
    if not all(r[8] is None and r[9] is None for r in rows):
        rows = [r if r[8] is None and r[9] is None else event_row(r, cap) for r in rows]
    return zlib.compress(marshal.dumps(rows, 4), 1), len(rows), rows[-1][3] if rows else 0


def decode_block(block_id: int, encoding: str, data: bytes) -> list[tuple]:
    """The event tuples of a block; a block that is not what it says is a StoreError."""
    if encoding not in BLOCK_ENCODINGS:
        raise StoreError(f"event block {block_id} has encoding {encoding!r}; this cutscope reads "
                         f"{' and '.join(map(repr, BLOCK_ENCODINGS))}")
    try:
        raw = zlib.decompress(data)
        if encoding == "marshal4+zlib":
            rows = marshal.loads(raw)
        elif raw[:4] != encoding[:3].upper().encode() + b"\0":
            raise ValueError(f"not a {encoding[:3]} event block")
        else:
            rows = FAST.decode(raw) if FAST is not None else decode_cs(raw)
        if type(rows) is not list or not all(type(r) is tuple and len(r) == 10 for r in rows):
            raise ValueError("not a list of event tuples")
    except (ValueError, EOFError, TypeError, IndexError, zlib.error) as exc:
        raise StoreError(f"event block {block_id} is corrupt ({exc})") from None
    return rows


def decode_cs(raw: bytes) -> list[tuple]:
    """The reference reader of a cs2 (or cs1) block; the C extension's ``decode`` is the
    fast one. The format is in docs/schema.md and tracer/_fast.c.

    ``"CS2\0"``, the string table (varint count, then varint length + UTF-8 each), the
    row count, then each row: ``2`` and process, seq, lamport, wall as differences (see
    below), kind, channel + 1 (0: None), msg, nbytes (payload and data None); or ``1``,
    a varint length and the marshal'd stored tuple. cs1 (``"CS1\0"``) has ``0`` rows
    instead: seq and lamport whole, msg + 1."""
    mv = memoryview(raw)
    pos = 4
    v2 = bytes(mv[:4]) == b"CS2\0"
    if not v2 and bytes(mv[:4]) != b"CS1\0":
        raise ValueError("not a cs1/cs2 event block")

    def varint() -> int:
        nonlocal pos
        v = shift = 0
        while True:
            c = raw[pos]
            pos += 1
            v |= (c & 0x7F) << shift
            if not c & 0x80:
                return v
            shift += 7
            if shift >= 64:
                raise ValueError("bad varint")

    def delta() -> int:  # a zigzag difference
        z = varint()
        return (z >> 1) ^ -(z & 1)

    strs = []
    for _ in range(varint()):
        n = varint()
        if pos + n > len(raw):
            raise ValueError("string past the end")
        strs.append(str(mv[pos:pos + n], "utf-8"))
        pos += n
    rows = []
    prev = 0
    opt = [None] + strs
    # cs2: by string index, the previous seq + 1 and lamport + 1 of a process, and the
    # previous number + 1 of a message id "<string>#<n>"
    last: dict[tuple[int, int], int] = {}
    for _ in range(varint()):
        tag = raw[pos]
        pos += 1
        if tag == 2 and v2:
            p = varint()
            seq = last.get((p, 0), 0) + delta()
            lam = last.get((p, 1), 0) + delta()
            prev += delta()
            k, ch, m = varint(), varint(), varint()
            if not (0 <= seq < 2**63 and 0 <= lam < 2**63):
                raise ValueError("seq or lamport out of range")
            last[p, 0], last[p, 1] = seq + 1, lam + 1
            if m and not m & 1:
                i = (m - 2) // 2
                num = last.get((i, 2), 0) + delta()
                if not 0 <= num < 2**63:
                    raise ValueError("message number out of range")
                last[i, 2] = num + 1
                msg = f"{strs[i]}#{num}"
            else:
                msg = opt[(m + 1) // 2]
            rows.append((strs[p], seq, lam, prev, strs[k], opt[ch], msg, varint(), None, None))
        elif tag == 0 and not v2:
            p, seq, lam = varint(), varint(), varint()
            prev += delta()
            k, ch, msg, nb = (varint() for _ in range(4))
            rows.append((strs[p], seq, lam, prev, strs[k], opt[ch], opt[msg], nb, None, None))
        elif tag == 1:
            n = varint()
            if pos + n > len(raw):
                raise ValueError("row past the end")
            rows.append(marshal.loads(mv[pos:pos + n]))
            pos += n
        else:
            raise ValueError(f"bad row tag {tag}")
    if pos != len(raw):
        raise ValueError("bytes after the last row")
    return rows


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

def event_doc(p, seq, lam, wall, kind, ch, msg, n, payload, data) -> dict:
    """One stored event row as the interchange document writes it (docs/format.md)."""
    if not msg:  # None: a send's own id, derived here; "": unframed, no id
        msg = f"{p}#{seq}" if msg is None and kind == "send" else None
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
    return e


def build_trace(processes: Iterable[dict], channels: Iterable[dict], events: Iterable[tuple],
                snapshots: Iterable[dict], states: Iterable[dict],
                messages: Iterable[dict]) -> dict:
    """Assemble the ``cutscope-trace`` document (docs/format.md) from stored records."""
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
    evs = [event_doc(*row) for row in events]
    evs.sort(key=lambda e: (e["process"], e["seq"]))  # stable: the first written first
    # Two live processes with one name write the same (process, seq): keep the first.
    doc["events"] = [e for i, e in enumerate(evs) if not i or e["seq"] != evs[i - 1]["seq"]
                     or e["process"] != evs[i - 1]["process"]]
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


def _state_json(state) -> str:
    """A recorded state as stored: JSON text (a coordinator may have it as text already)."""
    return state if isinstance(state, str) else json.dumps(state, default=repr)


def _message(m) -> dict:
    """An in-transit message as stored: ``(msg, nbytes, payload, value)`` from a
    process, or the stored form already (reported through a control socket)."""
    return m if isinstance(m, dict) else message_record(*m)


def _fold_reports(records: list[tuple]) -> tuple[list[dict], dict[str, list], list[tuple]]:
    """Snapshot records as rows: ``(state rows, {channel: [message]}, the rest)``;
    the rest are records of processes whose state is not among them."""
    states: dict[str, dict] = {}
    msgs: dict[str, list] = {}
    rest: list[tuple] = []
    for item in sorted(records, key=_snap_order):
        kind, sid, p = item[0], item[1], item[2]
        if kind == "snap_state":
            _, sid, p, seq, state, out, _initiator = item
            states.setdefault(p, dict(snapshot_id=sid, process=p, event_seq=seq,
                                      state=_state_json(state), outgoing=json.dumps(list(out)),
                                      closed=[], done=False))
            continue
        st = states.get(p)
        if st is None:
            rest.append(item)
        elif kind == "snap_chan":
            _, sid, p, ch, ms, complete = item
            if complete and ch not in st["closed"]:
                st["closed"].append(ch)
            if ms:
                msgs.setdefault(ch, []).extend(ms)
        elif kind == "snap_done":
            st["done"] = True
        else:
            rest.append(item)
    rows = [dict(st, closed=json.dumps(st["closed"])) for st in states.values()]
    return rows, msgs, rest


def _snap_order(item: tuple) -> int:
    """Snapshot records in the order the store needs them: a state before its channels."""
    return {"snap_state": 0, "snap_chan": 1}.get(item[0], 2)


def _progress_row(event_seq, state, outgoing, closed, done) -> dict:
    st = _loads(state) or {}
    own = st.get("_cutscope", {}) if isinstance(st, dict) else {}
    return {"event_seq": event_seq, "outgoing": _loads(outgoing) or [],
            "closed": _loads(closed) or [], "done": bool(done), "own": own}


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
        self._urgent = 0  # snapshot writes waiting for the lock (see _write_now)
        # SQLite: the writers of one file take turns through a kernel lock (_writing).
        self._lockpath = (u.database + ".lock" if self.sqlite and u.database
                          and u.database != ":memory:" else None)
        self._lockfd: int | None = None
        self._urgentfd: int | None = None
        self._ulock = threading.Lock()  # a snapshot write's own lock files (_writing_urgent)
        self._ufds: tuple[int, int] | None = None
        self._prepare(create)
        from .notify import enabled

        # PostgreSQL: the rows that other hosts wait for are announced with
        # LISTEN/NOTIFY in the transaction that writes them (tracer/notify.py).
        self.notify = enabled(self)
        ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
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
            ph=ph,
        )
        # Set by the tracer: () -> {process: (seq, clock)} of its logical processes,
        # stored with each batch so that a later process of the same name continues.
        self.marks = None
        self.writer = "?"
        self._marked: dict[str, tuple[int, int]] = {}
        self._rows: set[str] = set()  # processes whose row this store has written

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
                    if (row is None and not create) or (row is not None and row[0] != str(SCHEMA_VERSION)):
                        have = row[0] if row else "unknown"
                        raise StoreError(
                            f"{self._safe_url()} has cutscope schema version {have}; "
                            f"this cutscope reads version {SCHEMA_VERSION}")
                elif tables and (not create or not tables & set(Base.metadata.tables)):
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
        except SQLAlchemyError as exc:
            msg = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise StoreError(f"cannot use {self._safe_url()}: {msg}") from None

    def _create(self) -> None:
        if self.sqlite:  # only once it is ours: WAL is the file's mode from then on
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        for attempt in range(10):  # a creator without our lock (an older cutscope)
            try:
                with self.engine.begin() as conn:
                    if not self.sqlite:
                        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72431)")
                    Base.metadata.create_all(conn)
                    if conn.execute(select(Meta.value).where(
                            Meta.key == "schema_version")).first() is None:
                        conn.execute(insert(Meta).values(key="schema_version",
                                                         value=str(SCHEMA_VERSION)))
                return
            except SQLAlchemyError as exc:
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
            for item in others:
                if item[0] != "channel":
                    self._write_other(conn, item)
            if self.notify:
                sids = sorted({i[1] for i in others if i[0] in _SNAP_RECORDS})
                if sids:
                    from .notify import REP, send

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
        sql = self._sql
        if kind == "process":
            _, name, pid, host, parent, started, argv, *rest = item
            seq0 = rest[0] if rest else None  # the seq this process started from
            old = conn.exec_driver_sql(sql["process_old"], (name,)).first()
            if old is not None and (old[0], old[1]) != (pid, host) and (
                    (old[3] is None and started - old[2] < LIVE_NS)
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
                self._upsert(conn, SnapshotState, dict(
                    snapshot_id=sid, process=process, event_seq=seq,
                    state=_state_json(state), outgoing=json.dumps(out), closed="[]",
                    done=False), ["snapshot_id", "process"], [])
        elif kind == "snap_chan":
            _, sid, process, channel, msgs, complete = item
            status = self._snap_status(conn, sid)
            if not (status in (None, "running") or (status == "partial" and not complete)):
                return  # a report that came after the snapshot ended
            where = (SnapshotState.snapshot_id == sid, SnapshotState.process == process)
            if complete:
                row = conn.execute(select(SnapshotState.closed).where(*where)).first()
                if row is not None:
                    closed = json.loads(row[0] or "[]")
                    if channel not in closed:
                        closed.append(channel)
                        conn.execute(update(SnapshotState).where(*where).values(
                            closed=json.dumps(closed)))
            if msgs:
                base = conn.execute(select(func.count()).select_from(SnapshotMessage).where(
                    SnapshotMessage.snapshot_id == sid, SnapshotMessage.channel == channel)).scalar()
                conn.execute(insert(SnapshotMessage), [
                    dict(snapshot_id=sid, channel=channel, idx=base + i, **_message(m))
                    for i, m in enumerate(msgs)])
        elif kind == "snap_done":
            _, sid, process = item
            if self._snap_status(conn, sid) in (None, "running"):
                conn.execute(update(SnapshotState).where(
                    SnapshotState.snapshot_id == sid, SnapshotState.process == process).values(done=True))
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

    # -- snapshot coordination (tracer/snapshot.py): short transactions, any process

    @staticmethod
    def _snap_status(conn, sid: int) -> str | None:
        return conn.execute(select(Snapshot.status).where(Snapshot.id == sid)).scalar()

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
        return self._write_now(lambda conn: int(conn.execute(insert(Snapshot).values(
            initiator=initiator, status="running", requested_ns=requested_ns)).inserted_primary_key[0]))

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
                top = conn.execute(select(func.max(Snapshot.id))).scalar() or 0
            sid = max(last, int(top)) + 1
            os.pwrite(fd, b"%20d\n" % sid, 0)
            return sid
        finally:
            os.close(fd)  # (releases the lock)

    @staticmethod
    def _insert_snapshot(conn, sid: int, initiator: str, requested_ns: int) -> None:
        conn.execute(insert(Snapshot).values(id=sid, initiator=initiator, status="running",
                                             requested_ns=requested_ns))

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
        rows = [dict(snapshot_id=sid, process=p, initiator=initiator, created_ns=created_ns,
                     taken=p in taken) for p in processes]
        if not rows:
            return
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert as dinsert
        else:
            from sqlalchemy.dialects.postgresql import insert as dinsert
        stmt = dinsert(SnapshotRequest).on_conflict_do_nothing(index_elements=["snapshot_id", "process"])

        asked = [p for p in processes if p not in taken]

        def run(conn):
            self._ensure_snapshot(conn, sid, create)
            conn.execute(stmt, rows)
            if self.notify and asked:
                from .notify import REQ, request_payload, send

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
            snap = conn.execute(select(Snapshot.status, Snapshot.initiator).where(Snapshot.id == sid)).first()
            if snap is None:
                if not unwritten:
                    return None
                snap = ("running", None)
            S = SnapshotState
            rows = conn.execute(select(S.process, S.event_seq, S.state, S.outgoing, S.closed, S.done)
                                .where(S.snapshot_id == sid)).all()
        return {"status": snap[0], "initiator": snap[1],
                "states": {r[0]: _progress_row(r[1], r[2], r[3], r[4], r[5]) for r in rows}}

    def finish_snapshot(self, sid: int, status: str, missing: list, finished_ns: int,
                        records: Iterable[tuple] = (), create=None) -> bool:
        """End a running snapshot; False if it had already ended. ``records``: the
        snapshot records that processes reported to the coordinator directly
        (``snap_state``, ``snap_chan``, ``snap_done``), written in the same transaction;
        ``create``: (initiator, requested_ns) if its row is not written yet."""
        stmt = (update(Snapshot).where(Snapshot.id == sid, Snapshot.status == "running")
                .values(status=status, missing=json.dumps(missing), finished_ns=finished_ns))
        records = sorted(records, key=_snap_order)

        def run(conn):
            self._ensure_snapshot(conn, sid, create)
            if records and self._snap_status(conn, sid) == "running":
                self._write_reports(conn, sid, records)
            ended = conn.execute(stmt).rowcount > 0
            if ended and self.notify:
                from .notify import END, send

                send(conn, END, json.dumps({"sid": sid, "status": status}))
            return ended
        return self._write_now(run)

    def _write_reports(self, conn, sid: int, records: list[tuple]) -> None:
        """A coordinator's records of a running snapshot, folded into one row per
        process and one insert of all the messages (hundreds of records: one
        statement each took a third of a second)."""
        states, msgs, rest = _fold_reports(records)
        if states:
            if self.sqlite:
                from sqlalchemy.dialects.sqlite import insert as dinsert
            else:
                from sqlalchemy.dialects.postgresql import insert as dinsert
            conn.execute(dinsert(SnapshotState).on_conflict_do_nothing(
                index_elements=["snapshot_id", "process"]), states)
        if msgs:
            M = SnapshotMessage
            base = dict(conn.execute(select(M.channel, func.count()).where(
                M.snapshot_id == sid, M.channel.in_(list(msgs))).group_by(M.channel)).all())
            conn.execute(insert(M), [
                dict(snapshot_id=sid, channel=ch, idx=base.get(ch, 0) + i, **_message(m))
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
            snaps = [dict(r._mapping) for r in conn.execute(
                select(Snapshot.__table__).where(Snapshot.id == sid))]
            if not snaps:
                return None
            states = [dict(r._mapping) for r in conn.execute(
                select(SnapshotState.__table__).where(SnapshotState.snapshot_id == sid))]
            msgs = [dict(r._mapping) for r in conn.execute(
                select(SnapshotMessage.__table__).where(SnapshotMessage.snapshot_id == sid))]
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
        vals = dict(host=host, port=port, process=process, pid=pid, registered_ns=time.time_ns())

        def run(conn):
            conn.execute(delete(Listener).where(Listener.host == host, Listener.port == port))
            conn.execute(insert(Listener).values(**vals))
        with self._lock:
            self.execute(run)

    def unregister_listener(self, host: str, port: int, pid: int | None = None) -> None:
        cond = [Listener.host == host, Listener.port == port]
        if pid is not None:
            cond.append(Listener.pid == pid)
        with self._lock:
            self.execute(lambda conn: conn.execute(delete(Listener).where(*cond)))

    def lookup_listener(self, hosts: list[str], port: int) -> dict | None:
        """The registration of a traced listener on ``port`` under one of ``hosts``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(Listener.__table__).where(
                Listener.port == port, Listener.host.in_(hosts))).first()
        return dict(row._mapping) if row is not None else None

    # -- connection ends between hosts: direct, synchronous (the peer looks them up at once)

    def register_end(self, key: str, host: str, pid: int, mode: str) -> None:
        vals = dict(key=key, host=host, pid=pid, mode=mode, registered_ns=time.time_ns())

        def run(conn):
            conn.execute(delete(ConnEnd).where(ConnEnd.key == key))
            conn.execute(insert(ConnEnd).values(**vals))
        with self._lock:
            self.execute(run)

    def unregister_end(self, key: str, pid: int) -> None:
        with self._lock:
            self.execute(lambda conn: conn.execute(
                delete(ConnEnd).where(ConnEnd.key == key, ConnEnd.pid == pid)))

    def lookup_ends(self, prefix: str, exact: bool = False) -> list[dict]:
        """The registered ends whose key is ``prefix`` (``exact``) or starts with it."""
        cond = ConnEnd.key == prefix if exact else ConnEnd.key.startswith(prefix, autoescape=True)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(ConnEnd.__table__).where(cond))]

    # -- reading ----------------------------------------------------------------

    def load(self, events: bool = True) -> dict:
        """The whole trace as the interchange document.

        ``events=False``: everything but the events (``"events": []``), for a
        reader that takes them from ``event_blocks()`` (the viewer, which keeps
        them in columns rather than a dict per event).
        """
        with self.engine.connect() as conn:  # one read transaction: a consistent trace
            procs = [dict(r._mapping) for r in
                     conn.execute(select(Process.__table__).order_by(Process.started_ns))]
            chans = [dict(r._mapping) for r in conn.execute(select(Channel.__table__).order_by(Channel.id))]
            events = [e for r in conn.execute(_BLOCKS) for e in decode_block(*r)] if events else []
            snaps = [dict(r._mapping) for r in conn.execute(select(Snapshot.__table__))]
            states = [dict(r._mapping) for r in conn.execute(select(SnapshotState.__table__))]
            msgs = [dict(r._mapping) for r in conn.execute(select(SnapshotMessage.__table__))]
        return build_trace(procs, chans, events, snaps, states, msgs)

    def event_blocks(self) -> Iterator[list[tuple]]:
        """The stored event tuples (``EVENT_COLUMNS``), one decoded block at a time, in
        the order written. Raw: a send's msg is None (its id is ``"<process>#<seq>"``),
        an unframed event's is ""; duplicates of one (process, seq) are all there
        (``load()`` keeps the first written)."""
        with self.engine.connect() as conn:
            for r in conn.execute(_BLOCKS):
                yield decode_block(*r)

    def last_event(self, process: str) -> tuple[int, int]:
        """(seq, lamport) of the last stored event of ``process``; (0, 0) if none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(Process.last_seq, Process.last_lamport).where(
                Process.name == process)).first()
        return (row[0] or 0, row[1] or 0) if row else (0, 0)

    def stamp(self) -> tuple:
        """What changes when the trace grows (the viewer's follow mode polls it)."""
        def q(conn):
            ev = conn.execute(select(func.coalesce(func.sum(EventBlock.n), 0),
                                     func.coalesce(func.max(EventBlock.id), 0))).first()
            sn = conn.execute(select(func.count(), func.coalesce(func.sum(
                case((Snapshot.status == "running", 0), else_=1)), 0))).first()
            st = conn.execute(select(func.count()).select_from(SnapshotState)).first()
            return (tuple(ev), tuple(sn), tuple(st))
        return self.execute(q)

    def processes(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(Process.__table__))]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # journal_mode=WAL is set once, by _prepare, on a database that is ours: set here
    # it rewrote the header of any file a reader was pointed at (`check --db app.db`).
    cur = dbapi_conn.cursor()
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
        self.ends: dict[str, dict] = {}

    def dispose_after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, rows: list[tuple], others: list[tuple]) -> None:
        with self._lock:
            for item in others:
                self._write_other(item)
            if FAST is not None:
                rows = FAST.expand(rows)  # the C paths' chunks
            self.events.extend(event_row(r, self.capture) for r in rows)

    def claim_name(self, base: str, pid: int, host: str, parent: str | None, started_ns: int,
                   argv: str | None) -> str:
        """As ``SqlStore.claim_name``."""
        with self._lock:
            n, name = 1, base
            while name in self.processes_:
                n += 1
                name = f"{base}#{n}"
            self.processes_[name] = dict(name=name, parent=parent, started_ns=started_ns,
                                         argv=argv, pid=pid, host=host, heartbeat_ns=started_ns,
                                         ended_ns=None)
            return name

    def release_name(self, name: str, pid: int, host: str) -> None:
        with self._lock:
            p = self.processes_.get(name)
            if p is not None and (p.get("pid"), p.get("host")) == (pid, host):
                del self.processes_[name]

    def _write_other(self, item: tuple) -> None:
        kind = item[0]
        if kind == "process":
            _, name, pid, host, parent, started, argv, *_ = item
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
            if self._snap_status(sid) in (None, "running"):
                self.states.setdefault((sid, process), dict(
                    snapshot_id=sid, process=process, event_seq=seq,
                    state=_state_json(state), outgoing=json.dumps(out), closed="[]",
                    done=False))
        elif kind == "snap_chan":
            _, sid, process, channel, msgs, complete = item
            status = self._snap_status(sid)
            if not (status in (None, "running") or (status == "partial" and not complete)):
                return
            st = self.states.get((sid, process))
            if complete and st is not None:
                closed = json.loads(st["closed"] or "[]")
                if channel not in closed:
                    st["closed"] = json.dumps(closed + [channel])
            base = sum(1 for m in self.messages if m["snapshot_id"] == sid and m["channel"] == channel)
            for i, m in enumerate(msgs):
                self.messages.append(dict(snapshot_id=sid, channel=channel, idx=base + i,
                                          **_message(m)))
        elif kind == "snap_done":
            _, sid, process = item
            st = self.states.get((sid, process))
            if st is not None and self._snap_status(sid) in (None, "running"):
                st["done"] = True
        else:
            raise ValueError(f"unknown record {kind!r}")

    def register_listener(self, host: str, port: int, process: str, pid: int) -> None:
        with self._lock:
            self.listeners[(host, port)] = dict(host=host, port=port, process=process, pid=pid,
                                                registered_ns=time.time_ns())

    def unregister_listener(self, host: str, port: int, pid: int | None = None) -> None:
        with self._lock:
            row = self.listeners.get((host, port))
            if row is not None and (pid is None or row["pid"] == pid):
                del self.listeners[(host, port)]

    def lookup_listener(self, hosts: list[str], port: int) -> dict | None:
        with self._lock:
            for h in hosts:
                row = self.listeners.get((h, port))
                if row is not None:
                    return dict(row)
        return None

    def register_end(self, key: str, host: str, pid: int, mode: str) -> None:
        with self._lock:
            self.ends[key] = dict(key=key, host=host, pid=pid, mode=mode,
                                  registered_ns=time.time_ns())

    def unregister_end(self, key: str, pid: int) -> None:
        with self._lock:
            row = self.ends.get(key)
            if row is not None and row["pid"] == pid:
                del self.ends[key]

    def lookup_ends(self, prefix: str, exact: bool = False) -> list[dict]:
        with self._lock:
            if exact:
                row = self.ends.get(prefix)
                return [dict(row)] if row is not None else []
            return [dict(r) for k, r in self.ends.items() if k.startswith(prefix)]

    # -- snapshot coordination: the same operations as SqlStore's

    def _snap_status(self, sid: int) -> str | None:
        s = self.snapshots.get(sid)
        return None if s is None else s["status"]

    def new_snapshot(self, initiator: str, requested_ns: int) -> tuple[int, bool]:
        return self.create_snapshot(initiator, requested_ns), True

    def create_snapshot(self, initiator: str, requested_ns: int) -> int:
        with self._lock:
            sid = max(self.snapshots, default=0) + 1
            self.snapshots[sid] = dict(id=sid, initiator=initiator, status="running",
                                       requested_ns=requested_ns, finished_ns=None, missing=None)
            return sid

    def add_snapshot_requests(self, sid: int, initiator: str, processes: Iterable[str],
                              created_ns: int, taken: Iterable[str] = (), create=None) -> None:
        taken = set(taken)
        with self._lock:
            for p in processes:
                self.requests.setdefault((sid, p), dict(snapshot_id=sid, process=p, initiator=initiator,
                                                        created_ns=created_ns, taken=p in taken))

    def snapshot_requests(self, processes: list[str]) -> list[tuple[int, str, str]]:
        names = set(processes)
        with self._lock:
            return [(sid, p, r["initiator"]) for (sid, p), r in self.requests.items()
                    if not r["taken"] and p in names and self._snap_status(sid) == "running"]

    def snapshot_progress(self, sid: int, unwritten: bool = False) -> dict | None:
        with self._lock:
            s = self.snapshots.get(sid)
            if s is None:
                return None
            return {"status": s["status"], "initiator": s["initiator"], "states": {
                p: _progress_row(st["event_seq"], st["state"], st["outgoing"], st["closed"], st["done"])
                for (i, p), st in self.states.items() if i == sid}}

    def finish_snapshot(self, sid: int, status: str, missing: list, finished_ns: int,
                        records: Iterable[tuple] = (), create=None) -> bool:
        with self._lock:
            s = self.snapshots.get(sid)
            if s is None or s["status"] != "running":
                return False
            for item in sorted(records, key=_snap_order):
                self._write_other(item)
            s.update(status=status, missing=json.dumps(missing), finished_ns=finished_ns)
            return True

    def snapshot_statuses(self, sids: Iterable[int]) -> dict[int, str]:
        with self._lock:
            return {i: self.snapshots[i]["status"] for i in sids if i in self.snapshots}

    def snapshot_entry(self, sid: int) -> dict | None:
        with self._lock:
            if sid not in self.snapshots:
                return None
            return build_trace([], [], [], [dict(self.snapshots[sid])],
                               [dict(st) for (i, _), st in self.states.items() if i == sid],
                               [dict(m) for m in self.messages if m["snapshot_id"] == sid])["snapshots"][0]

    def live_processes(self, since_ns: int) -> list[str]:
        with self._lock:
            return sorted(p["name"] for p in self.processes_.values()
                          if p.get("ended_ns") is None and p.get("heartbeat_ns", 0) >= since_ns)

    def channel_ends(self, among: Iterable[str] | None = None) -> list[dict]:
        among = None if among is None else set(among)
        with self._lock:
            return [dict(id=c["id"], src=c["src"], dst=c["dst"], fifo=c["fifo"])
                    for c in self.channels.values()
                    if among is None or c["src"] in among or c["dst"] in among]

    def load(self, events: bool = True) -> dict:
        with self._lock:
            procs = sorted(self.processes_.values(), key=lambda p: p["started_ns"])
            return build_trace(procs, sorted(self.channels.values(), key=lambda c: c["id"]),
                               list(self.events) if events else [], list(self.snapshots.values()),
                               list(self.states.values()), list(self.messages))

    def event_blocks(self) -> Iterator[list[tuple]]:
        with self._lock:
            rows = list(self.events)
        yield rows

    def processes(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self.processes_.values()]


def open_store(url: str | None = None, create: bool = True, capture: int = 0):
    """A store for ``url`` (``memory:`` for an in-memory one)."""
    if url == "memory:":
        return MemoryStore(capture=capture)
    return SqlStore(url, create=create, capture=capture)
