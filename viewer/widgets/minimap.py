"""A minimap beside the lanes: where the screen is in a long trace, and where the cut is.

Three columns, the whole height standing for every visible row of the lanes
(each cell a run of rows; a trace shorter than the screen, one cell a row): the cut (``█`` rows before every frontier, ``▒``
rows between the earliest and the latest frontier, ``░`` rows after every
frontier), the screen (``┃`` on the rows the lanes show), and the frontiers
(``◀`` the selected process's, ``•`` the others'). A click scrolls the lanes
to the rows under it.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

S_IN = Style(color="#5f87af")
S_MIXED = Style(color="#af875f")
S_OUT = Style(color="#444444")
S_VIEW = Style(color="#ffffff", bold=True)
S_NOVIEW = Style(color="#303030")
S_SEL = Style(color="#ffaf00", bold=True)
S_FR = Style(color="#af87d7")


class Minimap(Widget):
    """The whole trace in the lanes' height."""

    class Jump(Message):
        """A click asks for ``row`` in the middle of the lanes."""

        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    DEFAULT_CSS = "Minimap { width: 3; height: 1fr; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.explorer = None
        self.view = (0, 0)  # the rows the lanes show: (first, count)

    def set_explorer(self, explorer) -> None:
        self.explorer = explorer
        self.refresh()

    def set_view(self, first: int, count: int) -> None:
        if (first, count) != self.view:
            self.view = (first, count)
            self.refresh()

    def cell_rows(self, y: int) -> tuple[int, int]:
        """The rows cell ``y`` stands for: [a, b)."""
        n = len(self.explorer) if self.explorer is not None else 0
        h = max(1, min(self.size.height, n))  # a short trace: one cell a row, beside it
        return y * n // h, max(y * n // h + 1, (y + 1) * n // h)

    def cell_of_row(self, row: int) -> int:
        n = len(self.explorer) if self.explorer is not None else 0
        h = max(1, min(self.size.height, n))
        return min(h - 1, row * h // max(1, n))

    def render_line(self, y: int) -> Strip:
        ex = self.explorer
        width = self.size.width
        if ex is None or not len(ex) or y >= self.size.height:
            return Strip.blank(width)
        a, b = self.cell_rows(y)
        if a >= len(ex):
            return Strip.blank(width)
        # The cut: rows (as visible rows) of the earliest and latest frontier.
        rows = [ex.nearest_row(f) if f >= 0 else -1 for f in ex.frontiers]
        lo, hi = (min(rows), max(rows)) if rows else (-1, -1)
        if b - 1 <= lo:
            cut = Segment("█", S_IN)
        elif a > hi:
            cut = Segment("░", S_OUT)
        else:
            cut = Segment("▒", S_MIXED)
        first, count = self.view
        seen = a < first + count and b > first
        view = Segment("┃" if seen else "│", S_VIEW if seen else S_NOVIEW)
        mark = Segment(" ")
        sel = rows[ex.selected] if rows and ex.selected < len(rows) else None
        if sel is not None and a <= max(sel, 0) < b:
            mark = Segment("◀", S_SEL)
        elif any(a <= max(r, 0) < b for r in rows):
            mark = Segment("•", S_FR)
        return Strip([cut, view, mark]).crop_extend(0, width, None)

    def on_click(self, event: events.Click) -> None:
        ex = self.explorer
        if ex is None or not len(ex):
            return
        a, _ = self.cell_rows(max(0, event.y))
        self.post_message(self.Jump(a))
