"""The cut panel: consistency verdict, frontiers, in-transit and orphan messages, the event."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..explorer import ORPHAN_LIMIT, Explorer, describe

LIST_CAP = 200  # lines shown per list (the count is always exact)


class CutPanel(VerticalScroll, can_focus=False):
    """What the current cut is: consistent or not, what is in transit, what is orphaned."""

    def compose(self) -> ComposeResult:
        yield Static(id="verdict")
        yield Static(id="frontiers")
        yield Static(id="event")
        yield Static(id="orphans")
        yield Static(id="transit")

    def show(self, ex: Explorer | None) -> None:
        if ex is None:
            self.query_one("#verdict", Static).update("no trace loaded")
            return
        verdict = self.query_one("#verdict", Static)
        if ex.consistent:
            verdict.update(Text(" CONSISTENT ", style="bold black on #5faf5f"))
            verdict.set_class(True, "consistent")
            verdict.set_class(False, "inconsistent")
        else:
            n = len(ex.orphans)  # the explorer counts up to ORPHAN_LIMIT: say when it stopped
            verdict.update(Text(f" INCONSISTENT: {n}{'+' if n >= ORPHAN_LIMIT else ''} orphan"
                                f"{'s' if n != 1 else ''} ",
                                style="bold white on #bf1f1f"))
            verdict.set_class(False, "consistent")
            verdict.set_class(True, "inconsistent")
        fr = Text("Frontiers\n", style="bold")
        for i, p in enumerate(ex.procs):
            n = ex.cut[p]
            inside = ex.trace.count_inside(p, n)
            total = len(ex.trace.seqs[p])
            mark = "▶ " if i == ex.selected else "  "
            fr.append(f"{mark}{i:>2} {p} = {n}  ({inside}/{total} events inside)\n",
                      style="reverse" if i == ex.selected else "")
        for p in ex.order:
            if p in ex.hidden:
                inside = ex.trace.count_inside(p, ex.cut[p])
                fr.append(f"   ·· {p} = {ex.cut[p]}  ({inside}/{len(ex.trace.seqs[p])} events inside, "
                          f"lane hidden)\n", style="dim")
        fr.append(f"cut: {ex.cut_text()}", style="dim")
        self.query_one("#frontiers", Static).update(fr)
        ev = ex.selected_event()
        et = Text("Frontier event\n", style="bold")
        et.append(describe(ev, ex.trace) if ev else f"{ex.process}: no event inside the cut")
        self.query_one("#event", Static).update(et)
        ot = Text(f"Orphans ({len(ex.orphans)}{'+' if len(ex.orphans) >= ORPHAN_LIMIT else ''})\n",
                  style="bold red" if ex.orphans else "bold")
        for m in ex.orphans[:LIST_CAP]:
            ot.append(f"{m.id}: received by {m.dst} #{m.recv_seq} inside, "
                      f"sent by {m.src} #{m.send_seq} outside\n", style="red")
        if not ex.orphans:
            ot.append("none: every receive inside has its send inside\n", style="dim")
        self.query_one("#orphans", Static).update(ot)
        tt = Text(f"In transit ({len(ex.in_transit)})\n", style="bold")
        for m in ex.in_transit[:LIST_CAP]:
            where = f"received by {m.dst} #{m.recv_seq} outside" if m.recv_seq is not None \
                else "never received"
            tt.append(f"{m.id} on {m.channel}: sent by {m.src} #{m.send_seq} inside, {where}\n",
                      style="#87afff")
        if len(ex.in_transit) > LIST_CAP:
            tt.append(f"... {len(ex.in_transit) - LIST_CAP} more\n", style="dim")
        if not ex.in_transit:
            tt.append("none\n", style="dim")
        self.query_one("#transit", Static).update(tt)
