"""The stored snapshots as tables: local states side by side, channel contents,
totals, a diff against a marked snapshot, a user expression; pick one to
explore its cut."""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from ..model import snapshot_cut
from ..model.expr import Expr
from ..model.snapshots import channel_rows, diff, evaluate, state_table, transit_totals

CHANGED = "bold black on yellow"


def summary(s: dict) -> str:
    nmsg = sum(len(c.get("messages", [])) for c in s.get("channels", []))
    return (f"#{s['id']} {s.get('status')}  by {s.get('initiator')}: "
            f"{len(s.get('processes', {}))} processes, {nmsg} in-transit messages")


def cell(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, str):
        return v
    return json.dumps(v, default=repr)


def _num(v) -> str:
    return str(round(v, 6)) if isinstance(v, float) else str(v)


def state_tables(s: dict, bookkeeping: bool = False, channels: dict | None = None) -> list:
    """The local states side by side, then the channels: Rich tables."""
    t = state_table(s, bookkeeping)
    states = Table(title="Local states" + ("" if bookkeeping else " (cutscope's _cutscope hidden: k)"),
                   title_justify="left", expand=False)
    states.add_column("field", style="bold")
    for p in t.processes:
        info = s["processes"][p] or {}
        states.add_column(f"{p}\n(cut at {int(info.get('event_seq', 1)) - 1})", overflow="fold")
    states.add_column("total", style="bold")
    for f in t.fields:
        states.add_row(f, *[cell(t.values[f][p]) if p in t.values[f] else "-" for p in t.processes],
                       _num(t.totals[f]) if f in t.totals else "")
    rows = channel_rows(s, channels)
    chans = Table(title="Channels", title_justify="left")
    chans.add_column("channel", style="bold")
    chans.add_column("from -> to")
    chans.add_column("state")
    chans.add_column("in transit", justify="right")
    chans.add_column("messages", overflow="fold")
    everything = []
    for r in rows:
        everything.extend(r.messages)
        chans.add_row(r.channel, f"{r.src or '?'} -> {r.dst or '?'}", "complete" if r.complete else Text("NOT closed", style="bold red"),
                      str(len(r.messages)), "\n".join(f"{m.msg}: {m.shown}" for m in r.messages))
    totals = transit_totals(everything)
    chans.add_row("total", "", "", str(len(everything)),
                  ", ".join(f"sum {k} = {_num(v)}" for k, v in totals.items()), style="bold")
    return [states, chans]


def diff_tables(a: dict, b: dict, bookkeeping: bool = False) -> list:
    d = diff(a, b, bookkeeping)
    states = Table(title=f"Snapshot #{d.a} -> #{d.b}: local states (changed values highlighted)",
                   title_justify="left")
    states.add_column("field", style="bold")
    for p in d.processes:
        states.add_column(p, overflow="fold")
    for f in d.fields:
        cells = []
        for p in d.processes:
            old = cell(d.before[f][p]) if p in d.before.get(f, {}) else "-"
            new = cell(d.after[f][p]) if p in d.after.get(f, {}) else "-"
            cells.append(Text(f"{old} -> {new}", style=CHANGED) if (f, p) in d.changed else Text(new))
        states.add_row(f, *cells)
    moved = Table(title="Messages", title_justify="left")
    moved.add_column("")
    moved.add_column("channel", style="bold")
    moved.add_column("message")
    for what, ms, style in ((f"delivered (in transit in #{d.a} only)", d.delivered, "green"),
                            (f"sent (in transit in #{d.b} only)", d.sent, "cyan"),
                            ("in transit in both", d.still, "")):
        for m in ms:
            moved.add_row(Text(what, style=style), m.channel, f"{m.msg}: {m.shown}")
    if not (d.delivered or d.sent or d.still):
        moved.add_row("no message in transit in either", "", "")
    return [states, moved]


def to_text(renderables: list, width: int) -> Text:
    """Rich renderables as one styled Text (the detail pane's content)."""
    con = Console(file=io.StringIO(), width=max(40, width), record=True, color_system="truecolor",
                  force_terminal=True)
    for r in renderables:
        con.print(r)
    return Text.from_ansi(con.export_text(styles=True))


