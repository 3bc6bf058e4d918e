"""PostgreSQL LISTEN/NOTIFY: snapshot requests, reports and ends across hosts at once.

On one host, a coordinator reaches the traced interpreters through their
control sockets (``control.py``). Across hosts the store is the only path, and
reading it on a timer costs both latency and load. With PostgreSQL the store
also carries notifications:

- ``cutscope_req``: a coordinator wrote ``snapshot_requests`` rows (payload:
  JSON ``{"sid", "initiator", "names"}``; ``names`` left out when it would not
  fit in a notification). Every traced interpreter listens, and its listener
  thread (``Listener``, a thread that does nothing else, like the control
  socket's) sets ``lp.pending`` of the named processes it has, at once.
- ``cutscope_rep``: a recorder wrote snapshot records (payload: the snapshot
  ids). A coordinator that waits for processes reporting through the store
  listens, and reads the progress when one of its snapshot's ids comes,
  instead of every 10 ms.
- ``cutscope_end``: a coordinator ended a snapshot (payload: ``{"sid",
  "status"}``); the interpreters stop recording for it.

A notification is sent in the transaction that writes the rows it announces
(``SELECT pg_notify(...)``), so it is delivered at commit, never before the
rows can be read. The polls stay, slower, as the fallback: a listener that
cannot connect, or a notification lost with a dropped connection, costs time,
never a snapshot. SQLite has no such thing and polls as before.
``CUTSCOPE_NOTIFY=0`` turns it off.

Each listener has a connection of its own, in autocommit, outside the store's
pool, woken by ``Connection.notifies(timeout=...)`` (psycopg 3.2 and later;
with an older psycopg the polls alone serve): one more server connection per
traced interpreter, and one per coordinator that waits for another host. After a fork the child
never touches the parent's listener connection (it shares the socket): it
keeps a reference to it, so that it is not finalised (which would end the
parent's session), and opens its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger("cutscope")

REQ, REP, END = "cutscope_req", "cutscope_rep", "cutscope_end"
MAX_PAYLOAD = 7000  # PostgreSQL refuses payloads of 8000 bytes and more
WAKE_S = 0.5  # a listener checks whether it should stop at least this often

# Listeners inherited from a parent across a fork: never used, never finalised.
_orphans: list = []


def enabled(driver: str | None) -> bool:
    """Whether a PostgreSQL store reached through the SQLAlchemy driver ``driver``
    carries notifications: psycopg 3.2 or later, unless ``CUTSCOPE_NOTIFY=0``."""
    if os.environ.get("CUTSCOPE_NOTIFY", "1") in ("0", "no", "false"):
        return False
    if driver != "psycopg":
        return False
    try:  # Connection.notifies(timeout=...) came with psycopg 3.2
        import psycopg

        return tuple(int(x) for x in psycopg.__version__.split(".")[:2]) >= (3, 2)
    except Exception:
        return False


def send(conn, channel: str, payload: str) -> None:
    """Notify ``channel`` in ``conn``'s transaction (delivered at its commit)."""
    conn.exec_driver_sql("SELECT pg_notify(%s, %s)", (channel, payload))


def request_payload(sid: int, initiator: str, names: list[str]) -> str:
    p = json.dumps({"sid": sid, "initiator": initiator, "names": names})
    if len(p.encode()) > MAX_PAYLOAD:  # the listeners read the requests instead
        p = json.dumps({"sid": sid, "initiator": initiator})
    return p


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """A thread that listens on ``channels`` of the store at ``url`` and calls
    ``handle(channel, payload)`` for each notification (in that thread)."""

    def __init__(self, url: str, channels: tuple[str, ...], handle: Callable[[str, str], None],
                 name: str = "cutscope-notify"):
        self.url = url
        self.channels = channels
        self.handle = handle
        self.running = True
        self.ready = threading.Event()  # listening (set again after each reconnect)
        self.conn = None
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _connect(self) -> None:
        import psycopg

        conn = psycopg.connect(_conninfo(self.url), autocommit=True, connect_timeout=5)
        for ch in self.channels:
            conn.execute(f"LISTEN {ch}")
        self.conn = conn
        self.ready.set()

    def _run(self) -> None:
        backoff = 0.1
        while self.running:
            try:
                if self.conn is None:
                    self._connect()
                    backoff = 0.1
                for n in self.conn.notifies(timeout=WAKE_S):
                    if not self.running:
                        break
                    try:
                        self.handle(n.channel, n.payload)
                    except Exception as exc:
                        log.warning("cutscope: notification %s: %s", n.channel, exc)
            except Exception as exc:  # no server, a dropped connection: poll meanwhile
                self.ready.clear()
                log.debug("cutscope: listener: %s", exc)
                self._drop()
                end = time.monotonic() + backoff
                while self.running and time.monotonic() < end:
                    time.sleep(0.05)
                backoff = min(backoff * 2, 5.0)
        self._drop()

    def _drop(self) -> None:
        c, self.conn = self.conn, None
        if c is not None and os.getpid() == self.pid:
            try:
                c.close()
            except Exception:
                pass

    def close(self, wait: float = 0.0) -> None:
        """Stop (the thread closes its connection within ``WAKE_S``)."""
        self.running = False
        if wait and self.thread is not threading.current_thread():
            self.thread.join(wait)

    def orphan(self) -> None:
        """In a fork child: this listener is the parent's; leave it alone for good."""
        self.running = False
        _orphans.append(self)
