"""The trace in Chrome's trace-event format, with flows (``cutscope export --format chrome``).

Perfetto (https://ui.perfetto.dev) and ``chrome://tracing`` open it: one
thread per process (its name the process's), each event a 1 µs slice at its
wall time (relative to the first event), and each message a flow from its
send's slice to its first receive's, so the viewers draw the arrows and follow
them with their keys. Every event's seq, Lamport clock, kind, channel, message
id and recorded values are in its ``args``.
"""

from __future__ import annotations

import json
from typing import Mapping

from .model import Trace

__all__ = ["to_chrome"]


def to_chrome(doc: Mapping, trace: Trace | None = None) -> dict:
    t = trace or Trace(doc)
    tid = {p: i + 1 for i, p in enumerate(t.processes)}
    walls = [e.get("wall_ns") or 0 for p in t.processes for e in t.events[p][:1]]
    t0 = min(walls) if walls else 0
    out: list[dict] = [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0,
                        "args": {"name": "cutscope trace"}}]
    for p in t.processes:
        out.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid[p], "args": {"name": p}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": tid[p],
                    "args": {"sort_index": tid[p]}})
    flow_ids: dict[str, int] = {}
    for p in t.processes:
        for e in t.events[p]:
            ts = ((e.get("wall_ns") or t0) - t0) / 1000.0
            k = e["kind"]
            if k == "local":
                name = str((e.get("data") or {}).get("label") or "local")
            elif k == "snapshot":
                name = f"snapshot {e.get('snapshot')}"
            else:
                name = f"{k} {e.get('msg') or ''}".strip()
            args = {"seq": e["seq"], "lamport": e.get("lamport"), "kind": k}
            for key in ("channel", "msg", "nbytes", "snapshot", "data"):
                if e.get(key) is not None:
                    args[key] = e[key]
            out.append({"ph": "X", "name": name, "cat": k, "ts": ts, "dur": 1, "pid": 1,
                        "tid": tid[p], "args": args})
            m = t.message_of(e) if k in ("send", "recv") else None
            if m is None or m.recv is None:
                continue
            if k == "send":
                fid = flow_ids.setdefault(m.id, len(flow_ids) + 1)
                out.append({"ph": "s", "name": "message", "cat": "message", "id": fid, "ts": ts,
                            "pid": 1, "tid": tid[p]})
            elif m.recv == (p, e["seq"]):
                fid = flow_ids.setdefault(m.id, len(flow_ids) + 1)
                out.append({"ph": "f", "bp": "e", "name": "message", "cat": "message", "id": fid,
                            "ts": ts, "pid": 1, "tid": tid[p]})
    return {"traceEvents": out, "displayTimeUnit": "ns"}


def write_chrome(doc: Mapping, out) -> None:
    json.dump(to_chrome(doc), out, default=repr)
    out.write("\n")
