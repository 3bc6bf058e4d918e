"""multiprocessing: child processes, ``multiprocessing.Queue`` and ``Connection``.

- ``children``: every child process is its own logical process, under every
  start method (fork, spawn, forkserver), flushed before ``os._exit()`` and on
  ``Pool.terminate()``'s SIGTERM.
- ``queues``: ``Queue`` / ``JoinableQueue`` items travel in picklable
  envelopes; markers are envelopes that take no slot of the queue.
- ``connection``: ``Connection``'s byte-level I/O, ``poll``, ``wait``,
  ``Pipe`` and pickling; a direction is framed (``frames``, the wire of a
  multiprocessing message) only when its peer traces.
- ``handshake``: ``Listener`` / ``Client``'s authentication handshake tells
  each side whether the other traces.
- ``connstate``: a connection's tracing state; ``patching``: the originals
  of what was replaced; ``instrumentor``: installing and removing it all.
"""

from __future__ import annotations

from .instrumentor import MultiprocessingInstrumentor

__all__ = ["MultiprocessingInstrumentor"]
