"""The snapshot check: every stored snapshot verified against the recorded events."""

from __future__ import annotations

from typing import Iterable, Mapping

from .cutspec import snapshot_cut
from .records import Message
from .trace import Trace


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
        for cid, ms in _discarded(s, transit).items():
            notes.append(f"{tag}: channel {cid}: messages {_ids([m.id for m in ms])} were never "
                         f"received: its receiver ended the channel before its state (closed "
                         f"its end unread), so the channel is empty in the cut")
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


def _discarded(snapshot: Mapping, transit: dict) -> dict:
    """Take out of ``transit`` (and return) the channels that their receiver had ended
    before its state (its ``"_cutscope"`` ``"ended"`` list: it closed its end, or read
    the end of the stream). Nothing can be received on such a channel after that state,
    so it is empty in the cut; a message sent on it and never received was discarded
    with the receiver's end, not in transit."""
    ended: dict[str, set] = {}
    for p, info in snapshot.get("processes", {}).items():
        own = (info.get("state") or {}).get("_cutscope") or {}
        for cid in own.get("ended") or ():
            ended.setdefault(cid, set()).add(p)
    out = {}
    for cid in list(transit):
        ms = transit[cid]
        if cid in ended and all(m.dst in ended[cid] for m in ms):
            out[cid] = transit.pop(cid)
    return out


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
