"""The space-time diagram of a trace with a cut drawn across it, through Graphviz.

One vertical lane per process (named at its top), time flowing down. Every
event is placed at a fixed position (``neato`` with pinned positions, so
Graphviz routes nothing): the events inside the cut above one horizontal line,
the events outside below it. The cut is that line, straight across every lane.
Inside the cut, events are packed towards the line (as late as their lane and
their messages allow); outside, away from it (as early as they allow), so
concurrent events share a row. Messages are straight arrows from the send to
the receive: a message inside the cut, or outside, points down; an in-transit
message (sent inside, received outside or never) crosses the line downwards,
blue; an orphan (received inside, sent outside: the message from thin air)
crosses it upwards, red and dashed. A legend and the title say so.

The SVG keeps those roles as ``class`` attributes (edges ``msg``,
``intransit``, ``orphan``; the cut line's edges and its mark on each lane
``cut``; the events ``event`` with ``inside`` or ``outside``; the lanes
``lane``; the left-out runs ``gap``) so
other tools, and the tests, can find them.

A trace of more than ``2 * window`` events per process is drawn as a window
of ``window`` events on each side of every process's frontier, plus the ends
of the in-transit and orphan messages nearest the frontier. Left-out events
are ``… N events`` marks on their lane, and the title says that the picture
is a window and how many events it leaves out.
"""

from __future__ import annotations

import bisect
import os
from typing import Mapping

import graphviz

from .model import Message, Trace

__all__ = ["FORMATS", "COLORS", "build", "render", "render_file"]

FORMATS = ("svg", "png", "dot")

COLORS = {
    "msg": "#555555",
    "intransit": "#1f6fd1",
    "orphan": "#d62728",
    "cut": "#e08a00",
    "lane": "#b0b0b0",
    "send": "#dbe9fb",
    "recv": "#e3f4e1",
    "local": "#f2f2f2",
    "snapshot": "#fde9c8",
    "outside": "#ffffff",
    "grey": "#888888",
    "transitive": "#8f5fbf",
}

MAX_MARKED = 200  # in-transit / orphan messages whose ends are pulled into a windowed view
XS = 2.1          # inches between lanes
YS = 0.5          # inches between rows
LABEL_MAX = 18    # characters of a local event's label


def _nid(i: int, seq: int) -> str:
    return f"e{i}_{seq}"


def _label(e: Mapping) -> str:
    k = e["kind"]
    if k == "snapshot":
        return f"{e['seq']} snapshot {e.get('snapshot')}"
    if k in ("send", "recv"):
        return f"{e['seq']} {k}"
    label = str((e.get("data") or {}).get("label", "local"))
    if len(label) > LABEL_MAX:
        label = label[:LABEL_MAX - 1] + "…"
    return f"{e['seq']} {label}"


def _pos(x: float, y: float) -> str:
    return f"{x:.3f},{y:.3f}!"


