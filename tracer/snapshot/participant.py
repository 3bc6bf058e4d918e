"""A traced interpreter's answers to a coordinator: start at the next safe point,
record the final state of ended logical processes, stop recording at the end."""

from __future__ import annotations


def record_ended(tracer, sid: int, initiator: str) -> None:
    """The logical processes of this interpreter that have ended (left
    ``cutscope.process``) and still have outgoing FIFO channels record their
    final state now, for snapshot ``sid`` (the coordinator asks for it when
    channels are still open after its grace period): they have no events left to come, so
    any moment is a safe point, and their markers follow their last messages on
    each channel (the receivers record what is still in transit, then close it).
    Without it, a receiver would wait forever for the marker of a stage that
    has finished, and the snapshot would end partial.

    ``tracer._lock`` is held: a ``cutscope.process(name)`` that enters the process
    again waits until it has recorded."""
    with tracer._lock:
        for lp in list(tracer.processes.values()):
            if lp.ended and any(ep.fifo and not ep.closed for ep in list(lp.out)):
                try:
                    lp.record(sid, initiator)
                except Exception as exc:
                    tracer.fault(exc, f"recording the final state of {lp.name}")


def on_request(tracer, sid: int, initiator: str, start: list[str], reply: str | None) -> None:
    """A coordinator's request through the control socket (the control thread):
    report to ``reply``; the processes named in ``start`` start at their next
    safe point. (``op: ended`` calls ``record_ended``.)"""
    if reply:
        sinks = tracer.snap_sinks
        if sid not in sinks and len(sinks) > 256:  # ended snapshots that were never closed
            for k in sorted(sinks)[:128]:
                sinks.pop(k, None)
        tracer.resolve_sink(sid, reply)
    for name in start:
        lp = tracer.processes.get(name)
        if lp is not None and not lp.ended:
            lp.request(sid, initiator)


def on_end(tracer, sid: int, complete: bool) -> None:
    """The coordinator ended snapshot ``sid`` (control socket)."""
    tracer.snap_sinks.pop(sid, None)
    for lp in list(tracer.processes.values()):
        if sid in lp.snaps or any(p[0] == sid for p in lp.pending):
            lp.finish(sid, complete)


def on_control(tracer, msg: dict) -> None:
    """A message that reached this interpreter's control socket (``control.ControlServer``)."""
    op = msg.get("op")
    if op == "req":
        on_request(tracer, int(msg["sid"]), msg["initiator"], msg.get("start") or [],
                   msg.get("reply"))
    elif op == "ended":
        record_ended(tracer, int(msg["sid"]), msg["initiator"])
    elif op == "end":
        on_end(tracer, int(msg["sid"]), msg.get("status") == "complete")
    elif op == "idle":  # close counted channels by count (Coordinator._close_idle)
        sid = int(msg["sid"])
        for name, channel, sent, before, elsewhere in msg.get("closes") or ():
            lp = tracer.processes.get(name)
            if lp is not None:
                tracer.guard(lp.close_idle, sid, channel, int(sent), int(before), bool(elsewhere))

