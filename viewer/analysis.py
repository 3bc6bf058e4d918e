"""Causality analysis of a recorded trace, from its events alone (docs/cuts.md).

Pure: it works on the interchange document (docs/format.md, ``store.load()`` or
``cutscope.viewer.export.load(db)``) and never touches a store, so the
snapshot protocol's tests, ``cutscope check``, the renderer and the viewer all
share it.

Vocabulary
----------
- An *event* is named by ``(process, seq)``.
- A *message* is matched by its id (``"<process>#<seq of its send>"``): its
  send event, and the *first* receive that names it (later receives of the same
  id deliver the rest of a frame and add no causality).
- A *cut* is ``{process: frontier}``: the process's events with
  ``seq <= frontier`` are inside. A frontier of 0 means nothing of that process
  is inside. Processes absent from a cut are outside the analysis: messages to
  or from them neither constrain the cut nor are reported for it (a snapshot
  covers only the processes that recorded a state).
- A cut is *consistent* when every receive inside has its send inside.
  Its *in-transit* messages were sent inside and received outside (or never);
  its *orphans* were received inside but sent outside: the message "from thin
  air" of an inconsistent snapshot.
- A snapshot's cut: ``processes[p].event_seq`` is the seq of p's ``snapshot``
  event and the events with a smaller seq are inside, so the frontier is
  ``event_seq - 1``.

Indexes are built per ordered pair of processes (sender -> receiver), so that
consistency, the nearest consistent cuts and the in-transit and orphan sets
cost a few binary searches per pair, not a scan of the trace: a cut explorer
can ask them on every key press of a large trace.

Memory: the events are columns (``array('q')`` of seqs and Lamport clocks,
lists of shared strings), the message matching is integer arrays, and event
dicts and ``Message`` tuples are made only when asked for. ``Trace.from_store``
reads the store's event blocks straight into the columns, without the
document's dict per event (a million events: about a tenth of the memory and
time of ``Trace(store.load())``).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
from array import array
from collections.abc import Sequence
from typing import Iterable, Iterator, Mapping, NamedTuple

from cutscope.tracer.store import event_doc

__all__ = ["Message", "Trace", "check", "check_report", "snapshot_cut", "format_cut", "parse_cut"]

INF = float("inf")


class Message(NamedTuple):
    """One message: its send event and its first receive (``None``: never received)."""

    id: str
    channel: str | None
    src: str
    send_seq: int
    dst: str | None
    recv_seq: int | None

    @property
    def send(self) -> tuple[str, int]:
        return (self.src, self.send_seq)

    @property
    def recv(self) -> tuple[str, int] | None:
        return None if self.recv_seq is None or self.dst is None else (self.dst, self.recv_seq)


class _Pair:
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


def _key(e) -> tuple[str, int]:
    if isinstance(e, Mapping):
        return (e["process"], int(e["seq"]))
    p, s = e
    return (p, int(s))


class _Index(dict):
    """Process name -> index, a new name taking the next index."""

    def __missing__(self, name: str) -> int:
        i = self[name] = len(self)
        return i


class _Events(Sequence):
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


class _Messages(Mapping):
    """The messages of a trace by id, made on demand from the matching arrays."""

    def __init__(self, trace: "Trace"):
        self._t = trace

    def __getitem__(self, mid: str) -> Message:
        s = self._t._send_row(mid) if isinstance(mid, str) else None
        if s is None:
            raise KeyError(mid)
        return self._t._message(s)

    def __contains__(self, mid) -> bool:
        return isinstance(mid, str) and self._t._send_row(mid) is not None

    def __iter__(self):
        t = self._t
        return (t._msg_id(s) for s in t._send_rows)

    def __len__(self) -> int:
        return len(self._t._send_rows)

    def values(self):
        return map(self._t._message, self._t._send_rows)

    def items(self):
        return ((m.id, m) for m in self.values())


class Trace:
    """A recorded trace, indexed for causality questions.

    ``doc`` is the ``cutscope-trace`` document. Construction is linear in the
    number of events (plus a sort when the events are not in process order);
    vector clocks are computed on first use.

    The events are kept in columns (arrays of seqs and Lamport clocks, lists of
    shared kind and channel strings) sorted by (process, seq), each process's
    events a contiguous range of rows, and messages are matched into integer
    arrays (``_peer[row]``: the other end's row). ``events[p]``, ``event()``
    and ``messages`` make dicts and ``Message`` tuples only when asked, so a
    trace of a million events costs tens of bytes per event, not a dict each.

    ``blocks``: the raw event tuples of the store (``store.event_blocks()``,
    with ``doc`` from ``store.load(events=False)``) instead of ``doc["events"]``;
    see ``Trace.from_store``.
    """

    def __init__(self, doc: Mapping, blocks: Iterable[list[tuple]] | None = None):
        if doc.get("format") not in (None, "cutscope-trace"):
            raise ValueError(f"not a cutscope trace: format {doc.get('format')!r}")
        self.doc = doc
        names: dict[str, None] = {p["name"]: None for p in doc.get("processes", [])}
        self.channels: dict[str, dict] = {c["id"]: c for c in doc.get("channels", [])}
        self.snapshots: list[dict] = list(doc.get("snapshots", []))
        if blocks is None:
            self._from_dicts(names, list(doc.get("events", [])))
        else:
            self._from_rows(names, blocks)
        self.events: dict[str, _Events] = {
            p: _Events(self, self._start[i], self._start[i + 1]) for i, p in enumerate(self.processes)}
        self.seqs: dict[str, array] = {
            p: self._seq[self._start[i]:self._start[i + 1]] for i, p in enumerate(self.processes)}
        self.messages: Mapping[str, Message] = _Messages(self)
        self._match()
        self._vc: dict[str, tuple[list[int], list[tuple[int, ...]]]] | None = None

    @classmethod
    def from_store(cls, store) -> "Trace":
        """The trace of a store, read block by block into columns (no dict per event).

        ``trace.doc`` is the document without its events (``"events": []``)."""
        return cls(store.load(events=False), store.event_blocks())

    # -- building ---------------------------------------------------------------

    def _from_dicts(self, names: dict, evs: list[dict]) -> None:
        pindex = _Index((p, i) for i, p in enumerate(names))
        self._derived = False  # every message id is written out
        self._extra: dict[int, tuple] = {}
        self._wall = self._nb = None
        self._dicts: list[dict] | None = evs
        self._columns(pindex, array("i", [pindex[e["process"]] for e in evs]),
                      array("q", [int(e["seq"]) for e in evs]),
                      array("q", [e.get("lamport") or 0 for e in evs]),
                      [e["kind"] for e in evs], [e.get("channel") for e in evs],
                      [e.get("msg") or None for e in evs])

    def _from_rows(self, names: dict, blocks: Iterable[list[tuple]]) -> None:
        pindex = _Index((p, i) for i, p in enumerate(names))
        pid, seq, lam, wall = array("i"), array("q"), array("q"), array("q")
        kind: list[str] = []
        ch: list = []
        msg: list = []
        nb: list = []
        extra: dict[int, tuple] = {}
        get = pindex.__getitem__
        for rows in blocks:
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
        # bucket sort (one append per row: faster here than a sort by process, or a
        # C-speed pass per process).
        if n and not all(map(operator.le, pid, itertools.islice(pid, 1, None))):
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

    def _match(self) -> None:
        """Match receives to sends: ``_peer[row]`` is the first receive of a send's
        message (-1: never received) and the send of a receive's (-1: unmatched)."""
        n = self.n_events
        kind, msg, seq, pid, start = self._kind, self._msg, self._seq, self._pid, self._start
        derived = self._derived
        rng = range(n)
        is_send = list(map(operator.eq, kind, itertools.repeat("send")))
        send_rows = list(itertools.compress(rng, is_send))
        if derived:  # the sends with an id: msg None (derived) or written out
            send_rows = list(itertools.compress(send_rows, map(
                operator.ne, map(msg.__getitem__, send_rows), itertools.repeat(""))))
            explicit_rows = list(itertools.compress(send_rows, map(
                operator.is_not, map(msg.__getitem__, send_rows), itertools.repeat(None))))
        else:
            send_rows = list(itertools.compress(send_rows, map(msg.__getitem__, send_rows)))
            explicit_rows = send_rows
        del is_send
        explicit: dict[str, int] = {}
        if explicit_rows:
            ids = list(map(msg.__getitem__, explicit_rows))
            explicit = dict(zip(reversed(ids), reversed(explicit_rows)))  # the first send wins
            if len(explicit) != len(ids):  # a second send of one id is not a message
                first = set(explicit.values())
                dup = {g for g in explicit_rows if g not in first}
                send_rows = [g for g in send_rows if g not in dup]
            del ids
        self._explicit = explicit
        self._send_rows = array("q", send_rows)
        del send_rows, explicit_rows
        procs = self.processes
        nproc = len(procs)
        # The receives that name a message, and the row of each one's send (None: unmatched).
        recv = list(itertools.compress(rng, map(operator.eq, kind, itertools.repeat("recv"))))
        recv = list(itertools.compress(recv, map(msg.__getitem__, recv)))
        ms = list(map(msg.__getitem__, recv))
        cand = self._resolve_derived(ms) if derived and not explicit else None
        if cand is None:
            resolve = self._resolve
            cand = [explicit.get(m) if m in explicit else resolve(m) if derived else None
                    for m in ms]
        # The first receive of each message (in process order, then seq order) counts.
        first = dict(zip(reversed(cand), reversed(recv)))
        first.pop(None, None)
        more_parts: dict[str, int] = {}
        unmatched: dict[str, int] = {}
        if len(first) != len(cand):  # later parts of frames, or unmatched receives
            for g, s, m in zip(recv, cand, ms):
                if s is None:
                    unmatched.setdefault(m, g)
                elif first[s] != g:
                    q = seq[g]
                    if more_parts.get(m, 0) < q:
                        more_parts[m] = q
        other = dict(zip(recv, cand))  # receive -> send, send -> first receive
        if unmatched:
            for g in [g for g, s in other.items() if s is None]:
                del other[g]
        other.update(first)
        peer = self._peer = array("q", map(other.get, rng, itertools.repeat(-1)))
        del recv, ms, cand, other
        # The matched messages per (sender, receiver), in receive order.
        fr = array("q", first.values())
        if any(map(operator.gt, fr, itertools.islice(fr, 1, None))):
            fr = array("q", sorted(fr))
        del first
        fs = array("q", map(peer.__getitem__, fr))
        spid = array("i", map(pid.__getitem__, fs))
        self.pairs: dict[tuple[str, str], _Pair] = {}
        for i in range(nproc):  # each receiver's first receives are a slice of fr
            lo, hi = bisect.bisect_left(fr, start[i]), bisect.bisect_left(fr, start[i + 1])
            if lo == hi:
                continue
            rs, ss, sp = fr[lo:hi], fs[lo:hi], spid[lo:hi]
            senders = set(sp)
            if len(senders) == 1:
                groups = [(sp[0], rs, ss)]
            elif len(senders) <= 16:
                groups = []
                for q in sorted(senders):
                    sel = list(map(operator.eq, sp, itertools.repeat(q)))
                    groups.append((q, array("q", itertools.compress(rs, sel)),
                                   array("q", itertools.compress(ss, sel))))
            else:
                o = sorted(range(len(sp)), key=sp.__getitem__)
                groups = []
                for q, js in itertools.groupby(o, key=sp.__getitem__):
                    js = list(js)
                    groups.append((q, array("q", map(rs.__getitem__, js)),
                                   array("q", map(ss.__getitem__, js))))
            for q, r, sr in groups:
                self.pairs[(procs[q], procs[i])] = _Pair(
                    array("q", map(seq.__getitem__, sr)), array("q", map(seq.__getitem__, r)), sr)
        del fr, fs, spid
        self.unmatched: list[dict] = [self._event_dict(g) for g in unmatched.values()]
        # Messages delivered by several receives (parts of one frame): the seq of the last part.
        self.last_part: dict[str, int] = more_parts
        # Sends never received on a channel whose receipts the trace can show, per sender.
        tracked = {cid: bool(c.get("framed", True)) for cid, c in self.channels.items()}
        unrec: dict[str, tuple[array, array]] = {}
        chs, srow, sr = self._ch, self._srow, self._send_rows
        for s in itertools.compress(sr, map(operator.lt, map(peer.__getitem__, sr), itertools.repeat(0))):
            if tracked.get(chs[srow[s]], True):
                p = procs[pid[s]]
                v = unrec.get(p)
                if v is None:
                    v = unrec[p] = (array("q"), array("q"))
                v[0].append(seq[s])
                v[1].append(s)
        self._unreceived_seqs: dict[str, array] = {p: v[0] for p, v in unrec.items()}
        self._unreceived_rows: dict[str, array] = {p: v[1] for p, v in unrec.items()}

    def _resolve(self, m: str) -> int | None:
        """The row of the send whose derived id is ``m`` (``"<process>#<seq>"``), if any."""
        name, _, sq = m.rpartition("#")
        i = self._pindex.get(name)
        if i is None or not sq.isdigit():
            return None
        sq = int(sq)
        seq = self._seq
        a, b = self._start[i], self._start[i + 1]
        j = a + sq - seq[a] if a < b else a
        if not (a <= j < b and seq[j] == sq):
            j = bisect.bisect_left(seq, sq, a, b)
        if j < b and seq[j] == sq and self._kind[j] == "send" and self._msg[j] is None:
            return j
        return None

    def _resolve_derived(self, ms: list[str]) -> list[int] | None:
        """``_resolve`` of every id, at C speed, for the usual trace: every id names a
        known process and the seq of one of its sends, and each process's seqs have
        no gaps (so a seq's row is an offset). None when that does not hold: the
        caller resolves one id at a time."""
        if not ms:
            return []
        parts = list(map(str.rpartition, ms, itertools.repeat("#")))
        spid = list(map(self._pindex.get, map(operator.itemgetter(0), parts)))
        if None in spid:
            return None
        try:
            sqs = list(map(int, map(operator.itemgetter(2), parts)))
        except ValueError:
            return None
        del parts
        seq, start, n = self._seq, self._start, self.n_events
        off = [start[i] - seq[start[i]] if start[i] < start[i + 1] else -n - 1
               for i in range(len(self.processes))]
        cand = list(map(operator.add, sqs, map(off.__getitem__, spid)))
        if not (min(cand) >= 0 and max(cand) < n
                and all(map(operator.eq, map(self._pid.__getitem__, cand), spid))
                and all(map(operator.eq, map(seq.__getitem__, cand), sqs))
                and all(map(operator.is_, map(self._msg.__getitem__, cand), itertools.repeat(None)))
                and all(map(operator.eq, map(self._kind.__getitem__, cand), itertools.repeat("send")))):
            return None
        return cand

    @property
    def unreceived(self) -> dict[str, list[Message]]:
        """Sends never received, per sender, in send order (in transit from their send on)."""
        return {p: [self._message(s) for s in rows] for p, rows in self._unreceived_rows.items()}

    # -- rows -------------------------------------------------------------------------

    def _msg_id(self, s: int) -> str:
        m = self._msg[s]
        return m if m is not None else f"{self.processes[self._pid[s]]}#{self._seq[s]}"

    def _message(self, s: int) -> Message:
        """The message whose send is row ``s``."""
        procs, pid, seq, peer = self.processes, self._pid, self._seq, self._peer
        ch = self._ch[self._srow[s]]
        r = peer[s]
        if r >= 0:
            return Message(self._msg_id(s), ch, procs[pid[s]], seq[s], procs[pid[r]], seq[r])
        return Message(self._msg_id(s), ch, procs[pid[s]], seq[s],
                       (self.channels.get(ch) or {}).get("dst"), None)

    def _row(self, process: str, seq: int) -> int:
        """The row of event ``(process, seq)``; -1 if there is none."""
        i = self._pindex.get(process)
        if i is None:
            return -1
        a, b = self._start[i], self._start[i + 1]
        j = bisect.bisect_left(self._seq, seq, a, b)
        return j if j < b and self._seq[j] == seq else -1

    def _send_row(self, mid: str) -> int | None:
        """The row of the send of message ``mid`` (None: no such message)."""
        s = self._explicit.get(mid)
        if s is not None or not self._derived:
            return s
        return self._resolve(mid)

    def _event_dict(self, g: int) -> dict:
        """Event row ``g`` as the interchange document writes it."""
        r = self._srow[g]
        if self._dicts is not None:
            return self._dicts[r]
        x = self._extra.get(r)
        payload, data = x if x is not None else (None, None)
        return event_doc(self.processes[self._pid[g]], self._seq[g], self._lam[r], self._wall[r],
                         self._kind[g], self._ch[r], self._msg[g], self._nb[r], payload, data)

    def _tracked(self, channel: str | None) -> bool:
        """Whether a send on ``channel`` is a message whose receipt the trace can show.

        Sends on a channel known to be unframed (raw, to an untraced peer) can
        never be matched to a receive, so they are not counted as in transit.
        """
        c = self.channels.get(channel) if channel is not None else None
        return c is None or bool(c.get("framed", True))

    # -- events -------------------------------------------------------------------

    def event(self, process: str, seq: int) -> dict | None:
        g = self._row(process, seq)
        return self._event_dict(g) if g >= 0 else None

    def message_of(self, e) -> Message | None:
        """The message that event ``e`` (a send or a receive) sent or delivered."""
        p, s = _key(e)
        g = self._row(p, s)
        if g < 0:
            return None
        k = self._kind[g]
        if k == "send":
            if self._msg[g] == "" or (not self._derived and not self._msg[g]):
                return None
            sr = self._send_row(self._msg_id(g))
            return self._message(sr) if sr is not None else None
        if k == "recv" and self._peer[g] >= 0:
            return self._message(self._peer[g])
        return None

    def peer(self, e) -> tuple[str, int] | None:
        """The other end of the message of ``e``: the receive of a send, the send of a receive."""
        m = self.message_of(e)
        if m is None:
            return None
        k = _key(e)
        if k == m.send:
            return m.recv
        return m.send

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

    # -- cuts -----------------------------------------------------------------------

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
        out = list(map(self._message, rows))
        out.sort(key=lambda m: (m.dst, m.recv_seq))
        return out

    def in_transit(self, cut: Mapping[str, int]) -> list[Message]:
        """Messages sent inside the cut and received outside it, or never received.

        In send order per channel (sorted by channel, then send seq).
        """
        rows: list[int] = []
        for q, p, pair in self._pairs_in(cut):
            rows.extend(pair.in_transit(cut[p], cut[q]))
        out = list(map(self._message, rows))
        for q, srows in self._unreceived_rows.items():
            if q not in cut:
                continue
            j = bisect.bisect_right(self._unreceived_seqs[q], cut[q])
            ms = map(self._message, srows[:j])
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

    # -- vector clocks -------------------------------------------------------------------

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
        """The vector clock of event ``(process, seq)``, as ``{process: seq}``."""
        stored = self._vector_clocks()
        seqs, vcs = stored[process]
        i = bisect.bisect_right(seqs, seq)
        base = vcs[i - 1] if i else (0,) * len(self.processes)
        out = dict(zip(self.processes, base))
        out[process] = seq
        return out

    def happened_before(self, e1, e2) -> bool:
        """Whether event ``e1`` happened before ``e2`` (strictly), by vector clocks."""
        p1, s1 = _key(e1)
        p2, s2 = _key(e2)
        if (p1, s1) == (p2, s2):
            return False
        return s1 <= self.vector_clock(p2, s2).get(p1, 0)

    def concurrent(self, e1, e2) -> bool:
        return _key(e1) != _key(e2) and not self.happened_before(e1, e2) and not self.happened_before(e2, e1)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self, sid: int) -> dict | None:
        for s in self.snapshots:
            if s["id"] == sid:
                return s
        return None

    def snapshot_cut(self, snapshot) -> dict[str, int]:
        """The cut of a stored snapshot (an id or its dict): ``event_seq - 1`` per process."""
        return snapshot_cut(self.snapshot(snapshot) if isinstance(snapshot, int) else snapshot)


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


