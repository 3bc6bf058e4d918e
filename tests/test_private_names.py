"""The standard library's private names the integrations rely on, and the gate on them.

Each instrumentor declares its Pythons and the private names it uses
(``Instrumentor.private_names``). The first test checks every declared name on the
running Python: `make test-pythons` runs it on each supported one. The others check
the gate: an instrumentor on a Python it does not declare, or missing one of its
private names, installs nothing and records a fault, so the application runs
untraced by it rather than traced wrongly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cutscope.integrations import registry
from cutscope.integrations._base import SUPPORTED_PYTHONS, Instrumentor, NotYetImported, resolve
from cutscope.testing import recording

DECLARED = [(inst.name, path) for inst in registry() for path in inst.private_names]


@pytest.mark.parametrize("instrumentor, path", DECLARED, ids=[p for _, p in DECLARED])
def test_each_declared_private_name_exists_on_this_python(instrumentor, path):
    try:
        resolve(path, create=True)  # AttributeError if this Python does not have it
    except NotYetImported:
        # only a library that is not installed (dask.distributed): the standard
        # library's modules always import
        assert not path.startswith(("socket.", "_socket.", "ssl.", "sys.", "asyncio.", "queue.",
                                    "threading.", "multiprocessing.")), path
        pytest.skip(f"{path}: its library is not installed here")


def test_every_instrumentor_supports_this_python_and_only_supported_ones():
    for inst in registry():
        assert inst.python_versions, inst.name
        assert set(inst.python_versions) <= set(SUPPORTED_PYTHONS), inst.name
        assert sys.version_info[:2] in inst.python_versions, inst.name
        assert inst.unsupported() is None, (inst.name, inst.unsupported())


def test_resolve_imports_and_creates_only_when_asked():
    with pytest.raises(NotYetImported):
        resolve("cutscope_no_such_module.thing")
    with pytest.raises(NotYetImported):
        resolve("collections.deque().maxlen")  # an instance's attribute: needs create
    assert resolve("collections.deque().maxlen", create=True) is None
    with pytest.raises(AttributeError):
        resolve("socket.socket._cutscope_no_such_name")


def test_a_submodule_not_imported_yet_is_not_judged_missing():
    """`import json` does not import json.tool: its names wait for their module."""
    code = ("import json, sys; from cutscope.integrations._base import NotYetImported, resolve\n"
            "assert 'json.tool' not in sys.modules\n"
            "try:\n    resolve('json.tool.main')\nexcept NotYetImported:\n    print('later')\n"
            "import json.tool\nprint(resolve('json.tool.main').__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["later", "main"]


class _Probe(Instrumentor):
    """Not registered: installs nothing but counts its installs."""

    name = "probe"
    python_versions = SUPPORTED_PYTHONS

    def __init__(self, **declared):
        super().__init__()
        self.__dict__.update(declared)
        self.calls = 0

    def _instrument(self, tracer) -> None:
        self.calls += 1

    def _uninstrument(self) -> None:
        pass


@pytest.mark.parametrize("declared, why", [
    ({"private_names": ("socket.socket._cutscope_no_such_name",)},
     "the standard library has no socket.socket._cutscope_no_such_name"),
    ({"python_versions": ((2, 7),)}, "is not among its versions (2.7)"),
])
def test_an_instrumentor_that_does_not_fit_this_python_installs_nothing(declared, why):
    probe = _Probe(**declared)
    with recording("main", instrument=False, strict=False) as rec:
        probe.instrument(rec.tracer)
        assert not probe.installed and probe.calls == 0
        assert rec.tracer.faults == 1
        rec.trace()
        assert any("probe is not installed" in f["detail"] and why in f["detail"]
                   for f in rec.store.faults), rec.store.faults
    with recording("main", instrument=False, strict=True) as rec:
        with pytest.raises(RuntimeError, match="probe is not installed"):
            probe.instrument(rec.tracer)  # strict mode: a fault raises
        assert not probe.installed and probe.calls == 0


def test_an_instrumentor_that_fits_installs():
    probe = _Probe(private_names=("socket.socket._real_close",))
    with recording("main", instrument=False) as rec:
        probe.instrument(rec.tracer)
        assert probe.installed and probe.calls == 1
        probe.uninstrument()
