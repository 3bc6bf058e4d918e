"""The tracing state of one ``Connection`` object in this process, kept in the
object's ``__dict__`` (``STATE_KEY``)."""

from __future__ import annotations

import os
import stat
import threading

STATE_KEY = "_cutscope_c"


class ConnectionState:
    """Tracing state of one Connection object (this process)."""

    __slots__ = ("framed", "sock", "lock", "endpoints", "raw_out", "raw_in", "seen", "pid")

    def __init__(self, framed: bool):
        self.framed = framed  # our direction carries frames (the peer traces)
        self.sock = None  # is the descriptor a socket (peekable, markers allowed)? None: unknown
        self.lock = threading.Lock()
        self.endpoints: dict = {}  # logical process -> (its endpoint, its DataFramer) here
        self.raw_out = None
        self.raw_in = None
        self.seen: set = set()  # (channel, logical process) registered as incoming
        self.pid = os.getpid()


# A connection that is neither framed nor recorded: a Queue's own pipe (its items
# are traced by the queue's wrappers), and a connection during its handshake.
SKIP = ConnectionState(False)


def connection_state(conn, create_framed: bool | None = None) -> ConnectionState | None:
    """``conn``'s state in this process: one inherited through a fork becomes a new
    end of the same connection; with ``create_framed``, a state is made if none."""
    state = conn.__dict__.get(STATE_KEY)
    if state is not None and state is not SKIP and state.pid != os.getpid():
        state = ConnectionState(state.framed)
        conn.__dict__[STATE_KEY] = state
    if state is None and create_framed is not None:
        state = ConnectionState(create_framed)
        conn.__dict__[STATE_KEY] = state
    return state


def is_socket(conn, state: ConnectionState) -> bool:
    """Whether ``conn``'s descriptor is a socket (peekable: it may carry markers)."""
    if state.sock is None:
        try:
            state.sock = stat.S_ISSOCK(os.fstat(conn.fileno()).st_mode)
        except OSError:
            state.sock = False
    return state.sock


def endpoint_name(conn) -> str:
    try:
        fd = conn.fileno()
    except OSError:
        return "connection"
    return f"mp.connection:fd{fd}@{os.getpid()}"
