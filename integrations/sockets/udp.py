"""UDP: per-socket channel ids, envelopes around datagrams to traced destinations,
and their removal on receipt; datagrams from untraced peers are recorded raw."""

from __future__ import annotations

from cutscope.tracer import wire

from .common import _MAGIC, _fault, _fmt, _learned, _lp, _resolve, _tracer
from .registry import _traced_peer


class UdpConn:
    """Per-socket UDP state: channel ids per destination and per source."""

    kind = "udp"
    fast_in = False  # the hot paths' tests (see Conn)
    fast_lp = None

    def __init__(self):
        self.out: dict = {}  # destination -> channel id (enveloped)
        self.raw_out: dict = {}
        self.raw_in: dict = {}
        self.seen_in: set = set()
        self.peer = None  # connected UDP socket's peer

    def attach(self, sock):
        pass

    def release(self, sock):
        pass

    def sendto(self, sock, data, flags, address, call):
        t = _tracer[0]
        lp = _lp()
        try:
            ip = _resolve(address[0]) if isinstance(address, tuple) else None
            traced = ip is not None and ((ip, address[1]) in _learned or
                                         _traced_peer("udp", ip, address[1]))
        except Exception as exc:
            _fault(exc, "looking up a UDP peer")
            traced = False
        if not traced:
            n = call(data)
            try:
                key = (ip, address[1]) if isinstance(address, tuple) else address
                cid = self.raw_out.get(key)
                if cid is None:
                    cid = self.raw_out[key] = t.channel(None, lp.name, None, "udp",
                                                        self._ep(sock, address, True), False, False)
                lp.unframed("send", cid, n, bytes(data[:n]) if t.capture else None)
            except Exception as exc:
                _fault(exc, "recording a UDP send")
            return n
        mv = data if isinstance(data, bytes) else memoryview(data).cast("B")
        n = len(mv)
        try:
            key = (ip, address[1])
            cid = self.out.get(key)
            if cid is None:
                cid = self.out[key] = t.channel(None, lp.name, None, "udp",
                                                self._ep(sock, address, True), True, False)
            seq, lam, _ = lp.send(None, n, bytes(mv) if (t.capture or lp.snaps) else None,
                                  channel=cid)
            env = wire.envelope(cid, lp.name, seq, lam)
        except Exception as exc:
            _fault(exc, "recording a UDP send")
            env = wire.envelope("c0", lp.name if lp else "?", 0, 0)
        sent = call(env + mv)
        return max(0, sent - len(env)) if sent < len(env) + n else n

    def _ep(self, sock, addr, outgoing):
        try:
            here = sock.getsockname()
        except OSError:
            here = ("?", 0)
        a, b = _fmt(here), _fmt(addr)
        return f"{a}->{b}" if outgoing else f"{b}->{a}"

    def received(self, sock, data, addr, bufsize: int, peek: bool):
        """Strip an envelope; record the receive. Returns the payload (at most bufsize)
        and the length of the whole payload that ``data`` holds."""
        env = wire.parse_envelope(data) if data[:2] == _MAGIC[:2] else None
        if env is None:
            if not peek:
                self._raw_in(sock, data[:bufsize], addr)
            return data[:bufsize], len(data)
        cid, name, seq, lam, off = env
        payload = data[off:off + bufsize]
        if peek:
            return payload, len(data) - off
        t = _tracer[0]
        lp = _lp()
        try:
            if isinstance(addr, tuple):
                _learned.add((addr[0], addr[1]))
            if cid not in self.seen_in:
                self.seen_in.add(cid)
                lp.add_in(cid, fifo=False)
                t.channel(cid, None, lp.name, "udp", self._ep(sock, addr, False), True, False)
            lp.recv(cid, f"{name}#{seq}" if seq else None, lam, len(data) - off,
                    bytes(payload) if (t.capture or lp.snaps) else None)
        except Exception as exc:
            _fault(exc, "recording a UDP receive")
        return payload, len(data) - off

    def _raw_in(self, sock, data, addr):
        t = _tracer[0]
        lp = _lp()
        try:
            key = addr if isinstance(addr, tuple) else str(addr)
            cid = self.raw_in.get(key)
            if cid is None:
                cid = self.raw_in[key] = t.channel(None, None, lp.name, "udp",
                                                   self._ep(sock, addr, False), False, False)
                lp.add_in(cid, fifo=False)
            lp.unframed("recv", cid, len(data), bytes(data) if t.capture else None)
        except Exception as exc:
            _fault(exc, "recording a UDP receive")


_ENVELOPE_ROOM = 16 + 17 + 255 + 2 + 512
