"""The wire format: how cutscope frames one direction of a stream, and a datagram.

Documented for humans in ``docs/protocol.md``; keep the two in step.

A framed direction of a TCP connection starts with a HELLO and then carries
frames, each beginning with a one-byte type:

``HELLO``   ``MAGIC`` (16 bytes) ``!BB`` version, channel-id length, the channel
            id (ASCII), ``!H`` sender-name length, the sender name (UTF-8).
``DATA``    ``!BIQQ`` type, payload length, seq of the sender's send event,
            Lamport stamp; then the payload. 21 bytes of header. The message id
            is ``"<current sender name>#<seq>"``.
``MARKER``  ``!BQH`` type, snapshot id, initiator length; then the initiator.
``AS``      ``!BH`` type, name length; then the name: the frames that follow
            were sent by that logical process (another thread's process sending
            on the same connection). Rare.
``RAW``     ``!B`` type alone: the last frame of this direction; its next byte is
            raw (TLS starts on the connection). The receiver's own direction
            ends its frames too: with a RAW of its own if it is framed.

A datagram between traced endpoints is wrapped in an envelope:
``UDP_MAGIC`` (16 bytes) ``!QQ`` seq, Lamport stamp, ``!B`` channel-id length,
the channel id, ``!H`` sender-name length, the name, then the payload.

Everything here is pure: no sockets, no tracer state.
"""

from __future__ import annotations

import struct

__all__ = [
    "MAGIC", "UDP_MAGIC", "VERSION", "DATA", "MARKER", "AS", "RAW", "RAW_FRAME", "HDR", "HDR_SIZE",
    "MAX_PAYLOAD", "MAX_SNAPSHOT",
    "hello", "parse_hello", "data_header", "marker", "as_frame", "envelope", "parse_envelope",
    "WireError",
]

VERSION = 1
MAGIC = b"\xfe\xedCUTSCOPE\x00HELO\x01"  # 16 bytes: first bytes of a framed direction
UDP_MAGIC = b"\xfe\xedCUTSCOPE\x00UDPE\x01"  # 16 bytes: first bytes of an enveloped datagram
assert len(MAGIC) == 16 and len(UDP_MAGIC) == 16

DATA = 1
MARKER = 2
AS = 3
RAW = 4
RAW_FRAME = bytes([RAW])

HDR = struct.Struct("!BIQQ")  # type, length, seq, lamport
HDR_SIZE = HDR.size  # 21
MAX_PAYLOAD = 0xFFFFFFFF
_HELLO_FIX = struct.Struct("!BB")
_H = struct.Struct("!H")
_MARKER = struct.Struct("!BQH")
_AS = struct.Struct("!BH")
_ENV = struct.Struct("!QQB")

# The longest control frame a reader must be able to hold (marker or AS with a
# 65535-byte name); in practice names are short.
MAX_CONTROL = _MARKER.size + 0xFFFF
MAX_SNAPSHOT = (1 << 63) - 1  # the largest snapshot id a marker may carry


class WireError(ValueError):
    """Bytes that are not cutscope frames where frames were expected. Never reaches an
    application: the socket integration fails such a connection as a reset."""


def hello(channel: str, sender: str) -> bytes:
    c = channel.encode("ascii")
    n = sender.encode("utf-8")[:0xFFFF]
    return MAGIC + _HELLO_FIX.pack(VERSION, len(c)) + c + _H.pack(len(n)) + n


def parse_hello(buf, start: int = 0):
    """``(channel, sender, end)`` of a HELLO at ``buf[start:]``, or None if incomplete.

    Raises WireError if the bytes are not a HELLO.
    """
    end = start + 16
    if len(buf) < end:
        return None
    if bytes(buf[start:end]) != MAGIC:
        raise WireError("not a HELLO")
    if len(buf) < end + 2:
        return None
    version, clen = _HELLO_FIX.unpack_from(buf, end)
    if version != VERSION:
        raise WireError(f"HELLO version {version}")
    p = end + 2
    if len(buf) < p + clen + 2:
        return None
    return _channel_and_sender(buf, p, clen)


def _channel_and_sender(buf, p: int, clen: int):
    """``(channel, sender, end)``: a channel id of ``clen`` bytes at ``p``, then the
    sender's name (2-byte length first); None if the name is incomplete. Raises
    WireError if the channel id is not ASCII."""
    try:
        cid = bytes(buf[p:p + clen]).decode("ascii")
    except UnicodeDecodeError:
        raise WireError("channel id is not ASCII") from None
    p += clen
    (nlen,) = _H.unpack_from(buf, p)
    p += 2
    if len(buf) < p + nlen:
        return None
    return cid, bytes(buf[p:p + nlen]).decode("utf-8", "replace"), p + nlen


def data_header(nbytes: int, seq: int, lamport: int) -> bytes:
    return HDR.pack(DATA, nbytes, seq, lamport)


def marker(snapshot: int, initiator: str) -> bytes:
    i = initiator.encode("utf-8")[:0xFFFF]
    return _MARKER.pack(MARKER, snapshot, len(i)) + i


def as_frame(name: str) -> bytes:
    n = name.encode("utf-8")[:0xFFFF]
    return _AS.pack(AS, len(n)) + n


def parse_control(buf, start: int):
    """Decode the non-DATA frame at ``buf[start:]``.

    Returns ``(kind, value, end)`` with ``value`` ``(snapshot, initiator)`` for a
    MARKER, the name for an AS and None for a RAW, or None if the frame is
    incomplete. Raises WireError on an unknown type and on a marker whose
    snapshot id is 0 or does not fit a signed 64-bit integer (snapshot ids are
    the store's row ids).
    """
    t = buf[start]
    if t == RAW:
        return RAW, None, start + 1
    if t == MARKER:
        if len(buf) < start + _MARKER.size:
            return None
        _, sid, ilen = _MARKER.unpack_from(buf, start)
        if not 0 < sid <= MAX_SNAPSHOT:
            raise WireError(f"marker of snapshot {sid}")
        p = start + _MARKER.size
        if len(buf) < p + ilen:
            return None
        return MARKER, (sid, bytes(buf[p:p + ilen]).decode("utf-8", "replace")), p + ilen
    if t == AS:
        if len(buf) < start + _AS.size:
            return None
        _, nlen = _AS.unpack_from(buf, start)
        p = start + _AS.size
        if len(buf) < p + nlen:
            return None
        return AS, bytes(buf[p:p + nlen]).decode("utf-8", "replace"), p + nlen
    raise WireError(f"unknown frame type {t}")


def envelope(channel: str, sender: str, seq: int, lamport: int) -> bytes:
    """The envelope that goes before a datagram's payload."""
    c = channel.encode("ascii")
    n = sender.encode("utf-8")[:0xFFFF]
    return UDP_MAGIC + _ENV.pack(seq, lamport, len(c)) + c + _H.pack(len(n)) + n


def parse_envelope(buf):
    """``(channel, sender, seq, lamport, payload_offset)`` or None if ``buf`` is not enveloped."""
    if len(buf) < 16 + _ENV.size or bytes(buf[:16]) != UDP_MAGIC:
        return None
    try:
        seq, lamport, clen = _ENV.unpack_from(buf, 16)
        found = _channel_and_sender(buf, 16 + _ENV.size, clen)
    except (struct.error, WireError):
        return None
    if found is None:
        return None
    cid, name, end = found
    return cid, name, seq, lamport, end
