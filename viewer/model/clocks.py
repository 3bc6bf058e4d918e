"""Vector clocks, computed offline from the matched messages, and happened-before."""

from __future__ import annotations

import bisect

from .records import event_key

PER_QUERY = 20_000  # vector clocks answered one by one before the whole table is built


class ClocksMixin:
    """Vector clocks of events (part of ``Trace``); computed on first use."""

    def _vector_clocks(self):
        """Vector clocks at every receive, computed offline in a causal order.

        Component q of a vector clock is the largest seq of q's events known to
        have happened before (or be) the event. Between two receives of p only
        p's own component changes, so only receives are stored.
        """
        if self._vc is not None:
            return self._vc
        procs = self.processes
        n = len(procs)
        seqc, peer, kind, first = self._seq, self._peer, self._kind, self._start
        pos = [first[i] for i in range(n)]
        end = [first[i + 1] for i in range(n)]
        cur = [[0] * n for _ in range(n)]
        send_vc: dict[int, tuple[int, ...]] = {}  # by send row
        stored: dict[str, tuple[list[int], list[tuple[int, ...]]]] = {p: ([], []) for p in procs}
        remaining = self.n_events
        forced: set[int] = set()  # receives treated as unmatched (causal cycle)
        while remaining:
            progressed = False
            for i in range(n):
                vc, g, b, p = cur[i], pos[i], end[i], procs[i]
                st_seqs, st_vcs = stored[p]
                while g < b:
                    s = seqc[g]
                    sr = peer[g]
                    k = kind[g]
                    if k == "recv" and sr >= 0 and peer[sr] == g and g not in forced:
                        svc = send_vc.get(sr)
                        if svc is None:
                            break  # its send is not processed yet
                        vc[i] = s
                        for j, v in enumerate(svc):
                            if v > vc[j]:
                                vc[j] = v
                        st_seqs.append(s)
                        st_vcs.append(tuple(vc))
                    else:
                        vc[i] = s
                        if k == "send" and sr >= 0:
                            send_vc[g] = tuple(vc)
                    g += 1
                    remaining -= 1
                    progressed = True
                pos[i] = g
            if not progressed:  # a causal cycle (bad data): unblock one receive
                for i in range(n):
                    if pos[i] < end[i]:
                        forced.add(pos[i])
                        break
        self._vc = stored
        return stored

    def vector_clock(self, process: str, seq: int) -> dict[str, int]:
        """The vector clock of event ``(process, seq)``, as ``{process: seq}``.

        The first ``PER_QUERY`` are answered one at a time from the pair indexes
        (``_past``: a few binary searches, whatever the trace's length, so the
        viewer's causality key answers at once on a million events); past that, or
        once built, from the table of every receive's clock (``_vector_clocks``: a
        pass over the whole trace, for a reader that asks about every event)."""
        if self._vc is None and getattr(self, "_vc_queries", 0) < PER_QUERY:
            self._vc_queries = getattr(self, "_vc_queries", 0) + 1
            return self._past(process, seq)
        stored = self._vector_clocks()
        seqs, vcs = stored[process]
        i = bisect.bisect_right(seqs, seq)
        base = vcs[i - 1] if i else (0,) * len(self.processes)
        out = dict(zip(self.processes, base))
        out[process] = seq
        return out

    def _past(self, process: str, seq: int) -> dict[str, int]:
        """The vector clock of one event, as the least fixpoint over the pair indexes:
        process r's component f brings in, from each sender q, the largest send seq
        among r's first receives up to f (``PairIndex.need_at``); repeated until no
        component grows (at most one round per hop of the longest message chain)."""
        v = dict.fromkeys(self.processes, 0)
        if process not in v:
            return v
        v[process] = seq
        pairs = [(q, r, pair) for (q, r), pair in self.pairs.items() if q != r]
        changed = True
        while changed:
            changed = False
            for q, r, pair in pairs:
                f = v[r]
                if f:
                    need = pair.need_at(f)
                    if need > v[q]:
                        v[q] = need
                        changed = True
        v[process] = seq
        return v

    def happened_before(self, e1, e2) -> bool:
        """Whether event ``e1`` happened before ``e2`` (strictly), by vector clocks."""
        p1, s1 = event_key(e1)
        p2, s2 = event_key(e2)
        if (p1, s1) == (p2, s2):
            return False
        return s1 <= self.vector_clock(p2, s2).get(p1, 0)

    def concurrent(self, e1, e2) -> bool:
        return event_key(e1) != event_key(e2) and not self.happened_before(e1, e2) and not self.happened_before(e2, e1)
