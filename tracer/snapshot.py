"""Snapshot coordination: start a Chandy-Lamport snapshot, detect its end, store the result.

The protocol itself (recording a state, markers, channel recording) runs inside
each logical process (``process.py``). This module is the part that spans
processes, and it talks to them only through the store, so it runs anywhere:
in a traced application (``cutscope.snapshot()``), in the ``cutscope snapshot``
command, in the viewer, or in a traced process's recorder thread (SIGUSR1).

A snapshot, step by step (docs/snapshots.md tells why each step is right):

1. A ``snapshots`` row, status ``running``, gives the snapshot its id.
2. Requests (``snapshot_requests``) go to the initiator and to every live
   process that no channel leads into (no marker can ever reach it). Each
   interpreter's recorder thread polls them (``tick``, about every 50 ms) and
   sets ``lp.pending``; the process starts the snapshot at its next safe point.
   Logical processes of the coordinator's own interpreter are told directly.
3. Every process records its state (``snapshot_states``, with the channels it
   marked) and, per incoming channel, the messages that arrived before that
   channel's marker (``snapshot_messages``; the channel joins ``closed``).
4. The snapshot is complete when every expected process (the live ones that
   have channels, and any that recorded) has recorded and finished, and every
   channel that can hold in-transit messages is closed at its receiver: each
   channel a recorded process marked (``outgoing``: its receiver may not have
   known it when it recorded) and each FIFO channel a recorded process knew
   as incoming. A timeout, or a channel that is not FIFO (raw, UDP, LIFO or
   priority queue), makes it ``partial``, with ``missing`` naming what is
   missing.
5. The processes learn that the snapshot ended (directly, or through the
   store in ``tick``) and stop recording for it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("cutscope")

LIVE_NS = 10_000_000_000  # a process whose recorder has not beaten for 10 s is not live
POLL_S = 0.005  # how often a waiting coordinator reads the progress
TICK_S = 0.05  # minimum interval between two request polls of one interpreter


class SnapshotError(Exception):
    """A snapshot that cannot be started (no such process, nothing live): one clear line."""


@dataclass
class Snapshot:
    """A finished (or, with ``status == "running"``, unfinished) snapshot.

    ``states``: ``{process: recorded state}``, the application's providers
    merged, with the tracer's own under ``"_cutscope"``. ``channels``:
    ``{channel id: [message]}``, each message as the interchange format has it
    (``msg``, ``nbytes``, ``payload_b64`` and/or ``value``, ``truncated``).
    ``event_seqs``: ``{process: seq of its snapshot event}`` (the cut).
    ``missing``: what a ``partial`` snapshot lacks, e.g.
    ``{"process": "bank-3", "reason": "..."}`` or ``{"channel": "c7", ...}``.
    """

    id: int
    status: str
    initiator: str
    states: dict[str, dict] = field(default_factory=dict)
    channels: dict[str, list[dict]] = field(default_factory=dict)
    missing: list[dict] = field(default_factory=list)
    event_seqs: dict[str, int] = field(default_factory=dict)
    complete_channels: set[str] = field(default_factory=set)
    elapsed: float | None = None  # seconds from request to end (None while running)
    entry: dict | None = None  # the interchange form (SPEC 7)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @classmethod
    def from_entry(cls, entry: dict) -> "Snapshot":
        procs = entry.get("processes", {})
        chans = entry.get("channels", [])
        elapsed = None
        if entry.get("finished_ns") and entry.get("requested_ns"):
            elapsed = (entry["finished_ns"] - entry["requested_ns"]) / 1e9
        return cls(
            id=entry["id"], status=entry["status"], initiator=entry["initiator"],
            states={p: v.get("state") or {} for p, v in procs.items()},
            channels={c["channel"]: list(c.get("messages", [])) for c in chans},
            missing=list(entry.get("missing") or []),
            event_seqs={p: v["event_seq"] for p, v in procs.items()},
            complete_channels={c["channel"] for c in chans if c.get("complete")},
            elapsed=elapsed, entry=entry)

    def summary(self) -> str:
        n_msgs = sum(len(m) for m in self.channels.values())
        took = f", {self.elapsed * 1000:.0f} ms" if self.elapsed is not None else ""
        return (f"snapshot {self.id}: {self.status} (initiator {self.initiator}, "
                f"{len(self.states)} processes, {n_msgs} messages in transit{took})")


class Coordinator:
    """One snapshot, driven step by step: ``start()``, then ``poll()`` until it returns True.

    ``store`` is any store with the snapshot operations (``SqlStore``,
    ``MemoryStore``). ``tracer``: the tracer of this interpreter, if any; its
    logical processes are told directly, and ``caller`` (the logical process
    that asked, if any) records at once when it is asked to, since asking is a
    safe point of its own.
    """

    def __init__(self, store, initiator: str | None = None, timeout: float = 10.0,
                 tracer=None, caller=None):
        self.store = store
        self.initiator = initiator
        self.timeout = timeout
        self.tracer = tracer
        self.caller = caller
        self.id: int | None = None
        self.status = "new"
        self.expected: set[str] = set()
        self.requested: set[str] = set()
        self.missing: list[dict] = []
        self._chan_info: dict[str, dict] = {}

    # -- start --------------------------------------------------------------------------

    def start(self) -> int:
        now = time.time_ns()
        live = set(self.store.live_processes(now - LIVE_NS))
        local = self._local_names()
        live |= local  # this interpreter's processes are alive, whatever the last beat says
        ends = self.store.channel_ends()
        self._chan_info = {c["id"]: c for c in ends}
        participants = {p for c in ends for p in (c["src"], c["dst"]) if p in live}
        initiator = self.initiator
        if initiator is None:
            if self.caller is not None:
                initiator = self.caller.name
            elif participants:
                initiator = min(participants)
            else:
                raise SnapshotError("no live traced process to take a snapshot of"
                                    if not live else "no live traced process has a channel yet")
        elif initiator not in live:
            raise SnapshotError(f"no live traced process named {initiator!r}")
        self.initiator = initiator
        self.expected = participants | {initiator}
        self.id = self.store.create_snapshot(initiator, now)
        self.status = "running"
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.timeout
        self.grace = self.t0 + min(0.5, self.timeout / 4)
        # Markers reach what the FIFO channels lead to from the initiator; the rest
        # (a process nothing leads into, another system sharing the store) is asked.
        self._request({initiator} | (self.expected - reachable(initiator, ends)))
        return self.id

    def _local_names(self) -> set[str]:
        t = self.tracer
        if t is None:
            return set()
        return {n for n, lp in list(t.processes.items()) if not lp.ended}

    def _request(self, names: set[str]) -> None:
        names = set(names) - self.requested
        if not names:
            return
        self.requested |= names
        local = self._local_names() & names
        for n in local:  # told directly, before any write
            self.tracer.processes[n].request(self.id, self.initiator)
        self._caller_safepoint()
        if names - local:
            self.store.add_snapshot_requests(self.id, self.initiator, sorted(names), time.time_ns(),
                                             taken=local)

    def _caller_safepoint(self) -> None:
        c = self.caller
        if c is not None and c.pending:
            c.safepoint()

    # -- progress ---------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read the progress; end the snapshot when it is complete or out of time.
        Returns True once it has ended."""
        if self.status != "running":
            return True
        self._caller_safepoint()
        prog = self.store.snapshot_progress(self.id)
        if prog is None:
            raise SnapshotError(f"snapshot {self.id} vanished from the store")
        if prog["status"] != "running":  # ended elsewhere
            self.status = prog["status"]
            self._finish_local()
            return True
        states = prog["states"]
        recorded = set(states)
        self.expected |= recorded
        wait: set[str] = set()
        closed: set[str] = set()
        uncovered: set[str] = set()
        for info in states.values():
            own = info["own"]
            wait.update(info["outgoing"])
            wait.update(own.get("incoming", ()))
            closed.update(info["closed"])
            uncovered.update(own.get("uncovered", ()))
        unrecorded = self.expected - recorded
        unfinished = {p for p, info in states.items() if not info["done"]}
        open_ = wait - closed
        now = time.monotonic()
        if not unrecorded and not unfinished and not open_ and not self._newcomers(recorded):
            if not uncovered:
                self._end("complete", [])
            else:
                self._end("partial", self._describe(set(), set(), set(), uncovered))
            return True
        if now >= self.deadline:
            self._end("partial", self._describe(unrecorded, unfinished, open_, uncovered))
            return True
        if now >= self.grace:
            if open_ and now >= getattr(self, "_refreshed", 0.0) + 0.1:
                # The sender of a channel still open may be a process that nothing
                # leads into and that the channel table did not show at the start.
                self._refreshed = now
                self._chan_info.update({c["id"]: c for c in self.store.channel_ends()})
                self.expected |= {self._chan_info[c]["src"] for c in open_
                                  if self._chan_info.get(c, {}).get("src")} - recorded
            if (self.expected - recorded) - self.requested:
                # Not reached by a marker in time: start it directly (at its next safe point).
                self._request(self.expected - recorded)
        return False

    def _newcomers(self, recorded: set[str]) -> bool:
        """Before calling it complete: live processes with channels that the store did
        not show at the start (their first channel was still being written) and that
        no marker reached. They are asked to start; the snapshot waits for them."""
        live = set(self.store.live_processes(time.time_ns() - LIVE_NS)) | self._local_names()
        ends = self.store.channel_ends()
        self._chan_info.update({c["id"]: c for c in ends})
        new = {p for c in ends for p in (c["src"], c["dst"]) if p in live} - recorded - self.expected
        if not new:
            return False
        self.expected |= new
        self._request(new)
        return True

    def _describe(self, unrecorded, unfinished, open_, uncovered) -> list[dict]:
        if open_ or uncovered:
            self._chan_info.update({c["id"]: c for c in self.store.channel_ends()})
        out: list[dict] = []
        for p in sorted(unrecorded):
            why = ("asked to start the snapshot, never reached a safe point"
                   if p in self.requested else "no marker reached it")
            out.append({"process": p, "reason": f"never recorded its state: {why}"})
        for c in sorted(open_):
            info = self._chan_info.get(c, {})
            out.append({"channel": c, "src": info.get("src"), "dst": info.get("dst"),
                        "reason": "its marker never arrived at the receiver"})
        for c in sorted(uncovered - open_):
            info = self._chan_info.get(c, {})
            out.append({"channel": c, "src": info.get("src"), "dst": info.get("dst"),
                        "reason": "not FIFO (raw, UDP, LIFO or priority): no marker can cover it"})
        for p in sorted(unfinished - unrecorded):
            if not any(m.get("dst") == p for m in out if "channel" in m):
                out.append({"process": p, "reason": "recorded, but not every incoming channel closed"})
        return out

    def _end(self, status: str, missing: list[dict]) -> None:
        self.missing = missing
        if self.store.finish_snapshot(self.id, status, missing, time.time_ns()):
            self.status = status
        else:  # someone else ended it first
            prog = self.store.snapshot_progress(self.id)
            self.status = prog["status"] if prog else status
        self._finish_local()

    def _finish_local(self) -> None:
        t = self.tracer
        if t is None:
            return
        for lp in list(t.processes.values()):
            if self.id in lp.snaps or any(p[0] == self.id for p in lp.pending):
                lp.finish(self.id, self.status == "complete")

    # -- all at once ------------------------------------------------------------------------

    def wait(self) -> "Snapshot":
        while not self.poll():
            time.sleep(POLL_S)
        return self.result()

    def result(self) -> "Snapshot":
        if self.tracer is not None and self.status == "partial":
            self.tracer.recorder.flush(timeout=1.0)  # the incomplete channel states
        entry = self.store.snapshot_entry(self.id)
        return Snapshot.from_entry(entry)


