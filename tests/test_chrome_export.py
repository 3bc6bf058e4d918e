"""cutscope export --format chrome: Chrome's trace-event JSON with a flow per message."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import viewer_traces
from cutscope.viewer.export import load_trace


def test_chrome_export_has_a_thread_per_process_and_a_flow_per_message(db_url, tmp_path):
    viewer_traces.bank_trace(db_url)
    out = tmp_path / "trace.json"
    r = subprocess.run([sys.executable, "-m", "cutscope", "export", "--db", db_url, "--format",
                        "chrome", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    t = load_trace(db_url)
    evs = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(names.values()) == sorted(t.processes)
    slices = [e for e in evs if e["ph"] == "X"]
    assert len(slices) == t.n_events
    assert {(names[e["tid"]], e["args"]["seq"]) for e in slices} == {
        (p, s) for p in t.processes for s in t.seqs[p]}
    assert min(e["ts"] for e in slices) == 0 and all(e["dur"] > 0 for e in slices)
    at = {(names[e["tid"]], e["args"]["seq"]): e["ts"] for e in slices}
    flows = collections.defaultdict(dict)
    for e in evs:
        if e["ph"] in ("s", "f"):
            assert e["ph"] not in flows[e["id"]]
            flows[e["id"]][e["ph"]] = (names[e["tid"]], e["ts"])
    received = [m for m in t.messages.values() if m.recv is not None]
    assert received and len(flows) == len(received)
    ends = {(f["s"], f["f"]) for f in flows.values()}
    assert ends == {((m.src, at[m.send]), (m.dst, at[m.recv])) for m in received}
