"""State without code changes: ``cutscope run --state module:function`` and
``CUTSCOPE_STATE``, resolved at the first snapshot (the program's own module is
``__main__``), bad specs in one line; real processes, a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time

import pytest

from cutscope.tracer.providers import NamedProvider, parse_specs
from _sockutil import CUTSCOPE, PY, clean_env

PROGRAM = textwrap.dedent(r'''
    import os, queue, sys, time
    RUNS = []  # the program is imported once: a second import would add a second run
    RUNS.append(1)
    total = 0

    def state():
        return {"total": total, "runs": len(RUNS)}

    q = queue.Queue()
    print("READY", flush=True)
    while not os.path.exists(sys.argv[1]):
        q.put(1)
        total += q.get()
        time.sleep(0.005)
''')

EXTRA = textwrap.dedent(r'''
    def st():
        return {"extra": "yes"}
''')


def _snapshot(db, name, env):
    r = None
    for _ in range(50):
        r = subprocess.run([CUTSCOPE, "snapshot", "--db", str(db), "--from", name, "--json",
                            "--timeout", "20"], capture_output=True, text=True, env=env, timeout=60)
        if r.returncode == 0:
            return json.loads(r.stdout)
        time.sleep(0.2)
    raise AssertionError(r.stdout + r.stderr)


def test_run_state_specs_from_the_program_a_module_and_the_environment(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    (tmp_path / "extra.py").write_text(EXTRA)
    db, stop = tmp_path / "t.db", tmp_path / "stop"
    env = clean_env()
    env["CUTSCOPE_STATE"] = "nosuchmodule:fn"
    p = subprocess.Popen([CUTSCOPE, "run", "--db", str(db), "--name", "app", "--state", "prog:state",
                          "--state", "extra:st", "--", PY, str(tmp_path / "prog.py"), str(stop)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=str(tmp_path))
    try:
        assert p.stdout.readline().startswith("READY")
        snap = _snapshot(db, "app", env)
        state = snap["processes"]["app"]["state"]
        assert state["total"] > 0 and state["runs"] == 1  # __main__'s, not a second import
        assert state["extra"] == "yes"
        assert state["_error:nosuchmodule:fn"].startswith("ModuleNotFoundError")
        snap2 = _snapshot(db, "app", env)
        assert snap2["processes"]["app"]["state"]["total"] >= state["total"]
    finally:
        stop.touch()
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert err.count("nosuchmodule:fn") == 1  # said once, not at every snapshot


@pytest.mark.parametrize("spec", ["prog", "prog:", ":fn", "prog:state()", "a b:c", "prog:1x"])
def test_run_bad_state_spec_is_one_line(tmp_path, spec):
    r = subprocess.run([CUTSCOPE, "run", "--db", str(tmp_path / "t.db"), "--state", spec, "--",
                        PY, "-c", "print('ran')"], capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert r.returncode != 0 and "ran" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--state" in lines[0] and "module:function" in lines[0], r.stderr


def test_specs_parse_and_resolve():
    assert parse_specs(" a.b:c , d:e.f ,") == ["a.b:c", "d:e.f"]
    with pytest.raises(ValueError):
        parse_specs("a:b,c")
    p = NamedProvider("json:dumps")
    assert p.__name__ == "json:dumps"
    p2 = NamedProvider("os.path:nosuch")
    assert list(p2()) == ["_error:os.path:nosuch"]
    assert list(p2()) == ["_error:os.path:nosuch"]
