"""Handing a connection to another process: a descriptor that leaves this process
(pickled by multiprocessing.reduction, or sent with SCM_RIGHTS) takes its framing state
with it through the control directory; the receiving process adopts it."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading

from cutscope.tracer import control as _control
from cutscope.tracer.process import OutEndpoint

from .._base import ImportHooks
from .common import FRAMED, RAW, _fault, _framed, _inos, _lp
from .conn import Conn
from .registry import _end_key, _publish


# -- handing a connection to another process -----------------------------------------------
#
# A descriptor that leaves this process (multiprocessing.reduction.DupFd: a socket
# pickled for a child or a Pool worker; sendmsg with SCM_RIGHTS: socket.send_fds,
# multiprocessing's send_handle) takes its connection's framing state with it: the
# state is written to the control directory's ``h/`` under the kernel socket's inode,
# and the process that next sees a socket object of that inode (``_attach``) adopts it.

_STATE = ("out_mode", "out_cid", "out_name", "out_left", "in_mode", "in_hello", "in_left",
          "in_msg", "in_stamp", "in_n", "in_first", "in_name", "in_cid", "accepted",
          "dest_traced", "key", "peer_key", "remote")


def _export(c) -> None:
    """Write ``c``'s state for the process that receives its descriptor; this process
    stops covering it in snapshots (its frames now come from the receiver)."""
    if c.key is None or c.ended:
        return
    state = {k: getattr(c, k) for k in _STATE}
    state["out_pending"] = base64.b64encode(bytes(c.out_pending)).decode()
    state["in_buf"] = base64.b64encode(bytes(c.in_buf)).decode()
    _control.put_file("h", str(c.ino), json.dumps(state).encode())
    endpoint, c.out_endpoint = c.out_endpoint, None
    c._fast()
    _framed.discard(c)
    if endpoint is not None:
        endpoint.process.remove_out(endpoint)
    if c.in_cid is not None and c.in_lp is not None and not c.in_eof:
        c.in_lp.remove_in(c.in_cid)
        c.in_lp = None


def _handover_fd(fd) -> None:
    """``fd`` is about to be handed to another process: export its connection's state."""
    try:
        fd = int(fd)
        c = _inos.get(os.fstat(fd).st_ino)
        if c is not None and not c.ended:
            with _HANDOVER_LOCK:
                _export(c)
    except (OSError, TypeError, ValueError):
        pass
    except Exception as exc:
        _fault(exc, "handing a connection over")


_HANDOVER_LOCK = threading.Lock()


def _adopt(sock, ino: int):
    """The Conn handed over with this descriptor by another process, or None."""
    raw = _control.take_file("h", str(ino))
    if raw is None:
        return None
    state = json.loads(raw)
    here, there = sock.getsockname(), sock.getpeername()
    if _end_key(here, there) != state["key"]:
        return None  # an old entry of an inode since reused
    c = Conn(ino, state["out_mode"], state["in_mode"], state["accepted"])
    for k in _STATE:
        setattr(c, k, state[k])
    c.laddr, c.raddr = here, there
    c.out_pending = bytearray(base64.b64decode(state["out_pending"]))
    c.in_buf = base64.b64decode(state["in_buf"])
    lp = _lp()
    if c.out_mode == FRAMED and c.out_cid is not None and lp is not None:
        c.out_endpoint = OutEndpoint(lp, c.out_cid, c._flush, True)
        lp.add_out(c.out_endpoint)
        _framed.add(c)
    if c.in_mode == FRAMED and c.in_cid is not None and lp is not None:
        c.in_lp = lp
        lp.add_in(c.in_cid, True)
        _framed.add(c)
    if c.out_mode != RAW or c.in_mode != RAW:
        _publish(c)
    c._fast()
    return c


def _handover_anc(ancdata) -> None:
    """Descriptors leaving with SCM_RIGHTS (socket.send_fds, multiprocessing's
    send_handle): hand their connections' state over with them."""
    import array

    try:
        for level, typ, data in ancdata:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = array.array("i")
                mv = memoryview(data).cast("B")
                fds.frombytes(bytes(mv[:len(mv) - len(mv) % fds.itemsize]))
                for fd in fds:
                    _handover_fd(fd)
    except Exception as exc:
        _fault(exc, "handing descriptors over")


def _dupfd(original):
    """multiprocessing.reduction.DupFd: a socket pickled for another process (a child
    started by spawn or forkserver, a Pool worker through the resource sharer)."""
    def DupFd(fd):
        if _inos:
            _handover_fd(fd)
        return original(fd)

    DupFd.__wrapped__ = original
    return DupFd


_dupfd_saved: list = []


def _patch_reduction(module=None) -> None:
    mod = module or sys.modules.get("multiprocessing.reduction")
    if mod is None or not reduction_hooks.on or _dupfd_saved:
        return
    orig = mod.__dict__.get("DupFd")
    if orig is None or getattr(orig, "__wrapped__", None) is not None:
        return
    mod.DupFd = _dupfd(orig)
    _dupfd_saved.append((mod, orig))


def _unpatch_reduction() -> None:
    while _dupfd_saved:
        mod, orig = _dupfd_saved.pop()
        if getattr(mod.DupFd, "__wrapped__", None) is orig:
            mod.DupFd = orig


# On while the socket integration is installed: multiprocessing.reduction's DupFd wrapped.
reduction_hooks = ImportHooks()