def _layers(items: list, succ: dict, reverse: bool) -> dict:
    """Longest-path layering of a small DAG: each item's distance (1, 2, ...) from the cut line.

    ``succ[u]``: the items that must lie after ``u`` in time. Outside the cut
    (``reverse=False``) an item's layer is one more than the largest layer of
    what precedes it; inside (``reverse=True``) one more than the largest of
    what follows it. A cycle (a trace whose recorded order contradicts itself)
    leaves its items in the order given."""
    edges = {u: [] for u in items}
    for u in items:
        for v in succ.get(u, ()):
            if v in edges:
                if reverse:
                    edges[v].append(u)
                else:
                    edges[u].append(v)
    indeg = {u: 0 for u in items}
    for u in items:
        for v in edges[u]:
            indeg[v] += 1
    layer = {u: 1 for u in items}
    order = list(reversed(items)) if reverse else list(items)
    ready = [u for u in order if indeg[u] == 0]
    seen = 0
    while ready:
        u = ready.pop()
        seen += 1
        for v in edges[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    if seen < len(items):  # a cycle: fall back to plain order
        layer = {u: n + 1 for n, u in enumerate(order)}
    return layer


def arrange(processes, order=None, hidden=(), grouped: bool = False) -> list[str]:
    """The lanes' order: ``order`` first (the names it gives, left to right), then the
    other processes in trace order, less ``hidden``; ``grouped`` puts the lanes of one
    group (a name without its trailing number, as the explorer's ``G``) side by side,
    groups in the order of their first lane."""
    from .explorer import Explorer

    known = [p for p in (order or ()) if p in processes]
    lanes = known + [p for p in processes if p not in known]
    if grouped:
        first: dict[str, int] = {}
        for k, p in enumerate(lanes):
            first.setdefault(Explorer.group_of(p), k)
        lanes.sort(key=lambda p: first[Explorer.group_of(p)])
    return [p for p in lanes if p not in hidden]


def build(trace: Trace | Mapping, cut: Mapping[str, int], window: int = 12,
          title: str | None = None, order=None, hidden=(), grouped: bool = False) -> graphviz.Digraph:
    """The diagram as a ``graphviz.Digraph`` (no Graphviz needed until it is rendered).

    ``order``, ``hidden`` and ``grouped`` arrange the lanes as the explorer does
    (``arrange``): a hidden process gets no lane (the cut still covers it), and a message
    between a lane and a hidden process is drawn as a dashed violet arrow (class
    ``transitive``) between the visible events it links through the hidden processes
    (``explorer.transitive_peer``)."""
    from .explorer import transitive_peer

    t = trace if isinstance(trace, Trace) else Trace(trace)
    unknown = [p for p in cut if p not in t.events]
    if unknown:
        raise ValueError(f"no process {unknown[0]!r} in this trace")
    hidden = set(hidden or ())
    unknown = sorted(p for p in hidden if p not in t.events)
    if unknown:
        raise ValueError(f"no process {unknown[0]!r} in this trace")
    window = max(1, int(window))
    # Processes absent from the cut are left out of the analysis; their events are drawn
    # above the line, their lane marked "not in the cut".
    cut = {p: int(cut[p]) for p in t.processes if p in cut}
    transit = t.in_transit(cut)
    orphans = t.orphans(cut)
    role: dict[str, str] = {m.id: "intransit" for m in transit}
    role.update({m.id: "orphan" for m in orphans})
    idx = {p: i for i, p in enumerate(t.processes)}
    lanes = [p for p in arrange(t.processes, order, hidden, grouped)
             if len(t.seqs[p])]  # an idle process gets no lane
    if not lanes:
        raise ValueError("every process with events is hidden: nothing to draw")

    def inside_count(p: str) -> int:
        return t.count_inside(p, cut[p]) if p in cut else len(t.seqs[p])

    def pos_of(p: str, seq: int) -> int:
        return bisect.bisect_left(t.seqs[p], seq)

    # Which events to draw (positions in each lane): all, or a window around the cut.
    total = sum(len(t.seqs[p]) for p in t.processes if p not in hidden)
    windowed = any(len(t.seqs[p]) > 2 * window for p in lanes)
    shown: dict[str, set[int]] = {}
    near: list[Message] = []
    if not windowed:
        shown = {p: set(range(len(t.seqs[p]))) for p in lanes}
    else:
        for p in lanes:
            k = inside_count(p)
            shown[p] = set(range(max(0, k - window), min(len(t.seqs[p]), k + window)))
        # The ends of the marked messages nearest the frontier, at most ``window`` of each kind.
        k = min(window, MAX_MARKED)
        near = sorted(transit, key=lambda m: m.send_seq)[-k:] + sorted(orphans, key=lambda m: m.recv_seq)[:k]
        for m in near:
            for end in (m.send, m.recv):
                if end is not None and end[0] in shown:
                    shown[end[0]].add(pos_of(end[0], end[1]))
    drawn = sum(len(s) for s in shown.values())

    # Each lane as a sequence of items: ("e", p, pos) for an event, ("g", p, a, b) for the
    # left-out positions a..b-1. Positions around the frontier are always shown, so no
    # gap straddles the cut.
    seq_items: dict[str, list[tuple]] = {}
    events: dict[tuple, dict] = {}
    for p in lanes:
        items: list[tuple] = []
        last = -1
        for pos in sorted(shown[p]):
            if pos - last > 1:
                items.append(("g", p, last + 1, pos))
            it = ("e", p, pos)
            items.append(it)
            events[it] = t.events[p][pos]
            last = pos
        n = len(t.seqs[p])
        if last < n - 1:
            items.append(("g", p, last + 1, n))
        seq_items[p] = items

    def is_inside(it: tuple) -> bool:
        k = inside_count(it[1])
        return it[2] < k if it[0] == "e" else it[3] <= k

    # What must come after what: the next item in the lane, the receive of a send.
    succ: dict[tuple, list[tuple]] = {}
    for p in lanes:
        items = seq_items[p]
        for a, b in zip(items, items[1:]):
            succ.setdefault(a, []).append(b)
    msgs: list[tuple[Message, tuple, tuple | None]] = []
    for it, e in events.items():
        if e["kind"] != "send":
            continue
        m = t.message_of(e)
        if m is None:
            continue
        r = None
        if m.recv is not None and m.dst in shown and pos_of(m.dst, m.recv_seq) in shown[m.dst]:
            r = ("e", m.dst, pos_of(m.dst, m.recv_seq))
            succ.setdefault(it, []).append(r)
        msgs.append((m, it, r))
    # Messages through hidden processes: (visible send, visible receive), found from
    # either end; drawn when both ends are.
    links: set[tuple[tuple, tuple]] = set()
    if hidden:
        for it, e in events.items():
            if e["kind"] not in ("send", "recv"):
                continue
            other = transitive_peer(t, e, hidden)
            if other is None or other[0] not in shown:
                continue
            o_it = ("e", other[0], pos_of(*other))
            if o_it[2] not in shown[other[0]]:
                continue
            a, b = (it, o_it) if e["kind"] == "send" else (o_it, it)
            if (a, b) not in links:
                links.add((a, b))
                succ.setdefault(a, []).append(b)

    inside = [it for p in lanes for it in seq_items[p] if is_inside(it)]
    outside = [it for p in lanes for it in seq_items[p] if not is_inside(it)]
    above = _layers(inside, succ, reverse=True)
    below = _layers(outside, succ, reverse=False)
    top = max(above.values(), default=0) + 1
    bottom = max(below.values(), default=0) + 1

    def y_of(it: tuple) -> float:
        return above[it] * YS if it in above else -below[it] * YS

    g = graphviz.Digraph("cutscope", engine="neato", format="svg")
    g.attr(layout="neato", splines="false", outputorder="edgesfirst", overlap="true",
           fontname="Helvetica", fontsize="12", labelloc="t", pad="0.3")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10",
           height="0.28", margin="0.06,0.02", penwidth="1")
    g.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.7")

    n_orph = len(orphans)
    verdict = "consistent" if not orphans else \
        f"INCONSISTENT ({n_orph} orphan message{'s' if n_orph != 1 else ''})"
    head = [f"{title or 'cut'}: {', '.join(f'{p}={n}' for p, n in cut.items())}",
            f"{verdict}; {len(transit)} in transit"]
    if hidden:
        head.append(f"hidden: {', '.join(p for p in t.processes if p in hidden)} (their messages "
                    f"dashed, from lane to lane through them)")
    if windowed:
        left = total - drawn
        head.append(f"a window of the trace: {window} events on each side of every frontier; "
                    f"{drawn:,} of {total:,} events drawn, {left:,} left out (…)")
        undrawn = len(transit) + len(orphans) - len(near)
        if undrawn > 0:
            head.append(f"{undrawn:,} more in-transit or orphan messages beyond the window are not drawn")
    g.attr(label="\\n".join(head))

    # The lanes: a header at the top, a line down to the bottom.
    for p in lanes:
        i, x = idx[p], idx_x(lanes, p)
        name = p if p in cut else f"{p}\\n(not in the cut)"
        g.node(f"head{i}", label=name, shape="plaintext", style="", fontsize="12",
               fontname="Helvetica-Bold", pos=_pos(x, top * YS + 0.1), **{"class": "lanehead"})
        g.node(f"foot{i}", label="", shape="point", width="0.01", color=COLORS["lane"],
               pos=_pos(x, -bottom * YS))
        g.edge(f"head{i}", f"foot{i}", color=COLORS["lane"], penwidth="2", arrowhead="none",
               **{"class": "lane"})

    # The events and the left-out runs.
    for p in lanes:
        i, x = idx[p], idx_x(lanes, p)
        for it in seq_items[p]:
            y = y_of(it)
            if it[0] == "g":
                _, _, a, b = it
                g.node(f"gap{i}_{a}", label=f"… {b - a:,} event{'s' if b - a != 1 else ''}",
                       shape="plaintext", style="", fontcolor=COLORS["grey"], fontsize="9",
                       pos=_pos(x, y), **{"class": "gap",
                                          "tooltip": f"{p}: seqs {t.seqs[p][a]}..{t.seqs[p][b - 1]} left out"})
                continue
            e = events[it]
            s = e["seq"]
            attrs = {"fillcolor": COLORS.get(e["kind"], "#ffffff"),
                     "tooltip": f"{p} seq {s} lamport {e.get('lamport')}", "pos": _pos(x, y),
                     "class": "event inside" if is_inside(it) else "event outside"}
            m = t.message_of(e) if e["kind"] in ("send", "recv") else None
            r = role.get(m.id) if m is not None else None
            if r is not None:
                attrs["color"] = COLORS[r]
                attrs["penwidth"] = "2"
            if not is_inside(it):
                attrs["fontcolor"] = COLORS["grey"]
                attrs["style"] = "rounded,filled,dashed"
                attrs["fillcolor"] = COLORS["outside"]
                attrs.setdefault("color", COLORS["grey"])
            g.node(_nid(i, s), label=_label(e), **attrs)

    # The cut: one straight line across the lanes, marked on each lane it cuts.
    xs = [idx_x(lanes, p) for p in lanes] or [0.0]
    g.node("cut_l", label="cut", shape="plaintext", style="", fontcolor=COLORS["cut"],
           fontname="Helvetica-Bold", fontsize="11", pos=_pos(min(xs) - 0.75 * XS, 0),
           **{"class": "cutend"})
    g.node("cut_r", label="", shape="point", width="0.02", color=COLORS["cut"],
           pos=_pos(max(xs) + 0.6 * XS, 0), **{"class": "cutend"})
    prev = "cut_l"
    for p in lanes:
        if p not in cut:
            continue
        i = idx[p]
        g.node(f"cut{i}", label="", shape="point", width="0.09", color=COLORS["cut"],
               pos=_pos(idx_x(lanes, p), 0),
               **{"class": "cut", "tooltip": f"cut: {p} up to seq {cut[p]}"})
        g.edge(prev, f"cut{i}", color=COLORS["cut"], penwidth="3", arrowhead="none",
               **{"class": "cut"})
        prev = f"cut{i}"
    g.edge(prev, "cut_r", color=COLORS["cut"], penwidth="3", arrowhead="none", **{"class": "cut"})

    # Messages: straight arrows from the send to the receive.
    for m, a_it, b_it in msgs:
        r = role.get(m.id, "msg")
        a = _nid(idx[m.src], m.send_seq)
        if b_it is not None:
            g.edge(a, _nid(idx[m.dst], m.recv_seq), **_edge_attrs(m, r))
        elif r != "msg":
            # Received in a left-out run, or never received: an arrow to the run, or to a note
            # at the bottom of the receiver's lane.
            target = None
            if m.recv is not None and m.dst in seq_items:
                k = pos_of(m.dst, m.recv_seq)
                for it in seq_items[m.dst]:
                    if it[0] == "g" and it[2] <= k < it[3]:
                        target = f"gap{idx[m.dst]}_{it[2]}"
            if target is None:
                target = f"loose_{idx[m.src]}_{m.send_seq}"
                x = idx_x(lanes, m.dst) if m.dst in seq_items else idx_x(lanes, m.src) + 0.5 * XS
                g.node(target, label="never received" if m.recv is None else f"to {m.dst} #{m.recv_seq}",
                       shape="plaintext", style="", fontcolor=COLORS[r], fontsize="9",
                       pos=_pos(x, -(bottom - 0.5) * YS))
            g.edge(a, target, **_edge_attrs(m, r))
    # Messages through hidden processes: dashed arrows, lane to lane.
    for a_it, b_it in sorted(links):
        ea, eb = events[a_it], events[b_it]
        g.edge(_nid(idx[a_it[1]], ea["seq"]), _nid(idx[b_it[1]], eb["seq"]), color=COLORS["transitive"],
               style="dashed", penwidth="1.4",
               **{"class": "transitive", "tooltip": f"{a_it[1]} #{ea['seq']} to {b_it[1]} #{eb['seq']} "
                                                     f"through hidden processes"})
    # Orphans whose receive is drawn but whose send is in a left-out run.
    for m in near:
        if role.get(m.id) != "orphan" or m.recv is None or m.dst not in seq_items or m.src not in seq_items:
            continue
        if pos_of(m.src, m.send_seq) in shown[m.src]:
            continue
        k = pos_of(m.src, m.send_seq)
        for it in seq_items[m.src]:
            if it[0] == "g" and it[2] <= k < it[3] and pos_of(m.dst, m.recv_seq) in shown[m.dst]:
                g.edge(f"gap{idx[m.src]}_{it[2]}", _nid(idx[m.dst], m.recv_seq), **_edge_attrs(m, "orphan"))

    _legend(g, max(xs) + 0.9 * XS, top * YS, transitive=bool(hidden))
    return g


