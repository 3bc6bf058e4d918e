"""The in-memory store: the same records as ``SqlStore``, in lists."""

from __future__ import annotations

import json
import threading
import time
from typing import Iterable, Iterator

from cutscope.tracer.process import FAST  # the C extension, or None

from .apply import apply_record
from .document import build_trace
from .folding import progress_row, snapshot_record_order
from .interface import SnapshotRequest
from .values import event_row, stored_message


class MemoryStore:
    """The same records as ``SqlStore``, in lists: for tests and ``cutscope.testing``."""

    sqlite = False
    notify = False

    def __init__(self, capture: int = 0):
        self.capture = capture
        self.url = "memory:"
        self._lock = threading.RLock()
        self.processes_: dict[str, dict] = {}
        self.channels: dict[str, dict] = {}
        self.events: list[tuple] = []
        self.faults: list[dict] = []
        self.snapshots: dict[int, dict] = {}
        self.requests: dict[tuple[int, str], dict] = {}
        self.states: dict[tuple[int, str], dict] = {}
        self.messages: list[dict] = []
        self.listeners: dict[tuple[str, int], dict] = {}
        self.ends: dict[str, dict] = {}
        self._target = MemoryRecords(self)

    def dispose_after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass

    def listen(self, channels: tuple[str, ...], handle, name: str = "cutscope-notify"):
        return None  # no notifications: the polls serve

    def write(self, rows: list[tuple], others: list[tuple]) -> None:
        with self._lock:
            for item in others:
                apply_record(self._target, item)
            if FAST is not None:
                rows = FAST.expand(rows)  # the C paths' chunks
            self.events.extend(event_row(r, self.capture) for r in rows)

    def claim_name(self, base: str, pid: int, host: str, parent: str | None, started_ns: int,
                   argv: str | None) -> str:
        """As ``SqlStore.claim_name``."""
        with self._lock:
            n, name = 1, base
            while name in self.processes_:
                n += 1
                name = f"{base}#{n}"
            self.processes_[name] = dict(name=name, parent=parent, started_ns=started_ns,
                                         argv=argv, pid=pid, host=host, heartbeat_ns=started_ns,
                                         ended_ns=None)
            return name

    def release_name(self, name: str, pid: int, host: str) -> None:
        with self._lock:
            p = self.processes_.get(name)
            if p is not None and (p.get("pid"), p.get("host")) == (pid, host):
                del self.processes_[name]

    def register_listener(self, host: str, port: int, process: str, pid: int) -> None:
        with self._lock:
            self.listeners[(host, port)] = dict(host=host, port=port, process=process, pid=pid,
                                                registered_ns=time.time_ns())

    def unregister_listener(self, host: str, port: int, pid: int | None = None) -> None:
        with self._lock:
            row = self.listeners.get((host, port))
            if row is not None and (pid is None or row["pid"] == pid):
                del self.listeners[(host, port)]

    def lookup_listener(self, hosts: list[str], port: int) -> dict | None:
        with self._lock:
            for h in hosts:
                row = self.listeners.get((h, port))
                if row is not None:
                    return dict(row)
        return None

    def register_end(self, key: str, host: str, pid: int, mode: str) -> None:
        with self._lock:
            self.ends[key] = dict(key=key, host=host, pid=pid, mode=mode,
                                  registered_ns=time.time_ns())

    def unregister_end(self, key: str, pid: int) -> None:
        with self._lock:
            row = self.ends.get(key)
            if row is not None and row["pid"] == pid:
                del self.ends[key]

    def lookup_ends(self, prefix: str, exact: bool = False) -> list[dict]:
        with self._lock:
            if exact:
                row = self.ends.get(prefix)
                return [dict(row)] if row is not None else []
            return [dict(r) for k, r in self.ends.items() if k.startswith(prefix)]

    # -- snapshot coordination: the same operations as SqlStore's

    def _snap_status(self, sid: int) -> str | None:
        s = self.snapshots.get(sid)
        return None if s is None else s["status"]

    def new_snapshot(self, initiator: str, requested_ns: int) -> tuple[int, bool]:
        return self.create_snapshot(initiator, requested_ns), True

    def create_snapshot(self, initiator: str, requested_ns: int) -> int:
        with self._lock:
            sid = max(self.snapshots, default=0) + 1
            self.snapshots[sid] = dict(id=sid, initiator=initiator, status="running",
                                       requested_ns=requested_ns, finished_ns=None, missing=None)
            return sid

    def add_snapshot_requests(self, sid: int, initiator: str, processes: Iterable[str],
                              created_ns: int, taken: Iterable[str] = (), create=None) -> None:
        taken = set(taken)
        with self._lock:
            for p in processes:
                self.requests.setdefault((sid, p), dict(snapshot_id=sid, process=p, initiator=initiator,
                                                        created_ns=created_ns, taken=p in taken))

    def snapshot_requests(self, processes: list[str]) -> list[SnapshotRequest]:
        names = set(processes)
        with self._lock:
            return [SnapshotRequest(sid, p, r["initiator"]) for (sid, p), r in self.requests.items()
                    if not r["taken"] and p in names and self._snap_status(sid) == "running"]

    def snapshot_progress(self, sid: int, unwritten: bool = False) -> dict | None:
        with self._lock:
            s = self.snapshots.get(sid)
            if s is None:
                return None
            return {"status": s["status"], "initiator": s["initiator"], "states": {
                p: progress_row(st["event_seq"], st["state"], st["outgoing"], st["closed"], st["done"])
                for (i, p), st in self.states.items() if i == sid}}

    def finish_snapshot(self, sid: int, status: str, missing: list, finished_ns: int,
                        records: Iterable[tuple] = (), create=None) -> bool:
        with self._lock:
            s = self.snapshots.get(sid)
            if s is None or s["status"] != "running":
                return False
            for item in sorted(records, key=snapshot_record_order):
                apply_record(self._target, item)
            s.update(status=status, missing=json.dumps(missing), finished_ns=finished_ns)
            return True

    def snapshot_statuses(self, sids: Iterable[int]) -> dict[int, str]:
        with self._lock:
            return {i: self.snapshots[i]["status"] for i in sids if i in self.snapshots}

    def snapshot_entry(self, sid: int) -> dict | None:
        with self._lock:
            if sid not in self.snapshots:
                return None
            return build_trace([], [], [], [dict(self.snapshots[sid])],
                               [dict(st) for (i, _), st in self.states.items() if i == sid],
                               [dict(m) for m in self.messages if m["snapshot_id"] == sid])["snapshots"][0]

    def live_processes(self, since_ns: int) -> list[str]:
        with self._lock:
            return sorted(p["name"] for p in self.processes_.values()
                          if p.get("ended_ns") is None and p.get("heartbeat_ns", 0) >= since_ns)

    def live_and_ends(self, since_ns: int) -> tuple[list[dict], list[dict]]:
        with self._lock:
            live = [dict(name=p["name"], pid=p.get("pid"), host=p.get("host"))
                    for p in self.processes_.values()
                    if p.get("ended_ns") is None and p.get("heartbeat_ns", 0) >= since_ns]
            return sorted(live, key=lambda r: r["name"]), self.channel_ends()

    def channel_ends(self, among: Iterable[str] | None = None) -> list[dict]:
        among = None if among is None else set(among)
        with self._lock:
            return [dict(id=c["id"], src=c["src"], dst=c["dst"], fifo=c["fifo"])
                    for c in self.channels.values()
                    if among is None or c["src"] in among or c["dst"] in among]

    def load(self, events: bool = True) -> dict:
        with self._lock:
            procs = sorted(self.processes_.values(), key=lambda p: p["started_ns"])
            return build_trace(procs, sorted(self.channels.values(), key=lambda c: c["id"]),
                               list(self.events) if events else [], list(self.snapshots.values()),
                               list(self.states.values()), list(self.messages))

    def event_blocks(self) -> Iterator[list[tuple]]:
        with self._lock:
            rows = list(self.events)
        yield rows

    def processes(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self.processes_.values()]


