"""Possibly and Definitely of conjunctive predicates over the processes' recorded values.

A conjunctive predicate is one local predicate per named process, all of which
must hold at once: ``{"bank-1": "balance < 0", "bank-2": "balance < 0"}``.
A local predicate is an expression (``expr.Expr``) or a function of the state.

A process's *state* at frontier ``f`` (its events with ``seq <= f`` done) is
what it recorded so far: the fields of its ``local`` events
(``cutscope.event(label, **fields)``: ``label`` and each field, a later event's
value replacing an earlier one) and, at its ``snapshot`` events, the state it
recorded for that snapshot (without cutscope's bookkeeping ``_cutscope``). The
whole state is also the name ``state``. At frontier 0 the state is empty. A
local predicate that fails on a state (a field not recorded yet, a type error)
is false there.

- ``Possibly(phi)``: some consistent cut satisfies phi. The answer's cut is the
  least such cut (the satisfying consistent cuts of a conjunctive predicate are
  closed under intersection). Found by advancing from the empty cut: make the
  cut consistent (``nearest_above``), move each process whose local predicate is
  false to its next state where it holds, repeat (Garg and Waldecker's weak
  conjunctive predicate detection, on cuts). Each step moves a frontier
  forward: linear in the number of state changes times the cost of
  ``nearest_above``.
- ``Definitely(phi)``: every run (every path of consistent cuts from the empty
  cut to the whole trace, one event at a time) passes a cut that satisfies
  phi. Garg and Waldecker's strong conjunctive predicate detection: it holds
  if and only if there is one interval of each process (a maximal run of
  states where its local predicate holds) such that each interval's entering
  event happened before every other interval's leaving event. Intervals are
  dropped from the front of per-process queues: O(n^2 m) for n processes and m
  intervals, with vector clocks (computed once, offline). The answer's cut is
  the least consistent cut that holds every chosen interval's entering event;
  phi holds there.

Neither walks the lattice of consistent cuts, whose size is exponential in the
number of processes (``Trace.lattice``; the tests compare both answers with
such a walk on small traces).
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable, Mapping, NamedTuple, Union

from .expr import Expr, as_record

LocalPredicate = Union[str, Expr, Callable[[Mapping[str, Any]], Any]]


class PredicateAnswer(NamedTuple):
    """Whether the predicate holds (``Possibly`` or ``Definitely``), and the witness cut."""

    modality: str  # "possibly" or "definitely"
    holds: bool
    cut: dict[str, int] | None  # a consistent cut where phi holds (None: it does not hold)


class Interval(NamedTuple):
    """A maximal run of a process's states where its local predicate holds.

    ``enter``: the seq of the event that starts it (0: the initial state);
    ``leave``: the seq of the event that ends it (None: it lasts to the end)."""

    enter: int
    leave: int | None


def parse_conjunct(text: str, processes) -> tuple[str, Expr]:
    """``"PROCESS: EXPR"`` to (process, expression). Raises ValueError.

    The process is the longest prefix before a ``:`` that names a process, so a
    name may hold ``:`` itself."""
    names = set(processes)
    cuts = [i for i, ch in enumerate(text) if ch == ":"]
    if not cuts:
        raise ValueError(f"not PROCESS: EXPRESSION: {text!r}")
    for i in reversed(cuts):
        name = text[:i].strip()
        if name in names:
            return name, Expr(text[i + 1:])
    name = text[:cuts[0]].strip()
    raise ValueError(f"no process {name!r} in this trace (processes: {', '.join(processes) or 'none'})")


def parse_predicate(text: str, processes) -> tuple[str, dict[str, Expr]]:
    """``"[possibly|definitely] P: EXPR && Q: EXPR"`` to (modality, {process: expression}).

    The modality defaults to ``possibly``. Raises ValueError."""
    text = text.strip()
    head, _, rest = text.partition(" ")
    modality = "possibly"
    if head.lower() in ("possibly", "definitely"):
        modality, text = head.lower(), rest
    phi: dict[str, Expr] = {}
    for part in text.split("&&"):
        if not part.strip():
            raise ValueError("empty predicate: write PROCESS: EXPRESSION, joined by &&")
        p, expr = parse_conjunct(part, processes)
        if p in phi:
            raise ValueError(f"two local predicates for {p}: join them with 'and'")
        phi[p] = expr
    return modality, phi


class _Local:
    """One process's local predicate, evaluated at each change of its recorded state."""

    def __init__(self, trace, process: str, pred: LocalPredicate):
        self.process = process
        if isinstance(pred, str):
            pred = Expr(pred)
        changes = list(_state_changes(trace, process))  # (seq, state), seq ascending
        if isinstance(pred, Expr):
            known = set().union(*(s.keys() for _, s in changes)) | {"state"}
            missing = sorted(pred.names - known)
            if missing:
                have = ", ".join(sorted(known - {"state"})) or "none"
                raise ValueError(f"{process}: no recorded value named {missing[0]!r} "
                                 f"(recorded: {have})")
            expr = pred

            def fn(state):
                return expr.evaluate({**state, "state": state})
        else:
            fn = pred
        self.seqs: list[int] = []  # change points: frontier seqs where the truth may change
        self.truth: list[bool] = []
        for seq, state in [(0, {})] + changes:
            try:
                ok = bool(fn(state))
            except Exception:  # the application's values: a failing predicate is false
                ok = False
            if self.seqs and self.seqs[-1] == seq:
                self.truth[-1] = ok
            elif not self.truth or self.truth[-1] != ok:
                self.seqs.append(seq)
                self.truth.append(ok)
        # next_true[i]: the first j >= i where truth[j] (len: none)
        n = len(self.truth)
        self.next_true = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            self.next_true[i] = i if self.truth[i] else self.next_true[i + 1]

    def holds_at(self, frontier: int) -> bool:
        return self.truth[bisect.bisect_right(self.seqs, frontier) - 1]

    def next_true_frontier(self, frontier: int) -> int | None:
        """The least frontier ``>= frontier`` where the predicate holds (None: none)."""
        i = bisect.bisect_right(self.seqs, frontier) - 1
        if self.truth[i]:
            return frontier
        j = self.next_true[i]
        return self.seqs[j] if j < len(self.seqs) else None

    def intervals(self) -> list[Interval]:
        out = []
        for i, ok in enumerate(self.truth):
            if ok:
                out.append(Interval(self.seqs[i], self.seqs[i + 1] if i + 1 < len(self.seqs) else None))
        return out