def idx_x(lanes: list[str], p: str) -> float:
    return lanes.index(p) * XS


def _edge_attrs(m: Message, role: str) -> dict:
    attrs = {"color": COLORS[role], "class": role, "tooltip": f"{m.id} on {m.channel}"}
    if role == "intransit":
        attrs.update(penwidth="2.4", label="in transit", fontcolor=COLORS[role])
    elif role == "orphan":
        attrs.update(penwidth="2.4", style="dashed", label="orphan", fontcolor=COLORS[role])
    else:
        attrs.update(penwidth="1.2")
    return attrs


def _legend(g: graphviz.Digraph, x: float, y: float, transitive: bool = False) -> None:
    def swatch(color: str, dashed: bool = False) -> str:
        if dashed:
            return "".join(f'<td width="7" height="4" bgcolor="{color if k % 2 == 0 else "white"}"></td>'
                           for k in range(5))
        return f'<td colspan="5" width="35" height="4" bgcolor="{color}"></td>'

    rows = [
        (swatch(COLORS["msg"]), "message (send to receive)", COLORS["msg"]),
        (swatch(COLORS["intransit"]), "in transit: sent inside, received outside", COLORS["intransit"]),
        (swatch(COLORS["orphan"], dashed=True), "orphan: received inside, sent outside (from thin air)",
         COLORS["orphan"]),
        (swatch(COLORS["cut"]), "the cut: inside above, outside below", COLORS["cut"]),
    ]
    if transitive:
        rows.insert(3, (swatch(COLORS["transitive"], dashed=True),
                        "through hidden processes: a send to the receive it leads to", COLORS["transitive"]))
    body = "".join(f'<tr>{s}<td align="left"><font color="{c}">{text}</font></td></tr>'
                   for s, text, c in rows)
    body += ('<tr><td colspan="5"></td><td align="left"><font color="#888888">'
             'time flows down; dashed boxes: events outside the cut</font></td></tr>')
    label = f'<<table border="0" cellspacing="3" cellpadding="1">{body}</table>>'
    g.node("legend", label=label, shape="plaintext", style="", fontsize="9",
           pos=_pos(x + 1.4, y - 0.5), **{"class": "legend"})


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
