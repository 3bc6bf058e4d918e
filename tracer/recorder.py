"""The recorder: a bounded in-memory buffer and one background writer thread.

Application threads append event tuples (``LogicalProcess._append``), or, on the
C paths, fill chunks of packed events that sit in the buffer as one item each
(tracer/_fast.c); the writer thread drains them in batches into the store. A
full buffer slows the application down (the appending thread waits for the
writer) rather than losing events, unless drop mode is on, where the overflow is
counted and reported.

Fork safety: ``os.register_at_fork`` flushes before a fork and gives the child a
fresh buffer, lock and writer thread (the locks the parent's writer held would
deadlock the child otherwise).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Callable

from cutscope.tracer.process import FAST  # the C extension, or None

log = logging.getLogger("cutscope")

_events = FAST.events if FAST is not None else len  # the events held by buffer items
# The bound's count, in O(1): at least the events in the buffer (FAST.held).
_held = FAST.held if FAST is not None else len

BUFFER_LIMIT = 200_000  # events held in memory before the application waits
BATCH = 20_000  # events per store transaction (at most)
INTERVAL = 0.05  # seconds between writer wake-ups when idle (the tick's pace)
# ... while this interpreter takes part in a snapshot (``Recorder.interval``): the tick
# consumes the markers at the head of idle channels and writes the markers that a
# send left queued, and each of them holds the snapshot up until it comes.
SNAPSHOT_INTERVAL = 0.01
# Events alone wait up to this long for their batch (each batch has a fixed cost: on the
# TCP ping-pong, a write every 50 ms held up the application 6.5% of the time, every
# 150 ms 3.5%); other records, a flush and a full buffer are written at once.
WRITE_INTERVAL = 0.15
RETRIES = 8  # attempts at one batch before it goes back to the buffer


class Recorder:
    """Buffers events and writes them to ``sink`` from a background thread.

    ``sink`` has ``write(events, others)`` and is called from the writer thread
    only. ``tick`` (optional) is called by the writer about every ``INTERVAL``.
    """

    def __init__(self, sink, limit: int = BUFFER_LIMIT, drop: bool = False,
                 tick: Callable[[], None] | None = None, on_error=None):
        self.sink = sink
        self.limit = limit
        self.drop = drop
        self.dropped = 0
        self.tick = tick
        self.on_error = on_error
        self.interval = INTERVAL  # the tick's pace (SNAPSHOT_INTERVAL during a snapshot)
        self._reset()
        self.running = False

    def _reset(self) -> None:
        self._buf: collections.deque = collections.deque()
        self._others: collections.deque = collections.deque()
        self._calls: collections.deque = collections.deque()  # jobs for the writer (call)
        self._wake = threading.Event()
        self._asked = False  # write now (a flush, a full buffer), not at WRITE_INTERVAL
        self._io = threading.Lock()  # held while a batch is being written
        self._thread: threading.Thread | None = None
        self._io_owner: int | None = None  # thread id writing a batch under _io
        self._forking = False
        # The hot path appends with the deque's own (C) method and calls ``check``
        # every few hundred events (LogicalProcess); ``append`` checks every time.
        buf = self._buf
        limit = self.limit
        push = self.push = buf.append

        def append(row):
            push(row)
            if _held(buf) > limit:
                self._overflow()

        def check():
            if _held(buf) > limit:
                self._overflow()

        self.append = append
        self.check = check

    # -- application side ------------------------------------------------------

    def other(self, item: tuple) -> None:
        """Queue a non-event record (process, channel, snapshot data ...)."""
        self._others.append(item)
        self._wake.set()

    def _overflow(self) -> None:
        if self.drop:
            over = _events(self._buf) - self.limit
            while over > 0:
                try:
                    n = _events((self._buf.pop(),))
                except IndexError:
                    break
                self.dropped += n
                over -= n
            return
        if not self.running or threading.current_thread() is self._thread:
            return
        self._asked = True
        self._wake.set()
        deadline = time.monotonic() + 30.0
        while _held(self._buf) > self.limit // 2 and self.running:
            time.sleep(0.0005)
            if time.monotonic() > deadline:  # a writer that cannot keep up at all
                break

    def call(self, fn: Callable[[], object], timeout: float) -> list:
        """Run ``fn()`` in the writer thread, before its next write, and wait for it at
        most ``timeout`` seconds: ``[(True, result)]``, ``[(False, exception)]``, or
        ``[]`` if it has not finished (it still runs later). For the store work that
        an application thread must not do itself (a fork child's)."""
        box: list = []
        done = threading.Event()

        def job():
            try:
                box.append((True, fn()))
            except Exception as exc:
                box.append((False, exc))
            finally:
                done.set()

        self._calls.append(job)
        self._wake.set()
        done.wait(timeout)
        return box

    def buffered(self) -> int:
        """The events waiting in the buffer."""
        return _events(self._buf)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._thread = threading.Thread(target=self._run, name="cutscope-recorder", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything buffered so far (from any application thread)."""
        if threading.current_thread() is self._thread or not self.running:
            self._drain()
            return
        deadline = time.monotonic() + timeout
        while self._buf or self._others:
            self._asked = True
            self._wake.set()
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if self._io_owner != threading.get_ident():
            with self._io:  # wait for a batch in progress
                pass

    def close(self) -> None:
        self.running = False
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)
        self._drain()

    # -- writer side ------------------------------------------------------------

    def _run(self) -> None:
        last_tick = last_write = 0.0
        while self.running:
            # Batch: events wait up to WRITE_INTERVAL even under load (each
            # transaction costs the application the GIL and a share of its CPU);
            # other() -- snapshot records, channels -- a flush and a full buffer are
            # written at once.
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                while self._calls and not self._forking:
                    job = self._calls.popleft()
                    with self._io:  # (store work: never in the middle of a fork)
                        job()
                now = time.monotonic()
                if self._others or self._asked or now - last_write >= WRITE_INTERVAL:
                    self._asked = False
                    last_write = now
                    # Only what is there now: under a sustained load the buffer is
                    # never empty, and the tick (heartbeats, snapshot requests) must
                    # still run.
                    self._drain(bounded=True)
                    now = time.monotonic()
                if self.tick is not None and (now - last_tick >= self.interval / 2 or not self._buf):
                    last_tick = now
                    if self._forking:
                        continue
                    with self._io:  # the hooks use the store: never in the middle of a fork
                        self.tick()
            except Exception as exc:  # never kill the writer
                if self.on_error is not None:
                    try:
                        self.on_error(exc)
                    except Exception:
                        log.exception("cutscope: recorder error")
                else:
                    log.exception("cutscope: recorder error")
                time.sleep(INTERVAL)

    def _drain(self, bounded: bool = False) -> None:
        """Write what is buffered, one batch per hold of the I/O lock.

        ``bounded``: only what is there now; busy threads may keep appending,
        and a fork must not chase them."""
        buf, others = self._buf, self._others
        left = len(buf) if bounded else -1
        me = threading.get_ident()
        if self._io_owner == me:
            # Re-entered from a signal handler (a SIGTERM flush) while this thread
            # is writing: the lock is ours already; waiting for it would hang.
            return
        while buf or others:
            if self._forking and threading.current_thread() is self._thread:
                return  # let the forking thread take the lock
            with self._io:
                self._io_owner = me
                try:
                    left = self._write_batch(left)
                finally:
                    self._io_owner = None
            if left == 0:
                return

    def _write_batch(self, left: int) -> int:
        buf, others = self._buf, self._others
        items = [others.popleft() for _ in range(len(others))]
        n = len(buf) if left < 0 else min(len(buf), left)
        if FAST is not None:  # up to n items, up to BATCH events
            rows = FAST.take(buf, n, BATCH)
        else:
            rows = [buf.popleft() for _ in range(min(n, BATCH))]
        if rows or items:
            self._write(rows, items)
        return left - len(rows) if left >= 0 else -1

    def _write(self, rows: list, items: list) -> None:
        """Write one batch, retrying transient failures (a locked SQLite file, a
        PostgreSQL deadlock: the transaction rolled back whole). If it still
        fails, the batch goes back to the head of the buffer, nothing is lost,
        and the error is raised to the writer loop, which tries again later."""
        delay = 0.01
        for attempt in range(RETRIES):
            try:
                self.sink.write(rows, items)
                return
            except Exception as exc:
                if attempt == RETRIES - 1:
                    self._buf.extendleft(reversed(rows))
                    self._others.extendleft(reversed(items))
                    raise
                log.debug("cutscope: store write failed (%s), retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- fork -------------------------------------------------------------------

    def before_fork(self) -> None:
        """Hold the I/O lock across the fork, after writing what is buffered now."""
        if self.running:
            self._forking = True
            self._io.acquire()
            try:
                left = len(self._buf)
                while left > 0 or self._others:
                    left = self._write_batch(left)
                    if left < 0:
                        break
            except Exception:
                log.exception("cutscope: flush before fork failed")

    def after_fork_parent(self) -> None:
        if self.running:
            self._forking = False
            self._io.release()

    def after_fork_child(self) -> None:
        # Same deque objects (the hot path holds them), emptied: whatever another
        # parent thread appended after the pre-fork drain belongs to the parent.
        self._buf.clear()
        self._others.clear()
        self._calls.clear()
        self._wake = threading.Event()
        self._io = threading.Lock()
        self._thread = None
        self._io_owner = None
        self._forking = False
        was, self.running = self.running, False
        if was:
            self.start()
