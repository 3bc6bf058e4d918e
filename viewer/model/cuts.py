"""Cut queries: consistency, orphans, in-transit messages, the nearest consistent cuts.

Each answer costs a few binary searches per pair of processes (``PairIndex``),
so a cut explorer can ask them on every key press of a large trace.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Mapping

from .records import Message


class CutsMixin:
    """Questions about one cut ``{process: frontier}`` (part of ``Trace``)."""

    def top(self) -> dict[str, int]:
        """The cut that holds every event."""
        return {p: self.last_seq(p) for p in self.processes}

    def bottom(self) -> dict[str, int]:
        return {p: 0 for p in self.processes}

    def _pairs_in(self, cut: Mapping[str, int]):
        for (q, p), pair in self.pairs.items():
            if q in cut and p in cut:
                yield q, p, pair

    def consistent(self, cut: Mapping[str, int]) -> bool:
        """Every receive inside the cut has its send inside."""
        for q, p, pair in self._pairs_in(cut):
            if pair.need_at(cut[p]) > cut[q]:
                return False
        return True

    def orphans(self, cut: Mapping[str, int], limit: int | None = None) -> list[Message]:
        """Messages received inside the cut but sent outside it ("from thin air")."""
        rows: list[int] = []
        for q, p, pair in self._pairs_in(cut):
            if pair.need_at(cut[p]) > cut[q]:
                rows.extend(itertools.islice(pair.orphans(cut[p], cut[q]),
                                             None if limit is None else max(0, limit - len(rows))))
            if limit is not None and len(rows) >= limit:
                break
        out = self._messages(rows)
        out.sort(key=lambda m: (m.dst, m.recv_seq))
        return out

    def in_transit(self, cut: Mapping[str, int]) -> list[Message]:
        """Messages sent inside the cut and received outside it, or never received.

        In send order per channel (sorted by channel, then send seq).
        """
        rows: list[int] = []
        for q, p, pair in self._pairs_in(cut):
            rows.extend(pair.in_transit(cut[p], cut[q]))
        out = self._messages(rows)
        for q, srows in self._unreceived_rows.items():
            if q not in cut:
                continue
            j = bisect.bisect_right(self._unreceived_seqs[q], cut[q])
            ms = self._messages(srows[:j])
            out.extend(m for m in ms if m.dst is None or m.dst in cut)
        out.sort(key=lambda m: (m.channel or "", m.src, m.send_seq))
        return out

    def nearest_below(self, cut: Mapping[str, int]) -> dict[str, int]:
        """The largest consistent cut contained in ``cut`` (orphan receives removed)."""
        c = dict(cut)
        changed = True
        while changed:
            changed = False
            for q, p, pair in self._pairs_in(c):
                r = pair.first_orphan_recv(c[p], c[q])
                if r is not None:
                    c[p] = self.step(p, r, -1)
                    changed = True
        return c

    def nearest_above(self, cut: Mapping[str, int]) -> dict[str, int]:
        """The smallest consistent cut that contains ``cut`` (missing sends added)."""
        c = dict(cut)
        changed = True
        while changed:
            changed = False
            for q, p, pair in self._pairs_in(c):
                need = pair.need_at(c[p])
                if need > c[q]:
                    c[q] = need
                    changed = True
        return c
