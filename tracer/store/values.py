"""Values as the store keeps them: queue items and states as JSON (else their
repr), payloads as bytes, capped; an in-transit message of a snapshot."""

from __future__ import annotations

import json
from typing import Any

SNAPSHOT_PAYLOAD_CAP = 64 * 1024  # bytes kept per in-transit message in a snapshot


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


def state_json(state) -> str:
    """A recorded state as stored: JSON text (a coordinator may have it as text already)."""
    return state if isinstance(state, str) else json.dumps(state, default=repr)


def stored_message(m) -> dict:
    """An in-transit message as stored: ``(msg, nbytes, payload, value)`` from a
    process, or the stored form already (reported through a control socket)."""
    return m if isinstance(m, dict) else message_record(*m)