def reachable(start: str, ends: list[dict]) -> set[str]:
    """The processes that markers from ``start`` reach over the known FIFO channels."""
    nxt: dict[str, set[str]] = {}
    for c in ends:
        if c["src"] and c["dst"] and c["fifo"]:
            nxt.setdefault(c["src"], set()).add(c["dst"])
    seen, todo = {start}, [start]
    while todo:
        for q in nxt.get(todo.pop(), ()):
            if q not in seen:
                seen.add(q)
                todo.append(q)
    return seen


def take(store, initiator: str | None = None, timeout: float = 10.0, tracer=None,
         caller=None) -> Snapshot:
    """Take one snapshot and wait for its end (complete or partial)."""
    c = Coordinator(store, initiator=initiator, timeout=timeout, tracer=tracer, caller=caller)
    c.start()
    return c.wait()


# -- the recorder thread's part (Tracer.tick_hooks) -----------------------------------------

def tick(tracer) -> None:
    """Called by each interpreter's recorder thread, about every 50 ms.

    Writes the markers that a send-exit safe point left queued; turns SIGUSR1s
    into snapshots; takes this interpreter's snapshot requests from the store
    (sets ``lp.pending``); ends the snapshots that the store says have ended.
    """
    dq = tracer.deferred_flush
    while dq:
        ep = dq.pop(0)
        if ep.pending and not ep.closed and ep.flush is not None:
            tracer.guard(ep.flush, ep)
    if tracer.snapshot_signals:
        n, tracer.snapshot_signals = tracer.snapshot_signals, 0
        for _ in range(min(n, 4)):
            _start_from_signal(tracer)
    now = time.monotonic()
    if now - getattr(tracer, "_snap_polled", 0.0) < TICK_S:
        return
    tracer._snap_polled = now
    store = tracer.store
    requests = getattr(store, "snapshot_requests", None)
    if requests is None:
        return
    procs = tracer.processes
    names = [n for n, lp in list(procs.items()) if not lp.ended]
    taken = tracer.__dict__.get("_snap_taken", set())
    current = set()
    for sid, name, initiator in requests(names):
        current.add((sid, name))
        if (sid, name) in taken:
            continue
        lp = procs.get(name)
        if lp is not None:
            lp.request(sid, initiator)
    tracer._snap_taken = current  # only the requests of running snapshots are remembered
    open_ = {sid for lp in list(procs.values()) for sid in list(lp.snaps)}
    open_.update(sid for lp in list(procs.values()) for sid, _ in list(lp.pending))
    if open_:
        ended = {sid: st for sid, st in store.snapshot_statuses(open_).items() if st != "running"}
        for lp in list(procs.values()):
            for sid, st in ended.items():
                if sid in lp.snaps or any(p[0] == sid for p in lp.pending):
                    lp.finish(sid, st == "complete")


def _start_from_signal(tracer, timeout: float = 10.0) -> None:
    """SIGUSR1: a snapshot with this process's main logical process as initiator.

    Runs in the recorder thread (the signal handler only counted); the waiting
    happens in a thread of its own, which logs the result.
    """
    lp = tracer.main
    c = Coordinator(tracer.store, initiator=lp.name, timeout=timeout, tracer=tracer)
    try:
        c.start()
    except SnapshotError as exc:
        log.warning("cutscope: SIGUSR1: %s", exc)
        return

    def run():
        try:
            snap = c.wait()
            log.warning("cutscope: SIGUSR1: %s", snap.summary())
        except Exception as exc:
            tracer._writer_error(exc)

    threading.Thread(target=run, name=f"cutscope-snapshot-{c.id}", daemon=True).start()


__all__ = ["Snapshot", "SnapshotError", "Coordinator", "take", "tick", "LIVE_NS"]
