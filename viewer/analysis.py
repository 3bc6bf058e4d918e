"""Causality analysis of a recorded trace, from its events alone (SPEC 8).

Pure: it works on the interchange document (SPEC 7, ``store.load()`` or
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
"""

from __future__ import annotations

import bisect
import itertools
from typing import Iterable, Iterator, Mapping, NamedTuple

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
    """The messages from one process to another that were received, indexed two ways."""

    __slots__ = ("by_recv", "recv_seqs", "need", "by_send", "send_seqs", "suf_min_recv",
                 "pre_max_recv")

    def __init__(self, msgs: list[Message]):
        self.by_recv = sorted(msgs, key=lambda m: m.recv_seq)
        self.recv_seqs = [m.recv_seq for m in self.by_recv]
        # need[i]: the largest send seq among the first i+1 receives (non-decreasing).
        self.need = list(itertools.accumulate((m.send_seq for m in self.by_recv), max))
        self.by_send = sorted(msgs, key=lambda m: m.send_seq)
        self.send_seqs = [m.send_seq for m in self.by_send]
        rs = [m.recv_seq for m in self.by_send]
        self.pre_max_recv = list(itertools.accumulate(rs, max))
        self.suf_min_recv = list(itertools.accumulate(reversed(rs), min))[::-1]

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

    def orphans(self, recv_frontier: float, send_frontier: float) -> Iterator[Message]:
        """Received at or before ``recv_frontier``, sent after ``send_frontier``."""
        j = bisect.bisect_right(self.send_seqs, send_frontier)
        n = len(self.by_send)
        while j < n and self.suf_min_recv[j] <= recv_frontier:
            m = self.by_send[j]
            if m.recv_seq <= recv_frontier:
                yield m
            j += 1

    def in_transit(self, recv_frontier: float, send_frontier: float) -> list[Message]:
        """Sent at or before ``send_frontier``, received after ``recv_frontier``."""
        j = bisect.bisect_right(self.send_seqs, send_frontier) - 1
        out = []
        while j >= 0 and self.pre_max_recv[j] > recv_frontier:
            m = self.by_send[j]
            if m.recv_seq > recv_frontier:
                out.append(m)
            j -= 1
        out.reverse()
        return out


def _key(e) -> tuple[str, int]:
    if isinstance(e, Mapping):
        return (e["process"], int(e["seq"]))
    p, s = e
    return (p, int(s))


