"""The frames of a traced ``multiprocessing.connection.Connection`` (docs/protocol.md,
"multiprocessing connections"): one frame is one multiprocessing message, which
its own length prefix delimits.

``MAGIC`` (16 bytes), ``>BQB`` kind, number, channel-id length, the channel id
(UTF-8), ``>H`` text length, the text (UTF-8); then, for a data frame, the
application's message. A data frame's number is the sender's Lamport stamp and
its text the message id (``"<sender>#<seq>"``); a marker frame's number is the
snapshot id and its text the initiator.

Pure: no connections, no tracer state.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC = b"\x8fcutscope-mp\x00\x01\xfe\x7f"  # 16 bytes
assert len(MAGIC) == 16
DATA, MARKER = 0x44, 0x4D  # the kinds of frame
HEADER = struct.Struct(">BQB")  # kind, stamp or snapshot id, len(channel)
_TEXT = struct.Struct(">H")
OVERHEAD_MAX = 16 + HEADER.size + 255 + 2 + 1024  # the most a frame header adds
MIN_FRAME = 16 + HEADER.size  # a message shorter than this is not a frame


class Frame(NamedTuple):
    """A frame's header, read (``parse``)."""

    kind: int  # DATA or MARKER
    number: int  # a data frame's Lamport stamp; a marker's snapshot id
    channel: str
    text: str  # a data frame's message id; a marker's initiator
    header_len: int  # where the application's message starts


def marker_frame(channel: str, snapshot: int, initiator: str) -> bytes:
    c = channel.encode()
    i = initiator.encode()
    return MAGIC + HEADER.pack(MARKER, snapshot, len(c)) + c + _TEXT.pack(len(i)) + i


def data_header(channel: str, msg: str, stamp: int) -> bytes:
    c = channel.encode()
    m = msg.encode()
    return MAGIC + HEADER.pack(DATA, stamp, len(c)) + c + _TEXT.pack(len(m)) + m


_STAMP = struct.Struct(">Q")
_DATA_KIND = MAGIC + bytes([DATA])


class DataFramer:
    """The data frames of one sender on one channel: the parts of the header that do
    not change from message to message (magic, kind, channel, the sender's name) are
    encoded once; ``frame`` joins them with the stamp, the seq and the message."""

    __slots__ = ("channel_part", "name")

    def __init__(self, channel: str, sender: str):
        c = channel.encode()
        self.channel_part = bytes([len(c)]) + c
        self.name = sender.encode() + b"#"

    def frame(self, seq: int, stamp: int, message) -> bytes:
        """The data frame of message ``seq`` (its id ``"<sender>#<seq>"``), stamped
        ``stamp``, carrying ``message`` (any bytes-like object)."""
        m = self.name + str(seq).encode()
        return b"".join((_DATA_KIND, _STAMP.pack(stamp), self.channel_part,
                         _TEXT.pack(len(m)), m, message))


def is_frame(view) -> bool:
    """Whether the message ``view`` is a frame (it starts with the magic)."""
    return len(view) >= MIN_FRAME and view[:16] == MAGIC


def parse(view) -> Frame:
    """The header of the frame ``view``."""
    return Frame(*parse_tuple(view))


_HEAD_END = 16 + HEADER.size


def parse_tuple(view) -> tuple:
    """``parse``'s fields as a plain tuple: kind, number, channel, text, header_len."""
    kind, number, clen = HEADER.unpack_from(view, 16)
    off = _HEAD_END + clen
    (tlen,) = _TEXT.unpack_from(view, off)
    end = off + 2 + tlen
    return (kind, number, str(view[_HEAD_END:off], "utf-8"), str(view[off + 2:end], "utf-8"),
            end)
