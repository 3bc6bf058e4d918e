"""Who is traced: the listener registry (listening TCP sockets and bound UDP sockets
of traced processes, in the control directory) and the connection registry (each traced
end of a TCP connection, and a client's intent to connect), with the store as the
registry shared across hosts. docs/protocol.md, "Negotiation"."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import threading

from cutscope.tracer import control as _control

from .common import LOOKUP_TTL, _addr_cache, _fault, _lookups, _lp, _mono, _tracer


# -- the listener registry ------------------------------------------------------------------

def _local_ips() -> set:
    ips = _addr_cache.get(("local-ips",))
    if ips is None:
        ips = set()
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None):
                ips.add(info[4][0])
        except OSError:
            pass
        _addr_cache[("local-ips",)] = ips
    return ips


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def _reg_keys(transport: str, ip: str) -> list[str]:
    """The registry keys under which a listener bound to ``ip`` is registered."""
    hn = socket.gethostname()
    pre = "" if transport == "tcp" else transport + "/"
    if ip in ("0.0.0.0", "::", ""):
        return [f"{pre}{hn}@*"] + [pre + a for a in sorted(_local_ips()) if not _is_loopback(a)]
    if _is_loopback(ip):
        return [f"{pre}{hn}@{ip}"]
    return [pre + ip]


def _lookup_keys(transport: str, ip: str) -> list[str]:
    hn = socket.gethostname()
    pre = "" if transport == "tcp" else transport + "/"
    if _is_loopback(ip):
        return [f"{pre}{hn}@{ip}", f"{pre}{hn}@*"]
    keys = [pre + ip]
    if ip in _local_ips():
        keys.append(f"{pre}{hn}@*")
    return keys


def _register(sock, transport: str, table: dict) -> None:
    t = _tracer[0]
    if t is None:
        return
    try:
        ip, port = sock.getsockname()[:2]
    except OSError:
        return
    lp = _lp()
    regs = []
    for key in _reg_keys(transport, ip):
        t.store.register_listener(key, port, lp.name, os.getpid())
        regs.append((key, port))
    table[id(sock)] = regs
    _lookups.clear()


def _unregister(sock_id: int, table: dict) -> None:
    regs = table.pop(sock_id, None)
    t = _tracer[0]
    if not regs or t is None:
        return
    for key, port in regs:
        try:
            t.store.unregister_listener(key, port, os.getpid())
        except Exception as exc:
            _fault(exc, "unregistering a listener")
    _lookups.clear()


def _traced_peer(transport: str, ip: str, port: int) -> bool:
    """Is ``ip:port`` a listener (or bound UDP socket) of a live traced process?"""
    k = (transport, ip, port)
    hit = _lookups.get(k)
    now = _mono()
    if hit is not None and hit[1] > now:
        return hit[0]
    t = _tracer[0]
    if t is None:
        return False
    row = t.store.lookup_listener(_lookup_keys(transport, ip), port)
    traced = False
    if row is not None:
        traced = True
        if "@" in row["host"] or ip in _local_ips():  # on this machine: is it alive?
            try:
                os.kill(row["pid"], 0)
            except ProcessLookupError:
                traced = False
            except PermissionError:
                pass
    if len(_lookups) > 4096:
        _lookups.clear()
    _lookups[k] = (traced, now + LOOKUP_TTL)
    return traced


# -- the connection registry (docs/protocol.md, "Negotiation") -----------------------------
#
# Each traced end of a TCP connection to or from a registered listener has an entry
# named by its own 4-tuple (local address first) in the control directory's ``c/``:
# "<pid> w" (it reads through the wrappers) or "<pid> r" (its descriptor was detached:
# something else reads it). Its peer looks it up under the reversed 4-tuple. A client
# registers an intent ("i/<ip>,<port>,<pid>,<n>") before it connects and replaces it
# with its entry as soon as connect() returns, so a server that finds no entry for
# its peer but an intent towards its own address knows to wait for it. Ends in this
# process are found in memory first. An end whose peer is on another host is also
# registered in the store (table ``conn_ends``), with its intent: the one registry that
# both hosts share.

_local_conns: dict = {}  # key of one end (its own 4-tuple) -> Conn, ends in this process
_local_intents: dict = {}  # "<ip>,<port>," -> connects in progress from this process
_intent_lock = threading.Lock()
_intent_seq = itertools.count()


def _norm(host) -> str:
    h = str(host).split("%")[0]
    if h.startswith("::ffff:") and "." in h:
        h = h[7:]  # an IPv4 peer of a dual-stack socket
    return h


def _end_key(here, there) -> str:
    return f"{_norm(here[0])},{here[1]},{_norm(there[0])},{there[1]}"


def _forget_intents_after_fork() -> None:
    """A forked child is not in the middle of its parent's connects."""
    _local_intents.clear()
    globals()["_intent_lock"] = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_intents_after_fork)


