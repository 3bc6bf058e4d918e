"""The recorder's records other than events (``("process", ...)``,
``("heartbeat", ...)``, ``("ended", ...)``, ``("channel", ...)``,
``("fault", ...)`` and the snapshot records), applied to a store.

``apply_record`` reads each kind once and decides, once for every store,
which snapshot records a snapshot still takes (``takes_report``); a store
provides the writes as a ``RecordTarget``.
"""

from __future__ import annotations

import json
from typing import Protocol

from .values import state_json


class RecordTarget(Protocol):
    """The writes of one store that ``apply_record`` makes."""

    def snapshot_status(self, sid: int) -> str | None: ...
    def put_process(self, name: str, pid: int, host: str, parent: str | None, started_ns: int,
                    argv: str | None, seq0: int | None) -> None: ...
    def put_heartbeats(self, names: list[str], ns: int) -> None: ...
    def put_ended(self, name: str, ns: int) -> None: ...
    def put_channel(self, cid: str, src, dst, transport: str, endpoint, framed: bool,
                    fifo: bool) -> None: ...
    def put_fault(self, wall_ns: int, process: str, location: str, detail: str) -> None: ...
    def put_state(self, sid: int, process: str, seq: int, state: str, outgoing: str) -> None: ...
    def close_channel(self, sid: int, process: str, channel: str) -> None: ...
    def put_messages(self, sid: int, channel: str, msgs: list) -> None: ...
    def set_done(self, sid: int, process: str) -> None: ...


def takes_report(status: str | None, complete: bool = True) -> bool:
    """Whether a snapshot in ``status`` (None: its row is not written yet) takes a
    process's record: a running one takes every record; one that ended partial
    still takes the incomplete channel states (``complete`` False) that follow its
    end; any other drops the record (it came after the snapshot ended)."""
    return status in (None, "running") or (status == "partial" and not complete)


def apply_record(target: RecordTarget, item: tuple) -> None:
    """Write the record ``item`` through ``target``."""
    kind = item[0]
    if kind == "process":
        _, name, pid, host, parent, started, argv, *rest = item
        seq0 = rest[0] if rest else None  # the seq this process started from
        target.put_process(name, pid, host, parent, started, argv, seq0)
    elif kind == "heartbeat":
        _, names, ns = item
        if names:
            target.put_heartbeats(names, ns)
    elif kind == "ended":
        _, name, ns = item
        target.put_ended(name, ns)
    elif kind == "channel":
        _, cid, src, dst, transport, endpoint, framed, fifo = item
        target.put_channel(cid, src, dst, transport, endpoint, framed, fifo)
    elif kind == "fault":
        _, ns, process, location, detail = item
        target.put_fault(ns, process, location, detail)
    elif kind == "snap_state":
        _, sid, process, seq, state, out, _initiator = item
        if takes_report(target.snapshot_status(sid)):
            target.put_state(sid, process, seq, state_json(state), json.dumps(out))
    elif kind == "snap_chan":
        _, sid, process, channel, msgs, complete = item
        if not takes_report(target.snapshot_status(sid), complete):
            return
        if complete:
            target.close_channel(sid, process, channel)
        if msgs:
            target.put_messages(sid, channel, msgs)
    elif kind == "snap_done":
        _, sid, process = item
        if takes_report(target.snapshot_status(sid)):
            target.set_done(sid, process)
    else:
        raise ValueError(f"unknown record {kind!r}")
