"""cutscope's launcher hook (``cutscope run``), imported by Python at start-up.

``cutscope run`` puts this directory first on ``PYTHONPATH`` and the store URL,
the process name and the payload cap in ``CUTSCOPE_DB``, ``CUTSCOPE_NAME``,
``CUTSCOPE_CAPTURE_PAYLOAD``; this module starts the tracer with them, the way
``opentelemetry-instrument`` does it. Child processes inherit the environment
and so start their own tracer: each is its own logical process, named
``<parent>/<pid>`` (``Tracer.start`` sets ``CUTSCOPE_PARENT`` and drops
``CUTSCOPE_NAME`` for them).

It never breaks the program: if cutscope cannot start, it says so on stderr
and the program runs untraced. Any ``sitecustomize`` that this one shadows is
imported afterwards.
"""

import os
import sys


def _chain() -> None:
    """Import the sitecustomize that ours shadows, if there is one."""
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    mod = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    except Exception as exc:  # theirs failed: as Python would report it, and go on
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{exc!r}", file=sys.stderr)
    finally:
        sys.path[:] = saved
        if mod is not None:
            sys.modules["sitecustomize"] = mod


def _boot() -> None:
    if os.environ.get("CUTSCOPE_BOOT") != "1":
        return
    try:
        from cutscope.tracer import active
    except Exception as exc:
        # Typically `cutscope run -- python app.py` with a `python` on PATH that is not
        # the one cutscope is installed in (the venv not activated): say which to use.
        print(f"cutscope: not tracing this process: {sys.executable} cannot import cutscope "
              f"({exc}); run the program with the Python cutscope is installed in "
              f"(e.g. .venv/bin/python, or activate the venv)", file=sys.stderr)
        return
    if active() is not None:  # instrumented already (guard against doing it twice)
        return
    try:
        import cutscope

        cutscope.start()
    except Exception as exc:
        if os.environ.get("CUTSCOPE_STRICT", "") not in ("", "0", "false", "no"):
            raise
        print(f"cutscope: not tracing this process: {exc}", file=sys.stderr)


_boot()
_chain()
