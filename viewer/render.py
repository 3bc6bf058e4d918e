"""The space-time diagram of a trace with a cut drawn across it, through Graphviz.

One row per process (time flows left to right), its events in seq order,
message edges from send to receive, and the cut as a dashed frontier mark in
every row joined by a dashed line. In-transit messages (sent inside the cut,
received outside or never) and orphans (received inside, sent outside: the
message from thin air) get their own colours and a legend. The SVG keeps
those roles as ``class`` attributes (``msg``, ``intransit``, ``orphan``,
``cut``) so other tools, and the tests, can find them.

Large traces are drawn as a window of ``window`` events on each side of every
process's frontier, plus the ends of the in-transit and orphan messages; the
events left out are shown as ``... N events`` nodes.
"""

from __future__ import annotations

import os
from typing import Mapping

import graphviz

from .model import Message, Trace

__all__ = ["FORMATS", "COLORS", "build", "render", "render_file"]

FORMATS = ("svg", "png", "dot")

COLORS = {
    "msg": "#777777",
    "intransit": "#1f6fd1",
    "orphan": "#d62728",
    "cut": "#e08a00",
    "send": "#dbe9fb",
    "recv": "#e3f4e1",
    "local": "#f2f2f2",
    "snapshot": "#fde9c8",
}

KIND_LABEL = {"send": "send", "recv": "recv", "local": "local", "snapshot": "snap"}
MAX_MARKED = 200  # in-transit / orphan messages whose ends are pulled into a windowed view


def _nid(i: int, seq: int) -> str:
    return f"e{i}_{seq}"


def _label(e: Mapping) -> str:
    k = e["kind"]
    if k in ("send", "recv"):
        return f"{e['seq']} {k}\\n{e.get('msg') or ''}"
    if k == "snapshot":
        return f"{e['seq']} snapshot {e.get('snapshot')}"
    label = (e.get("data") or {}).get("label", "local")
    return f"{e['seq']} {str(label)[:24]}"


def build(trace: Trace | Mapping, cut: Mapping[str, int], window: int = 12,
          title: str | None = None) -> graphviz.Digraph:
    """The diagram as a ``graphviz.Digraph`` (no ``dot`` needed until it is rendered)."""
    t = trace if isinstance(trace, Trace) else Trace(trace)
    unknown = [p for p in cut if p not in t.events]
    if unknown:
        raise ValueError(f"no process {unknown[0]!r} in this trace")
    # Processes absent from the cut are drawn without a frontier and left out of the analysis.
    cut = {p: int(cut[p]) for p in t.processes if p in cut}
    transit = t.in_transit(cut)
    orphans = t.orphans(cut)
    consistent = not orphans
    role: dict[str, str] = {m.id: "intransit" for m in transit}
    role.update({m.id: "orphan" for m in orphans})

    # Which events to draw: everything for a small trace, else a window around the cut.
    total = sum(len(t.events[p]) for p in t.processes)
    shown: dict[str, set[int]] = {}
    if total <= 2 * window * max(1, len(t.processes)):
        shown = {p: set(t.seqs[p]) for p in t.processes}
    else:
        for p in t.processes:
            seqs = t.seqs[p]
            k = t.count_inside(p, cut[p]) if p in cut else len(seqs)
            shown[p] = set(seqs[max(0, k - window):k + window])
        # The marked messages nearest the frontier, at most ``window`` of each kind.
        k = min(window, MAX_MARKED)
        near = sorted(transit, key=lambda m: m.send_seq)[-k:] + \
            sorted(orphans, key=lambda m: m.recv_seq)[-k:]
        for m in near:
            for end in (m.send, m.recv):
                if end is not None and end[0] in shown:
                    shown[end[0]].add(end[1])

    g = graphviz.Digraph("cutscope", format="svg")
    g.attr(rankdir="LR", newrank="true", nodesep="0.3", ranksep="0.25", fontname="Helvetica",
           labelloc="t")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="9",
           height="0.3", margin="0.05,0.02")
    g.attr("edge", fontname="Helvetica", fontsize="8", arrowsize="0.6")
    n = len(orphans)
    verdict = "consistent" if consistent else f"INCONSISTENT ({n} orphan message{'s' if n != 1 else ''})"
    head = title or "cut"
    g.attr(label=f"{head}: {', '.join(f'{p}={n}' for p, n in cut.items())}\\n{verdict}; "
                 f"{len(transit)} in transit")

    idx = {p: i for i, p in enumerate(t.processes)}
    for i, p in enumerate(t.processes):
        if not t.events[p]:
            continue  # a process without events (an idle launcher) gets no row
        with g.subgraph(name=f"cluster_{i}") as sg:
            sg.attr(label=p, style="rounded", color="#bbbbbb", fontsize="11")
            seqs = t.seqs[p]
            prev = f"start{i}"
            sg.node(prev, label=p, shape="plaintext", style="", fontsize="11")
            last_pos = -1
            cut_drawn = False

            def chain(a: str, b: str, **kw) -> None:
                sg.edge(a, b, color="#cccccc", arrowhead="none", weight="100", **kw)

            for pos, (s, e) in enumerate(zip(seqs, t.events[p])):
                if s not in shown[p]:
                    continue
                if pos - last_pos > 1:
                    gap = f"gap{i}_{pos}"
                    sg.node(gap, label=f"... {pos - last_pos - 1} events", shape="plaintext",
                            style="", fontcolor="#888888")
                    chain(prev, gap)
                    prev = gap
                if not cut_drawn and p in cut and s > cut[p]:
                    cnode = f"cut{i}"
                    sg.node(cnode, label="", shape="rect", width="0.04", height="0.45",
                            style="filled,dashed", fillcolor=COLORS["cut"], color=COLORS["cut"],
                            **{"class": "cut", "tooltip": f"cut: {p} up to seq {cut[p]}"})
                    chain(prev, cnode)
                    prev = cnode
                    cut_drawn = True
                nid = _nid(i, s)
                m = t.message_of(e) if e["kind"] in ("send", "recv") else None
                r = role.get(m.id) if m is not None else None
                attrs = {"fillcolor": COLORS.get(e["kind"], "#ffffff"),
                         "tooltip": f"{p} seq {s} lamport {e.get('lamport')}"}
                if r is not None:
                    attrs["color"] = COLORS[r]
                    attrs["penwidth"] = "2"
                if p in cut and s > cut[p]:
                    attrs["fontcolor"] = "#888888"
                sg.node(nid, label=_label(e), **attrs)
                chain(prev, nid)
                prev = nid
                last_pos = pos
            if last_pos < len(seqs) - 1:
                gap = f"gap{i}_end"
                sg.node(gap, label=f"... {len(seqs) - 1 - last_pos} events", shape="plaintext",
                        style="", fontcolor="#888888")
                chain(prev, gap)
                prev = gap
            if not cut_drawn and p in cut:
                cnode = f"cut{i}"
                sg.node(cnode, label="", shape="rect", width="0.04", height="0.45",
                        style="filled,dashed", fillcolor=COLORS["cut"], color=COLORS["cut"],
                        **{"class": "cut", "tooltip": f"cut: {p} up to seq {cut[p]}"})
                chain(prev, cnode)

    # The cut line across the rows.
    rows = [i for i, p in enumerate(t.processes) if p in cut and t.events[p]]
    for i, j in zip(rows, rows[1:]):
        g.edge(f"cut{i}", f"cut{j}", style="dashed", color=COLORS["cut"], arrowhead="none",
               constraint="false", penwidth="2", **{"class": "cut"})

    # Messages.
    for m in t.messages.values():
        if m.src not in idx or m.send_seq not in shown[m.src]:
            continue
        r = role.get(m.id, "msg")
        a = _nid(idx[m.src], m.send_seq)
        if m.recv is not None and m.dst in idx and m.recv_seq in shown[m.dst]:
            b = _nid(idx[m.dst], m.recv_seq)
            g.edge(a, b, **_edge_attrs(m, r))
        elif r == "intransit":
            # Never received (or received outside the window): a dangling arrow.
            loose = f"loose_{idx[m.src]}_{m.send_seq}"
            g.node(loose, label="never received" if m.recv is None else f"to {m.dst} #{m.recv_seq}",
                   shape="plaintext", style="", fontcolor=COLORS["intransit"], fontsize="8")
            g.edge(a, loose, **_edge_attrs(m, r))
    _legend(g)
    return g


