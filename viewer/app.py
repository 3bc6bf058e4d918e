"""``cutscope view``: the Textual app.

Every load from the store runs in a ``@work(thread=True, exclusive=True)``
worker and reports back with a small message (``messages.py``). With
``follow`` on, a timer asks the store (in a worker too) whether it holds more
events or snapshots than the loaded trace, and reloads when it does, keeping
the cut: a frontier that was at the end of its process follows the new
events, the others stay where the user put them.
"""

from __future__ import annotations

import gc
import os
import threading
import time

from textual import work
from textual.app import App
from textual.binding import Binding

from .model import Trace
from .explorer import Explorer
from .messages import LoadFailed, Rendered, SnapshotResult, TraceChanged, TraceLoaded
from .screens import MainScreen

POLL_S = 1.0
# Following waits at least FOLLOW_FACTOR times the last load's duration between
# two reloads: a million-event trace (seconds a load) is reloaded every ~20 s,
# not back to back, so the viewer does not take a core from the system it shows.
FOLLOW_FACTOR = 4.0


class CutscopeApp(App):
    """Explore a trace and its consistent cuts."""

    CSS_PATH = "viewer.tcss"
    TITLE = "cutscope"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, db: str | None = None, doc: dict | None = None, follow: bool = True,
                 poll: float = POLL_S, view: dict | None = None):
        super().__init__()
        self.view = view  # a saved view (views.read_view) to open the first load at
        self.view_note = ""
        self.db = db
        self._fixed_doc = doc
        self.follow = follow and doc is None
        self.poll_s = poll
        self.doc: dict | None = None
        self.explorer: Explorer | None = None
        self.stamp: tuple = ()
        self.loads = 0
        self._store = None
        self._store_lock = threading.Lock()
        self._loading = False
        self._load_t0 = 0.0
        self.follow_every = poll  # seconds between two looks at the store (adapted)
        self._next_look = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        self.sub_title = self.db or "document"
        self.load()
        if self.db is not None:
            self.set_interval(self.poll_s, self._poll)

    def on_unmount(self) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def main(self) -> MainScreen | None:
        for s in self.screen_stack:
            if isinstance(s, MainScreen):
                return s
        return None

    def _open(self):
        with self._store_lock:  # the load and poll workers may both get here first
            if self._store is None:
                from cutscope.tracer.store import open_store

                self._store = open_store(self.db, create=False)
            return self._store

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        self._loading = True
        self._load_t0 = time.monotonic()
        prev = None
        if self.explorer is not None:
            ex = self.explorer
            prev = (dict(ex.cut), {p: ex.trace.last_seq(p) for p in ex.order}, ex.process,
                    ex.filter_text, (list(ex.order), set(ex.hidden), ex.collapse, ex.packed,
                                     ex._ungrouped if ex.grouped else None))
        self._load(prev)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, prev) -> None:
        # A large trace is millions of small objects. Left to the cycle collector,
        # they cost a full collection of several seconds (holding the GIL, so the
        # screen freezes) during the load and again at some later key press. They
        # hold no cycles (reference counting frees them), so the collector is off
        # while loading and what was loaded is frozen out of its reach afterwards.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._load_into(prev)
        finally:
            gc.freeze()
            if enabled:
                gc.enable()

    def _load_into(self, prev) -> None:
        try:
            if self._fixed_doc is not None:
                doc, stamp = self._fixed_doc, ()
                trace = Trace(doc)
            else:
                store = self._open()
                stamp = store.stamp()
                # The events go from the store's blocks straight into the analysis's
                # columns: no dict per event (app.doc has "events": []). A reload
                # reads only the blocks written since the loaded trace's.
                old = self.explorer.trace if self.explorer is not None else None
                trace = Trace.from_store(store, previous=old)
                doc = trace.doc
            ex = Explorer(trace)
            if prev is not None:
                cut, last, selected, filt, (order, hidden, collapse, packed, grouped) = prev
                keep = {p: n for p, n in cut.items() if p in ex.cut and n < last.get(p, 0)}
                ex.set_cut(keep)
                if order != ex.order or hidden:
                    ex.order = [p for p in order if p in ex.order] + [p for p in ex.order if p not in order]
                    ex.set_hidden(hidden)
                if collapse:
                    ex.toggle_collapse()
                if packed:
                    ex.toggle_packed()
                if grouped is not None:  # the grouped order is kept; ungrouping restores the old
                    ex.grouped, ex._ungrouped = True, grouped
                if selected in ex.pindex:
                    ex.selected = ex.pindex[selected]
                if filt:
                    ex.set_filter(filt)
            elif self.view is not None:
                from .views import apply_view

                self.view_note = apply_view(ex, self.view)
        except Exception as exc:  # a store that went bad under us: say it, keep running
            self.post_message(LoadFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(TraceLoaded(doc, ex, stamp, trace.n_events))
        ex.warm()  # after the first screen: what hiding a lane reads

    def on_trace_loaded(self, msg: TraceLoaded) -> None:
        self._loading = False
        first = self.explorer is None
        self.doc, self.explorer, self.stamp = msg.doc, msg.explorer, msg.stamp
        self.loads += 1
        now = time.monotonic()
        self.follow_every = max(self.poll_s, FOLLOW_FACTOR * (now - self._load_t0))
        self._next_look = now + self.follow_every
        screen = self.main
        if screen is not None:
            screen.show_trace(scroll=first)
            ex = msg.explorer
            screen.set_status(f"{msg.events} events, {len(ex.procs)} processes, "
                              f"{len(msg.doc.get('snapshots', []))} snapshots"
                              + (self._following() if self.follow else "")
                              + (", the saved view opened" if first and self.view is not None else "")
                              + (f" ({self.view_note})" if first and self.view_note else ""))

    def on_load_failed(self, msg: LoadFailed) -> None:
        self._loading = False
        if self.main is not None:
            self.main.set_status(f"cannot load the trace: {msg.error}")

    def _following(self) -> str:
        if self.follow_every <= 2 * self.poll_s:
            return "  (following)"
        return f"  (following, every {self.follow_every:.0f} s)"

    def _poll(self) -> None:
        if self.follow and not self._loading and self.db is not None and \
                time.monotonic() >= self._next_look:
            self._check_stamp()

    @work(thread=True, exclusive=True, group="poll")
    def _check_stamp(self) -> None:
        try:
            stamp = self._open().stamp()
        except Exception:
            return
        if stamp != self.stamp:
            self.post_message(TraceChanged(stamp))

    def on_trace_changed(self, msg: TraceChanged) -> None:
        if not self._loading:
            self.load()

    # -- render / snapshot ---------------------------------------------------------------

    def render_path(self, prefix: str = "cutscope-cut", ext: str = "svg") -> str:
        """Where the render (and save-view) key writes: next to the SQLite file, else the
        working directory."""
        base = os.getcwd()
        if self._store is not None and getattr(self._store, "sqlite", False):
            from sqlalchemy.engine import make_url

            dbfile = make_url(self._store.url).database
            if dbfile and dbfile != ":memory:":
                base = os.path.dirname(os.path.abspath(dbfile))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(base, f"{prefix}-{stamp}.{ext}")
        n = 1
        while os.path.exists(path):
            n += 1
            path = os.path.join(base, f"{prefix}-{stamp}-{n}.{ext}")
        return path

    def render_cut(self) -> None:
        if self.explorer is None:
            return
        if self.db is not None:
            self._open()
        path = self.render_path()
        if self.main is not None:
            self.main.set_status(f"rendering to {path} ...")
        ex = self.explorer
        self._render(dict(ex.cut), path, list(ex.procs), set(ex.hidden))

    @work(thread=True, exclusive=True, group="render")
    def _render(self, cut: dict, path: str, order: list, hidden: set) -> None:
        """The cut drawn with the explorer's lanes: their order (groups adjacent when
        grouped) and its hidden lanes."""
        from .render import render_file

        try:
            render_file(self.explorer.trace, cut, path, title="cut from the viewer", order=order,
                        hidden=hidden)
        except Exception as exc:
            self.post_message(Rendered(None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(Rendered(path))

    def on_rendered(self, msg: Rendered) -> None:
        self.last_render = msg.path
        text = f"rendered the cut to {msg.path}" if msg.path else f"render failed: {msg.error}"
        if self.main is not None:
            self.main.set_status(text)
        self.notify(text, severity="information" if msg.path else "error")

    def save_view(self) -> None:
        from .views import save_view

        if self.explorer is None:
            return
        if self.db is not None:
            self._open()
        path = self.render_path("cutscope-view", "json")
        try:
            save_view(self.explorer, path)
            text = f"saved the view to {path} (reopen: cutscope view --open {path})"
        except OSError as exc:
            text = f"could not save the view: {exc.strerror or exc}"
        if self.main is not None:
            self.main.set_status(text)

    def take_snapshot(self) -> None:
        if self.db is None:
            self.post_message(SnapshotResult("taking a snapshot needs a live store (--db)", False))
            return
        if self.main is not None:
            self.main.set_status("taking a snapshot of the live system ...")
        self._snapshot()

    @work(thread=True, exclusive=True, group="snapshot")
    def _snapshot(self) -> None:
        try:
            from cutscope.tracer.snapshot import take
        except ImportError:
            self.post_message(SnapshotResult("taking a snapshot is not available in this build", False))
            return
        try:
            snap = take(self._open(), timeout=10.0)
        except Exception as exc:
            self.post_message(SnapshotResult(f"snapshot failed: {exc}", False))
            return
        missing = getattr(snap, "missing", None)
        text = f"snapshot {snap.id}: {snap.status}"
        if missing:
            text += f" (missing {len(missing)}: {', '.join(map(str, missing))[:120]})"
        self.post_message(SnapshotResult(text, True))

    def on_snapshot_result(self, msg: SnapshotResult) -> None:
        self.last_snapshot = msg.text
        if self.main is not None:
            self.main.set_status(msg.text)
        self.notify(msg.text, severity="information" if msg.ok else "warning")
        if msg.ok and self.db is not None:
            self.load()


def run(db: str | None = None, follow: bool = True, view: dict | None = None) -> int:
    CutscopeApp(db=db, follow=follow, view=view).run()
    return 0
