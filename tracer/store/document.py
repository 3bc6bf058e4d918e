"""The interchange document (``cutscope-trace``, docs/format.md) from stored records."""

from __future__ import annotations

import base64
import json
from typing import Iterable


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
            procs[st["process"]] = {"event_seq": st["event_seq"], "state": loads_json(st["state"]),
                                    "done": bool(st["done"])}
            for c in loads_json(st["closed"]) or []:
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
                      "missing": loads_json(s["missing"]) or []})
    doc["snapshots"] = snaps
    return doc


def loads_json(v):
    if v is None or not isinstance(v, str):
        return v
    return json.loads(v)
