"""The snapshot records a logical process hands to the recorder, the store and a
coordinator's inbox: named tuples, whose first field names the kind
(``SNAPSHOT_RECORDS``), so that they read as tuples too where a store or the
control socket's encoding takes them apart."""

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
