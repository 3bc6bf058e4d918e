"""The records that the tracer hands to the recorder for the store, other than
events: a process's row, its heartbeats and end, a channel's ends, a fault; and
the snapshot records that a logical process hands to the recorder, the store
and a coordinator's inbox. Named tuples, whose first field names the kind
(``SNAPSHOT_RECORDS`` for the snapshot records), so that they read as tuples
too where a store (``store/apply.py``) or the control socket's encoding takes
them apart."""

from __future__ import annotations

from typing import Any, NamedTuple


class StateRecord(NamedTuple):
    """A process recorded its state for a snapshot (its ``snapshot`` event is ``event_seq``)."""

    kind: str  # "snap_state"
    snapshot: int
    process: str
    event_seq: int
    state: Any  # the state dict (its JSON text once it has crossed a control socket)
    outgoing: list  # the channel ids it sent a marker on
    initiator: str


class ChannelRecord(NamedTuple):
    """The messages a process recorded on one incoming channel for a snapshot;
    ``complete``: the channel's marker arrived (the channel is closed)."""

    kind: str  # "snap_chan"
    snapshot: int
    process: str
    channel: str
    messages: list  # (msg, nbytes, payload, value), or their stored form
    complete: bool


class DoneRecord(NamedTuple):
    """A process closed every incoming channel of a snapshot."""

    kind: str  # "snap_done"
    snapshot: int
    process: str


def state_record(sid: int, process: str, seq: int, state: Any, outgoing: list,
                 initiator: str) -> StateRecord:
    return StateRecord("snap_state", sid, process, seq, state, outgoing, initiator)


def channel_record(sid: int, process: str, channel: str, messages: list,
                   complete: bool) -> ChannelRecord:
    return ChannelRecord("snap_chan", sid, process, channel, messages, complete)


def done_record(sid: int, process: str) -> DoneRecord:
    return DoneRecord("snap_done", sid, process)


# The record type of each kind (a record decoded from a control socket).
RECORD_TYPES = {"snap_state": StateRecord, "snap_chan": ChannelRecord, "snap_done": DoneRecord}


class ProcessRecord(NamedTuple):
    """A logical process started (or started again) under ``name``."""

    kind: str  # "process"
    name: str
    pid: int
    host: str
    parent: str | None
    started_ns: int
    argv: str | None
    seq0: int | None = None  # the seq it started from, where known


class HeartbeatRecord(NamedTuple):
    """The processes of this interpreter that are alive at ``wall_ns``."""

    kind: str  # "heartbeat"
    names: list
    wall_ns: int


class EndedRecord(NamedTuple):
    """A logical process ended."""

    kind: str  # "ended"
    name: str
    wall_ns: int


class ChannelEndsRecord(NamedTuple):
    """What one end knows of a channel (``src``, ``dst``, ``endpoint`` None where it
    does not; the store merges both ends')."""

    kind: str  # "channel"
    channel: str
    src: str | None
    dst: str | None
    transport: str
    endpoint: str | None
    framed: bool
    fifo: bool


class FaultRecord(NamedTuple):
    """An error inside cutscope, where it happened."""

    kind: str  # "fault"
    wall_ns: int
    process: str | None
    location: str
    detail: str


def process_record(name: str, pid: int, host: str, parent: str | None, started_ns: int,
                   argv: str | None, seq0: int | None = None) -> ProcessRecord:
    return ProcessRecord("process", name, pid, host, parent, started_ns, argv, seq0)


def heartbeat_record(names: list, wall_ns: int) -> HeartbeatRecord:
    return HeartbeatRecord("heartbeat", names, wall_ns)


def ended_record(name: str, wall_ns: int) -> EndedRecord:
    return EndedRecord("ended", name, wall_ns)


def channel_ends_record(channel: str, src: str | None, dst: str | None, transport: str,
                        endpoint: str | None, framed: bool, fifo: bool) -> ChannelEndsRecord:
    return ChannelEndsRecord("channel", channel, src, dst, transport, endpoint, framed, fifo)


def fault_record(wall_ns: int, process: str | None, location: str, detail: str) -> FaultRecord:
    return FaultRecord("fault", wall_ns, process, location, detail)
