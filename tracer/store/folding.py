"""Snapshot records (``snap_state``, ``snap_chan``, ``snap_done``) folded into the
rows the store keeps, and a recorded state read back as a coordinator's progress."""

from __future__ import annotations

import json

from .document import loads_json
from .values import state_json


def fold_reports(records: list[tuple]) -> tuple[list[dict], dict[str, list], list[tuple]]:
    """Snapshot records as rows: ``(state rows, {channel: [message]}, the rest)``;
    the rest are records of processes whose state is not among them."""
    states: dict[str, dict] = {}
    msgs: dict[str, list] = {}
    rest: list[tuple] = []
    for item in sorted(records, key=snapshot_record_order):
        kind, sid, p = item[0], item[1], item[2]
        if kind == "snap_state":
            _, sid, p, seq, state, out, _initiator = item
            states.setdefault(p, dict(snapshot_id=sid, process=p, event_seq=seq,
                                      state=state_json(state), outgoing=json.dumps(list(out)),
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


def snapshot_record_order(item: tuple) -> int:
    """Snapshot records in the order the store needs them: a state before its channels."""
    return {"snap_state": 0, "snap_chan": 1}.get(item[0], 2)


def progress_row(event_seq, state, outgoing, closed, done) -> dict:
    st = loads_json(state) or {}
    own = st.get("_cutscope", {}) if isinstance(st, dict) else {}
    return {"event_seq": event_seq, "outgoing": loads_json(outgoing) or [],
            "closed": loads_json(closed) or [], "done": bool(done), "own": own}
