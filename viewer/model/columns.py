"""The trace columns: events sorted by (process, seq) into arrays, rows made into dicts on demand.

Each process's events are a contiguous range of rows. The columns the analysis
walks (seq, kind, msg) are in that order; the others (Lamport clock, channel,
wall time, bytes) stay in the order read and are reached through ``_srow``.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
from array import array
from collections.abc import Sequence
from typing import Iterable

from cutscope.tracer.process import FAST  # the C extension, or None
from cutscope.tracer.store.codec import EncodedBlock, decode_columns
from cutscope.tracer.store.document import event_doc


class ProcessIndex(dict):
    """Process name -> index, a new name taking the next index."""

    def __missing__(self, name: str) -> int:
        i = self[name] = len(self)
        return i


class ProcessEvents(Sequence):
    """One process's events, in seq order, as event dicts made on demand."""

    __slots__ = ("_t", "_a", "_b")

    def __init__(self, trace: "Trace", a: int, b: int):
        self._t, self._a, self._b = trace, a, b

    def __len__(self) -> int:
        return self._b - self._a

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._t._event_dict(self._a + k) for k in range(*i.indices(len(self)))]
        n = self._b - self._a
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("event index out of range")
        return self._t._event_dict(self._a + i)

    def __iter__(self):
        ev = self._t._event_dict
        return map(ev, range(self._a, self._b))

    def __repr__(self) -> str:
        return f"<{len(self)} events>"