class Trace:
    """A recorded trace, indexed for causality questions.

    ``doc`` is the ``cutscope-trace`` document. Construction is linear in the
    number of events; vector clocks are computed on first use.
    """

    def __init__(self, doc: Mapping):
        if doc.get("format") not in (None, "cutscope-trace"):
            raise ValueError(f"not a cutscope trace: format {doc.get('format')!r}")
        self.doc = doc
        names: dict[str, None] = {p["name"]: None for p in doc.get("processes", [])}
        self.channels: dict[str, dict] = {c["id"]: c for c in doc.get("channels", [])}
        self.events: dict[str, list[dict]] = {}
        for e in doc.get("events", []):
            self.events.setdefault(e["process"], []).append(e)
        for p, evs in self.events.items():
            names.setdefault(p, None)
            if any(evs[i]["seq"] >= evs[i + 1]["seq"] for i in range(len(evs) - 1)):
                evs.sort(key=lambda e: e["seq"])
        for p in names:
            self.events.setdefault(p, [])
        self.processes: list[str] = list(names)
        self.seqs: dict[str, list[int]] = {p: [e["seq"] for e in evs] for p, evs in self.events.items()}
        self.snapshots: list[dict] = list(doc.get("snapshots", []))
        self._match()
        self._vc: dict[str, tuple[list[int], list[tuple[int, ...]]]] | None = None

    # -- building ---------------------------------------------------------------

    def _match(self) -> None:
        sends: dict[str, dict] = {}
        first_recv: dict[str, dict] = {}
        more_parts: dict[str, list[int]] = {}
        self.unmatched: list[dict] = []  # receives that name a message never sent in this trace
        for p in self.processes:
            for e in self.events[p]:
                m = e.get("msg")
                if m is None:
                    continue
                k = e["kind"]
                if k == "send":
                    if m not in sends:
                        sends[m] = e
                elif k == "recv":
                    if m not in first_recv:
                        first_recv[m] = e
                    else:  # a later part of the same frame
                        more_parts.setdefault(m, []).append(e["seq"])
        self.messages: dict[str, Message] = {}
        received: dict[tuple[str, str], list[Message]] = {}
        unreceived: dict[str, list[Message]] = {}
        recv_of: dict[tuple[str, int], Message] = {}
        channels = self.channels
        tracked = {cid: bool(c.get("framed", True)) for cid, c in channels.items()}
        messages = self.messages
        for m, s in sends.items():
            r = first_recv.pop(m, None)
            ch = s.get("channel")
            src = s["process"]
            if r is not None:
                dst = r["process"]
                rseq = r["seq"]
                msg = Message(m, ch, src, s["seq"], dst, rseq)
                lst = received.get((src, dst))
                if lst is None:
                    lst = received[(src, dst)] = []
                lst.append(msg)
                recv_of[(dst, rseq)] = msg
            else:
                msg = Message(m, ch, src, s["seq"], (channels.get(ch) or {}).get("dst"), None)
                if tracked.get(ch, True):
                    unreceived.setdefault(src, []).append(msg)
            messages[m] = msg
        self.unmatched = list(first_recv.values())
        self.pairs: dict[tuple[str, str], _Pair] = {k: _Pair(v) for k, v in received.items()}
        # Sends never received, per sender, in send order (in transit from their send on).
        self.unreceived: dict[str, list[Message]] = {}
        self._unreceived_seqs: dict[str, list[int]] = {}
        for p, ms in unreceived.items():
            ms.sort(key=lambda m: m.send_seq)
            self.unreceived[p] = ms
            self._unreceived_seqs[p] = [m.send_seq for m in ms]
        self._recv_of = recv_of
        # Messages delivered by several receives (parts of one frame): the seq of the last part.
        self.last_part: dict[str, int] = {m: max(v) for m, v in more_parts.items()}

    def _tracked(self, channel: str | None) -> bool:
        """Whether a send on ``channel`` is a message whose receipt the trace can show.

        Sends on a channel known to be unframed (raw, to an untraced peer) can
        never be matched to a receive, so they are not counted as in transit.
        """
        c = self.channels.get(channel) if channel is not None else None
        return c is None or bool(c.get("framed", True))

    # -- events -------------------------------------------------------------------

    def event(self, process: str, seq: int) -> dict | None:
        seqs = self.seqs.get(process)
        if not seqs:
            return None
        i = bisect.bisect_left(seqs, seq)
        if i < len(seqs) and seqs[i] == seq:
            return self.events[process][i]
        return None

    def message_of(self, e) -> Message | None:
        """The message that event ``e`` (a send or a receive) sent or delivered."""
        p, s = _key(e)
        ev = self.event(p, s)
        if ev is None or not ev.get("msg"):
            return None
        return self.messages.get(ev["msg"])

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
        out: list[Message] = []
        for q, p, pair in self._pairs_in(cut):
            if pair.need_at(cut[p]) > cut[q]:
                out.extend(itertools.islice(pair.orphans(cut[p], cut[q]),
                                            None if limit is None else max(0, limit - len(out))))
            if limit is not None and len(out) >= limit:
                break
        out.sort(key=lambda m: (m.dst, m.recv_seq))
        return out

    def in_transit(self, cut: Mapping[str, int]) -> list[Message]:
        """Messages sent inside the cut and received outside it, or never received.

        In send order per channel (sorted by channel, then send seq).
        """
        out: list[Message] = []
        for q, p, pair in self._pairs_in(cut):
            out.extend(pair.in_transit(cut[p], cut[q]))
        for q, ms in self.unreceived.items():
            if q not in cut:
                continue
            j = bisect.bisect_right(self._unreceived_seqs[q], cut[q])
            out.extend(m for m in ms[:j] if m.dst is None or m.dst in cut)
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

    def lattice(self, limit: int | None = 10_000, start: Mapping[str, int] | None = None
                ) -> Iterator[dict[str, int]]:
        """The consistent cuts, lazily, breadth-first by level (events inside).

        Starts at ``start`` (default: the empty cut; made consistent from below
        if it is not) and yields at most ``limit`` cuts (None: all of them,
        which is exponential in the number of processes).
        """
        procs = self.processes
        seqs = [self.seqs[p] for p in procs]
        idx = {p: i for i, p in enumerate(procs)}
        # For each event: (sender index, send seq) if it is a matched receive.
        deps: list[list[tuple[int, int] | None]] = []
        for p, evs in zip(procs, (self.events[p] for p in procs)):
            row = []
            for e in evs:
                m = self._recv_of.get((p, e["seq"]))
                row.append((idx[m.src], m.send_seq) if m is not None and m.src in idx else None)
            deps.append(row)
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
                    d = deps[i][k]
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
        idx = {p: i for i, p in enumerate(procs)}
        pos = [0] * n
        cur = [[0] * n for _ in range(n)]
        send_vc: dict[str, tuple[int, ...]] = {}
        stored: dict[str, tuple[list[int], list[tuple[int, ...]]]] = {p: ([], []) for p in procs}
        evs = [self.events[p] for p in procs]
        remaining = sum(len(e) for e in evs)
        forced: set[tuple[str, int]] = set()  # receives treated as unmatched (causal cycle)
        while remaining:
            progressed = False
            for i in range(n):
                es, vc, k, p = evs[i], cur[i], pos[i], procs[i]
                while k < len(es):
                    e = es[k]
                    s = e["seq"]
                    m = self._recv_of.get((p, s)) if e["kind"] == "recv" else None
                    if m is not None and (p, s) not in forced:
                        svc = send_vc.get(m.id)
                        if svc is None:
                            break  # its send is not processed yet
                        vc[i] = s
                        for j, v in enumerate(svc):
                            if v > vc[j]:
                                vc[j] = v
                        stored[p][0].append(s)
                        stored[p][1].append(tuple(vc))
                    else:
                        vc[i] = s
                        if e["kind"] == "send" and e.get("msg") in self.messages:
                            send_vc[e["msg"]] = tuple(vc)
                    k += 1
                    remaining -= 1
                    progressed = True
                pos[i] = k
            if not progressed:  # a causal cycle (bad data): unblock one receive
                for i in range(n):
                    if pos[i] < len(evs[i]):
                        forced.add((procs[i], evs[i][pos[i]]["seq"]))
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
