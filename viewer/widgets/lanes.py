"""The space-time diagram as text: one lane per process, one row per event.

Rows are the events in a linear extension of happened-before (Lamport clock,
then process), so a message always goes down the screen from its send to its
receive. A lane is drawn solid above the process's frontier (inside the cut)
and dotted below it; the frontier event is marked. In-transit sends and
orphan receives (and their sends) have their own colours; the selected
process's frontier event and the other end of its message are highlighted.

Virtualised as toolong's ``LogLines`` is: a ``ScrollView`` whose
``render_line(y)`` builds only the visible rows, with an LRU cache of strips,
so a trace of any length costs the same to draw.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from ..explorer import GLYPH, Explorer, describe

S_LANE_IN = Style(color="#5f87af")
S_LANE_OUT = Style(color="#444444")
S_KIND = {
    "send": Style(color="#87afff", bold=True),
    "recv": Style(color="#87d787", bold=True),
    "local": Style(color="#bcbcbc"),
    "snapshot": Style(color="#ffaf00", bold=True),
}
S_OUTSIDE = Style(color="#6c6c6c")
S_TRANSIT = Style(color="#ffffff", bgcolor="#1f5fbf", bold=True)
S_ORPHAN = Style(color="#ffffff", bgcolor="#bf1f1f", bold=True)
S_FRONTIER = Style(bgcolor="#5f3f00", underline=True)
S_SELECTED = Style(reverse=True, bold=True)
S_PEER = Style(color="#000000", bgcolor="#d787ff", bold=True)
S_GUTTER = Style(color="#6c6c6c")
S_TEXT = Style(color="#d0d0d0")
S_LINE = Style(color="#8787af")
S_PAST = Style(color="#5fd7ff", bold=True)
S_FUTURE = Style(color="#ffaf5f", bold=True)
S_TRANSITIVE = Style(color="#af87d7", italic=True)
S_RUN = Style(color="#bcbcbc", italic=True)
S_CHAIN = Style(color="#ffd75f", bold=True)
S_GROUP = Style(color="#87afaf")


def lane_width(explorer: Explorer) -> int:
    n = max(1, len(explorer.procs))
    longest = max((len(p) for p in explorer.procs), default=1)
    w = min(max(longest + 1, 6 if explorer.packed else 3), 10)
    return w if n * w <= 80 else 3


class LaneHeader(Widget):
    """Process names above the lanes; the selected process reversed."""

    DEFAULT_CSS = "LaneHeader { height: 1; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.explorer: Explorer | None = None
        self.offset_x = 0  # the lanes' horizontal scroll

    def set_explorer(self, explorer: Explorer | None) -> None:
        self.explorer = explorer
        self.refresh()

    def render_line(self, y: int) -> Strip:
        ex = self.explorer
        width = self.size.width
        if ex is None or y > 1 or (y == 1 and not ex.grouped):
            return Strip.blank(width)
        w = lane_width(ex)
        if y == 1:  # the groups, each under its lanes: └─ bank ─┘
            segs = [Segment(" " * 8)]
            for gname, ps in ex.groups():
                span = len(ps) * w - 1
                label = f" {gname} " if len(gname) + 4 <= span else ""
                if span >= 2:
                    inner = label.center(span - 2, "─")
                    segs.append(Segment("└" + inner + "┘", S_GROUP))
                else:
                    segs.append(Segment("╵" * span, S_GROUP))
                segs.append(Segment(" "))
            return Strip(segs).crop_extend(self.offset_x, self.offset_x + width, None)
        segs = [Segment("step    " if ex.packed else "lamport ", S_GUTTER)]
        for i, p in enumerate(ex.procs):
            name = (p if len(p) < w else (p[: w - 2] + "…" if w > 3 else str(i)))
            style = S_SELECTED if i == ex.selected else Style(bold=True)
            if ex.frontiers[i] < 0:
                style = style + Style(color="#ffaf00")
            segs.append(Segment(name.center(w - 1)[: w - 1], style))
            segs.append(Segment(" "))
        if ex.hidden:
            segs.append(Segment(f"  ({len(ex.hidden)} hidden: {', '.join(sorted(ex.hidden))[:60]})",
                                S_GUTTER))
        strip = Strip(segs)
        return strip.crop_extend(self.offset_x, self.offset_x + width, None)


class Lanes(ScrollView, can_focus=False):
    """The virtualised event lanes."""

    DEFAULT_CSS = "Lanes { height: 1fr; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.explorer: Explorer | None = None
        self._cache: LRUCache[tuple, Strip] = LRUCache(2000)
        self.peer: tuple[str, int] | None = None

    def set_explorer(self, explorer: Explorer | None) -> None:
        self.explorer = explorer
        self.refresh_rows()

    def refresh_rows(self) -> None:
        """The model changed: forget the drawn strips and resize."""
        self._cache.clear()
        ex = self.explorer
        if ex is None:
            self.virtual_size = Size(0, 0)
        else:
            w = 8 + lane_width(ex) * len(ex.procs) + 100
            self.virtual_size = Size(w, len(ex))
        self.refresh()
        if self.is_mounted:
            self.update_minimap()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.update_minimap()

    class ViewMoved(Message):
        """The rows on screen changed: ``first`` row, ``height`` rows (for the minimap)."""

        def __init__(self, first: int, height: int) -> None:
            super().__init__()
            self.first = first
            self.height = height

    def update_minimap(self) -> None:
        self.post_message(self.ViewMoved(round(self.scroll_offset.y), self.size.height))

    def on_resize(self, event) -> None:
        self.update_minimap()

    def watch_scroll_x(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_x(old_value, new_value)
        for header in self.screen.query(LaneHeader):
            header.offset_x = round(new_value)
            header.refresh()

    def scroll_to_row(self, y: int, animate: bool = False) -> None:
        """Bring row ``y`` into view (centred when it is off screen)."""
        h = max(1, self.size.height)
        top = self.scroll_offset.y
        if y < top or y >= top + h:
            self.scroll_to(y=max(0, y - h // 2), animate=animate)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        ex = self.explorer
        row = scroll_y + y
        if ex is None or row >= len(ex):
            return Strip.blank(width)
        key = (row, ex.generation, self.peer)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._build_packed(row) if ex.layers is not None else self._build(row)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, None)

    @staticmethod
    def _message_line(ex: Explorer, e: dict, i: int, w: int, left: int, chars: list,
                      styles: list) -> tuple[str, int] | None:
        """The line of a message between two lanes, drawn on its send's row and on its
        receive's row: ``S───╮`` toward the receiver's lane from the send, ``╰──▶R``
        into the receive from the sender's lane (mirrored when the other lane is on
        the left). Lanes it crosses show ``┼``. A message to or from a hidden lane is
        drawn dashed (``S┄┄╮``) to the visible event it reaches through the hidden
        lanes (``Explorer.transitive_peer``), which is returned."""
        if e["kind"] not in ("send", "recv") or not e.get("msg"):
            return None
        other = ex.trace.peer(e)
        if other is None:
            return None
        style, dash = S_LINE, False
        if other[0] not in ex.pindex:
            # The other end is in a hidden lane: a dashed line to the visible event the
            # message reaches (or came from) through the hidden lanes.
            other = ex.transitive_peer(e) if other[0] in ex.hidden else None
            if other is None or other[0] not in ex.pindex:
                return None
            style, dash = S_TRANSITIVE, True
        j = ex.pindex[other[0]]
        if j == i:
            return other if dash else None
        a, b = i * w + left, j * w + left  # this event's column, the other lane's
        step = 1 if b > a else -1
        lines = " │┆─┄┼"
        if chars[b] not in lines:
            # A packed row with another event in the far lane: a stub only (``S─``,
            # ``▶R``), so that no line seems to start or end at that event.
            if e["kind"] == "recv":
                chars[a + step] = "◀" if step > 0 else "▶"
            elif chars[a + step] in lines:
                chars[a + step] = "┄" if dash else "─"
            styles[a + step] = style
            return other if dash else None
        for c in range(a + step, b, step):
            if chars[c] not in lines:
                continue  # another event's glyph on a packed row
            chars[c] = "┼" if chars[c] in "│┆┼" else ("┄" if dash else "─")
            styles[c] = style
        if chars[b] in lines:
            chars[b] = ("╮" if step > 0 else "╭") if e["kind"] == "send" else ("╯" if step > 0 else "╰")
            styles[b] = style
        if e["kind"] == "recv" and chars[a + step] in lines:
            chars[a + step] = "◀" if step > 0 else "▶"
            styles[a + step] = style
        return other if dash else None

    @staticmethod
    def _causal_style(ex: Explorer, p: str, seq: int) -> Style | None:
        """S_PAST / S_FUTURE for an event in the causal past / future of the selected
        event, while causality is shown (``ex.causal``); else None."""
        c = ex.causal
        if c is None:
            return None
        sp, ss, vc = c
        if (p, seq) == (sp, ss):
            return None
        if seq <= vc.get(p, 0):
            return S_PAST
        if ex.trace.vector_clock(p, seq).get(sp, 0) >= ss:
            return S_FUTURE
        return None

    def _build_packed(self, row: int) -> Strip:
        """A row of the logical-time layout: every event of one logical step (concurrent
        events), each in its lane, their message lines where the lanes are free, and a
        short description of each."""
        ex = self.explorer
        t = ex.trace
        w = lane_width(ex)
        n = len(ex.procs)
        left = (w - 2) // 2
        chars = [" "] * (w * n)
        styles: list[Style | None] = [None] * (w * n)
        here = {}
        for r in ex.layers[row]:
            i = ex.lane(r)
            if i >= 0:
                here[i] = (r, t._event_dict(ex.all_g[r]))
        lamports = [e.get("lamport", 0) for _, e in here.values()]
        segs = [Segment(f"{row + 1:>7} ", S_GUTTER)]
        for j in range(n):
            f = ex.frontiers[j]
            c = j * w + left
            if j in here:
                r, e = here[j]
                p = ex.procs[j]
                inside = e["seq"] <= ex.cut[p]
                run = ex.run_at(r)
                glyph = GLYPH.get(e["kind"], "?") if run is None else "≡"
                style = S_KIND.get(e["kind"], S_TEXT) if inside else S_OUTSIDE
                msg = e.get("msg")
                if msg is not None:
                    if msg in ex.orphan_ids:
                        style = S_ORPHAN
                    elif msg in ex.transit_ids and e["kind"] == "send":
                        style = S_TRANSIT
                hit = r == f or (run is not None and run[0] <= f <= run[1])
                if hit:
                    style = style + S_FRONTIER
                if hit and j == ex.selected:
                    style = style + S_SELECTED
                elif self.peer is not None and (p, e["seq"]) == self.peer:
                    style = S_PEER
                chars[c], styles[c] = glyph, style
            else:
                inside_lane = f >= 0 and row <= ex.packed_row(f)
                chars[c] = "│" if inside_lane else "┆"
                styles[c] = S_LANE_IN if inside_lane else S_LANE_OUT
        for j, (r, e) in sorted(here.items()):
            self._message_line(ex, e, j, w, left, chars, styles)
        k = 0
        while k < len(chars):
            m = k + 1
            while m < len(chars) and styles[m] is styles[k]:
                m += 1
            segs.append(Segment("".join(chars[k:m]), styles[k]))
            k = m
        for j, (r, e) in sorted(here.items()):
            p = ex.procs[j]
            text = f"{p} #{e['seq']} {e['kind']}"
            if e["kind"] in ("send", "recv"):
                other = t.peer(e)
                if other is not None:
                    text += f" {'->' if e['kind'] == 'send' else '<-'} {other[0]}"
            elif e["kind"] == "local":
                text += f" {(e.get('data') or {}).get('label', '')}".rstrip()
            elif e["kind"] == "snapshot":
                text += f" {e.get('snapshot')}"
            style = S_TEXT if e["seq"] <= ex.cut[p] else S_OUTSIDE
            if r == ex.frontiers[j] and j == ex.selected:
                style = S_SELECTED
            segs.append(Segment("  " if segs[-1].text.endswith(" ") else "   ", None))
            segs.append(Segment(text, style))
        if lamports:
            segs.append(Segment(f"   L{min(lamports)}" + (f"..{max(lamports)}" if max(lamports) != min(lamports)
                                                          else ""), S_GUTTER))
        else:
            segs.append(Segment("   (events in hidden lanes only)", S_GUTTER))
        return Strip(segs)

    def _build(self, row: int) -> Strip:
        ex = self.explorer
        t = ex.trace
        g = ex.global_row(row)
        i = ex.lane(g)
        e = ex.event_at(row)
        p = ex.procs[i]
        inside = e["seq"] <= ex.cut[p]
        msg = e.get("msg")
        w = lane_width(ex)
        segs = [Segment(f"{e.get('lamport', 0):>7} ", S_GUTTER)]
        run = ex.run_at(g)
        selected_ev = i == ex.selected and (g == ex.frontiers[i] or (
            run is not None and run[0] <= ex.frontiers[i] <= run[1]))
        is_peer = self.peer is not None and (p, e["seq"]) == self.peer
        n = len(ex.procs)
        left = (w - 2) // 2  # a lane's glyph column inside its w cells
        chars = [" "] * (w * n)
        styles: list[Style | None] = [None] * (w * n)
        for j in range(n):
            f = ex.frontiers[j]
            c = j * w + left
            if j == i:
                glyph = GLYPH.get(e["kind"], "?") if run is None else "≡"
                style = S_KIND.get(e["kind"], S_TEXT) if inside else S_OUTSIDE
                if msg is not None:
                    if msg in ex.orphan_ids:
                        style = S_ORPHAN
                    elif msg in ex.transit_ids and e["kind"] == "send":
                        style = S_TRANSIT
                if g == f or (run is not None and run[0] <= f <= run[1]):
                    style = style + S_FRONTIER
                if selected_ev:
                    style = style + S_SELECTED
                elif is_peer:
                    style = S_PEER
                chars[c], styles[c] = glyph, style
            else:
                inside_lane = g <= f
                chars[c] = "│" if inside_lane else "┆"
                styles[c] = S_LANE_IN if inside_lane else S_LANE_OUT
                if g == f:
                    styles[c] = styles[c] + S_FRONTIER
        via = self._message_line(ex, e, i, w, left, chars, styles)
        cause = self._causal_style(ex, p, e["seq"])
        if cause is not None and not selected_ev:
            c = i * w + left
            styles[c] = (styles[c] or S_TEXT) + cause
        k = 0
        while k < len(chars):  # runs of one style, as segments
            m = k + 1
            while m < len(chars) and styles[m] is styles[k]:
                m += 1
            segs.append(Segment("".join(chars[k:m]), styles[k]))
            k = m
        text = describe(e, t)
        tstyle = S_TEXT if inside else S_OUTSIDE
        if run is not None:
            last = ex.trace._event_dict(ex.all_g[run[1]])
            count = 1 + len(ex._run_rows(*run))
            text = f"{p} #{e['seq']}..#{last['seq']} L{e.get('lamport')}..L{last.get('lamport')} " \
                   f"{count} local events (collapsed; the last: {describe(last, t).split(' local ', 1)[-1]})"
            if inside:
                tstyle = S_RUN
        k = ex.chain.get((p, e["seq"])) if ex.chain else None
        if k is not None:
            c = i * w + left
            styles[c] = (styles[c] or S_TEXT) + S_CHAIN
            tstyle = tstyle + S_CHAIN
            text += f"   (chain, hop {k // 2 + 1})"
        if via is not None:
            text += f"   ┄ via hidden lanes {'to' if e['kind'] == 'send' else 'from'} {via[0]} #{via[1]}"
        if cause is not None and not selected_ev:
            tstyle = tstyle + cause
            text += "   (causal past)" if cause is S_PAST else "   (causal future)"
        if selected_ev:
            tstyle = S_SELECTED
        elif is_peer:
            text += "   ◀ other end of the selected message"
            tstyle = S_PEER
        elif msg is not None and msg in ex.orphan_ids:
            text += "   ORPHAN (received inside, sent outside)"
        elif msg is not None and msg in ex.transit_ids and e["kind"] == "send":
            text += "   IN TRANSIT"
        segs.append(Segment(" " + text, tstyle))
        return Strip(segs)
