"""The lattice of consistent cuts, walked lazily level by level."""

from __future__ import annotations

import bisect
from typing import Iterator, Mapping


class LatticeMixin:
    """The consistent cuts of a trace (part of ``Trace``)."""

    def _dep(self, g: int) -> tuple[int, int] | None:
        """(sender index, send seq) if row ``g`` is the first receive of a matched message."""
        s = self._peer[g]
        if s >= 0 and self._kind[g] == "recv" and self._peer[s] == g:
            return (self._pid[s], self._seq[s])
        return None

    def lattice(self, limit: int | None = 10_000, start: Mapping[str, int] | None = None
                ) -> Iterator[dict[str, int]]:
        """The consistent cuts, lazily, breadth-first by level (events inside).

        Starts at ``start`` (default: the empty cut; made consistent from below
        if it is not) and yields at most ``limit`` cuts (None: all of them,
        which is exponential in the number of processes).
        """
        procs = self.processes
        seqs = [self.seqs[p] for p in procs]
        first = self._start
        dep = self._dep
        s0 = self.nearest_below(start) if start is not None else self.bottom()
        level = {tuple(bisect.bisect_right(seqs[i], s0.get(p, 0)) for i, p in enumerate(procs))}
        produced = 0
        while level:
            nxt: set[tuple[int, ...]] = set()
            for c in sorted(level):
                yield {p: (seqs[i][c[i] - 1] if c[i] else 0) for i, p in enumerate(procs)}
                produced += 1
                if limit is not None and produced >= limit:
                    return
                for i in range(len(procs)):
                    k = c[i]
                    if k >= len(seqs[i]):
                        continue
                    d = dep(first[i] + k)
                    if d is not None:
                        j, s = d
                        if not (c[j] and seqs[j][c[j] - 1] >= s):
                            continue
                    nxt.add(c[:i] + (k + 1,) + c[i + 1:])
            level = nxt

    # -- stepping through consistent cuts, one event at a time ----------------------------

    def _can_add(self, cut: Mapping[str, int], i: int) -> int | None:
        """The row of process ``i``'s next event if adding it keeps ``cut`` consistent."""
        p = self.processes[i]
        k = bisect.bisect_right(self.seqs[p], cut.get(p, 0))
        g = self._start[i] + k
        if g >= self._start[i + 1]:
            return None
        d = self._dep(g)
        if d is not None:
            j, s = d
            q = self.processes[j]
            if q in cut and cut[q] < s:
                return None
        return g

    def _can_remove(self, cut: Mapping[str, int], i: int) -> int | None:
        """The row of process ``i``'s frontier event if removing it keeps ``cut`` consistent."""
        p = self.processes[i]
        k = bisect.bisect_right(self.seqs[p], cut.get(p, 0))
        if not k:
            return None
        g = self._start[i] + k - 1
        r = self._peer[g]
        if self._kind[g] == "send" and r >= 0 and self._peer[r] == g:
            q = self.processes[self._pid[r]]
            if q in cut and cut[q] >= self._seq[r]:
                return None  # its message is received inside
        return g

    def _lamport_of(self, g: int) -> int:
        return self._lam[self._srow[g]]

    def next_cut(self, cut: Mapping[str, int], process: str | None = None
                 ) -> tuple[str, dict[str, int]] | None:
        """The consistent cut with one more event, and whose event it is (None: the top).

        ``cut`` must be consistent. With ``process``, only that process's next
        event (None if it cannot join yet); else the event with the least
        Lamport clock among those that can join (the lanes' order)."""
        idx = [self._pindex[process]] if process is not None else range(len(self.processes))
        best = None
        for i in idx:
            g = self._can_add(cut, i)
            if g is not None and (best is None or (self._lamport_of(g), i) < best[0]):
                best = ((self._lamport_of(g), i), g)
        if best is None:
            return None
        g = best[1]
        p = self.processes[self._pid[g]]
        return p, {**cut, p: self._seq[g]}

    def previous_cut(self, cut: Mapping[str, int], process: str | None = None
                     ) -> tuple[str, dict[str, int]] | None:
        """The consistent cut with one event less, and whose event left (None: the bottom).

        With ``process``, only that process's frontier event; else the one with
        the greatest Lamport clock among those that can leave."""
        idx = [self._pindex[process]] if process is not None else range(len(self.processes))
        best = None
        for i in idx:
            g = self._can_remove(cut, i)
            if g is not None and (best is None or (self._lamport_of(g), i) > best[0]):
                best = ((self._lamport_of(g), i), g)
        if best is None:
            return None
        g = best[1]
        p = self.processes[self._pid[g]]
        return p, {**cut, p: self.step(p, self._seq[g], -1)}

    def lattice_size(self, limit: int = 200_000) -> tuple[int, bool]:
        """How many consistent cuts the trace has: ``(n, True)``, or ``(limit, False)``
        when there are more than ``limit`` (the count is exponential in the number
        of processes; the walk keeps one level of cuts in memory)."""
        n = 0
        for _ in self.lattice(limit=limit + 1):
            n += 1
        return (n, True) if n <= limit else (limit, False)