def _remote(ip) -> bool:
    """Is ``ip`` another host's (as far as this host knows its own addresses)?"""
    h = _norm(ip)
    return not _is_loopback(h) and h not in _local_ips()


def _set_ends(c, here, there) -> None:
    c.laddr, c.raddr = here, there
    c.key = _end_key(here, there)
    c.peer_key = _end_key(there, here)
    c.remote = _remote(there[0])


def _store():
    t = _tracer[0]
    return t.store if t is not None else None


def _publish(c, mode: str = "w") -> None:
    """Register this end of ``c`` (``w``: it reads through the wrappers; ``r``: it does not)."""
    if c.key is None:
        return
    _local_conns[c.key] = c
    _control.put_entry("c", c.key, f"{os.getpid()} {mode}")
    if c.remote and _store() is not None:
        _store().register_end(c.key, socket.gethostname(), os.getpid(), mode)


def _withdraw(c) -> None:
    key = c.key
    if key is None:
        return
    if _local_conns.get(key) is c:
        del _local_conns[key]
    _control.drop_entry("c", key, f"{os.getpid()} ")
    if c.remote and _store() is not None:
        _store().unregister_end(key, os.getpid())


def _peer_mode(c) -> str | None:
    """The other end's registration: ``"w"``, ``"r"``, or None (none, or of a dead process)."""
    p = _local_conns.get(c.peer_key)
    if p is not None and not p.ended:
        return "r" if p.detached else "w"
    v = _control.get_entry("c", c.peer_key)
    if v:
        pid, _, mode = v.partition(" ")
        try:
            if _control.pid_alive(int(pid)):
                return mode[:1] or "w"
        except ValueError:
            pass
    if c.remote and _store() is not None:
        for row in _store().lookup_ends(c.peer_key, exact=True):
            return row["mode"][:1] or "w"
    return None


def _intent(ip: str, port: int) -> str:
    pre = f"{_norm(ip)},{port},"
    with _intent_lock:
        _local_intents[pre] = _local_intents.get(pre, 0) + 1
    name = f"{pre}{os.getpid()},{next(_intent_seq)}"
    _control.put_entry("i", name, str(os.getpid()))
    if _remote(ip) and _store() is not None:
        _store().register_end(f"{pre}>{socket.gethostname()},{name[len(pre):]}",
                              socket.gethostname(), os.getpid(), "i")
    return name


def _intent_done(name: str) -> None:
    pre = name.rsplit(",", 2)[0] + ","
    with _intent_lock:
        n = _local_intents.get(pre, 0) - 1
        if n > 0:
            _local_intents[pre] = n
        else:
            _local_intents.pop(pre, None)
    _control.drop_entry("i", name)
    if _remote(pre.split(",")[0]) and _store() is not None:
        _store().unregister_end(f"{pre}>{socket.gethostname()},{name[len(pre):]}", os.getpid())


def _connecting_to(here, remote: bool = False) -> bool:
    """Is a traced client (of this host; with ``remote``, of any host) connecting to
    ``here`` right now?"""
    pre = f"{_norm(here[0])},{here[1]},"
    if _local_intents.get(pre):
        return True
    me = os.getpid()
    for n in _control.entry_names("i", pre):
        try:
            pid = int(n.rsplit(",", 2)[1])
        except (ValueError, IndexError):
            continue
        if pid != me and _control.pid_alive(pid):
            return True
    return remote and _store() is not None and bool(_store().lookup_ends(pre + ">"))


def _withdraw_all() -> None:
    """At exit: this process's entries go (a peer ignores those of a dead pid anyway)."""
    for c in list(_local_conns.values()):
        try:
            _withdraw(c)
        except Exception:
            pass
