"""Stored snapshots as tables: local states side by side, channel contents, totals, diffs.

A snapshot is the document's dict (docs/format.md). cutscope's own
bookkeeping in a local state (the ``_cutscope`` key) is left out unless asked
for; then each of its keys is a row ``_cutscope.KEY``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping, NamedTuple

from .expr import Expr, Record, as_record

BOOKKEEPING = "_cutscope"


class StateTable(NamedTuple):
    """Local states side by side: one row per field, one column per process."""

    processes: list[str]
    fields: list[str]
    values: dict[str, dict[str, Any]]  # field -> {process: value} (absent: not recorded)
    totals: dict[str, float]  # field -> sum over processes, for fields whose values are numbers


class InTransit(NamedTuple):
    """One message recorded in a channel's state."""

    channel: str
    msg: str | None
    value: Any  # the decoded item (queue messages), else None
    shown: str  # how a table shows it


class ChannelRow(NamedTuple):
    channel: str
    src: str | None
    dst: str | None
    complete: bool
    messages: list[InTransit]


class SnapshotDiff(NamedTuple):
    """What changed from snapshot ``a`` to snapshot ``b``."""

    a: int
    b: int
    processes: list[str]
    fields: list[str]
    before: dict[str, dict[str, Any]]  # field -> {process: value in a}
    after: dict[str, dict[str, Any]]  # field -> {process: value in b}
    changed: set[tuple[str, str]]  # (field, process) whose value differs
    delivered: list[InTransit]  # in transit in a, not in b
    sent: list[InTransit]  # in transit in b, not in a
    still: list[InTransit]  # in transit in both


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _flat_state(state: Any, bookkeeping: bool) -> dict[str, Any]:
    if not isinstance(state, Mapping):
        return {} if state is None else {"state": state}
    out: dict[str, Any] = {}
    for k, v in state.items():
        if k == BOOKKEEPING:
            if bookkeeping and isinstance(v, Mapping):
                out.update({f"{BOOKKEEPING}.{a}": b for a, b in v.items()})
            elif bookkeeping:
                out[k] = v
            continue
        out[k] = v
    return out


def state_table(snapshot: Mapping, bookkeeping: bool = False) -> StateTable:
    procs = list((snapshot.get("processes") or {}).keys())
    values: dict[str, dict[str, Any]] = {}
    for p in procs:
        for f, v in _flat_state((snapshot["processes"][p] or {}).get("state"), bookkeeping).items():
            values.setdefault(f, {})[p] = v
    fields = sorted(values, key=lambda f: (f.startswith(BOOKKEEPING), f))
    totals = {f: sum(values[f].values()) for f in fields
              if values[f] and all(map(_is_number, values[f].values()))}
    return StateTable(procs, fields, values, totals)


def _shown(m: Mapping) -> str:
    val = m.get("value")
    if val is not None:
        shown = json.dumps(val, default=repr)
    else:
        shown = f"{m.get('nbytes', '?')} bytes"
        if m.get("payload_b64"):
            raw = base64.b64decode(m["payload_b64"])
            shown += f" {raw[:60]!r}" + ("..." if len(raw) > 60 else "")
    if m.get("truncated"):
        shown += " (truncated)"
    return shown


def channel_rows(snapshot: Mapping, channels: Mapping[str, Mapping] | None = None) -> list[ChannelRow]:
    """Each recorded channel with its messages in transit (``channels``: the trace's
    channel records, for their ends)."""
    out = []
    for c in snapshot.get("channels") or []:
        cid = c["channel"]
        info = (channels or {}).get(cid) or {}
        msgs = [InTransit(cid, m.get("msg"), m.get("value"), _shown(m)) for m in c.get("messages") or []]
        out.append(ChannelRow(cid, info.get("src"), info.get("dst"), bool(c.get("complete")), msgs))
    return out


def in_transit(snapshot: Mapping) -> list[InTransit]:
    return [m for row in channel_rows(snapshot) for m in row.messages]


def transit_totals(messages: list[InTransit]) -> dict[str, float]:
    """Sums over the in-transit messages: ``value`` for numbers, each numeric field for dicts."""
    out: dict[str, float] = {}
    for m in messages:
        v = m.value
        if _is_number(v):
            out["value"] = out.get("value", 0) + v
        elif isinstance(v, Mapping):
            for k, x in v.items():
                if _is_number(x):
                    out[k] = out.get(k, 0) + x
    return out


def diff(a: Mapping, b: Mapping, bookkeeping: bool = False) -> SnapshotDiff:
    ta, tb = state_table(a, bookkeeping), state_table(b, bookkeeping)
    procs = ta.processes + [p for p in tb.processes if p not in ta.processes]
    fields = ta.fields + [f for f in tb.fields if f not in ta.fields]
    changed = set()
    missing = object()
    for f in fields:
        for p in procs:
            if ta.values.get(f, {}).get(p, missing) != tb.values.get(f, {}).get(p, missing):
                changed.add((f, p))
    ma, mb = in_transit(a), in_transit(b)
    ka = {(m.channel, m.msg) for m in ma}
    kb = {(m.channel, m.msg) for m in mb}
    return SnapshotDiff(
        a["id"], b["id"], procs, fields, ta.values, tb.values, changed,
        [m for m in ma if (m.channel, m.msg) not in kb], [m for m in mb if (m.channel, m.msg) not in ka],
        [m for m in mb if (m.channel, m.msg) in ka])


def names(snapshot: Mapping) -> dict[str, Any]:
    """The names an expression over ``snapshot`` sees.

    - each state field: the list of its values over the processes that recorded
      it (``sum(balance)``);
    - ``states``: ``{process: state}`` (``states["bank-1"].balance``);
    - ``in_transit``: the recorded messages, each with ``msg``, ``channel``,
      ``value`` and, when the value is a dict, its keys (``m.amount``);
    - ``channels``: ``{channel: [message, ...]}``;
    - ``processes``: the processes that recorded a state.
    """
    table = state_table(snapshot)
    out: dict[str, Any] = {f: [as_record(v) for v in table.values[f].values()] for f in table.fields}
    out["states"] = {p: as_record(_flat_state((snapshot["processes"][p] or {}).get("state"), False))
                     for p in table.processes}
    msgs = []
    chans: dict[str, list] = {}
    for m in in_transit(snapshot):
        rec = Record(value=as_record(m.value), msg=m.msg, channel=m.channel)
        if isinstance(m.value, Mapping):
            rec.update({k: as_record(v) for k, v in m.value.items() if k not in rec})
        msgs.append(rec)
        chans.setdefault(m.channel, []).append(rec)
    out["in_transit"] = msgs
    out["channels"] = chans
    out["processes"] = list(table.processes)
    return out


def evaluate(snapshot: Mapping, text: str | Expr):
    """The value of a user expression over ``snapshot`` (``names``). Raises ValueError
    for an expression that is not allowed or fails (with what failed)."""
    expr = text if isinstance(text, Expr) else Expr(text)
    try:
        return expr.evaluate(names(snapshot))
    except NameError as exc:
        raise ValueError(f"{exc} in snapshot {snapshot.get('id')}") from None
    except Exception as exc:  # the recorded values: say what failed, in one line
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