def details(s: dict, width: int = 120, bookkeeping: bool = False, base: dict | None = None,
            expr: Expr | None = None, note: str | None = None, channels: dict | None = None) -> Text:
    head = Text()
    head.append(summary(s) + "\n", style="bold")
    if s.get("missing"):
        head.append("missing: " + ", ".join(map(str, s["missing"])) + "\n", style="bold red")
    if base is not None and base is not s:
        head.append(f"diff against the marked snapshot #{base['id']} (m on it unmarks)\n",
                    style="italic")
    if note:
        head.append(note + "\n", style="bold red")
    if expr is not None:
        try:
            head.append(f"{expr.text} = {cell(evaluate(s, expr))}\n", style="bold green")
        except ValueError as exc:
            head.append(f"{expr.text}: {exc}\n", style="bold red")
    body = diff_tables(base, s, bookkeeping) if base is not None and base is not s else \
        state_tables(s, bookkeeping, channels)
    return head + to_text(body, width)


class SnapshotsScreen(Screen):
    """Dismisses with the chosen snapshot's cut (or None)."""

    AUTO_FOCUS = None

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "explore", "Explore its cut"),
        Binding("k", "bookkeeping", "Bookkeeping"),
        Binding("m", "mark", "Mark for diff"),
        Binding("e", "expression", "Expression"),
    ]

    def __init__(self, doc: dict):
        super().__init__()
        self.snaps = list(doc.get("snapshots", []))
        self.channels = {c["id"]: c for c in doc.get("channels", [])}
        self.bookkeeping = False
        self.base: dict | None = None
        self.expr: Expr | None = None
        self.note: str | None = None  # why the last expression was refused

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="snap-body"):
            yield OptionList(*[Option(summary(s), id=str(s["id"])) for s in self.snaps],
                             id="snap-list")
            with VerticalScroll(id="snap-detail-box"):
                yield Static("no snapshots in this trace (take one with s)" if not self.snaps
                             else "", id="snap-detail")
        yield Input(placeholder="expression over the snapshot, e.g. sum(balance) + "
                                "sum(m.amount for m in in_transit)  (Enter evaluates, empty clears)",
                    id="snap-expr", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.focus()
        if self.snaps:
            ol.highlighted = 0
            self._show(0)

    def _current(self) -> int | None:
        return self.query_one(OptionList).highlighted

    def _show(self, i: int | None) -> None:
        if i is None or not (0 <= i < len(self.snaps)):
            return
        width = self.query_one("#snap-detail-box").size.width or 120
        self.query_one("#snap-detail", Static).update(
            details(self.snaps[i], width - 2, self.bookkeeping, self.base, self.expr, self.note,
                    self.channels))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(event.option_index)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._explore(event.option_index)

    def action_explore(self) -> None:
        self._explore(self._current())

    def _explore(self, i: int | None) -> None:
        if i is None or not (0 <= i < len(self.snaps)):
            return
        self.dismiss(snapshot_cut(self.snaps[i]))

    def action_bookkeeping(self) -> None:
        self.bookkeeping = not self.bookkeeping
        self._show(self._current())

    def action_mark(self) -> None:
        i = self._current()
        if i is None or not (0 <= i < len(self.snaps)):
            return
        self.base = None if self.base is self.snaps[i] else self.snaps[i]
        self._show(i)

    def action_expression(self) -> None:
        box = self.query_one("#snap-expr", Input)
        box.disabled = False
        box.add_class("visible")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        box = event.input
        box.remove_class("visible")
        box.disabled = True
        self.query_one(OptionList).focus()
        self.expr, self.note = None, None
        if text:
            try:
                self.expr = Expr(text)
            except ValueError as exc:
                self.note = f"expression: {exc}"
        self._show(self._current())

    def action_back(self) -> None:
        box = self.query_one("#snap-expr", Input)
        if box.has_class("visible"):
            box.remove_class("visible")
            box.disabled = True
            self.query_one(OptionList).focus()
            return
        self.dismiss(None)
