"""Whether the C hot paths (tracer/_fast.c, integrations/_fastq.c,
integrations/sockets/_fastsock.c) are in use, and if not, why.

Tests that exercise the C paths themselves use ``needs_c_paths``: they skip, saying why,
when the suite runs the pure-Python paths on purpose (``CUTSCOPE_SPEEDUPS=0``) or on a
machine that cannot build the extension (no working C compiler: it is optional, and
cutscope runs without it). A machine that can compile but has no extension built is a
broken install, and those tests fail there.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sysconfig
import tempfile

import pytest

from cutscope.tracer import process


@functools.lru_cache(maxsize=None)
def c_compiler_works() -> bool:
    """This machine compiles and links a C extension with the compiler Python's build
    uses (``CC`` and ``LDSHARED`` from the environment or from sysconfig, as setuptools
    takes them)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC")
    ldshared = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED")
    if not cc or not ldshared:
        return False
    with tempfile.TemporaryDirectory() as d:
        src, obj, so = (os.path.join(d, n) for n in ("t.c", "t.o", "t.so"))
        with open(src, "w") as f:
            f.write("int cutscope_probe(void) { return 1; }\n")
        try:
            for cmd in (shlex.split(cc) + ["-fPIC", "-c", src, "-o", obj],
                        shlex.split(ldshared) + [obj, "-o", so]):
                if subprocess.run(cmd, capture_output=True, timeout=60).returncode != 0:
                    return False
        except (OSError, subprocess.TimeoutExpired):
            return False
        return os.path.exists(so)


def why_no_c_paths() -> str | None:
    """Why the C paths are not in use where that is expected; None when they are in use,
    or when they should be (built, or buildable here) and are not."""
    if process.FAST is not None:
        return None
    if os.environ.get("CUTSCOPE_SPEEDUPS", "1") == "0":
        return "CUTSCOPE_SPEEDUPS=0: this run tests the pure-Python paths"
    if not c_compiler_works():
        return "the C extension is not built: this machine has no working C compiler"
    return None


def needs_c_paths(test):
    """Skip ``test`` when the C paths are off on purpose or cannot be built here."""
    reason = why_no_c_paths()
    return pytest.mark.skipif(reason is not None, reason=reason or "")(test)
