"""What the multiprocessing integration has replaced, and the calling thread's
logical process: shared by its modules."""

from __future__ import annotations

from cutscope.tracer.process import current_var, default_process

from .._base import ImportHooks

# The standard library's functions and methods that the wrappers replaced, by name
# ("Queue.put", "Connection._send_bytes", ...): each wrapper calls its original.
originals: dict = {}
hooks = ImportHooks()  # on while installed

# (owner, attr, original, ours, is_dict) of every replacement made, for uninstall.
patched: list = []


def current_lp():
    """The calling thread's logical process, or None where nothing traces."""
    return current_var.get() or default_process[0]


def replace(owner, attr: str, key: str, fn) -> None:
    """Set ``owner.attr`` to ``fn``, remembering the original as ``originals[key]``."""
    cur = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if cur is fn:
        return
    originals[key] = cur
    setattr(owner, attr, fn)
    patched.append((owner, attr, cur, fn, False))
