"""Reading a trace out of the store: the interchange document (docs/format.md)."""

from __future__ import annotations

import itertools
import json
from json.encoder import encode_basestring_ascii
from typing import IO, Callable, Iterable

from cutscope.tracer.store import open_store
from cutscope.tracer.store.document import event_doc


def load(db: str | None = None) -> dict:
    """The trace in ``db`` as the ``cutscope-trace`` document. Raises StoreError."""
    store = open_store(db, create=False)
    try:
        return store.load()
    finally:
        store.close()


def load_trace(db: str | None = None):
    """The trace in ``db`` analysed (``model.Trace``), read from the store's event
    blocks into columns, without the document's dict per event (about half the time
    and memory of ``Trace(load(db))`` at a million events). ``trace.doc`` is the
    document without its events. Raises StoreError."""
    from .model import Trace

    store = open_store(db, create=False)
    try:
        return Trace.from_store(store)
    finally:
        store.close()


def write_json(doc: dict, out: IO[str]) -> None:
    json.dump(doc, out, indent=1)
    out.write("\n")


# What ``write_json`` writes for an event at its depth in the document (indent 1: an
# event's braces at two spaces, its keys at three), in pieces between its values, each
# piece led by the comma and line break that separate it from the event before. Events
# whose values are plain (no payload, no recorded data) are written from these pieces;
# any other goes through ``json.dumps``.
_PIECES = (',\n  {\n   "process": ', ',\n   "seq": ', ',\n   "lamport": ', ',\n   "kind": ',
           ',\n   "channel": ', ',\n   "msg": ', ',\n   "nbytes": ', ',\n   "wall_ns": ', '\n  }')
_EVENTS_KEY = '\n "events": []'  # the events' place in the document, at depth 1
CHUNK = 20_000  # events formatted per write


def _json_value(v) -> str:
    if type(v) is str:
        return encode_basestring_ascii(v)
    return json.dumps(v)


def store_json(store, out: IO[str], progress: Callable[[str, int, int], None] | None = None) -> int:
    """Write the store's trace as ``write_json(store.load(), out)`` does, byte for byte,
    without a dict per event: the events are read block by block into columns (a few
    tens of bytes an event), put in the document's order (process name, then seq; the
    first written of a duplicate kept) and written ``CHUNK`` at a time. Returns the
    number of events. ``progress(phase, done, total)``: "read" (total 0: unknown) and
    "write", every chunk."""
    from .model.columns import ColumnsMixin

    parts = store.document_and_blocks() if hasattr(store, "document_and_blocks") else None
    if parts is not None:
        doc = next(parts)
        blocks: Iterable = parts
    else:
        doc, blocks = store.load(events=False), store.event_blocks()
    if progress is not None:
        blocks = _counting(blocks, progress)
    cols = ColumnsMixin()
    try:
        cols._from_rows({p["name"]: None for p in doc.get("processes", [])}, blocks)
    except (TypeError, OverflowError):  # a seq, clock or wall time that is not a 64-bit int
        if parts is not None:
            parts.close()
        doc = store.load()
        write_json(doc, out)
        return len(doc["events"])
    n = cols.n_events
    head = json.dumps(doc, indent=1)
    if not n:
        out.write(head + "\n")
        return 0
    before, sep, after = head.partition(_EVENTS_KEY)
    if not sep or _EVENTS_KEY in after:
        raise ValueError("the document's events have no single place")  # not reached
    out.write(before + '\n "events": [\n')
    procs, pid_start = cols.processes, cols._start
    seq, lam, wall, kind, ch, msg, nb = (cols._seq, cols._lam, cols._wall, cols._kind, cols._ch,
                                         cols._msg, cols._nb)
    srow, extra = cols._srow, cols._extra
    enc: dict = {None: "null"}
    E = encode_basestring_ascii
    rep = itertools.repeat
    done = 0
    first = True
    for i in sorted(range(len(procs)), key=procs.__getitem__):
        p = procs[i]
        pj = _json_value(p)
        pe = pj[1:-1]  # the name escaped, for the derived ids "<name>#<seq>"
        for a in range(pid_start[i], pid_start[i + 1], CHUNK):
            b = min(a + CHUNK, pid_start[i + 1])
            rs = srow[a:b]
            seqs, kinds, msgs = seq[a:b], kind[a:b], msg[a:b]
            chs = list(map(ch.__getitem__, rs))
            nbs = list(map(nb.__getitem__, rs))
            if (extra and not extra.keys().isdisjoint(rs)) or set(map(type, nbs)) != {int}:
                text = "".join(_event_text(p, seq[g], lam[r], wall[r], kind[g], ch[r], msg[g], nb[r],
                                            extra.get(r)) for g, r in zip(range(a, b), rs))
            else:
                for v in set(kinds).union(chs):
                    if v not in enc:
                        enc[v] = _json_value(v)
                mjs = [E(m) if m else f'"{pe}#{q}"' if m is None and k == "send" else "null"
                       for m, k, q in zip(msgs, kinds, seqs)]
                text = "".join(itertools.chain.from_iterable(zip(
                    rep(_PIECES[0]), rep(pj), rep(_PIECES[1]), map(str, seqs),
                    rep(_PIECES[2]), map(str, map(lam.__getitem__, rs)),
                    rep(_PIECES[3]), map(enc.__getitem__, kinds), rep(_PIECES[4]),
                    map(enc.__getitem__, chs), rep(_PIECES[5]), mjs, rep(_PIECES[6]),
                    map(str, nbs), rep(_PIECES[7]), map(str, map(wall.__getitem__, rs)),
                    rep(_PIECES[8]))))
            out.write(text[2:] if first else text)  # the first event: no comma before it
            first = False
            done += b - a
            if progress is not None:
                progress("write", done, n)
    out.write("\n ]" + after + "\n")
    return n


def _event_text(p, seq, lam, wall, kind, ch, msg, nb, extra) -> str:
    """One event as ``write_json`` writes it, led by a comma and a line break."""
    e = event_doc(p, seq, lam, wall, kind, ch, msg, nb, *(extra or (None, None)))
    return ",\n  " + json.dumps(e, indent=1).replace("\n", "\n  ")


def _counting(blocks: Iterable, progress: Callable[[str, int, int], None]):
    got = 0
    for rows in blocks:
        got += len(rows)
        progress("read", got, 0)
        yield rows
