"""Event blocks: the recorder's events go in as one row per batch, the batch's
event tuples encoded together (a row per event cost 3-7 us of SQLite work per
event on this project's machines, a block well under 1 us). The encodings are in
docs/schema.md and tracer/_fast.c."""

from __future__ import annotations

import marshal
import zlib
from array import array
from typing import NamedTuple

from cutscope.tracer.process import FAST  # the C extension, or None

from .interface import StoreError
from .values import event_row

# event_blocks.encoding of what this version writes: "cs2+zlib" with the C extension
# (tracer/_fast.c encodes; a tenth of marshal's time), else "marshal4+zlib"; all read
# (and "cs1+zlib", the older compact encoding).
BLOCK_ENCODING = "cs2+zlib" if FAST is not None else "marshal4+zlib"
BLOCK_ENCODINGS = ("cs2+zlib", "cs1+zlib", "marshal4+zlib")


def encode_block(rows: list, cap: int) -> tuple[bytes, int, int]:
    """The ``data`` of an event block (encoding ``BLOCK_ENCODING``), its number of events
    and the wall clock of the last. ``rows``: event tuples and, from the C paths, chunks
    of them. The stored form of each event (``event_row``), as cs1 (below) or marshal'd,
    then zlib level 1 (5x smaller, at no cost in time: the write shrinks as much as the
    compression costs, and zlib lets the application's threads run meanwhile)."""
    if FAST is not None:
        raw, n, wall = FAST.encode(rows, event_row, cap)
        return zlib.compress(raw, 1), n, wall
    if not all(r[8] is None and r[9] is None for r in rows):
        rows = [r if r[8] is None and r[9] is None else event_row(r, cap) for r in rows]
    return zlib.compress(marshal.dumps(rows, 4), 1), len(rows), rows[-1][3] if rows else 0


def decode_block(block_id: int, encoding: str, data: bytes) -> list[tuple]:
    """The event tuples of a block; a block that is not what it says is a StoreError."""
    if encoding not in BLOCK_ENCODINGS:
        raise StoreError(f"event block {block_id} has encoding {encoding!r}; this cutscope reads "
                         f"{' and '.join(map(repr, BLOCK_ENCODINGS))}")
    try:
        raw = zlib.decompress(data)
        if encoding == "marshal4+zlib":
            rows = marshal.loads(raw)
        elif raw[:4] != encoding[:3].upper().encode() + b"\0":
            raise ValueError(f"not a {encoding[:3]} event block")
        elif FAST is not None:
            return FAST.decode(raw)  # checks each row as it makes it: a list of 10-tuples
        else:
            rows = decode_cs(raw)
        if type(rows) is not list or not all(type(r) is tuple and len(r) == 10 for r in rows):
            raise ValueError("not a list of event tuples")
    except (ValueError, EOFError, TypeError, IndexError, zlib.error) as exc:
        raise StoreError(f"event block {block_id} is corrupt ({exc})") from None
    return rows


class EncodedBlock(NamedTuple):
    """An event block as stored, not yet decoded (``store.blocks_after(encoded=True)``)."""
    id: int
    encoding: str
    data: bytes


def decode_columns(block: EncodedBlock, pindex) -> tuple:
    """The events of a block as columns: ``(pid, seq, lamport, wall, kind, channel, msg,
    nbytes, extra)``; ``pid`` the process indexes (``pindex[name]``, a mapping that gives
    a new name its index) and ``seq``, ``lamport``, ``wall``, as the bytes of an int32 and
    three int64 arrays (``array.frombytes``), the next four lists, ``extra`` ``(row in the block, payload,
    data)`` of each row whose payload or data is not None. The C extension decodes cs1/cs2
    blocks straight into columns (no tuple per event); otherwise the event tuples of
    ``decode_block`` are split here, the reference. A corrupt block is a StoreError."""
    if FAST is not None and block.encoding in ("cs2+zlib", "cs1+zlib"):
        try:
            return FAST.decode_columns(zlib.decompress(block.data), pindex)
        except (ValueError, zlib.error) as exc:
            raise StoreError(f"event block {block.id} is corrupt ({exc})") from None
    rows = decode_block(*block)
    c = list(zip(*rows)) or [()] * 10
    try:
        cols = (array("i", map(pindex.__getitem__, c[0])).tobytes(), array("q", c[1]).tobytes(),
                array("q", c[2]).tobytes(), array("q", c[3]).tobytes(),
                list(c[4]), list(c[5]), list(c[6]), list(c[7]))
    except (TypeError, OverflowError) as exc:
        raise StoreError(f"event block {block.id} is corrupt ({exc})") from None
    extra = [(i, pl, d) for i, (pl, d) in enumerate(zip(c[8], c[9]))
             if pl is not None or d is not None]
    return cols + (extra,)


