"""Snapshot coordination: start a Chandy-Lamport snapshot, detect its end, store the result.

The protocol itself (recording a state, markers, channel recording) runs inside
each logical process (``process.py``). This module is the part that spans
processes. It reaches them through their control sockets (``control.py``: the
processes of this machine) and through the store (everyone else), so it runs
anywhere: in a traced application (``cutscope.snapshot()``), in the ``cutscope
snapshot`` command, in the viewer, or in a traced process's recorder thread
(SIGUSR1).

A snapshot, step by step (docs/snapshots.md tells why each step is right):

1. An id (``store.new_snapshot``; the ``snapshots`` row, status ``running``,
   comes with the first write on SQLite). The coordinator opens its inbox, at
   a path that the processes of this host derive from the store and the id
   (``control.inbox_path``), before it asks anyone.
2. Requests go to the initiator and to every live process that no channel
   leads into (no marker can ever reach it): through its control socket, where
   a thread that does nothing else sets ``lp.pending`` at once, else as a
   ``snapshot_requests`` row that the interpreter's recorder thread polls
   (``tick``, about every 50 ms). Logical processes of the coordinator's own
   interpreter are told directly. The process starts the snapshot at its next
   safe point. Ended logical processes record their final state when channels
   are still open after the grace period (``record_ended``).
3. Every process records its state (with the channels it marked) and, per
   incoming channel, the messages that arrived before that channel's marker;
   it reports them to the coordinator (its inbox, if there is one on this
   host) or, failing that, to the store (``snapshot_states``,
   ``snapshot_messages``).
4. The snapshot is complete when every expected process (the live ones that
   have channels, and any that recorded) has recorded and finished, and every
   channel that can hold in-transit messages is closed at its receiver: each
   channel a recorded process marked (``outgoing``: its receiver may not have
   known it when it recorded) and each FIFO channel a recorded process knew
   as incoming. A timeout, or a channel that is not FIFO (raw, UDP, LIFO or
   priority queue), makes it ``partial``, with ``missing`` naming what is
   missing. The inbox's records are written with the end, in one transaction.
5. The processes learn that the snapshot ended (directly, through their
   control socket, or through the store in ``tick``) and stop recording for it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from .participant import record_ended
from .result import Snapshot, SnapshotError

if TYPE_CHECKING:
    from ..store.interface import Store

log = logging.getLogger("cutscope")

# A process whose recorder beat within this much of a snapshot's start is live: the
# snapshot expects it (silent for longer, it has stopped or hangs: not waited for).
SNAPSHOT_LIVE_NS = 10_000_000_000
POLL_S = 0.005  # how often a waiting coordinator reads the progress (it wakes on reports too)
STORE_POLL_S = 0.01  # at most this often it reads the progress from the store
# With PostgreSQL notifications (tracer/notify.py): a coordinator reads the progress
# when a recorder announces records of its snapshot, and at least this often.
NOTIFIED_POLL_S = 0.25
# How often a coordinator asks the receivers of open counted channels to close them
# by count (``Coordinator._close_idle``).
IDLE_CLOSE_S = 0.05


class Coordinator:
    """One snapshot, driven step by step: ``start()``, then ``poll()`` until it returns True.

    ``store`` is a ``Store`` (``tracer/store/interface.py``: ``SqlStore``,
    ``MemoryStore``). ``tracer``: the tracer of this interpreter, if any; its
    logical processes are told directly, and ``caller`` (the logical process
    that asked, if any) records at once when it is asked to, since asking is a
    safe point of its own.
    """

    def __init__(self, store: Store, initiator: str | None = None, timeout: float = 10.0,
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
        self.inbox = None  # the reports that come directly (control.Inbox / control.Records)
        self._direct: dict[str, dict] = {}  # process -> progress row, from the inbox
        self._records: list[tuple] = []  # the inbox's records, written with the end
        self._pids: dict[str, int] = {}  # live process -> pid, on this host
        self._ctl_dir: str | None = None
        self._store_read = 0.0
        self._store_states: dict[str, dict] = {}
        self._create = None  # (initiator, requested_ns) while the snapshot's row is not written
        self._ended_asked = False  # ended processes asked to record (_ask_ended)
        self._newcomers_for: set[str] | None = None  # expected when _newcomers last read
        self._listener = None  # PostgreSQL: the recorders' announcements of snapshot records
        self._notified = False  # one of them named this snapshot since the last read
        self._listening = False  # the listener was ready at the last read
        self._idle_next = 0.0  # the next time open counted channels are closed by count
        self.timings: list[tuple[str, float]] = []  # (step, seconds since start()): where the time goes

    # -- start --------------------------------------------------------------------------

    def _mark(self, step: str) -> None:
        self.timings.append((step, time.monotonic() - self._m0))

    def start(self) -> int:
        now = time.time_ns()
        self._m0 = time.monotonic()
        # (the live processes with their pids, and the channels: one read)
        self._live_rows, ends = self.store.live_and_ends(now - SNAPSHOT_LIVE_NS)
        live = {r["name"] for r in self._live_rows}
        local = self._local_names()
        live |= local  # this interpreter's processes are alive, whatever the last beat says
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
            alike = sorted(n for n in live if n.partition("#")[0] == initiator.partition("#")[0])
            raise SnapshotError(f"no live traced process named {initiator!r}"
                                + (f" (live under that name: {', '.join(alike)})" if alike else ""))
        self.initiator = initiator
        self.expected = participants | {initiator}
        self._mark("read")
        # (the row may come later, with the first write that needs it)
        self.id, written = self.store.new_snapshot(initiator, now)
        self._create = None if written else (initiator, now)
        self._mark("created")
        self.status = "running"
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.timeout
        self.grace = self.t0 + min(0.5, self.timeout / 4)
        self._open_inbox(live)
        self._listen(live)
        # Markers reach what the FIFO channels lead to from the initiator; the rest
        # (a process nothing leads into, another system sharing the store) is asked.
        ask = {initiator} | (self.expected - reachable(initiator, ends))
        try:
            self._request(ask)
        except BaseException:
            lst, self._listener = self._listener, None
            if lst is not None:
                lst.close()
            raise
        self._ended_asked = False
        self._mark("requested")
        return self.id

    def _open_inbox(self, live: set[str]) -> None:
        """Where the processes report to us directly: this interpreter's processes
        through a callable, the other local interpreters through a control socket
        at a path they derive from the store and the snapshot id (control.inbox_path:
        open before anyone is asked, so no process needs telling)."""
        from .. import control

        sid = self.id
        d = control.control_dir() if self.store.url != "memory:" else None
        if d is not None and os.environ.get("CUTSCOPE_CONTROL", "1") not in ("0", "no", "false"):
            try:
                self.inbox = control.Inbox(d, self.store.url, sid)
                self._ctl_dir = d
            except OSError:
                self.inbox = None
        if self.inbox is None:
            self.inbox = control.Records()  # this interpreter's processes call put()
        if self.tracer is not None:
            self.tracer.resolve_sink(sid, self.inbox.put)
        if self._ctl_dir is None:
            return
        me, host = os.getpid(), socket.gethostname()
        rows = self._live_rows
        self._pids = {r["name"]: r["pid"] for r in rows
                      if r["host"] == host and r["pid"] and r["pid"] != me and r["name"] in live}

    def _listen(self, live: set[str]) -> None:
        """PostgreSQL: listen for the recorders' announcements of records of this
        snapshot, when some live process may report through the store (neither of
        this interpreter nor reachable through a control socket of this host). Until
        the listener is ready, the store is polled as without it."""
        if not self.store.notify:
            return
        if not live - self._local_names() - set(self._pids):
            return
        from .. import notify

        try:
            self._listener = self.store.listen((notify.REP,), self._on_report,
                                               name=f"cutscope-coordinator-{self.id}")
        except Exception as exc:
            log.debug("cutscope: no notifications: %s", exc)

    def _on_report(self, channel: str, payload: str) -> None:
        if str(self.id) in payload.split(","):
            self._notified = True
            wake = getattr(self.inbox, "wake", None)
            if wake is not None:
                wake.set()

    def _msg(self, op: str, **kw) -> dict:
        return {"op": op, "store": self.store.url, "sid": self.id, "initiator": self.initiator,
                "reply": getattr(self.inbox, "path", None), **kw}

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
        # Processes of this host with a control socket: asked through it, at once.
        taken = set(local)
        if self._ctl_dir is not None:
            from .. import control

            by_pid: dict[int, list[str]] = {}
            for n in names - local:
                if n in self._pids:
                    by_pid.setdefault(self._pids[n], []).append(n)
            conn = control.Connector()
            try:
                for pid, ns in sorted(by_pid.items()):
                    if conn.send(control.process_path(self._ctl_dir, pid),
                                 self._msg("req", start=sorted(ns))):
                        taken.update(ns)
            finally:
                conn.close()
        self._caller_safepoint()
        if names - taken:
            kw = {"create": self._create} if self._create else {}
            self.store.add_snapshot_requests(self.id, self.initiator, sorted(names), time.time_ns(),
                                             taken=taken, **kw)
            self._create = None

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
        self._take_inbox()
        now = time.monotonic()
        # The store: every STORE_POLL_S while some expected process has not
        # reported directly (it may report to the store), else every 50 ms (to see
        # an end decided elsewhere).
        every = STORE_POLL_S if not self.expected <= set(self._direct) else 0.05
        lst = self._listener
        if lst is not None and lst.ready.is_set():
            # The recorders announce what they write: read when one does (and at
            # once when the listener has just become ready: it missed what came before).
            every = 0.0 if self._notified or not self._listening else max(every, NOTIFIED_POLL_S)
            self._listening = True
        else:
            self._listening = False
        # Not when the direct reports alone complete it: that read would only delay
        # the end (on a store that many recorders write, by milliseconds); an end
        # decided elsewhere still shows in finish_snapshot's answer.
        if now - self._store_read >= every and not self._direct_complete():
            self._store_read = now
            self._notified = False  # (before the read: an announcement during it counts)
            prog = (self.store.snapshot_progress(self.id, unwritten=True) if self._create
                    else self.store.snapshot_progress(self.id))
            if prog is None:
                raise SnapshotError(f"snapshot {self.id} vanished from the store")
            if prog["status"] != "running":  # ended elsewhere
                self.status = prog["status"]
                self._finish_local()
                self._close_inbox()
                return True
            if len(prog["states"]) != len(self._store_states) and len(self.timings) < 64:
                self._mark(f"store states {len(prog['states'])}")
            self._store_states = prog["states"]
        # (a process's direct rows count once its state is there)
        states = {**self._store_states, **{p: r for p, r in self._direct.items() if "own" in r}}
        recorded = set(states)
        self.expected |= recorded
        unrecorded, unfinished, open_, uncovered = self._progress(states)
        if open_ or unfinished:
            self._close_idle(states, open_)
        if not unrecorded and self._newcomers_for != self.expected:
            # Every expected process has recorded; what is left is markers on their
            # way. Look for newcomers now, while those come in, not after the last.
            self._newcomers(recorded)  # (adds them to expected and asks them)
            self._newcomers_for = set(self.expected)
            unrecorded = self.expected - recorded
        now = time.monotonic()
        if not unrecorded and not unfinished and not open_:
            if not uncovered:
                self._end("complete", [])
            else:
                self._end("partial", self._describe(set(), set(), set(), uncovered))
            return True
        if now >= self.deadline:
            self._end("partial", self._describe(unrecorded, unfinished, open_, uncovered))
            return True
        if now >= self.grace:
            if open_ and not self._ended_asked:
                self._ask_ended()
            if open_ and now >= getattr(self, "_refreshed", 0.0) + 0.1:
                # The sender of a channel still open may be a process that nothing
                # leads into and that the channel table did not show at the start.
                self._refreshed = now
                self._chan_info.update({c["id"]: c for c in self.store.channel_ends()})
                # Its receiver too: one that never reads the channel again gets no
                # marker, and only its state lets the channel close by count
                # (_close_idle); it may not have been in the table at the start either.
                self.expected |= {self._chan_info[c][k] for c in open_ for k in ("src", "dst")
                                  if self._chan_info.get(c, {}).get(k)} - recorded
            if (self.expected - recorded) - self.requested:
                # Not reached by a marker in time: start it directly (at its next safe point).
                self._request(self.expected - recorded)
        return False

    def _progress(self, states: dict) -> tuple[set, set, set, set]:
        """(unrecorded, unfinished, open channels, uncovered channels) given ``states``."""
        wait: set[str] = set()
        closed: set[str] = set()
        uncovered: set[str] = set()
        for info in states.values():
            own = info["own"]
            wait.update(info["outgoing"])
            wait.update(own.get("incoming", ()))
            closed.update(info["closed"])
            closed.update(own.get("ended", ()))  # ended at the receiver before it recorded
            uncovered.update(own.get("uncovered", ()))
        unrecorded = self.expected - set(states)
        unfinished = {p for p, info in states.items() if not info["done"]}
        return unrecorded, unfinished, wait - closed, uncovered

    def _close_idle(self, states: dict, open_: set) -> None:
        """Close the counted channels whose marker is late (``LogicalProcess.close_idle``).

        A sender whose channel's receiver cannot see a marker at its head (a queue's
        pipe) records with its state how many messages it sent on it (``"sent"``).
        Each recorded receiver of such a channel that is still open is asked to close
        it if it has received that many: a queue that its receiver never reads again
        keeps the marker in its pipe, and the count closes the channel all the same.
        A receiver that still waits for a counted channel that another receiver
        closed (a queue with several consumers: the marker went to one) is asked to
        close it too. Through this interpreter (its own processes) and the control
        sockets of this host; a receiver reached only through the store waits for
        the marker."""
        now = time.monotonic()
        if now < self._idle_next:
            return
        self._idle_next = now + IDLE_CLOSE_S
        sent: dict[str, tuple[int, int]] = {}  # channel -> (count, sender's event seq)
        for info in states.values():
            own = info["own"]
            for c, n in (own.get("sent") or {}).items():
                sent[c] = (n, own.get("seq", info.get("event_seq")))
        if not sent:
            return
        asks: dict[str, list] = {}
        for p, info in states.items():
            if info["done"]:
                continue
            mine = set(info["closed"])
            for c in info["own"].get("incoming", ()):
                if c in sent and c not in mine:
                    asks.setdefault(p, []).append([c, *sent[c], c not in open_])
        for c in sorted(open_ & set(sent)):  # a receiver that had not heard of it when it recorded
            dst = self._chan_info.get(c, {}).get("dst")
            if dst in states and c not in states[dst]["own"].get("incoming", ()):
                asks.setdefault(dst, []).append([c, *sent[c], False])
        if not asks:
            return
        local = self._local_names()
        by_pid: dict[int, list] = {}
        for p, items in sorted(asks.items()):
            if p in local:
                lp = self.tracer.processes[p]
                for item in items:
                    self.tracer.guard(lp.close_idle, self.id, *item)
            elif p in self._pids:
                by_pid.setdefault(self._pids[p], []).extend([p, *item] for item in items)
        if by_pid and self._ctl_dir is not None:
            from .. import control

            conn = control.Connector()
            try:
                for pid, closes in sorted(by_pid.items()):
                    conn.send(control.process_path(self._ctl_dir, pid),
                              self._msg("idle", closes=closes))
            finally:
                conn.close()

    def _direct_complete(self) -> bool:
        """Every expected process reported directly, and those reports end the snapshot."""
        direct = {p: r for p, r in self._direct.items() if "own" in r}
        if not self.expected <= set(direct):
            return False
        unrecorded, unfinished, open_, _ = self._progress({**self._store_states, **direct})
        return not (unrecorded or unfinished or open_)

    def _take_inbox(self) -> None:
        """Fold the records that came directly into the progress."""
        if self.inbox is None:
            return
        items = self.inbox.take()
        if items and len(self.timings) < 64:
            self._mark(f"reports {len(items)}")
        for item in items:
            kind, p = item[0], item[2]
            self._records.append(item)
            if kind == "snap_state":
                state = item[4]
                if isinstance(state, str):
                    state = json.loads(state)
                own = state.get("_cutscope", {}) if isinstance(state, dict) else {}
                row = self._direct.setdefault(p, {"closed": [], "done": False})
                row.update(event_seq=item[3], outgoing=list(item[5]), own=own)
            elif kind == "snap_chan":
                if item[5]:
                    self._direct.setdefault(p, {"closed": [], "done": False})["closed"].append(item[3])
            elif kind == "snap_done":
                self._direct.setdefault(p, {"closed": [], "done": False})["done"] = True

    def _ask_ended(self) -> None:
        """Channels still open after the grace period: the logical processes that
        have ended (left ``cutscope.process``) record their final state now, here
        and in every interpreter we reached (``record_ended``). Not at once: a
        process that leaves and enters ``cutscope.process`` around each step would
        be recorded between two steps rather than at its next safe point."""
        self._ended_asked = True
        if self.tracer is not None:
            record_ended(self.tracer, self.id, self.initiator)
        self._tell_local("ended")

    def _newcomers(self, recorded: set[str]) -> None:
        """Once every expected process has recorded: live processes with channels that
        the store did not show at the start (their first channel was still being
        written) and that no marker reached. They are asked to start; the snapshot
        waits for them. (A process that a recorded one received from before it
        recorded is waited for whatever this read shows: that channel is in the
        receiver's state, and its marker must come.) Only the channels of the live
        processes that could be newcomers are read (none on a store that many
        recorders write, where reading the whole table took milliseconds)."""
        live = set(self.store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS)) | self._local_names()
        candidates = live - recorded - self.expected
        ends = self.store.channel_ends(among=candidates) if candidates else []
        if len(self.timings) < 64:
            self._mark("newcomers read")
        self._chan_info.update({c["id"]: c for c in ends})
        new = {p for c in ends for p in (c["src"], c["dst"]) if p in candidates}
        if new:
            self.expected |= new
            self._request(new)

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
        self._take_inbox()
        self._mark("decided")
        # The records that came directly are written with the end, in one transaction.
        kw = {"create": self._create} if self._create else {}
        if self.store.finish_snapshot(self.id, status, missing, time.time_ns(),
                                      records=self._records, **kw):
            self.status = status
        else:  # someone else ended it first
            prog = self.store.snapshot_progress(self.id)
            self.status = prog["status"] if prog else status
        self._create = None
        self._mark("written")
        self._finish_local()
        self._close_inbox()
        self._tell_local("end", status=self.status)  # the others stop recording for it

    def interrupt(self, reason: str = "interrupted") -> None:
        """End the snapshot now, as ``partial`` with ``reason`` as what is missing
        (the waiting side was interrupted); if someone else ended it first, their
        status stands."""
        self._end("partial", [{"reason": reason}])

    def _tell_local(self, op: str, **kw) -> None:
        """Send ``op`` to the control socket of every live interpreter of this host."""
        if not self._pids or self._ctl_dir is None:
            return
        from .. import control

        conn = control.Connector()
        try:
            for pid in sorted(set(self._pids.values())):
                conn.send(control.process_path(self._ctl_dir, pid), self._msg(op, **kw))
        finally:
            conn.close()

    def _close_inbox(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            lst.close()
        if self.tracer is not None:
            self.tracer.snap_sinks.pop(self.id, None)
        inbox = self.inbox
        if inbox is not None:
            inbox.close()

    def _finish_local(self) -> None:
        t = self.tracer
        if t is None:
            return
        for lp in list(t.processes.values()):
            if self.id in lp.snaps or any(p[0] == self.id for p in lp.pending):
                lp.finish(self.id, self.status == "complete")

    # -- all at once ------------------------------------------------------------------------

    def wait(self) -> "Snapshot":
        """Poll until the end: at once when a report comes in, else every ``POLL_S``."""
        try:
            while True:
                wake = self.inbox.wake if self.inbox is not None else None
                if wake is not None:
                    wake.clear()
                if self.poll():
                    break
                if wake is not None:
                    wake.wait(POLL_S)
                else:
                    time.sleep(POLL_S)
        finally:
            if self.status == "running":  # interrupted: others may still report to the store
                self._close_inbox()
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
