"""Cuts as text (``p=N,q=M``) and the cut of a stored snapshot."""

from __future__ import annotations

from typing import Mapping


def snapshot_cut(snapshot: Mapping) -> dict[str, int]:
    if snapshot is None:
        raise KeyError("no such snapshot")
    return {p: int(v["event_seq"]) - 1 for p, v in snapshot.get("processes", {}).items()}


def format_cut(cut: Mapping[str, int]) -> str:
    return ",".join(f"{p}={n}" for p, n in cut.items())


def parse_cut(text: str) -> dict[str, int]:
    """``"p=N,q=M"`` to ``{p: N, q: M}``; each part splits at its last ``=``. Raises ValueError."""
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, n = part.rpartition("=")
        if not sep or not name:
            raise ValueError(f"not p=N: {part!r}")
        try:
            out[name] = int(n)
        except ValueError:
            raise ValueError(f"not a number of events: {part!r}") from None
        if out[name] < 0:
            raise ValueError(f"negative frontier: {part!r}")
    if not out:
        raise ValueError("empty cut")
    return out