def decode_cs(raw: bytes) -> list[tuple]:
    """The reference reader of a cs2 (or cs1) block; the C extension's ``decode`` is the
    fast one. The format is in docs/schema.md and tracer/_fast.c.

    ``"CS2\0"``, the string table (varint count, then varint length + UTF-8 each), the
    row count, then each row: ``2`` and process, seq, lamport, wall as differences (see
    below), kind, channel + 1 (0: None), msg, nbytes (payload and data None); or ``1``,
    a varint length and the marshal'd stored tuple. cs1 (``"CS1\0"``) has ``0`` rows
    instead: seq and lamport whole, msg + 1."""
    mv = memoryview(raw)
    pos = 4
    v2 = bytes(mv[:4]) == b"CS2\0"
    if not v2 and bytes(mv[:4]) != b"CS1\0":
        raise ValueError("not a cs1/cs2 event block")

    def varint() -> int:
        nonlocal pos
        v = shift = 0
        while True:
            c = raw[pos]
            pos += 1
            v |= (c & 0x7F) << shift
            if not c & 0x80:
                return v
            shift += 7
            if shift >= 64:
                raise ValueError("bad varint")

    def delta() -> int:  # a zigzag difference
        z = varint()
        return (z >> 1) ^ -(z & 1)

    strs = []
    for _ in range(varint()):
        n = varint()
        if pos + n > len(raw):
            raise ValueError("string past the end")
        strs.append(str(mv[pos:pos + n], "utf-8"))
        pos += n
    rows = []
    prev = 0
    opt = [None] + strs
    # cs2: by string index, the previous seq + 1 and lamport + 1 of a process, and the
    # previous number + 1 of a message id "<string>#<n>"
    last: dict[tuple[int, int], int] = {}
    for _ in range(varint()):
        tag = raw[pos]
        pos += 1
        if tag == 2 and v2:
            p = varint()
            seq = last.get((p, 0), 0) + delta()
            lam = last.get((p, 1), 0) + delta()
            prev += delta()
            k, ch, m = varint(), varint(), varint()
            if not (0 <= seq < 2**63 and 0 <= lam < 2**63):
                raise ValueError("seq or lamport out of range")
            last[p, 0], last[p, 1] = seq + 1, lam + 1
            if m and not m & 1:
                i = (m - 2) // 2
                num = last.get((i, 2), 0) + delta()
                if not 0 <= num < 2**63:
                    raise ValueError("message number out of range")
                last[i, 2] = num + 1
                msg = f"{strs[i]}#{num}"
            else:
                msg = opt[(m + 1) // 2]
            rows.append((strs[p], seq, lam, prev, strs[k], opt[ch], msg, varint(), None, None))
        elif tag == 0 and not v2:
            p, seq, lam = varint(), varint(), varint()
            prev += delta()
            k, ch, msg, nb = (varint() for _ in range(4))
            rows.append((strs[p], seq, lam, prev, strs[k], opt[ch], opt[msg], nb, None, None))
        elif tag == 1:
            n = varint()
            if pos + n > len(raw):
                raise ValueError("row past the end")
            rows.append(marshal.loads(mv[pos:pos + n]))
            pos += n
        else:
            raise ValueError(f"bad row tag {tag}")
    if pos != len(raw):
        raise ValueError("bytes after the last row")
    return rows
