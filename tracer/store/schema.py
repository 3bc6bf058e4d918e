"""The tables (SQLAlchemy 2.x declarative models) of schema version
``SCHEMA_VERSION``, documented in ``docs/schema.md``; keep the two in step.

Each model is a row of its table, named ``<Table>Row`` (``SnapshotRow`` is a row
of ``snapshots``): ``Snapshot`` is the result of ``cutscope.snapshot()``
(``tracer/snapshot/result.py``), not a table."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ProcessRow(Base):
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


class ChannelRow(Base):
    __tablename__ = "channels"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    src: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dst: Mapped[str | None] = mapped_column(String(255), nullable=True)
    transport: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    framed: Mapped[bool] = mapped_column(Boolean)
    fifo: Mapped[bool] = mapped_column(Boolean, default=True)


class EventBlockRow(Base):
    """One batch of events as a recorder wrote it (see docs/schema.md)."""
    __tablename__ = "event_blocks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    writer: Mapped[str] = mapped_column(String(255))  # main logical process of the interpreter
    n: Mapped[int] = mapped_column(Integer)  # events in the block
    wall_ns: Mapped[int] = mapped_column(BigInteger)  # wall clock of its last event
    encoding: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ListenerRow(Base):
    """Addresses on which a traced process listens (so clients know to frame)."""
    __tablename__ = "listeners"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    registered_ns: Mapped[int] = mapped_column(BigInteger)


class ConnEndRow(Base):
    """Traced ends of TCP connections between hosts, and connects in progress towards
    another host (the socket integration's registry; docs/protocol.md, "Negotiation")."""
    __tablename__ = "conn_ends"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(8))
    registered_ns: Mapped[int] = mapped_column(BigInteger)


class FaultRow(Base):
    __tablename__ = "faults"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wall_ns: Mapped[int] = mapped_column(BigInteger)
    process: Mapped[str | None] = mapped_column(String(255), nullable=True)
    location: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)


class SnapshotRow(Base):
    __tablename__ = "snapshots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    initiator: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # running | complete | partial
    requested_ns: Mapped[int] = mapped_column(BigInteger)
    finished_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    missing: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list


class SnapshotRequestRow(Base):
    """Ask a process (by name) to start snapshot ``snapshot_id`` at its next safe point."""
    __tablename__ = "snapshot_requests"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255), primary_key=True)
    initiator: Mapped[str] = mapped_column(String(255))
    created_ns: Mapped[int] = mapped_column(BigInteger)
    taken: Mapped[bool] = mapped_column(Boolean, default=False)


class SnapshotStateRow(Base):
    __tablename__ = "snapshot_states"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    process: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(Text)  # JSON object
    outgoing: Mapped[str] = mapped_column(Text)  # JSON list of channel ids marked
    closed: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list; NULL = not done
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class SnapshotMessageRow(Base):
    __tablename__ = "snapshot_messages"
    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    msg: Mapped[str | None] = mapped_column(String(300), nullable=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