def _state_changes(trace, process: str):
    """(seq, state so far) at each event of ``process`` that records values, seq ascending."""
    snaps: dict[int, dict] = {}
    for s in trace.snapshots:
        info = (s.get("processes") or {}).get(process)
        if info is not None and isinstance(info.get("state"), Mapping):
            snaps[int(info["event_seq"])] = {k: v for k, v in info["state"].items() if k != "_cutscope"}
    state: dict = {}
    i = trace._pindex.get(process)
    if i is None:
        return
    a, b = trace._start[i], trace._start[i + 1]
    kinds = trace._kind
    rows = itertools.compress(range(a, b), (kinds[g] in ("local", "snapshot") for g in range(a, b)))
    for g in rows:
        seq = trace._seq[g]
        if kinds[g] == "local":
            data = trace._event_dict(g).get("data")
            if type(data) is not dict:  # (typing's Mapping check costs microseconds per event)
                continue
            state = {**state, **{k: as_record(v) for k, v in data.items()}}
        else:
            rec = snaps.get(seq)
            if rec is None:
                continue
            state = {**state, **{k: as_record(v) for k, v in rec.items()}}
        yield seq, state


class PredicatesMixin:
    """``possibly`` and ``definitely`` of conjunctive predicates (part of ``Trace``)."""

    def _locals(self, phi: Mapping[str, LocalPredicate]) -> list[_Local]:
        if not phi:
            raise ValueError("empty predicate: name at least one process")
        out = []
        for p, pred in phi.items():
            if p not in self._pindex:
                raise ValueError(f"no process {p!r} in this trace "
                                 f"(processes: {', '.join(self.processes) or 'none'})")
            out.append(_Local(self, p, pred))
        return out

    def possibly(self, phi: Mapping[str, LocalPredicate]) -> PredicateAnswer:
        """Whether some consistent cut satisfies every local predicate of ``phi``; the least one."""
        locs = self._locals(phi)
        c = self.bottom()
        while True:
            c = self.nearest_above(c)
            changed = False
            for loc in locs:
                f = loc.next_true_frontier(c[loc.process])
                if f is None:
                    return PredicateAnswer("possibly", False, None)
                if f != c[loc.process]:
                    c[loc.process] = f
                    changed = True
            if not changed:
                return PredicateAnswer("possibly", True, c)

    def definitely(self, phi: Mapping[str, LocalPredicate]) -> PredicateAnswer:
        """Whether every run passes a cut that satisfies ``phi``; a consistent cut where it holds."""
        locs = self._locals(phi)
        queues = [loc.intervals() for loc in locs]
        heads = [0] * len(locs)
        if any(not q for q in queues):
            return PredicateAnswer("definitely", False, None)

        def before(p: int, q: int) -> bool:  # enter of p's head happened before leave of q's head
            enter = queues[p][heads[p]].enter
            leave = queues[q][heads[q]].leave
            if enter == 0 or leave is None:
                return True
            return self.vector_clock(locs[q].process, leave).get(locs[p].process, 0) >= enter

        n = len(locs)
        while True:
            dropped = False
            for p, q in itertools.permutations(range(n), 2):
                if not before(p, q):
                    heads[q] += 1  # no interval of p from here on enters before it ends
                    if heads[q] >= len(queues[q]):
                        return PredicateAnswer("definitely", False, None)
                    dropped = True
                    break
            if not dropped:
                break
        c = self.bottom()
        for i, loc in enumerate(locs):
            c[loc.process] = queues[i][heads[i]].enter
        return PredicateAnswer("definitely", True, self.nearest_above(c))

    def satisfies(self, phi: Mapping[str, LocalPredicate], cut: Mapping[str, int]) -> bool:
        """Whether every local predicate of ``phi`` holds at ``cut``."""
        return all(loc.holds_at(cut[loc.process]) for loc in self._locals(phi))