class ColumnsMixin:
    """Building the columns, and reading events and frontiers from them (part of ``Trace``)."""

    def _from_dicts(self, names: dict, evs: list[dict]) -> None:
        pindex = ProcessIndex((p, i) for i, p in enumerate(names))
        self._derived = False  # every message id is written out
        self._raw = None
        self._extra: dict[int, tuple] = {}
        self._wall = self._nb = None
        self._dicts: list[dict] | None = evs
        self._columns(pindex, array("i", [pindex[e["process"]] for e in evs]),
                      array("q", [int(e["seq"]) for e in evs]),
                      array("q", [e.get("lamport") or 0 for e in evs]),
                      [e["kind"] for e in evs], [e.get("channel") for e in evs],
                      [e.get("msg") or None for e in evs])

    def _from_rows(self, names: dict, blocks: Iterable, previous=None) -> None:
        """The columns from the store's raw event tuples, block by block (a block: a
        list of tuples, or an ``EncodedBlock`` decoded by ``decode_columns``). ``previous``:
        a trace read from the same store (``_raw``, the columns in the order read),
        whose rows come first (copied), then ``blocks``, the blocks written since."""
        if previous is not None:
            pindex = ProcessIndex((p, i) for i, p in enumerate(previous.processes))
            pid, seq, lam, wall, kind, ch, msg, nb, extra = (
                c.copy() if hasattr(c, "copy") else c[:] for c in previous._raw)
        else:
            pindex = ProcessIndex((p, i) for i, p in enumerate(names))
            pid, seq, lam, wall = array("i"), array("q"), array("q"), array("q")
            kind: list[str] = []
            ch: list = []
            msg: list = []
            nb: list = []
            extra: dict[int, tuple] = {}
        get = pindex.__getitem__
        for rows in blocks:
            if type(rows) is EncodedBlock:  # decoded straight into columns
                base = len(seq)
                bpid, bseq, blam, bwall, bkind, bch, bmsg, bnb, bextra = decode_columns(rows, pindex)
                pid.frombytes(bpid)
                seq.frombytes(bseq)
                lam.frombytes(blam)
                wall.frombytes(bwall)
                kind.extend(bkind)
                ch.extend(bch)
                msg.extend(bmsg)
                nb.extend(bnb)
                for i, pl, d in bextra:
                    extra[base + i] = (pl, d)
                del bpid, bseq, blam, bwall, bkind, bch, bmsg, bnb, bextra
                continue
            if not rows:
                continue
            base = len(seq)
            c = list(zip(*rows))
            pid.extend(map(get, c[0]))
            seq.extend(c[1])
            lam.extend(c[2])
            wall.extend(c[3])
            kind.extend(c[4])
            ch.extend(c[5])
            msg.extend(c[6])
            nb.extend(c[7])
            if c[8].count(None) != len(rows) or c[9].count(None) != len(rows):
                for i, (pl, d) in enumerate(zip(c[8], c[9])):
                    if pl is not None or d is not None:
                        extra[base + i] = (pl, d)
            del c, rows
        self._derived = True  # a send's msg None: its id is "<process>#<seq>"; "": no id
        self._extra = extra
        self._wall, self._nb = wall, nb
        # the columns in the order read, for a later read of the blocks written since
        self._raw = (pid, seq, lam, wall, kind, ch, msg, nb, extra)
        self._dicts = None
        self._columns(pindex, pid, seq, lam, kind, ch, msg)

    def _columns(self, pindex: dict, pid: array, seq: array, lam: array, kind: list, ch: list,
                 msg: list) -> None:
        """Order the rows by (process, seq), keeping the first written of a duplicate.

        The columns the analysis walks (seq, kind, msg) are permuted into that
        order; the others stay in the order read and are reached through
        ``_srow`` (sorted row -> row read)."""
        self.processes: list[str] = list(pindex)
        self._pindex = dict(pindex)
        nproc = len(self.processes)
        n = len(seq)
        lt = operator.lt
        # Group the rows by process, each process's rows in the order read: a stable
        # counting sort, in C (``FAST.group``), else the Python bucket sort below, the
        # reference (one append per row: faster here than a sort by process, or a
        # C-speed pass per process).
        if n and FAST is not None and not all(map(operator.le, pid, itertools.islice(pid, 1, None))):
            ob, counts = FAST.group(pid, nproc)  # the same, in C
            order = array("q")
            order.frombytes(ob)
            del ob
        elif n and not all(map(operator.le, pid, itertools.islice(pid, 1, None))):
            buckets: list[list[int]] = [[] for _ in range(nproc)]
            put = [b.append for b in buckets]
            for g, i in enumerate(pid):
                put[i](g)
            order = array("q", itertools.chain.from_iterable(buckets))
            counts = list(map(len, buckets))
            del buckets, put
        else:
            order = range(n)
            have = collections.Counter(pid)
            counts = [have.get(i, 0) for i in range(nproc)]
        start = list(itertools.accumulate(counts, initial=0))
        sseq = array("q", map(seq.__getitem__, order)) if type(order) is not range else seq
        view = memoryview(sseq)
        bad = [i for i in range(nproc) if not all(map(
            lt, view[start[i]:start[i + 1]], view[start[i] + 1:start[i + 1]]))]
        view.release()
        if bad:  # seqs out of order or written twice (two live processes with one name)
            parts = []
            for i in range(nproc):
                part = order[start[i]:start[i + 1]]
                if i in bad:
                    part = sorted(part, key=seq.__getitem__)  # stable: the first written first
                    part = [o for j, o in enumerate(part) if not j or seq[o] != seq[part[j - 1]]]
                    counts[i] = len(part)
                parts.append(part)
            order = array("q", itertools.chain.from_iterable(parts))
            start = list(itertools.accumulate(counts, initial=0))
            sseq = array("q", map(seq.__getitem__, order))
        self._srow = order
        self._start = start
        self._seq = sseq
        self._pid = array("i", itertools.chain.from_iterable(
            itertools.repeat(i, counts[i]) for i in range(nproc)))
        if type(order) is range:
            self._kind, self._msg = kind, msg
        else:
            self._kind = list(map(kind.__getitem__, order))
            self._msg = list(map(msg.__getitem__, order))
        self._ch, self._lam = ch, lam  # in the order read: ch[_srow[g]]
        self.n_events = len(sseq)

    def _row(self, process: str, seq: int) -> int:
        """The row of event ``(process, seq)``; -1 if there is none."""
        i = self._pindex.get(process)
        if i is None:
            return -1
        a, b = self._start[i], self._start[i + 1]
        j = bisect.bisect_left(self._seq, seq, a, b)
        return j if j < b and self._seq[j] == seq else -1
    def _event_dict(self, g: int) -> dict:
        """Event row ``g`` as the interchange document writes it."""
        r = self._srow[g]
        if self._dicts is not None:
            return self._dicts[r]
        x = self._extra.get(r)
        payload, data = x if x is not None else (None, None)
        return event_doc(self.processes[self._pid[g]], self._seq[g], self._lam[r], self._wall[r],
                         self._kind[g], self._ch[r], self._msg[g], self._nb[r], payload, data)

    def event(self, process: str, seq: int) -> dict | None:
        g = self._row(process, seq)
        return self._event_dict(g) if g >= 0 else None
    def last_seq(self, process: str) -> int:
        seqs = self.seqs.get(process)
        return seqs[-1] if seqs else 0

    def step(self, process: str, frontier: int, delta: int) -> int:
        """The frontier moved by ``delta`` events of ``process`` (clamped to 0 .. last)."""
        seqs = self.seqs.get(process) or []
        i = bisect.bisect_right(seqs, frontier)  # events inside
        i = max(0, min(len(seqs), i + delta))
        return seqs[i - 1] if i else 0

    def count_inside(self, process: str, frontier: int) -> int:
        return bisect.bisect_right(self.seqs.get(process) or [], frontier)
