"""The records that cross the model's modules: a message, and an event's key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


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



def event_key(e) -> tuple[str, int]:
    """``(process, seq)`` of an event dict or a ``(process, seq)`` pair."""
    if isinstance(e, Mapping):
        return (e["process"], int(e["seq"]))
    p, s = e
    return (p, int(s))