def _edge_attrs(m: Message, role: str) -> dict:
    attrs = {"color": COLORS[role], "class": role, "tooltip": f"{m.id} on {m.channel}",
             "constraint": "true" if role != "orphan" else "false"}
    if role == "intransit":
        attrs.update(penwidth="2.2", label="in transit", fontcolor=COLORS[role])
    elif role == "orphan":
        attrs.update(penwidth="2.2", style="dashed", label="orphan", fontcolor=COLORS[role])
    return attrs


def _legend(g: graphviz.Digraph) -> None:
    with g.subgraph(name="cluster_legend") as lg:
        lg.attr(label="legend", style="rounded", color="#bbbbbb", fontsize="10")
        lg.attr("node", shape="plaintext", style="", fontsize="9")
        rows = [("msg", "message"), ("intransit", "in transit: sent inside, received outside"),
                ("orphan", "orphan: received inside, sent outside (from thin air)")]
        for k, text in rows:
            lg.node(f"lg_{k}_a", label="")
            lg.node(f"lg_{k}_b", label=text, fontcolor=COLORS[k])
            style = "dashed" if k == "orphan" else "solid"
            lg.edge(f"lg_{k}_a", f"lg_{k}_b", color=COLORS[k], style=style,
                    penwidth="2" if k != "msg" else "1", **{"class": "legend"})
        lg.node("lg_cut", label="cut frontier", fontcolor=COLORS["cut"])


def render(trace: Trace | Mapping, cut: Mapping[str, int], fmt: str = "svg", **kw) -> bytes:
    """The diagram in ``fmt`` (``svg``, ``png`` or ``dot``) as bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
    g = build(trace, cut, **kw)
    if fmt == "dot":
        return g.source.encode()
    return g.pipe(format=fmt)


def render_file(trace: Trace | Mapping, cut: Mapping[str, int], path: str, **kw) -> str:
    """Write the diagram to ``path``; the format is its extension. Returns the path."""
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot tell the format from {path!r}: use a .svg, .png or .dot file")
    data = render(trace, cut, ext, **kw)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        with open(path, "wb") as f:  # a symlink or a FIFO: write through it, never replace it
            f.write(data)
        return path
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
