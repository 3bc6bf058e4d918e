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
