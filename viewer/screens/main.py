"""The cut explorer: the lanes, the cut panel, and the keys that move the cut."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from ..explorer import Explorer
from ..messages import CutChanged, FilterDone, PredicateDone
from ..widgets import CutPanel, LaneHeader, Lanes, Minimap


class MainScreen(Screen):
    """Move each process's frontier and see at once what the cut is."""

    AUTO_FOCUS = None  # the keys belong to the explorer until the filter box is opened

    BINDINGS = [
        Binding("left", "select(-1)", "Process", key_display="←"),
        Binding("right", "select(1)", "Process", key_display="→", show=False),
        Binding("up", "move(-1)", "Frontier", key_display="↑"),
        Binding("down", "move(1)", "Frontier", key_display="↓", show=False),
        Binding("shift+up", "move(-10)", "Frontier -10", show=False),
        Binding("shift+down", "move(10)", "Frontier +10", show=False),
        Binding("home", "frontier_edge(0)", "Frontier to start", show=False),
        Binding("end", "frontier_edge(1)", "Frontier to end", show=False),
        Binding("b", "nearest('below')", "Consistent below"),
        Binding("a", "nearest('above')", "Consistent above"),
        Binding("t", "whole", "Whole trace"),
        Binding("right_square_bracket", "lattice(1, False)", "Next cut", key_display="]"),
        Binding("left_square_bracket", "lattice(-1, False)", "Previous cut", key_display="[",
                show=False),
        Binding("right_curly_bracket", "lattice(1, True)", "Next cut (process)", key_display="}",
                show=False),
        Binding("left_curly_bracket", "lattice(-1, True)", "Previous cut (process)", key_display="{",
                show=False),
        Binding("l", "lattice_size", "Lattice size", show=False),
        Binding("c", "causality", "Causality"),
        Binding("o", "other_end", "Other end"),
        Binding("greater_than_sign", "follow(1)", "Chain forward", key_display=">", show=False),
        Binding("less_than_sign", "follow(-1)", "Chain back", key_display="<", show=False),
        Binding("h", "hide", "Hide lane"),
        Binding("H", "show_all", "Show lanes", show=False),
        Binding("x", "collapse", "Collapse locals", show=False),
        Binding("shift+left", "move_lane(-1)", "Lane left", show=False),
        Binding("shift+right", "move_lane(1)", "Lane right", show=False),
        Binding("right_parenthesis", "follow_chain(1)", "Whole chain forward", key_display=")",
                show=False),
        Binding("left_parenthesis", "follow_chain(-1)", "Whole chain back", key_display="(",
                show=False),
        Binding("z", "packed", "Logical-time layout", show=False),
        Binding("G", "group", "Group lanes", show=False),
        Binding("n", "replay(1)", "Replay", show=False),
        Binding("N", "replay(-1)", "Replay back", show=False),
        Binding("p", "snapshots", "Snapshots"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("w", "predicate", "Predicate"),
        Binding("r", "render", "Render SVG"),
        Binding("v", "save_view", "Save view", show=False),
        Binding("s", "take_snapshot", "Take snapshot"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("g", "goto", "Go to frontier", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield LaneHeader(id="lane-header")
                with Horizontal(id="lanes-row"):
                    yield Lanes(id="lanes")
                    yield Minimap(id="minimap")
            yield CutPanel(id="panel")
        yield Input(placeholder="filter: p:PROCESS k:KIND text, field=value field~regex /regex/ "
                                "a && b || c  (Enter applies, empty clears)", id="filter", disabled=True)
        yield Input(placeholder="predicate: [possibly|definitely] P: EXPR && Q: EXPR  (Enter asks, "
                                "Escape closes)", id="predicate", disabled=True)
        yield Static("loading ...", id="status")
        yield Footer()

    # -- model -> view -------------------------------------------------------------------

    @property
    def explorer(self) -> Explorer | None:
        return getattr(self.app, "explorer", None)

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    def show_trace(self, scroll: bool = True) -> None:
        ex = self.explorer
        lanes = self.query_one(Lanes)
        self.query_one(LaneHeader).set_explorer(ex)
        self.query_one(Minimap).set_explorer(ex)
        self._header_height()
        lanes.set_explorer(ex)
        self.refresh_cut(scroll=scroll)

    def refresh_cut(self, scroll: bool = True) -> None:
        ex = self.explorer
        lanes = self.query_one(Lanes)
        panel = self.query_one(CutPanel)
        panel.show(ex)
        if ex is None:
            return
        ev = ex.selected_event()
        lanes.peer = ex.trace.peer(ev) if ev is not None else None
        lanes._cache.clear()
        lanes.refresh()
        self.query_one(LaneHeader).refresh()
        if scroll:
            self.action_goto()
        lanes.update_minimap()
        self.post_message(CutChanged(dict(ex.cut), ex.consistent))

    def on_lanes_view_moved(self, message: Lanes.ViewMoved) -> None:
        for m in self.query(Minimap):
            m.set_view(message.first, message.height)
            m.refresh()

    def on_minimap_jump(self, message: Minimap.Jump) -> None:
        for lanes in self.query(Lanes):
            h = max(1, lanes.size.height)
            lanes.scroll_to(y=max(0, message.row - h // 2), animate=False)

    # -- actions -------------------------------------------------------------------------

    def action_select(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            ex.select(delta)
            self.refresh_cut()

    def action_move(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            ex.move(delta)
            self.refresh_cut()

    def action_frontier_edge(self, end: int) -> None:
        ex = self.explorer
        if ex is not None and ex.process:
            ex.set_frontier(ex.process, ex.trace.last_seq(ex.process) if end else 0)
            self.refresh_cut()

    def action_nearest(self, which: str) -> None:
        ex = self.explorer
        if ex is None:
            return
        before = dict(ex.cut)
        ex.nearest_below() if which == "below" else ex.nearest_above()
        moved = [f"{p} {before[p]}->{n}" for p, n in ex.cut.items() if before[p] != n]
        self.set_status(f"nearest consistent cut {which}: " + (", ".join(moved) or "already consistent"))
        self.refresh_cut()

    def action_lattice(self, delta: int, only_selected: bool) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.lattice_step(delta, only_selected))
            self.refresh_cut()

    def action_causality(self) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.toggle_causality())
            self.refresh_cut(scroll=False)

    def action_other_end(self) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.jump_to_peer())
            self.refresh_cut()

    def action_follow(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.follow(delta))
            self.refresh_cut()

    def _lanes_changed(self, text: str) -> None:
        self.set_status(text)
        self._header_height()
        self.query_one(Lanes).refresh_rows()
        self.refresh_cut()

    def action_hide(self) -> None:
        ex = self.explorer
        if ex is not None:
            self._lanes_changed(ex.hide())

    def action_show_all(self) -> None:
        ex = self.explorer
        if ex is not None:
            self._lanes_changed(ex.show_all())

    def _header_height(self) -> None:
        ex = self.explorer
        self.query_one(LaneHeader).styles.height = 2 if ex is not None and ex.grouped else 1

    def action_group(self) -> None:
        ex = self.explorer
        if ex is not None:
            self._lanes_changed(ex.toggle_grouped())

    def action_packed(self) -> None:
        from .. import explorer as explorer_module

        ex = self.explorer
        if ex is None:
            return
        if not ex.packed and ex._packkeys is None and len(ex.all_g) > explorer_module.SYNC_FILTER_EVENTS:
            # A large trace: the steps (one pass over every event) in a worker; the
            # screen stays live meanwhile.
            self.set_status(f"logical-time layout: computing the steps of {len(ex.all_g)} events ...")
            self._steps_in_worker(ex)
            return
        self._lanes_changed(ex.toggle_packed())

    @work(thread=True, exclusive=True, group="packed")
    def _steps_in_worker(self, ex: Explorer) -> None:
        ex._pack_keys()  # the steps and their order, kept: the layout is then drawn lazily
        self.app.call_from_thread(self._steps_ready, ex)

    def _steps_ready(self, ex: Explorer) -> None:
        if ex is self.explorer and not ex.packed:
            self._lanes_changed(ex.toggle_packed())

    def action_collapse(self) -> None:
        ex = self.explorer
        if ex is not None:
            self._lanes_changed(ex.toggle_collapse())

    def action_move_lane(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            self._lanes_changed(ex.move_lane(delta))

    def action_follow_chain(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.follow_chain(delta))
            self.refresh_cut()

    def action_replay(self, delta: int) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status(ex.replay_step(delta))
            self.refresh_cut()

    def action_lattice_size(self) -> None:
        ex = self.explorer
        if ex is not None:
            self.set_status("lattice: counting the consistent cuts ...")
            self._count_lattice(ex)

    @work(thread=True, exclusive=True, group="lattice")
    def _count_lattice(self, ex: Explorer) -> None:
        n, exact = ex.trace.lattice_size()
        text = f"lattice: {n} consistent cuts" if exact else \
            f"lattice: more than {n} consistent cuts (counting stops there)"
        self.app.call_from_thread(self._lattice_counted, ex, text)

    def _lattice_counted(self, ex: Explorer, text: str) -> None:
        if ex is self.explorer:
            self.set_status(text)

    def action_whole(self) -> None:
        ex = self.explorer
        if ex is not None:
            ex.set_cut(ex.trace.top())
            self.refresh_cut()

    def action_goto(self) -> None:
        """Scroll the lanes to the selected process's frontier."""
        ex = self.explorer
        if ex is None or not len(ex):
            return
        f = ex.frontiers[ex.selected] if ex.procs else -1
        lanes = self.query_one(Lanes)
        lanes.scroll_to_row(ex.nearest_row(max(f, 0)))

    def action_page(self, direction: int) -> None:
        lanes = self.query_one(Lanes)
        lanes.scroll_to(y=lanes.scroll_offset.y + direction * max(1, lanes.size.height - 1),
                        animate=False)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("visible")
        box.focus()

    def action_clear_filter(self) -> None:
        pbox = self.query_one("#predicate", Input)
        if pbox.has_class("visible"):
            self._hide_filter(pbox)
            return
        box = self.query_one("#filter", Input)
        box.value = ""
        self._apply_filter("")
        self._hide_filter(box)

    def action_predicate(self) -> None:
        box = self.query_one("#predicate", Input)
        box.disabled = False
        box.add_class("visible")
        box.focus()

    def _ask_predicate(self, text: str) -> None:
        from ..model import parse_predicate

        ex = self.explorer
        if ex is None or not text.strip():
            return
        try:
            modality, phi = parse_predicate(text, ex.trace.processes)
        except ValueError as exc:
            self.set_status(f"predicate: {exc}")
            return
        shown = " && ".join(f"{p}: {e.text}" for p, e in phi.items())
        self.set_status(f"{modality}({shown}): asking ...")
        self._predicate_in_worker(ex, shown, modality, phi)

    @work(thread=True, exclusive=True, group="predicate")
    def _predicate_in_worker(self, ex: Explorer, text: str, modality: str, phi: dict) -> None:
        try:
            ans = ex.trace.possibly(phi) if modality == "possibly" else ex.trace.definitely(phi)
        except ValueError as exc:
            self.post_message(PredicateDone(ex, text, error=str(exc)))
            return
        self.post_message(PredicateDone(ex, text, answer=ans))

    def on_predicate_done(self, msg: PredicateDone) -> None:
        ex = self.explorer
        if ex is not msg.explorer:  # the trace was reloaded meanwhile
            return
        if msg.error is not None:
            self.set_status(f"predicate: {msg.error}")
            return
        ans = msg.answer
        if not ans.holds:
            self.set_status(f"{ans.modality}({msg.text}): does not hold")
            return
        ex.set_cut(ans.cut)
        self.set_status(f"{ans.modality}({msg.text}): holds; the cursor is on the witness cut "
                        f"{ex.cut_text()}")
        self.refresh_cut()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "predicate":
            self._hide_filter(event.input)
            self._ask_predicate(event.value)
            return
        if event.input.id == "filter":
            self._apply_filter(event.value)
            if not event.value.strip():
                self._hide_filter(event.input)
            else:
                self.set_focus(None)

    def _hide_filter(self, box: Input) -> None:
        box.remove_class("visible")
        box.disabled = True
        self.set_focus(None)

    def _apply_filter(self, text: str) -> None:
        ex = self.explorer
        if ex is None:
            return
        self._filter_seq = getattr(self, "_filter_seq", 0) + 1  # a later filter wins
        if Explorer.filter_is_slow(text, len(ex.all_g)):
            # Free text on a large trace describes every event: seconds of work,
            # done in a worker so that the screen stays live meanwhile.
            self.set_status(f"filtering {len(ex.all_g)} events for {text.strip()!r} ...")
            self._filter_in_worker(ex, text, self._filter_seq)
            return
        try:
            ex.set_filter(text)
        except ValueError as exc:
            self.set_status(f"filter: {exc}")
            return
        self._show_filter(ex)

    @work(thread=True, exclusive=True, group="filter")
    def _filter_in_worker(self, ex: Explorer, text: str, seq: int) -> None:
        try:
            rows = ex.filter_rows(text)
        except ValueError as exc:
            self.app.call_from_thread(self.set_status, f"filter: {exc}")
            return
        self.post_message(FilterDone(ex, text.strip(), rows, seq))

    def on_filter_done(self, msg: FilterDone) -> None:
        ex = self.explorer
        # Stale: the trace was reloaded meanwhile (a reload filters itself), or
        # another filter was applied or cleared since.
        if ex is not msg.explorer or msg.seq != getattr(self, "_filter_seq", 0):
            return
        ex.set_filter_rows(msg.text, msg.rows)
        self._show_filter(ex)

    def _show_filter(self, ex: Explorer) -> None:
        ex.generation += 1
        self.query_one(Lanes).refresh_rows()
        shown, inside = ex.hit_counts()
        self.set_status(f"filter {ex.filter_text!r}: {shown} of {len(ex.all_g)} events match, "
                        f"{inside} of them inside the cut" if ex.filter_text
                        else f"{len(ex)} events")
        self.action_goto()

    def action_snapshots(self) -> None:
        from .snapshots import SnapshotsScreen

        doc = getattr(self.app, "doc", None)
        if doc is None:
            return

        def apply(cut) -> None:
            ex = self.explorer
            if cut and ex is not None:
                ex.set_snapshot_cut(cut)
                self.set_status(f"cut of the snapshot: {ex.cut_text()}")
                self.refresh_cut()

        self.app.push_screen(SnapshotsScreen(doc), apply)

    def action_render(self) -> None:
        self.app.render_cut()

    def action_save_view(self) -> None:
        self.app.save_view()

    def action_take_snapshot(self) -> None:
        self.app.take_snapshot()

    def action_toggle_follow(self) -> None:
        self.app.follow = not self.app.follow
        self.set_status("following the live trace" if self.app.follow else "not following")
