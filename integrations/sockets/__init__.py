"""The socket integration: in-band framing on TCP, envelopes on UDP, raw otherwise.

Plain functions are installed as attributes of ``socket.socket`` (its I/O
methods are C methods inherited from ``_socket.socket``; ``ssl.SSLSocket`` is a
subclass and is passed through untouched). Measured: a plain function costs a
third of a ``wrapt`` wrapper per call (``benchmarks/bench_tcp.py``); uninstall
restores exactly what was there.

Framing state belongs to the connection, not to the Python object: a ``Conn``
is found from a socket object through ``_objs`` (keyed by ``id``; a weak
reference removes the entry when the object dies) and, for a socket object that
has never been seen (``dup``, ``fromfd``, ``socket(fileno=...)``, a fork), through
the kernel socket's inode (``_inos``). A socket that finds no state is passed raw;
if its peer is a traced endpoint (it may be framed) a fault is recorded: it never
guesses.

The wire format is ``cutscope.tracer.wire``; the negotiation and the cases that
cannot be traced are described in ``docs/protocol.md``.

The modules, each importing only those above it:

- ``common``: constants, the modes of a direction, the real methods, the process-wide tables.
- ``registry``: the listener and connection registries (who is traced, intents).
- ``ends``: the gate, the pass-through state, ``RawEnds`` (unframed channels).
- ``outgoing``, ``incoming``: a TCP connection's out and in directions (``Conn``'s bases).
- ``conn``: ``Conn``: a TCP connection's life, negotiation and hand-over to TLS.
- ``handover``: a connection's state handed to another process with its descriptor.
- ``udp``: ``UdpConn``: envelopes on datagrams.
- ``binding``: from a socket object to its state.
- ``args``: argument checks left to the C methods.
- ``hotpath``: ``send``, ``sendall``, ``recv`` (C versions when the extension is there).
- ``send``, ``receive``, ``connect``, ``sendfile``, ``detach``: the other wrappers.
- ``instrumentor``: ``SocketInstrumentor`` (install, uninstall, the recorder's tick).
"""

from .instrumentor import SocketInstrumentor

__all__ = ["SocketInstrumentor"]
