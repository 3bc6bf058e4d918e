"""The viewer's model: causality analysis of a recorded trace, from its events alone (docs/cuts.md).

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

Modules: ``records`` (``Message``), ``columns`` (the trace columns),
``pairs`` (the pair index), ``matching`` (message matching), ``cuts`` (cut
queries), ``lattice`` (consistent cuts), ``clocks`` (vector clocks),
``cutspec`` (cut parsing), ``expr`` (user expressions), ``predicates``
(Possibly and Definitely), ``trace`` (``Trace``), ``check`` (the snapshot
check).
"""

from .check import check, check_report
from .cutspec import format_cut, parse_cut, snapshot_cut
from .expr import Expr
from .predicates import PredicateAnswer, parse_conjunct, parse_predicate
from .records import Message
from .trace import Trace

__all__ = ["Expr", "Message", "PredicateAnswer", "Trace", "check", "check_report", "format_cut",
           "parse_conjunct", "parse_cut", "parse_predicate", "snapshot_cut"]
