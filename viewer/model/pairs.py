"""The pair index: the matched messages from one process to another, as integer arrays.

Consistency, the nearest consistent cuts and the in-transit and orphan sets
cost a few binary searches per pair of processes, not a scan of the trace.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from array import array
from typing import Iterator


class PairIndex:
    """The messages from one process to another that were received, indexed two ways.

    Plain integer arrays: the seqs of the first receives (in receive order) with
    the largest send seq among them so far, and the sends (in send order) with
    their receive seqs and their rows in the trace (``Trace._message(row)``
    makes the ``Message``).
    """

    __slots__ = ("recv_seqs", "need", "send_seqs", "send_rows", "by_send_recv", "suf_min_recv",
                 "pre_max_recv")

    def __init__(self, send_seqs: array, recv_seqs: array, send_rows: array):
        # Built in receive order (the receiver's events are visited in seq order).
        if any(map(operator.gt, recv_seqs, itertools.islice(recv_seqs, 1, None))):
            o = sorted(range(len(recv_seqs)), key=recv_seqs.__getitem__)
            send_seqs = array("q", map(send_seqs.__getitem__, o))
            recv_seqs = array("q", map(recv_seqs.__getitem__, o))
            send_rows = array("q", map(send_rows.__getitem__, o))
        self.recv_seqs = recv_seqs
        if any(map(operator.gt, send_seqs, itertools.islice(send_seqs, 1, None))):
            # need[i]: the largest send seq among the first i+1 receives (non-decreasing).
            self.need = array("q", itertools.accumulate(send_seqs, max))
            o = sorted(range(len(send_seqs)), key=send_seqs.__getitem__)
            self.send_seqs = array("q", map(send_seqs.__getitem__, o))
            self.send_rows = array("q", map(send_rows.__getitem__, o))
            rs = array("q", map(recv_seqs.__getitem__, o))
            self.pre_max_recv = array("q", itertools.accumulate(rs, max))
            self.suf_min_recv = array("q", itertools.accumulate(reversed(rs), min))
            self.suf_min_recv.reverse()
        else:  # a FIFO channel: send order is receive order, and every prefix max is itself
            self.need = self.send_seqs = send_seqs
            self.send_rows, rs = send_rows, recv_seqs
            self.pre_max_recv = self.suf_min_recv = recv_seqs
        self.by_send_recv = rs

    def need_at(self, frontier: float) -> int:
        """The largest send seq that the receiver's events up to ``frontier`` depend on."""
        i = bisect.bisect_right(self.recv_seqs, frontier)
        return self.need[i - 1] if i else 0

    def first_orphan_recv(self, recv_frontier: float, send_frontier: float) -> int | None:
        """Seq of the receiver's first receive whose send is beyond ``send_frontier``."""
        i = bisect.bisect_right(self.need, send_frontier)
        if i < len(self.recv_seqs) and self.recv_seqs[i] <= recv_frontier:
            return self.recv_seqs[i]
        return None

    def orphans(self, recv_frontier: float, send_frontier: float) -> Iterator[int]:
        """Rows of the sends after ``send_frontier`` received at or before ``recv_frontier``."""
        j = bisect.bisect_right(self.send_seqs, send_frontier)
        n = len(self.send_seqs)
        rs, suf = self.by_send_recv, self.suf_min_recv
        while j < n and suf[j] <= recv_frontier:
            if rs[j] <= recv_frontier:
                yield self.send_rows[j]
            j += 1

    def in_transit(self, recv_frontier: float, send_frontier: float) -> list[int]:
        """Rows of the sends at or before ``send_frontier`` received after ``recv_frontier``."""
        j = bisect.bisect_right(self.send_seqs, send_frontier) - 1
        rs, pre = self.by_send_recv, self.pre_max_recv
        out = []
        while j >= 0 and pre[j] > recv_frontier:
            if rs[j] > recv_frontier:
                out.append(self.send_rows[j])
            j -= 1
        out.reverse()
        return out
