"""The explorer's display rows without a list per row: the rows of the visible lanes
(``VisibleRows``) and the rows of the logical-time layout (``Layers``)."""

from __future__ import annotations

import bisect
import itertools
from array import array


class VisibleRows:
    """The display rows of the visible lanes, without a list of them: a mask (one byte a
    display row, 1 where its lane is visible) and the count of visible rows before each
    block of ``BLOCK`` rows. ``len``, ``rows[y]`` (the y-th visible row), ``rank(g)``
    (visible rows before display row ``g``) and iteration cost a block at most, so
    hiding a lane of a million events costs a few passes over the mask at C speed."""

    BLOCK = 1024

    def __init__(self, mask: bytes):
        self.mask = mask
        B = self.BLOCK
        count = mask.count
        self._before = array("q", itertools.accumulate(
            (count(1, a, a + B) for a in range(0, len(mask), B)), initial=0))

    def __len__(self) -> int:
        return self._before[-1]

    def rank(self, g: int) -> int:
        """How many visible rows come before display row ``g``."""
        B = self.BLOCK
        b = g // B
        return self._before[b] + self.mask.count(1, b * B, g)

    def __getitem__(self, y: int) -> int:
        n = len(self)
        if y < 0:
            y += n
        if not 0 <= y < n:
            raise IndexError(y)
        b = bisect.bisect_right(self._before, y) - 1
        a = b * self.BLOCK
        k = y - self._before[b]
        rows = itertools.compress(range(a, a + self.BLOCK), self.mask[a:a + self.BLOCK])
        return next(itertools.islice(rows, k, None))

    def __contains__(self, g: int) -> bool:
        return 0 <= g < len(self.mask) and self.mask[g] == 1

    def __iter__(self):
        return itertools.compress(range(len(self.mask)), self.mask)


class Layers:
    """The logical-time layout without a list per row: the display rows sorted by
    (step, row) as integer keys ``step * n + row``; row ``y`` holds the events of step
    ``y + 1`` (the steps run from 1 without a gap: an event of step k > 1 follows one of
    step k - 1), found by two binary searches. Every step keeps its row, so a row whose
    events are all in hidden lanes shows the lanes only."""

    def __init__(self, keys, n: int, step, all_g):
        self.keys, self.n, self.step, self.all_g = keys, n, step, all_g
        self._len = keys[-1] // n if len(keys) else 0

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, y: int) -> list[int]:
        if y < 0:
            y += self._len
        if not 0 <= y < self._len:
            raise IndexError(y)
        n, keys = self.n, self.keys
        a = bisect.bisect_left(keys, (y + 1) * n)
        b = bisect.bisect_left(keys, (y + 2) * n, a)
        return [k - (y + 1) * n for k in keys[a:b]]

    def of(self, r: int) -> int:
        """The row of display row ``r``."""
        return self.step[self.all_g[r]] - 1
