"""The cut explorer's model: a trace in display order, a cut, a filter (no UI here).

The viewer's widgets draw from this; the tests drive it directly too. Rows are
the trace's events in a linear extension of happened-before (Lamport clock,
then process, then seq), kept in compact arrays so that a large trace costs a
few bytes per event beyond the document itself.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import re
from array import array
from typing import Mapping

from .model import Message, Trace
from .rows import Layers, VisibleRows
from .model.query import Query, is_structured

GLYPH = {"send": "S", "recv": "R", "local": "•", "snapshot": "◆"}
ORPHAN_LIMIT = 5000  # orphans listed per cut; the panel shows "5000+" beyond
SYNC_FILTER_EVENTS = 50_000  # above this, a free-text filter runs in a worker
TRANSITIVE_STEPS = 10_000  # events read to follow a message through hidden lanes
CHAIN_HOPS = 100_000  # hops followed by the whole-chain keys
GROUP_TAIL = re.compile(r"[-_.:#/ ]*\d+$")  # a trailing number, and what joins it to the name


def describe(e: Mapping, trace: Trace | None = None) -> str:
    """One line about an event."""
    k = e["kind"]
    head = f"{e['process']} #{e['seq']} L{e.get('lamport')} {k}"
    if k in ("send", "recv"):
        m = trace.messages.get(e.get("msg")) if trace is not None and e.get("msg") else None
        if k == "send":
            peer = f" -> {m.dst}" if m is not None and m.dst else ""
            if m is not None and m.recv_seq is None:
                peer += " (never received)"
        else:
            peer = f" <- {m.src}" if m is not None else " (sender unknown)"
        return f"{head} {e.get('msg') or '-'}{peer} on {e.get('channel')} ({e.get('nbytes', 0)} B)"
    if k == "snapshot":
        return f"{head} {e.get('snapshot')}"
    data = e.get("data") or {}
    label = data.get("label", "")
    rest = {a: b for a, b in data.items() if a != "label"}
    return f"{head} {label} {rest if rest else ''}".rstrip()


def parse_filter(text: str) -> tuple[set[str], set[str], str]:
    """``p:NAME k:KIND words`` to (processes, kinds, free text, lower-cased)."""
    procs: set[str] = set()
    kinds: set[str] = set()
    words = []
    for tok in text.split():
        if tok.startswith(("p:", "process:")):
            procs.add(tok.split(":", 1)[1])
        elif tok.startswith(("k:", "kind:")):
            kinds.add(tok.split(":", 1)[1].lower())
        else:
            words.append(tok.lower())
    return procs, kinds, " ".join(words)



def transitive_peer(t: Trace, e: Mapping, hidden) -> tuple[str, int] | None:
    """For a send into a hidden process: the first receive outside ``hidden`` that its
    message reaches through hidden processes (the first message each hidden process
    sends from its receive on, followed until it reaches a process not hidden). For a
    receive from a hidden process: the send outside ``hidden`` that started the chain
    that delivered it (the last message each hidden process received up to its send,
    followed back). None when the other end is not hidden, when the chain ends in
    hidden processes, or when it is longer than TRANSITIVE_STEPS events."""
    other = t.peer(e)
    if other is None or other[0] not in hidden:
        return None
    forward = e["kind"] == "send"
    want = "send" if forward else "recv"
    p, s = other
    steps = 0
    seen = set()
    while steps < TRANSITIVE_STEPS and (p, s) not in seen:
        seen.add((p, s))
        seqs = t.seqs[p]
        first = t._start[t._pindex[p]]
        pos = bisect.bisect_left(seqs, s)
        ks = range(pos + 1, len(seqs)) if forward else range(pos - 1, -1, -1)
        hop = None
        for k in ks:
            steps += 1
            if steps >= TRANSITIVE_STEPS:
                break
            g = first + k
            if t._kind[g] != want:
                continue
            o = t.peer(t._event_dict(g))
            if o is None:
                continue
            hop = o
            break
        if hop is None:
            return None
        if hop[0] not in hidden:
            return hop
        p, s = hop
    return None



class Explorer:
    """A trace, the current cut, the selected process and the visible rows."""

    def __init__(self, trace: Trace, cut: Mapping[str, int] | None = None):
        self.trace = trace
        # Processes without events (a launcher's idle main process) get no lane.
        self.order = [p for p in trace.processes if len(trace.events[p])] or list(trace.processes)
        self.hidden: set[str] = set()  # processes whose lanes are hidden
        self.collapse = False  # runs of local events shown as one row
        self.procs = list(self.order)  # the visible lanes, left to right
        self.pindex = {p: i for i, p in enumerate(self.procs)}
        self._order()
        self.filter_text = ""
        self.filter_g: array | None = None  # display rows matching the filter (None: all)
        self.rows: array | None = None  # visible display rows (None: all)
        self._runs: dict[int, int] = {}  # collapsed run: its first display row -> its last
        self._transitive: dict[tuple[str, int], tuple[str, int] | None] = {}
        self.replay_trail: list[tuple[str, dict, dict]] = []  # (process, cut after, cut before)
        self.packed = False  # the logical-time layout
        self.grouped = False  # lanes of one group side by side
        self._ungrouped: list[str] | None = None  # the order from before grouping
        self.layers: list[list[int]] | None = None  # packed: the display rows of each row
        self._pack_of: array | None = None  # display row -> packed row (-1: not shown)
        self._step: array | None = None
        self._packkeys = None  # display rows by (step, row), once the layout is asked
        self.selected = 0  # index of the selected process
        self.show_causality = False
        # (process, seq, vector clock) of the selected event while causality is shown
        self.causal: tuple[str, int, dict[str, int]] | None = None
        top = trace.top()
        # The cut covers every process (one without events at 0: messages to it count).
        self.cut: dict[str, int] = {p: top[p] for p in trace.processes}
        if cut:
            for p, n in cut.items():
                if p in self.cut:
                    self.cut[p] = int(n)
        self.recompute()

    def _order(self) -> None:
        """The display order: every event by (Lamport clock, process, seq).

        One sort of integer keys ``lamport * N + row`` over the trace's columns, at C
        speed: no tuple or dict per event. A trace row ``row`` orders the events by
        (process, seq) already, in the lanes' order of processes, so it breaks the
        ties of a Lamport clock as the display order does. The sorted keys are kept
        (an array of 8 bytes per event): a trace row's display row is a binary
        search in them."""
        t = self.trace
        n = t.n_events
        tidx = [t._pindex[p] for p in self.procs]
        emap = [0] * len(t.processes)  # trace process index -> lane index
        for i, k in enumerate(tidx):
            emap[k] = i
        self._emap = emap
        self._n = n
        lam = map(t._lam.__getitem__, t._srow)  # the trace's rows in (process, seq) order
        keys = list(map(operator.add, map(operator.mul, lam, itertools.repeat(n)), range(n)))
        keys.sort()
        if keys and (keys[0] < 0 or keys[-1] >= 1 << 63):
            self._keys: array | list = keys  # Lamport clocks too large for an array
        else:
            self._keys = array("q", keys)
        del keys
        self.all_g = array("q", map(operator.mod, self._keys, itertools.repeat(n)))  # row -> trace row
        self._first = [t._start[k] for k in tidx]  # each lane's first trace row

    def _relane(self) -> None:
        """The visible lanes changed (order or hidden): their indexes, not the display order."""
        t = self.trace
        sel = self.process if self.procs else None
        self.procs = [p for p in self.order if p not in self.hidden]
        self.pindex = {p: i for i, p in enumerate(self.procs)}
        emap = [-1] * len(t.processes)  # trace process index -> lane index (-1: hidden)
        for i, p in enumerate(self.procs):
            emap[t._pindex[p]] = i
        self._emap = emap
        self._first = [t._start[t._pindex[p]] for p in self.procs]
        self.__dict__.pop("all_proc", None)
        self._transitive.clear()
        if sel in self.pindex:
            self.selected = self.pindex[sel]
        else:
            self.selected = min(self.selected, max(0, len(self.procs) - 1))
        self._rows()
        self.recompute()

    @functools.cached_property
    def all_proc(self) -> array:
        """The lane of each display row (a pass over every row: the keys use ``lane``)."""
        return array("i", map(self._emap.__getitem__, map(self.trace._pid.__getitem__, self.all_g)))

    @functools.cached_property
    def _pidb(self) -> bytes | None:
        """Each display row's process (its trace index) as a byte (None above 255 processes)."""
        if len(self.trace.processes) > 255 or not len(self.all_g):
            return None
        pid = self.trace._pid
        return bytes(operator.itemgetter(*self.all_g)(pid)) if len(self.all_g) > 1 else bytes([pid[self.all_g[0]]])

    def warm(self) -> None:
        """Build what the lane keys read (each display row's process), ahead of them: the
        viewer calls it in its load worker once the first screen is up."""
        self._pidb

    def _lane_mask(self) -> bytes | None:
        """One byte a display row: 1 where its lane is visible (None without ``_pidb``)."""
        pidb = self._pidb
        if pidb is None:
            return None
        table = bytes(1 if k < len(self._emap) and self._emap[k] >= 0 else 0 for k in range(256))
        return pidb.translate(table)

    @functools.cached_property
    def all_pos(self) -> array:
        """The position of each display row's event among its process's events."""
        t = self.trace
        return array("l", map(operator.sub, self.all_g,
                              map(t._start.__getitem__, map(t._pid.__getitem__, self.all_g))))

    def lane(self, g: int) -> int:
        """The lane of display row ``g``."""
        return self._emap[self.trace._pid[self.all_g[g]]]

    def _display_row(self, tg: int) -> int:
        """The display row of trace row ``tg``."""
        t = self.trace
        key = t._lam[t._srow[tg]] * self._n + tg
        return bisect.bisect_left(self._keys, key)

    # -- rows -------------------------------------------------------------------

    def __len__(self) -> int:
        if self.layers is not None:
            return len(self.layers)
        return len(self.rows) if self.rows is not None else len(self.all_g)

    def global_row(self, y: int) -> int:
        """The display row shown on screen row ``y`` (packed: the first of that row's)."""
        if self.layers is not None:
            row = self.layers[y]
            return next((r for r in row if self.lane(r) >= 0), row[0])
        return self.rows[y] if self.rows is not None else y

    def event_at(self, y: int) -> dict:
        return self.trace._event_dict(self.all_g[self.global_row(y)])

    # -- the logical-time layout ----------------------------------------------------------

    def toggle_packed(self) -> str:
        """One event per row (the lanes' Lamport order), or the logical-time layout:
        concurrent events packed on shared rows."""
        self.packed = not self.packed
        self._pack()
        self.generation += 1
        if not self.packed:
            return "layout: one event per row (Lamport order)"
        n = len(self.rows) if self.rows is not None else len(self.all_g)
        return (f"logical-time layout: {n} events on {len(self.layers)} rows "
                f"(events on one row are concurrent)")

    def _steps(self) -> array:
        """Each trace row's logical step: one more than the step of the event before it in
        its process and of the send it receives (the earliest layering of happened-before,
        over every process, hidden or not). Events of one step are concurrent."""
        if self._step is None:
            t = self.trace
            n = len(self.all_g)
            step = array("l", [0]) * n
            last = [0] * len(t.processes)
            pid, kind, peer = t._pid, t._kind, t._peer
            for g in self.all_g:  # a linear extension: a send comes before its receives
                i = pid[g]
                k = last[i] + 1
                if kind[g] == "recv":
                    sg = peer[g]
                    if sg >= 0 and step[sg] >= k:
                        k = step[sg] + 1
                step[g] = k
                last[i] = k
            self._step = step
        return self._step

    def _pack_keys(self):
        """The display rows sorted by (logical step, row), as ``step * n + row`` (kept)."""
        if self._packkeys is None:
            step = self._steps()
            all_g = self.all_g
            n = len(all_g)
            keys = sorted(map(operator.add, map(operator.mul, map(step.__getitem__, all_g),
                                                itertools.repeat(n)), range(n)))
            self._packkeys = array("q", keys) if not keys or keys[-1] < 1 << 63 else keys
        return self._packkeys

    def _pack(self) -> None:
        """The packed rows of the visible rows (``self.layers``), when packed. Every row, or
        hidden lanes only: ``Layers`` over the kept keys, no list per row; a filter or
        collapsed runs: a list per row of theirs."""
        if not self.packed:
            self.layers = None
            self._pack_of = None
            return
        if self.rows is None or (isinstance(self.rows, VisibleRows) and not self._runs):
            self.layers = Layers(self._pack_keys(), len(self.all_g), self._steps(), self.all_g)
            self._pack_of = None
            return
        step = self._steps()
        all_g = self.all_g
        n = len(all_g)
        src = self.rows if self.rows is not None else range(n)
        # One sort of integer keys step * N + row, as the display order is made.
        keys = sorted(map(operator.add, map(operator.mul, map(step.__getitem__, map(all_g.__getitem__, src)),
                                           itertools.repeat(n)), src))
        layers: list[list[int]] = []
        pack_of = array("l", [-1]) * n
        prev = -1
        row: list[int] = []
        for key in keys:
            k, r = divmod(key, n)
            if k != prev:
                row = []
                layers.append(row)
                prev = k
            row.append(r)
            pack_of[r] = len(layers) - 1
        self.layers, self._pack_of = layers, pack_of

    def packed_row(self, r: int) -> int:
        """The packed row holding display row ``r`` (-1: none)."""
        if isinstance(self.layers, Layers):
            return self.layers.of(r)
        return self._pack_of[r] if self._pack_of is not None else r

    def row_for_event(self, process: str, seq: int) -> int | None:
        """The visible row of an event (None if filtered out or absent)."""
        i = self.pindex.get(process)
        if i is None:
            return None
        seqs = self.trace.seqs[process]
        pos = bisect.bisect_left(seqs, seq)
        if pos >= len(seqs) or seqs[pos] != seq:
            return None
        g = self._display_row(self._first[i] + pos)
        if self.layers is not None:
            y = self.packed_row(g)
            return y if y >= 0 else None
        if self.rows is None:
            return g
        if isinstance(self.rows, VisibleRows):
            return self.rows.rank(g) if g in self.rows else None
        y = bisect.bisect_left(self.rows, g)
        return y if y < len(self.rows) and self.rows[y] == g else None

    def nearest_row(self, g: int) -> int:
        """The visible row at or just before global row ``g``."""
        if self.rows is None:
            y = g
        elif isinstance(self.rows, VisibleRows):
            y = max(0, self.rows.rank(g + 1) - 1)
        else:
            y = max(0, bisect.bisect_right(self.rows, g) - 1)
        if self.layers is not None:
            r = self.rows[y] if self.rows is not None else y
            return max(0, self.packed_row(r))
        return y

    def set_filter(self, text: str) -> int:
        """Show only the events matching ``text``; returns how many rows are shown."""
        rows = self.filter_rows(text)  # a bad query raises before anything changes
        self.set_filter_rows(text, rows)
        return len(self)

    def set_filter_rows(self, text: str, rows: array | None) -> None:
        """The filter's answer (``filter_rows``, maybe from a worker) applied."""
        self.filter_text, self.filter_g = text.strip(), rows
        self._rows()

    def _rows(self) -> None:
        """The visible rows: the filter's, less hidden lanes and collapsed local events."""
        runs = self._collapsed_runs() if self.collapse else {}
        self._runs = runs
        if not self.hidden and not runs:
            self.rows = self.filter_g
            self._pack()
            return
        mask = self._lane_mask()
        if self.filter_g is None and mask is not None:
            # Hidden lanes and collapsed runs: no list of the rows, a mask of them.
            if runs:
                mask = bytearray(mask)
                for a, b in runs.items():
                    for r in self._run_rows(a, b):
                        mask[r] = 0
                mask = bytes(mask)
            self.rows = VisibleRows(mask)
            self._pack()
            return
        drop = set()
        for a, b in runs.items():
            drop.update(self._run_rows(a, b))
        src = self.filter_g if self.filter_g is not None else range(len(self.all_g))
        if mask is not None:
            src = (r for r in src if mask[r])
        else:
            src = (r for r in src if self.lane(r) >= 0)
        self.rows = array("l", [r for r in src if r not in drop] if drop else src)
        self._pack()

    def _run_rows(self, a: int, b: int):
        """The display rows of a collapsed run but its first (``a``) whose last is ``b``."""
        g, last = self.all_g[a], self.all_g[b]  # the run's events are consecutive trace rows
        return [self._display_row(k) for k in range(g + 1, last + 1)]

    def _collapsed_runs(self) -> dict[int, int]:
        """Each run of two or more consecutive local events of one visible process: the
        display row of its first event -> the display row of its last."""
        t = self.trace
        runs: dict[int, int] = {}
        for i, p in enumerate(self.procs):
            a = self._first[i]
            kinds = t._kind[a:a + len(t.seqs[p])]
            k = 0
            n = len(kinds)
            while k < n:
                try:
                    k = kinds.index("local", k)  # the next local event, at C speed
                except ValueError:
                    break
                m = k
                while m + 1 < n and kinds[m + 1] == "local":
                    m += 1
                if m > k:
                    runs[self._display_row(a + k)] = self._display_row(a + m)
                k = m + 1
        return runs

    def run_at(self, g: int) -> tuple[int, int] | None:
        """(first, last) display rows of the collapsed run that row ``g`` stands for."""
        b = self._runs.get(g)
        return None if b is None else (g, b)

    def lane_of_frontier_in_run(self, g: int, i: int) -> bool:
        """Whether lane ``i``'s frontier is inside the collapsed run drawn at row ``g``."""
        b = self._runs.get(g)
        return b is not None and g <= self.frontiers[i] <= b

    # -- lanes: hide, collapse, reorder -------------------------------------------------

    def hide(self, process: str | None = None) -> str:
        """Hide a process's lane (the selected one by default); its messages to and from
        the visible lanes are drawn as dashed links through it. The cut keeps it."""
        p = process or self.process
        if not p or p in self.hidden:
            return "no lane to hide"
        if len(self.procs) <= 1:
            return f"{p} is the last visible lane: it stays"
        self.hidden.add(p)
        self._relane()
        return f"lanes: {p} hidden ({len(self.hidden)} hidden; H shows them all)"

    def show_all(self) -> str:
        if not self.hidden:
            return "lanes: none hidden"
        names = ", ".join(p for p in self.order if p in self.hidden)
        self.hidden.clear()
        self._relane()
        return f"lanes: shown again: {names}"

    def set_hidden(self, names) -> None:
        self.hidden = {p for p in names if p in self.order}
        if len(self.hidden) >= len(self.order):
            self.hidden.discard(self.order[0])
        self._relane()

    def move_lane(self, delta: int) -> str:
        """Move the selected lane ``delta`` places left (-1) or right (1) among the visible ones."""
        p = self.process
        if not p:
            return "no lane"
        i = self.pindex[p]
        j = i + delta
        if not 0 <= j < len(self.procs):
            return f"lanes: {p} is already {'first' if delta < 0 else 'last'}"
        q = self.procs[j]
        a, b = self.order.index(p), self.order.index(q)
        self.order[a], self.order[b] = q, p
        self._relane()
        return f"lanes: {' '.join(self.procs)}"

    def set_order(self, names) -> None:
        known = [p for p in names if p in self.order]
        self.order = known + [p for p in self.order if p not in known]
        self._relane()

    @staticmethod
    def group_of(process: str) -> str:
        """A process's group: its name without a trailing number (``bank-3`` -> ``bank``)."""
        stem = GROUP_TAIL.sub("", process)
        return stem or process

    def groups(self) -> list[tuple[str, list[str]]]:
        """The visible lanes' groups, left to right: (group, its lanes); a group's lanes are
        adjacent only while grouped."""
        out: list[tuple[str, list[str]]] = []
        for p in self.procs:
            gname = self.group_of(p)
            if out and out[-1][0] == gname:
                out[-1][1].append(p)
            else:
                out.append((gname, [p]))
        return out

    def toggle_grouped(self) -> str:
        """Group the lanes (the lanes of one group side by side, groups in the order of
        their first lane; the header names each group under its lanes), or ungroup them
        (the order from before grouping)."""
        self.grouped = not self.grouped
        if self.grouped:
            self._ungrouped = list(self.order)
            first: dict[str, int] = {}
            for k, p in enumerate(self.order):
                first.setdefault(self.group_of(p), k)
            self.order = sorted(self.order, key=lambda p: first[self.group_of(p)])
        else:
            prev = getattr(self, "_ungrouped", None) or []
            self.order = [p for p in prev if p in self.order] + [p for p in self.order if p not in prev]
        self._relane()
        if not self.grouped:
            return "lanes: not grouped"
        gs = self.groups()
        return "lanes grouped: " + ", ".join(f"{g} ({len(ps)})" for g, ps in gs)

    def toggle_collapse(self) -> str:
        self.collapse = not self.collapse
        self._rows()
        self.generation += 1
        if not self.collapse:
            return "local events: every one shown"
        hid = sum(len(self._run_rows(a, b)) for a, b in self._runs.items())
        return (f"local events: {len(self._runs)} runs collapsed to one row each "
                f"({hid} rows fewer)")

    def transitive_peer(self, e: Mapping) -> tuple[str, int] | None:
        """``transitive_peer`` of the trace for the hidden lanes (None when the end it
        reaches is not a visible lane), remembered until the lanes change."""
        key = (e["process"], e["seq"])
        if key in self._transitive:
            return self._transitive[key]
        ans = transitive_peer(self.trace, e, self.hidden)
        if ans is not None and ans[0] not in self.pindex:
            ans = None
        self._transitive[key] = ans
        return ans

    def _first_of(self, p: str) -> int:
        t = self.trace
        return t._start[t._pindex[p]]

    def filter_rows(self, text: str) -> array | None:
        """The display rows matching ``text`` (None: no filter, every row). Reads the
        explorer, changes nothing: a worker thread may run it."""
        text = text.strip()
        if not text:
            return None
        if is_structured(text):
            return self._query_rows(Query(text))
        procs, kinds, words = parse_filter(text)
        pidx = {self.pindex[p] for p in procs if p in self.pindex} if procs else None
        out = array("l")
        t = self.trace
        kind, event = t._kind, t._event_dict
        lanes = map(self._emap.__getitem__, map(t._pid.__getitem__, self.all_g))
        for r, (i, g) in enumerate(zip(lanes, self.all_g)):
            if pidx is not None and i not in pidx:
                continue
            if kinds and kind[g] not in kinds:
                continue
            if words and words not in describe(event(g), t).lower():
                continue
            out.append(r)
        return out

    def _query_rows(self, q: Query) -> array:
        """The display rows whose events match a structured query (``model.query``)."""
        out = array("l")
        t = self.trace
        event = t._event_dict
        for r, g in enumerate(self.all_g):
            e = event(g)
            if q.matches(e, lambda: describe(e, t)):
                out.append(r)
        return out

    def hit_counts(self) -> tuple[int, int]:
        """(events matching the filter, how many of them are inside the cut): the whole
        trace's, hidden lanes and collapsed rows included."""
        if self.filter_g is None:
            return len(self.all_g), sum(self.trace.count_inside(p, self.cut[p]) for p in self.order)
        t = self.trace
        inside = 0
        for r in self.filter_g:
            g = self.all_g[r]
            if t._seq[g] <= self.cut[t.processes[t._pid[g]]]:
                inside += 1
        return len(self.rows), inside

    @staticmethod
    def filter_is_slow(text: str, events: int) -> bool:
        """Whether ``text`` makes the filter read every event of a large trace."""
        return (bool(parse_filter(text)[2]) or is_structured(text)) and events > SYNC_FILTER_EVENTS

    # -- the cut ----------------------------------------------------------------------

    @property
    def process(self) -> str:
        return self.procs[self.selected] if self.procs else ""

    def frontier_global(self, i: int) -> int:
        """Global row of process i's last event inside the cut (-1: none)."""
        p = self.procs[i]
        k = self.trace.count_inside(p, self.cut[p])
        return self._display_row(self._first[i] + k - 1) if k else -1

    def recompute(self) -> None:
        t = self.trace
        self.chain: dict[tuple[str, int], int] = {}  # the events of a followed chain
        self.consistent = t.consistent(self.cut)
        self.orphans: list[Message] = (t.orphans(self.cut, limit=ORPHAN_LIMIT)
                                       if not self.consistent else [])
        self.in_transit: list[Message] = t.in_transit(self.cut)
        self.orphan_ids = {m.id for m in self.orphans}
        self.transit_ids = {m.id for m in self.in_transit}
        self.frontiers = [self.frontier_global(i) for i in range(len(self.procs))]
        self._update_causal()
        self.generation = getattr(self, "generation", 0) + 1

    def _update_causal(self) -> None:
        ev = self.selected_event() if getattr(self, "show_causality", False) else None
        self.causal = None if ev is None else (
            ev["process"], ev["seq"], self.trace.vector_clock(ev["process"], ev["seq"]))

    def toggle_causality(self) -> str:
        """Show (or stop showing) the causal past and future of the selected event."""
        self.show_causality = not self.show_causality
        self._update_causal()
        self.generation += 1
        if not self.show_causality:
            return "causality: off"
        if self.causal is None:
            return "causality: on (the selected process has no event inside the cut)"
        p, s, vc = self.causal
        return (f"causality of {p} #{s}: its causal past in blue, its future in orange "
                f"(vector clock {','.join(f'{q}={n}' for q, n in vc.items() if n)})")

    def jump_to_peer(self) -> str:
        """Move the cursor to the other end of the selected event's message: select
        its process and put that process's frontier on it."""
        ev = self.selected_event()
        other = self.trace.peer(ev) if ev is not None else None
        if other is None:
            what = "no event selected" if ev is None else f"{ev['process']} #{ev['seq']} {ev['kind']}"
            return f"no other end: {what} is not a matched send or receive"
        p, s = other
        self.cut[p] = s
        if p in self.pindex:
            self.selected = self.pindex[p]
        self.recompute()
        return f"other end of {ev.get('msg')}: {p} #{s}"

    def select(self, delta: int) -> None:
        if self.procs:
            self.selected = (self.selected + delta) % len(self.procs)
            self._update_causal()
            self.generation += 1

    def move(self, delta: int) -> None:
        """Move the selected process's frontier by ``delta`` of its events."""
        p = self.process
        if p:
            self.cut[p] = self.trace.step(p, self.cut[p], delta)
            self.recompute()

    def set_frontier(self, p: str, seq: int) -> None:
        self.cut[p] = max(0, seq)
        self.recompute()

    def set_cut(self, cut: Mapping[str, int]) -> None:
        for p, n in cut.items():
            if p in self.cut:
                self.cut[p] = int(n)
        self.recompute()

    def set_snapshot_cut(self, cut: Mapping[str, int]) -> None:
        """A snapshot's cut: its processes where it says; every other process (one
        the snapshot did not cover: ended, started later, another system) as late as
        it can be without receiving a message sent outside the cut. Left at its end,
        such a process made a consistent snapshot read INCONSISTENT, against
        ``cutscope check`` and ``cutscope render``, which leave it out."""
        t = self.trace
        c = {p: t.last_seq(p) for p in self.cut}
        c.update({p: int(n) for p, n in cut.items() if p in c})
        changed = True
        while changed:
            changed = False
            for q, p, pair in t._pairs_in(c):
                if p in cut:
                    continue
                r = pair.first_orphan_recv(c[p], c[q])
                if r is not None:
                    c[p] = t.step(p, r, -1)
                    changed = True
        self.cut = c
        self.recompute()

    def nearest_below(self) -> None:
        self.set_cut(self.trace.nearest_below(self.cut))

    def nearest_above(self) -> None:
        self.set_cut(self.trace.nearest_above(self.cut))

    def lattice_step(self, delta: int, only_selected: bool = False) -> str:
        """Move to the next (``delta`` 1) or previous (-1) consistent cut, one event of
        one process: the selected process's, or (not ``only_selected``) the event
        next in the lanes' order that keeps the cut consistent. An inconsistent cut
        goes to its nearest consistent cut below first. Returns what happened."""
        t = self.trace
        note = ""
        if not self.consistent:
            self.cut = t.nearest_below(self.cut)
            note = "to the nearest consistent cut below, then "
        proc = self.process if only_selected else None
        r = t.next_cut(self.cut, proc) if delta > 0 else t.previous_cut(self.cut, proc)
        if r is None:
            self.recompute()
            if proc is not None:
                why = "its next event receives a message sent outside the cut" if delta > 0 else \
                    "its frontier event sent a message received inside the cut"
                if (t.last_seq(proc) == self.cut[proc]) if delta > 0 else not self.cut[proc]:
                    why = "it is at its end" if delta > 0 else "it is at its start"
                return f"lattice: {note}{proc} cannot move {'forward' if delta > 0 else 'back'}: {why}"
            return f"lattice: {note}no consistent cut {'above' if delta > 0 else 'below'} by one event"
        p, cut = r
        self.cut = cut
        if p in self.pindex:
            self.selected = self.pindex[p]
        self.recompute()
        ev = t.event(p, cut[p] if delta > 0 else t.step(p, cut[p], 1))
        what = f"{p} #{ev['seq']} {ev['kind']}" if ev else p
        return f"lattice: {note}{'+' if delta > 0 else '-'} {what}: {self.cut_text()}"

    def follow(self, delta: int) -> str:
        """Follow the chain of messages one hop forward (``delta`` 1: the next message
        the selected process sends from its frontier event on, to its receive) or back
        (-1: the last message it received up to its frontier, to its send). The cursor
        (selected process and its frontier) moves to the other end."""
        p = self.process
        if not p:
            return "no process"
        f = self.cut[p]
        t = self.trace
        if delta > 0:
            hop = t.next_hop(p, max(f, 1))
            if hop is None:
                return f"chain: {p} sends no received message from #{f} on"
            (sp, ss), (rp, rs) = hop
            to = (rp, rs)
            text = f"chain: {sp} #{ss} -> {rp} #{rs}"
        else:
            hop = t.previous_hop(p, f)
            if hop is None:
                return f"chain: {p} received no message up to #{f}"
            (sp, ss), (rp, rs) = hop
            to = (sp, ss)
            text = f"chain: {rp} #{rs} <- {sp} #{ss}"
        self.cut[to[0]] = to[1]
        if to[0] in self.pindex:
            self.selected = self.pindex[to[0]]
        self.recompute()
        return text

    def follow_chain(self, delta: int) -> str:
        """Follow the chain of messages from the selected frontier to its end: forward
        (``delta`` 1) hop after hop from each receive, or back (-1) from each send. The
        cursor moves to the chain's last end; the chain's events are marked
        (``self.chain``) until the cut next changes."""
        p = self.process
        if not p:
            return "no process"
        t = self.trace
        at = (p, max(self.cut[p], 1) if delta > 0 else self.cut[p])
        ends: list[tuple[str, int]] = []
        while len(ends) < 2 * CHAIN_HOPS:
            hop = t.next_hop(*at) if delta > 0 else t.previous_hop(*at)
            if hop is None:
                break
            (sp, ss), (rp, rs) = hop
            pair = [(sp, ss), (rp, rs)] if delta > 0 else [(rp, rs), (sp, ss)]
            ends += pair
            at = pair[1]
        if not ends:
            return (f"chain: {p} sends no received message from #{self.cut[p]} on" if delta > 0
                    else f"chain: {p} received no message up to #{self.cut[p]}")
        to = ends[-1]
        self.cut[to[0]] = to[1]
        if to[0] in self.pindex:
            self.selected = self.pindex[to[0]]
        self.recompute()
        self.chain = {e: k for k, e in enumerate(ends)}
        hops = len(ends) // 2
        arrow = " -> " if delta > 0 else " <- "
        shown = [f"{q} #{n}" for q, n in ends[1::2]]
        path = arrow.join([f"{ends[0][0]} #{ends[0][1]}"] + (shown if len(shown) <= 6 else
                                                              shown[:2] + ["..."] + shown[-3:]))
        more = f" (stopped after {CHAIN_HOPS} hops)" if len(ends) >= 2 * CHAIN_HOPS else ""
        return f"chain {'forward' if delta > 0 else 'back'}: {hops} hop{'s' if hops != 1 else ''}: {path}{more}"

    def replay_step(self, delta: int) -> str:
        """The replay of a chosen linearisation: the lanes' order (left to right, then the
        hidden lanes) is the priority. Forward (``delta`` 1), the leftmost process whose
        next event can join the cut through a consistent cut moves; back (-1), the replay
        retraces its own steps (then, past its start, the rightmost process that can
        leave). An inconsistent cut first goes to its nearest consistent cut below."""
        t = self.trace
        note = ""
        if not self.consistent:
            self.cut = t.nearest_below(self.cut)
            self.replay_trail = []
            note = "to the nearest consistent cut below, then "
        trail = self.replay_trail
        priority = list(self.procs) + [p for p in self.order if p in self.hidden]
        r = None
        if delta > 0:
            for p in priority:
                r = t.next_cut(self.cut, p)
                if r is not None:
                    break
        elif trail and trail[-1][1] == self.cut:
            r = (trail[-1][0], trail[-1][2])
            trail.pop()
        else:
            for p in reversed(priority):
                r = t.previous_cut(self.cut, p)
                if r is not None:
                    break
        if r is None:
            self.recompute()
            return f"replay: {note}{'the top: every event is in' if delta > 0 else 'the bottom: the empty cut'}"
        p, cut = r
        before = dict(self.cut)
        self.cut = dict(cut)
        if delta > 0:
            trail.append((p, dict(self.cut), before))
        if p in self.pindex:
            self.selected = self.pindex[p]
        self.recompute()
        seq = self.cut[p] if delta > 0 else before[p]
        ev = t.event(p, seq)
        what = f"{p} #{seq} {ev['kind']}" if ev else p
        return (f"replay (lanes' order {' '.join(priority)}): {note}{'+' if delta > 0 else '-'} {what}: "
                f"{self.cut_text()}")

    def selected_event(self) -> dict | None:
        p = self.process
        if not p:
            return None
        return self.trace.event(p, self.cut[p]) if self.cut[p] else None

    def cut_text(self) -> str:
        return ",".join(f"{p}={self.cut[p]}" for p in self.order)
