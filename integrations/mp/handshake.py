"""Listener / Client: the authentication handshake says who traces.

multiprocessing's own ``deliver_challenge`` / ``answer_challenge`` run; the
wrappers only mark the connection, and the Connection wrappers
(``connection.send_bytes`` / ``recv_bytes``) hand the handshake's messages to
``handshake_send`` / ``handshake_recv``:

- delivering: the challenge goes out with ``MAGIC`` appended (the peer learns
  that we trace). A challenge without a digest prefix (3.11's bare 20 bytes)
  also gets the prefix ``b"{md5}"``, because 3.12+ answers an unprefixed
  challenge only at its legacy length. The peer answers with a MAC over the
  challenge it received; when that MAC is valid for the authkey, the stdlib's
  check receives the MAC over its own challenge (a bare HMAC-MD5 for a bare
  challenge, else the same kind as the peer's answer), so it accepts exactly the
  answers it would accept without cutscope. An invalid answer is handed on
  unchanged and fails as before.
- answering: a challenge that ends with ``MAGIC`` comes from a traced peer; it
  is answered unchanged (the MAC covers the magic).

The MAC formats are the protocol's: a bare HMAC-MD5 (3.11 and 3.12+'s legacy
mode), or ``b"{digest}" + HMAC`` (3.12+).
"""

from __future__ import annotations

import io
import os

from cutscope.tracer.tracer import active

from .connstate import SKIP, STATE_KEY, ConnectionState
from .frames import MAGIC
from .patching import originals


class Delivering:
    """The delivering side's handshake in progress."""

    __slots__ = ("authkey", "challenge", "sent", "answered")

    def __init__(self, authkey: bytes):
        self.authkey = authkey
        self.challenge = None  # the challenge as the stdlib made it
        self.sent = None  # the challenge as it went out
        self.answered = False


class Answering:
    """The answering side's handshake in progress: did the challenge carry the magic?"""

    __slots__ = ("peer",)

    def __init__(self):
        self.peer = False


HANDSHAKE_KEY = "_cutscope_hs"  # a connection's handshake in progress (its __dict__)
CHALLENGE = b"#CHALLENGE#"  # how the challenge message starts (every version's protocol)
LEGACY_LENGTHS = (16, 20)  # the answers without a digest prefix (HMAC-MD5, HMAC-SHA1)


def mac_for(authkey: bytes, response: bytes, signed: bytes, bare: bytes):
    """``response`` is a valid MAC over ``signed``: the MAC over ``bare`` that the stdlib's
    check of ``bare`` accepts, else None."""
    import hmac

    name, mac, prefix = "md5", response, b""
    # As the stdlib reads an answer: at a legacy length (a bare HMAC-MD5 or -SHA1) it
    # has no prefix, even when its first byte happens to be b"{".
    if len(response) not in LEGACY_LENGTHS and response[:1] == b"{":
        end = response.find(b"}", 1, 22)
        if end < 0:
            return None
        try:
            name = response[1:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        mac, prefix = response[end + 1:], response[:end + 1]
    try:
        expected = hmac.new(authkey, signed, name).digest()
    except ValueError:
        return None
    if len(expected) != len(mac) or not hmac.compare_digest(expected, mac):
        return None
    if bare[:1] != b"{":
        return hmac.new(authkey, bare, "md5").digest()
    return prefix + hmac.new(authkey, bare, name).digest()


def handshake_send(conn, hs, buf):
    """A handshake message going out (the connection is SKIP)."""
    if type(hs) is Delivering and hs.challenge is None:
        b = bytes(buf)
        if b.startswith(CHALLENGE):
            hs.challenge = b[len(CHALLENGE):]
            hs.sent = (hs.challenge if hs.challenge[:1] == b"{" else
                       b"{md5}" + hs.challenge) + MAGIC
            return originals["Connection._send_bytes"](conn, CHALLENGE + hs.sent)
    return originals["Connection._send_bytes"](conn, buf)


def handshake_recv(conn, hs, maxsize):
    """A handshake message coming in (the connection is SKIP)."""
    buf = originals["Connection._recv_bytes"](conn, maxsize)
    if buf is None:
        return buf
    if type(hs) is Delivering:
        if hs.challenge is not None and not hs.answered:
            hs.answered = True
            mac = mac_for(hs.authkey, buf.getvalue(), hs.sent, hs.challenge)
            if mac is not None:
                return io.BytesIO(mac)
    elif type(hs) is Answering:
        with buf.getbuffer() as view:
            if len(view) >= len(CHALLENGE) + 16 and view[-16:] == MAGIC and \
                    view[:len(CHALLENGE)] == CHALLENGE:
                hs.peer = True
    return buf


def deliver_challenge(connection, authkey, *a, **kw):
    orig = originals["deliver_challenge"]
    if not isinstance(authkey, bytes) or active() is None:
        return orig(connection, authkey, *a, **kw)
    _in_handshake(connection)
    d = connection.__dict__
    d[HANDSHAKE_KEY] = Delivering(authkey)
    try:
        r = orig(connection, authkey, *a, **kw)
    finally:
        d.pop(HANDSHAKE_KEY, None)
    _handshake_step(connection, "_cutscope_delivered", "_cutscope_answered")
    return r


def answer_challenge(connection, authkey, *a, **kw):
    orig = originals["answer_challenge"]
    if not isinstance(authkey, bytes) or active() is None:
        return orig(connection, authkey, *a, **kw)
    _in_handshake(connection)
    d = connection.__dict__
    hs = d[HANDSHAKE_KEY] = Answering()
    try:
        r = orig(connection, authkey, *a, **kw)
    finally:
        d.pop(HANDSHAKE_KEY, None)
    if hs.peer:
        d["_cutscope_peer"] = True  # the peer traces
    _handshake_step(connection, "_cutscope_answered", "_cutscope_delivered")
    return r


def _handshake_step(c, mine: str, other: str) -> None:
    """The handshake is over when both halves ran (server: deliver then answer; client:
    answer then deliver); from then on our direction carries frames if the peer traces.
    The handshake itself stays raw."""
    d = c.__dict__
    if d.pop(other, False):
        _handshaken(c)
    else:
        d[mine] = True


def _handshaken(c):
    d = c.__dict__
    peer = d.pop("_cutscope_peer", False)
    state = d.get(STATE_KEY)
    if state is None or state is SKIP or state.pid != os.getpid():
        d[STATE_KEY] = ConnectionState(peer)
    elif peer:
        state.framed = True
    return c


def _in_handshake(c) -> None:
    """The handshake's own messages are neither framed nor recorded."""
    d = c.__dict__
    if d.get(STATE_KEY) is None:
        d[STATE_KEY] = SKIP


def _made(c):
    if c.__dict__.get(STATE_KEY) is None and active() is not None:
        c.__dict__[STATE_KEY] = ConnectionState(False)
    return c


def Client(*a, **kw):
    return _made(originals["Client"](*a, **kw))


def accept(self):
    return _made(originals["Listener.accept"](self))