# -- check ---------------------------------------------------------------------------------

def _missing_mentions(snapshot: Mapping, channel: str) -> bool:
    return any(channel in str(m) for m in snapshot.get("missing") or [])


def check_report(doc: Mapping, trace: Trace | None = None) -> tuple[list[str], list[str]]:
    """Verify every stored snapshot against the events: ``(problems, notes)``.

    Problems: a snapshot event that is not where the snapshot says; an
    inconsistent cut (an orphan: received inside, sent outside); a complete
    channel whose recorded messages differ from the messages in transit across
    the cut (same ids, same order); in a snapshot called complete, a process
    that did not finish, an incomplete channel, or in-transit messages on a
    channel into a recorded process that the snapshot did not record.
    Notes: partial or unfinished snapshots (what is missing) and what could not
    be verified.
    """
    t = trace or Trace(doc)
    problems: list[str] = []
    notes: list[str] = []
    for s in t.snapshots:
        sid = s["id"]
        tag = f"snapshot {sid}"
        status = s.get("status")
        complete = status == "complete"
        if not complete:
            miss = "; ".join(_missing_text(m) for m in s.get("missing") or []) or "nothing named"
            notes.append(f"{tag}: {status}: missing {miss}")
        cut = snapshot_cut(s)
        if not cut:
            notes.append(f"{tag}: no process recorded a state")
            continue
        for p, info in s.get("processes", {}).items():
            ev = t.event(p, info["event_seq"])
            if ev is None or ev["kind"] != "snapshot" or ev.get("snapshot") not in (None, sid):
                problems.append(f"{tag}: {p} has no snapshot event at seq {info['event_seq']}")
            if complete and not info.get("done", True):
                problems.append(f"{tag}: complete, but {p} did not finish recording its channels")
        for m in t.orphans(cut):
            problems.append(
                f"{tag}: inconsistent cut: message {m.id} received by {m.dst} at seq {m.recv_seq} "
                f"(inside) was sent by {m.src} at seq {m.send_seq}, after its state was recorded "
                f"at seq {cut[m.src] + 1}: a message from thin air")
        transit: dict[str | None, list[Message]] = {}
        for m in t.in_transit(cut):
            transit.setdefault(m.channel, []).append(m)
        # A frame whose first part was received inside the cut and whose last part
        # outside: the rest of its bytes were in the channel, so the snapshot holds it.
        for mid, last in t.last_part.items():
            m = t.messages.get(mid)
            if (m is not None and m.dst in cut and m.src in cut and m.recv_seq is not None
                    and m.recv_seq <= cut[m.dst] < last and m.send_seq <= cut[m.src]):
                transit.setdefault(m.channel, []).append(m)
        for ms in transit.values():
            ms.sort(key=lambda m: m.send_seq)
        seen = set()
        unverified: dict[str, list[str]] = {}  # sender without a state: its channels
        for ch in s.get("channels", []):
            cid = ch["channel"]
            seen.add(cid)
            got = []
            for m in ch.get("messages", []):  # parts of one frame are recorded once each
                if not got or got[-1] != m.get("msg") or m.get("msg") is None:
                    got.append(m.get("msg"))
            if not ch.get("complete"):
                (problems if complete else notes).append(
                    f"{tag}: channel {cid} not closed by its marker ({len(got)} messages recorded)")
                continue
            info = t.channels.get(cid, {})
            src = info.get("src")
            if src is None or src not in cut:
                srcs = {t.messages[m].src for m in got if m in t.messages}
                src = next(iter(srcs)) if len(srcs) == 1 else src
            if src is not None and src not in cut:
                unverified.setdefault(src, []).append(cid)
                continue
            want = [m.id for m in transit.get(cid, [])]
            if got != want:
                problems.append(
                    f"{tag}: channel {cid}: recorded {_ids(got)}, but in transit across the cut "
                    f"(sent before {src or 'the sender'}'s snapshot, received after the receiver's): "
                    f"{_ids(want)}")
        for src, cids in unverified.items():  # one note per sender, not one per channel
            which = (f"channel {cids[0]}" if len(cids) == 1 else
                     f"{len(cids)} channels ({', '.join(cids[:3])}{', ...' if len(cids) > 3 else ''})")
            notes.append(f"{tag}: {which}: its sender {src} recorded no state; not verified")
        if complete:
            for cid, ms in transit.items():
                if cid in seen or cid is None or _missing_mentions(s, cid):
                    continue
                dst = {m.dst for m in ms}
                if not dst <= set(cut):
                    continue
                problems.append(f"{tag}: channel {cid}: messages {_ids([m.id for m in ms])} in "
                                f"transit across the cut were not recorded")
    return problems, notes


def _missing_text(m) -> str:
    """One entry of a snapshot's ``missing`` list, as the snapshot command prints it."""
    if not isinstance(m, Mapping):
        return str(m)
    if "process" in m:
        what = f"process {m['process']}"
    elif "channel" in m:
        what = f"channel {m['channel']} ({m.get('src') or '?'} -> {m.get('dst') or '?'})"
    else:
        what = ""
    reason = m.get("reason", "")
    return f"{what}: {reason}" if what and reason else (what or reason or str(dict(m)))


def _ids(ids: Iterable[str | None]) -> str:
    ids = list(ids)
    if not ids:
        return "[]"
    if len(ids) > 8:
        return "[" + ", ".join(map(str, ids[:8])) + f", ... ({len(ids)} messages)]"
    return "[" + ", ".join(map(str, ids)) + "]"


def check(doc: Mapping) -> list[str]:
    """The problems found in the stored snapshots of ``doc`` (empty: all verify)."""
    return check_report(doc)[0]
