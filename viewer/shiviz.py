"""The trace as a ShiViz log (``cutscope export --format shiviz``).

ShiViz (https://bestchai.bitbucket.io/shiviz/) reads a file whose first line
is the parsing regular expression, whose second line is the delimiter between
executions (empty: one execution), and whose rest is the log: here two lines
per event, a description, then ``host {"host": n, ...}`` with the event's
vector clock.

ShiViz wants each host's own component to count that host's events 1, 2, 3,
..., so the clocks written here count events (the position of an event in its
process), not cutscope's ``seq`` (which may start above 1 for a process name
that resumed in an existing store). The vector clocks come from the recorded
events alone (``model.Trace``). Events are written in a linear extension
of happened-before (by Lamport clock, then process, then seq).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from .model import Trace

__all__ = ["REGEX", "to_shiviz", "host_name"]

REGEX = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})"


def host_name(process: str) -> str:
    """A process name as a ShiViz host (no whitespace: the regex reads ``\\S*``)."""
    return re.sub(r"\s", "_", process) or "_"


def describe(e: Mapping) -> str:
    k = e["kind"]
    if k == "send":
        text = f"send {e.get('msg')} on {e.get('channel')} ({e.get('nbytes', 0)} B)"
    elif k == "recv":
        text = f"recv {e.get('msg')} on {e.get('channel')} ({e.get('nbytes', 0)} B)"
    elif k == "snapshot":
        text = f"snapshot {e.get('snapshot')} (local state recorded)"
    else:
        data = dict(e.get("data") or {})
        label = data.pop("label", "local")
        text = f"{label} {json.dumps(data, default=repr)}" if data else str(label)
    text = f"{text} [seq {e['seq']}, lamport {e.get('lamport')}]"
    return " ".join(text.split())  # one line


def to_shiviz(doc: Mapping, trace: Trace | None = None) -> str:
    t = trace or Trace(doc)
    hosts = {p: host_name(p) for p in t.processes}
    out = [REGEX, ""]
    t._vector_clocks()  # every event's clock is asked: the whole table at once
    order = sorted((e for p in t.processes for e in t.events[p]),
                   key=lambda e: (e.get("lamport") or 0, e["process"], e["seq"]))
    for e in order:
        vc = t.vector_clock(e["process"], e["seq"])
        clock = {}
        for q, s in vc.items():
            n = t.count_inside(q, s)
            if n:
                clock[hosts[q]] = n
        out.append(describe(e))
        out.append(f"{hosts[e['process']]} {json.dumps(clock)}")
    return "\n".join(out) + "\n"
