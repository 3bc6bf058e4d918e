"""The stored snapshots: their local states and channel contents; pick one to explore its cut."""

from __future__ import annotations

import base64
import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from ..model import snapshot_cut


def summary(s: dict) -> str:
    nmsg = sum(len(c.get("messages", [])) for c in s.get("channels", []))
    return (f"#{s['id']} {s.get('status')}  by {s.get('initiator')}: "
            f"{len(s.get('processes', {}))} processes, {nmsg} in-transit messages")


def details(s: dict) -> Text:
    out = Text()
    out.append(summary(s) + "\n", style="bold")
    if s.get("missing"):
        out.append("missing: " + ", ".join(map(str, s["missing"])) + "\n", style="bold red")
    out.append("\nLocal states\n", style="bold underline")
    for p, info in s.get("processes", {}).items():
        out.append(f"{p}", style="bold")
        out.append(f"  (snapshot event seq {info.get('event_seq')}; cut frontier "
                   f"{int(info.get('event_seq', 1)) - 1})\n", style="dim")
        state = json.dumps(info.get("state"), indent=2, default=repr)
        out.append("  " + state.replace("\n", "\n  ") + "\n")
    out.append("\nChannels\n", style="bold underline")
    for c in s.get("channels", []):
        flag = "complete" if c.get("complete") else "NOT closed"
        msgs = c.get("messages", [])
        out.append(f"{c['channel']}  ({flag}, {len(msgs)} messages)\n", style="bold")
        for m in msgs:
            val = m.get("value")
            if val is not None:
                shown = json.dumps(val, default=repr)
            else:
                shown = f"{m.get('nbytes', '?')} bytes"
                if m.get("payload_b64"):
                    raw = base64.b64decode(m["payload_b64"])
                    shown += f" {raw[:60]!r}" + ("..." if len(raw) > 60 else "")
            if m.get("truncated"):
                shown += " (truncated)"
            out.append(f"  {m.get('msg')}: {shown}\n")
    return out


class SnapshotsScreen(Screen):
    """Dismisses with the chosen snapshot's cut (or None)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "explore", "Explore its cut"),
    ]

    def __init__(self, doc: dict):
        super().__init__()
        self.snaps = list(doc.get("snapshots", []))

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="snap-body"):
            yield OptionList(*[Option(summary(s), id=str(s["id"])) for s in self.snaps],
                             id="snap-list")
            with VerticalScroll(id="snap-detail-box"):
                yield Static("no snapshots in this trace (take one with s)" if not self.snaps
                             else "", id="snap-detail")
        yield Footer()

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.focus()
        if self.snaps:
            ol.highlighted = 0
            self._show(0)

    def _show(self, i: int | None) -> None:
        if i is None or not (0 <= i < len(self.snaps)):
            return
        self.query_one("#snap-detail", Static).update(details(self.snaps[i]))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(event.option_index)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._explore(event.option_index)

    def action_explore(self) -> None:
        self._explore(self.query_one(OptionList).highlighted)

    def _explore(self, i: int | None) -> None:
        if i is None or not (0 <= i < len(self.snaps)):
            return
        self.dismiss(snapshot_cut(self.snaps[i]))

    def action_back(self) -> None:
        self.dismiss(None)
