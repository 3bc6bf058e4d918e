"""What a snapshot gives back: ``Snapshot`` (the result) and ``SnapshotError``."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    entry: dict | None = None  # the interchange form (docs/format.md)

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
