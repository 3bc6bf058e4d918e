"""A saved view of the explorer: the cut, the selected process, the filter, causality,
the lanes' order, the hidden lanes, whether local events are collapsed and whether
the layout is the logical-time one.

A small JSON file (``{"format": "cutscope-view", "version": 1, ...}``) written
by the viewer's ``v`` key and reopened with ``cutscope view --open FILE``.
"""

from __future__ import annotations

import json
import os

from .explorer import Explorer

FORMAT = "cutscope-view"


def view_of(ex: Explorer) -> dict:
    return {"format": FORMAT, "version": 1, "cut": dict(ex.cut), "selected": ex.process,
            "filter": ex.filter_text, "causality": ex.show_causality,
            "lanes": list(ex.order), "hidden": sorted(ex.hidden), "collapse": ex.collapse,
            "packed": ex.packed}


def save_view(ex: Explorer, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(view_of(ex), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def read_view(path: str) -> dict:
    """The view in ``path``, checked. Raises ValueError with one line on a bad file."""
    try:
        with open(path, encoding="utf-8") as f:
            view = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read the view {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not a saved view (not JSON: {exc})") from None
    if not isinstance(view, dict) or view.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved view (no \"format\": \"{FORMAT}\")")
    if view.get("version") != 1:
        raise ValueError(f"{path}: a view of version {view.get('version')!r}; this cutscope reads 1")
    cut = view.get("cut", {})
    if not isinstance(cut, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in cut.items()):
        raise ValueError(f"{path}: \"cut\" must map process names to frontiers (seqs, 0 or more)")
    if not isinstance(view.get("filter", ""), str) or not isinstance(view.get("selected", ""), str):
        raise ValueError(f"{path}: \"filter\" and \"selected\" must be text")
    for key in ("lanes", "hidden"):
        v = view.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError(f"{path}: \"{key}\" must be a list of process names")
    return view


def apply_view(ex: Explorer, view: dict) -> str:
    """Put the explorer where the view says; returns what could not be applied (or "")."""
    notes = []
    unknown = [p for p in view.get("cut", {}) if p not in ex.cut]
    if unknown:
        notes.append(f"not in this trace: {', '.join(unknown)}")
    ex.set_cut({p: n for p, n in view.get("cut", {}).items() if p in ex.cut})
    if view.get("lanes"):
        ex.set_order(view["lanes"])
    if view.get("hidden"):
        missing = [p for p in view["hidden"] if p not in ex.order]
        if missing:
            notes.append(f"hidden lanes not in this trace: {', '.join(missing)}")
        ex.set_hidden(view["hidden"])
    if bool(view.get("collapse")) != ex.collapse:
        ex.toggle_collapse()
    if bool(view.get("packed")) != ex.packed:
        ex.toggle_packed()
    if view.get("selected") in ex.pindex:
        ex.selected = ex.pindex[view["selected"]]
    if view.get("filter"):
        try:
            ex.set_filter(view["filter"])
        except ValueError as exc:
            notes.append(f"filter: {exc}")
    if bool(view.get("causality")) != ex.show_causality:
        ex.toggle_causality()
    ex.recompute()
    return "; ".join(notes)
