"""conformance/run.py: CPython's own suites without and under ``cutscope run``, compared."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from _sockutil import ROOT

SCRIPT = os.path.join(ROOT, "conformance", "run.py")


def _module():
    spec = importlib.util.spec_from_file_location("conformance_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.timeout(600)
def test_a_small_suite_runs_in_both_passes_and_the_traced_one_is_traced(tmp_path):
    out = tmp_path / "results.json"
    r = _run("--suites", "test_poll", "--json", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "conformance: OK" in r.stdout
    data = json.loads(out.read_text())
    row = data["suites"]["test_poll"]
    assert row["run"] > 0 and row["run_with"] == row["run"]
    assert row["failed_without"] == row["failed_with"] == 0
    assert data["trace"]["events"] > 0  # the second pass really ran under cutscope
    assert set(data["tests"]["without"]) == set(data["tests"]["with"])
    assert data["regressions"] == []


@pytest.mark.parametrize("args, says", [
    (["--python", "/nonexistent/python"], "not an executable file"),
    (["--suites", "not-a-suite"], "not a test suite name"),
    (["--timeout", "soon"], "invalid float value"),
    (["-j", "0"], "-j must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    r = _run(*args, timeout=60)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr
    assert "Traceback" not in r.stderr


def test_an_expected_entry_without_a_reason_is_refused(tmp_path):
    bad = tmp_path / "expected.txt"
    bad.write_text("# comment\ntest.test_socket.X.test_y\n")
    r = _run("--expected", str(bad), timeout=60)
    assert r.returncode == 2 and f"{bad}:2:" in r.stderr and "no reason" in r.stderr


def test_a_python_without_cutscope_is_named_with_the_make_target():
    home = os.path.expanduser("~/.pyenv/versions")
    bare = sorted(glob.glob(os.path.join(home, "3.1[23].*", "bin", "python3")))
    if not bare:
        pytest.skip(f"no pyenv Python 3.12 or 3.13 in {home}")
    r = _run("--python", bare[0], timeout=60)
    mm = os.path.basename(os.path.dirname(os.path.dirname(bare[0])))[:4]
    assert r.returncode == 2 and f"make venv-{mm}" in r.stderr


def test_regressions_are_passes_that_fail_or_go_missing_and_file_outcomes_that_change(capsys):
    m = _module()
    base = {"test.test_a.C.t_pass": "pass", "test.test_a.C.t_breaks": "pass",
            "test.test_a.C.t_gone": "pass", "test.test_a.C.t_failed_anyway": "fail",
            "test.test_a.C.t_skip": "skip", "test.test_b.D.t": "pass"}
    traced = {"test.test_a.C.t_pass": "pass", "test.test_a.C.t_breaks": "fail",
              "test.test_a.C.t_failed_anyway": "fail", "test.test_a.C.t_skip": "skip",
              "test.test_b.D.t": "pass"}
    files_without = {"test_a": "failed (1 failure)", "test_b": "passed (1.2 sec)"}
    files_with = {"test_a": "failed (2 failures)", "test_b": "failed (env changed)"}
    result = m.compare(["test_a", "test_b"], base, traced, files_without, files_with)
    got = {(r["id"], r["with"]) for r in result["regressions"]}
    assert got == {("test.test_a.C.t_breaks", "fail"), ("test.test_a.C.t_gone", "missing"),
                   ("test_b [file]", "env changed")}
    assert result["table"]["test_a"] == {"run": 4, "failed_without": 1, "run_with": 3,
                                         "failed_with": 2, "missing_with": 1}

    info = {"version": "3.11.7", "executable": sys.executable}
    times = {"without": 1.0, "with": 2.0}
    trace = {"processes": 1, "events": 1, "faults": 0, "fault_samples": []}
    every = {"test.test_a.C.t_*": "reason a", "test_b [file]": "reason b", "test.test_z.*": "r"}
    assert m.print_report(info, result, every, times, trace) == 0
    out = capsys.readouterr().out
    assert "(expected: reason a)" in out and "test.test_z.*" in out  # the stale entry is named
    some = {"test.test_a.C.t_breaks": "reason"}
    assert m.print_report(info, result, some, times, trace) == 1
    assert "FAILED: 2 regression(s) not in expected.txt" in capsys.readouterr().out


def test_the_junit_reader_takes_passes_skips_failures_and_errors(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite>'
        '<testcase name="test.test_a.C.t1" status="run" result="completed" />'
        '<testcase name="test.test_a.C.t2"><skipped>why</skipped></testcase>'
        '<testcase name="test.test_a.C.t3"><failure>boom</failure></testcase>'
        '<testcase name="test.test_a.C.t4"><error>boom</error></testcase>'
        '<testcase name="setUpClass (test.test_b.D)"><error>boom</error></testcase>'
        '</testsuite></testsuites>')
    m = _module()
    got = m.parse_junit(str(xml))
    assert got == {"test.test_a.C.t1": "pass", "test.test_a.C.t2": "skip",
                   "test.test_a.C.t3": "fail", "test.test_a.C.t4": "fail",
                   "setUpClass (test.test_b.D)": "fail"}
    assert m.suite_of("setUpClass (test.test_b.D)") == "test_b"
    assert m.parse_junit(str(tmp_path / "absent.xml")) == {}


def test_the_passes_get_sigint_at_its_default_when_the_caller_ignores_it():
    """A shell's background job ignores SIGINT; regrtest's tests of Ctrl-C (asyncio's
    Runner) hang in a process that inherits that."""
    code = ("import signal, subprocess, sys, importlib.util\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"spec = importlib.util.spec_from_file_location('r', {SCRIPT!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "mod.sigint_default()\n"
            "out = subprocess.run([sys.executable, '-c', 'import signal; "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)'],"
            " capture_output=True, text=True).stdout\n"
            "print(out.strip())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