class MemoryRecords:
    """The writes of ``apply_record`` into a ``MemoryStore``'s lists (under its lock)."""

    def __init__(self, store: MemoryStore):
        self.store = store

    def snapshot_status(self, sid: int) -> str | None:
        return self.store._snap_status(sid)

    def put_process(self, name: str, pid: int, host: str, parent: str | None, started_ns: int,
                    argv: str | None, seq0: int | None) -> None:
        p = self.store.processes_.setdefault(name, dict(name=name, parent=parent,
                                                        started_ns=started_ns, argv=argv))
        p.update(pid=pid, host=host, heartbeat_ns=started_ns, ended_ns=None)

    def put_heartbeats(self, names: list[str], ns: int) -> None:
        procs = self.store.processes_
        for n in names:
            if n in procs:
                procs[n]["heartbeat_ns"] = ns

    def put_ended(self, name: str, ns: int) -> None:
        if name in self.store.processes_:
            self.store.processes_[name]["ended_ns"] = ns

    def put_channel(self, cid: str, src, dst, transport: str, endpoint, framed: bool,
                    fifo: bool) -> None:
        c = self.store.channels.get(cid)
        if c is None:
            self.store.channels[cid] = dict(id=cid, src=src, dst=dst, transport=transport,
                                            endpoint=endpoint, framed=framed, fifo=fifo)
        else:
            for k, v in (("src", src), ("dst", dst), ("endpoint", endpoint)):
                if v is not None:
                    c[k] = v

    def put_fault(self, wall_ns: int, process: str, location: str, detail: str) -> None:
        self.store.faults.append(dict(wall_ns=wall_ns, process=process, location=location,
                                      detail=detail))

    def put_state(self, sid: int, process: str, seq: int, state: str, outgoing: str) -> None:
        self.store.states.setdefault((sid, process), dict(
            snapshot_id=sid, process=process, event_seq=seq, state=state, outgoing=outgoing,
            closed="[]", done=False))

    def close_channel(self, sid: int, process: str, channel: str) -> None:
        st = self.store.states.get((sid, process))
        if st is not None:
            closed = json.loads(st["closed"] or "[]")
            if channel not in closed:
                st["closed"] = json.dumps(closed + [channel])

    def put_messages(self, sid: int, channel: str, msgs: list) -> None:
        stored = self.store.messages
        base = sum(1 for m in stored if m["snapshot_id"] == sid and m["channel"] == channel)
        for i, m in enumerate(msgs):
            stored.append(dict(snapshot_id=sid, channel=channel, idx=base + i, **stored_message(m)))

    def set_done(self, sid: int, process: str) -> None:
        st = self.store.states.get((sid, process))
        if st is not None:
            st["done"] = True
