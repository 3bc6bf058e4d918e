"""Message matching: each receive to its send, by integer rows (``_peer[row]``: the other end).

A message id is ``"<process>#<seq of its send>"`` (derived, resolved at C
speed in bulk) or written out by the store; the first receive that names it
counts, later receives of the same id deliver the rest of a frame.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
from array import array
from collections.abc import Mapping

from cutscope.tracer.process import FAST  # the C extension, or None

from .pairs import PairIndex
from .records import Message, event_key


class MessagesView(Mapping):
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



class MatchingMixin:
    """Matching receives to sends, and messages made from the matching arrays (part of ``Trace``)."""

    def _match(self) -> None:
        """Match receives to sends: ``_peer[row]`` is the first receive of a send's
        message (-1: never received) and the send of a receive's (-1: unmatched).

        Passes over the columns at C speed (``compress``, ``map``); the arrays are
        filled by scattering (``map(peer.__setitem__, ...)``), with no dict or
        tuple per event."""
        n = self.n_events
        kind, msg, seq, pid, start = self._kind, self._msg, self._seq, self._pid, self._start
        derived = self._derived
        rng = range(n)
        send_rows = list(itertools.compress(rng, map(operator.eq, kind, itertools.repeat("send"))))
        smsg = list(map(msg.__getitem__, send_rows))
        if derived and smsg.count(None) == len(smsg):  # every send's id derived: no explicit id
            explicit_rows: list[int] = []
        elif derived:  # the sends with an id: msg None (derived) or written out
            send_rows = list(itertools.compress(send_rows, map(
                operator.ne, smsg, itertools.repeat(""))))
            explicit_rows = list(itertools.compress(send_rows, map(
                operator.is_not, map(msg.__getitem__, send_rows), itertools.repeat(None))))
        else:
            send_rows = list(itertools.compress(send_rows, smsg))
            explicit_rows = send_rows
        del smsg
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
        ms = list(map(msg.__getitem__, recv))
        if None in ms or "" in ms:
            recv = list(itertools.compress(recv, ms))
            ms = list(filter(None, ms))
        cand = self._resolve_derived(ms) if derived and not explicit else None
        if cand is None:
            resolve = self._resolve
            cand = [explicit.get(m) if m in explicit else resolve(m) if derived else None
                    for m in ms]
        unmatched: dict[str, int] = {}
        if None in cand:  # receives of a message that no send of the trace sent
            for g, s, m in zip(recv, cand, ms):
                if s is None:
                    unmatched.setdefault(m, g)
            keep = list(map(operator.is_not, cand, itertools.repeat(None)))
            recv = list(itertools.compress(recv, keep))
            ms = list(itertools.compress(ms, keep))
            cand = list(itertools.compress(cand, keep))
            del keep
        peer = self._peer = array("q", [-1]) * n
        drain = collections.deque(maxlen=0).extend
        drain(map(peer.__setitem__, recv, cand))  # receive -> its send
        # send -> its first receive (in process order, then seq order): written last to first
        drain(map(peer.__setitem__, reversed(cand), reversed(recv)))
        firsts = list(map(peer.__getitem__, cand))
        more_parts: dict[str, int] = {}
        if firsts != recv:  # later parts of frames: only the first receive is the message's
            is_first = list(map(operator.eq, firsts, recv))
            for g, m, f in zip(recv, ms, is_first):
                if not f:
                    q = seq[g]
                    if more_parts.get(m, 0) < q:
                        more_parts[m] = q
            recv = list(itertools.compress(recv, is_first))
            cand = list(itertools.compress(cand, is_first))
            del is_first
        del firsts, ms
        fr = array("q", recv)  # first receives, in row order (rows ascend)
        fs = array("q", cand)
        del recv, cand
        # The matched messages per (sender, receiver), in receive order.
        spid = array("i", map(pid.__getitem__, fs))
        self.pairs: dict[tuple[str, str], PairIndex] = {}
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
                self.pairs[(procs[q], procs[i])] = PairIndex(
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
        seq, start, n = self._seq, self._start, self.n_events
        off = [start[i] - seq[start[i]] if start[i] < start[i + 1] else -n - 1
               for i in range(len(self.processes))]
        if FAST is not None:  # the same, in C, without a tuple and two strings per id
            return FAST.resolve_ids(ms, self._pindex, off, self._pid, seq, self._msg,
                                    self._kind, "send")
        parts = list(map(str.rpartition, ms, itertools.repeat("#")))
        spid = list(map(self._pindex.get, map(operator.itemgetter(0), parts)))
        if None in spid:
            return None
        try:
            sqs = list(map(int, map(operator.itemgetter(2), parts)))
        except ValueError:
            return None
        del parts
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
    def _messages(self, rows) -> list[Message]:
        """``[self._message(s) for s in rows]``, made column by column at C speed (the
        cut panel lists tens of thousands when a frontier moves far)."""
        if len(rows) < 32:
            return list(map(self._message, rows))
        procs, pid, seq, peer, msg = self.processes, self._pid, self._seq, self._peer, self._msg
        rep = itertools.repeat
        rs = list(map(peer.__getitem__, rows))
        names = list(map(procs.__getitem__, map(pid.__getitem__, rows)))
        sseqs = list(map(seq.__getitem__, rows))
        ids = [m if m is not None else f"{p}#{q}"
               for m, p, q in zip(map(msg.__getitem__, rows), names, sseqs)]
        chans = list(map(self._ch.__getitem__, map(self._srow.__getitem__, rows)))
        if -1 in rs:
            dsts = [procs[pid[r]] if r >= 0 else (self.channels.get(c) or {}).get("dst")
                    for r, c in zip(rs, chans)]
            rseqs = [seq[r] if r >= 0 else None for r in rs]
        else:
            dsts = list(map(procs.__getitem__, map(pid.__getitem__, rs)))
            rseqs = list(map(seq.__getitem__, rs))
        return list(map(tuple.__new__, rep(Message), zip(ids, chans, names, sseqs, dsts, rseqs)))

    def _send_row(self, mid: str) -> int | None:
        """The row of the send of message ``mid`` (None: no such message)."""
        s = self._explicit.get(mid)
        if s is not None or not self._derived:
            return s
        return self._resolve(mid)
    def _tracked(self, channel: str | None) -> bool:
        """Whether a send on ``channel`` is a message whose receipt the trace can show.

        Sends on a channel known to be unframed (raw, to an untraced peer) can
        never be matched to a receive, so they are not counted as in transit.
        """
        c = self.channels.get(channel) if channel is not None else None
        return c is None or bool(c.get("framed", True))
    def message_of(self, e) -> Message | None:
        """The message that event ``e`` (a send or a receive) sent or delivered."""
        p, s = event_key(e)
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
        k = event_key(e)
        if k == m.send:
            return m.recv
        return m.send

    def next_hop(self, process: str, seq: int) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """The first message ``process`` sends at or after ``seq`` that was received:
        ``(its send, its first receive)``; None if there is none. Following it from the
        receive, hop after hop, walks a chain of messages forward."""
        i = self._pindex.get(process)
        if i is None:
            return None
        a, b = self._start[i], self._start[i + 1]
        peer, kind = self._peer, self._kind
        for g in range(bisect.bisect_left(self._seq, seq, a, b), b):
            r = peer[g]
            if kind[g] == "send" and r >= 0 and peer[r] == g:
                return (process, self._seq[g]), (self.processes[self._pid[r]], self._seq[r])
        return None

    def previous_hop(self, process: str, seq: int) -> tuple[tuple[str, int], tuple[str, int]] | None:
        """The last message ``process`` received at or before ``seq``:
        ``(its send, its first receive)``; None if there is none."""
        i = self._pindex.get(process)
        if i is None:
            return None
        a = self._start[i]
        peer, kind = self._peer, self._kind
        for g in range(bisect.bisect_right(self._seq, seq, a, self._start[i + 1]) - 1, a - 1, -1):
            s = peer[g]
            if kind[g] == "recv" and s >= 0 and peer[s] == g:
                return (self.processes[self._pid[s]], self._seq[s]), (process, self._seq[g])
        return None
