"""Run CPython's own test suites without cutscope and under ``cutscope run``, and compare them.

Usage::

    python conformance/run.py [--python PATH] [--timeout SECONDS] [-j N] [--json FILE]
                              [--expected FILE] [--suites NAME ...] [--strict]

``--python`` is the interpreter whose suites are run (default: the interpreter
running this script); cutscope must be installed in it (``make venv-3.12`` builds
``.venv-3.12`` for pyenv's 3.12, and so on). Each pass runs regrtest
(``PYTHON -m test -jN --timeout T --junit-xml FILE -i '*VSOCK*' SUITES``), the
second one under ``cutscope run`` with a throwaway SQLite store; the two
JUnit files are compared test by test.

A *regression* is a test that passes without cutscope and fails, errors or is
missing (its file timed out or crashed) under it, or a test file whose regrtest
outcome changes from ``passed`` to anything else (``env changed``: a test left
threads, files or other state behind). The script exits 1 iff there is a
regression that ``conformance/expected.txt`` does not list, 2 on bad input or
when a pass could not run at all (for instance the traced pass recorded no
events: a comparison with an untraced second pass would mean nothing).

Only stdlib: it runs under any of the supported interpreters.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))

SUITES = [
    "test_socket", "test_selectors", "test_ssl", "test_asyncio", "test_httplib",
    "test_urllib2_localnet", "test_xmlrpc", "test_ftplib", "test_smtplib", "test_poplib",
    "test_imaplib", "test_logging", "test_wsgiref", "test_epoll", "test_poll", "test_queue",
]
# test_socket's AF_VSOCK tests hang on machines without the vsock transport.
IGNORE = ["*VSOCK*"]

# "0:01:02 load avg: 1.20 [ 3/44/1] test_ssl failed (2 errors) -- running: ..."
_PROGRESS = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\]\s+(test[\w.]+)\s+(.*?)\s*(?:-- running.*)?$")
# The suite a test id belongs to: "test.test_asyncio.test_events.X.test_y" -> test_asyncio,
# "setUpClass (test.test_ssl.ThreadedTests)" -> test_ssl.
_SUITE = re.compile(r"\btest\.(test_\w+)")


class BadInput(Exception):
    """One line for the user, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f"conformance: {message} (see --help)\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(
        prog="conformance/run.py",
        description="Run CPython's socket, asyncio, TLS, HTTP, mail, logging and queue "
                    "suites without and with cutscope and list the tests cutscope breaks.")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter to test, with cutscope installed (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="regrtest's timeout per test file, seconds (default 600, ten times the "
                        "slowest file untraced): a hang becomes a failure of that file")
    p.add_argument("-j", "--jobs", type=int, default=2,
                   help="regrtest worker processes (default 2)")
    p.add_argument("--json", dest="json_path", default=None,
                   help="where to write the results (default: conformance/results-X.Y.json)")
    p.add_argument("--expected", default=os.path.join(HERE, "expected.txt"),
                   help="the reviewed list of accepted regressions (default: conformance/expected.txt)")
    p.add_argument("--suites", nargs="+", default=SUITES, metavar="NAME",
                   help="test suites to run (default: all %d)" % len(SUITES))
    p.add_argument("--strict", action="store_true",
                   help="run the traced pass with CUTSCOPE_STRICT=1 (errors inside cutscope raise "
                        "into the tests instead of being recorded as faults)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (logs, JUnit files, the store)")
    return p.parse_args(argv)


def load_expected(path: str) -> dict[str, str]:
    """``expected.txt``: ``TEST-ID-OR-GLOB  reason``, one per line; ``#`` starts a comment line."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read the expected list {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2 or not parts[1].strip():
            raise BadInput(f"{path}:{n}: entry {parts[0]!r} has no reason (write: ID  reason)")
        out[parts[0]] = parts[1].strip()
    return out


def probe(python: str) -> dict:
    """The interpreter's version, and whether it can import cutscope and regrtest."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise BadInput(f"--python {python}: not an executable file")
    code = ("import json, sys, importlib.util as u; print(json.dumps({"
            "'version': '%d.%d.%d' % sys.version_info[:3], 'executable': sys.executable, "
            "'cutscope': u.find_spec('cutscope') is not None, "
            "'regrtest': u.find_spec('test.libregrtest') is not None}))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        info = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise BadInput(f"--python {python}: cannot run it ({exc})") from None
    if not info["regrtest"]:
        raise BadInput(f"--python {python}: Python {info['version']} has no test suite "
                       f"(package test.libregrtest; Debian ships it in libpython3-testsuite)")
    if not info["cutscope"]:
        mm = ".".join(info["version"].split(".")[:2])
        raise BadInput(f"--python {python}: cutscope is not installed for Python {info['version']} "
                       f"(`make venv-{mm}` builds .venv-{mm}; then pass --python .venv-{mm}/bin/python)")
    return info


def clean_env() -> dict[str, str]:
    """The environment of both passes: no cutscope settings inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTSCOPE_")}
    env.pop("PYTHONPATH", None)
    return env


def sigint_default() -> None:
    """SIGINT back to its default when the caller ignores it (a shell starts its background
    jobs so): the passes inherit it, and asyncio's and unittest's tests of Ctrl-C, which
    raise SIGINT and wait for KeyboardInterrupt, would hang in both passes until the timeout."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_pass(label: str, cmd: list[str], env: dict, cwd: str, log_path: str) -> tuple[int, dict, float]:
    """Run one regrtest pass, its output to ``log_path``, progress lines to stdout.

    Returns the exit status, regrtest's outcome per test file and the duration."""
    outcomes: dict[str, str] = {}
    t0 = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            m = _PROGRESS.search(line.rstrip("\n"))
            if m:
                outcomes[m.group(1)] = m.group(2)
                print(f"  [{label}] {m.group(1)} {m.group(2)}", flush=True)
        rc = proc.wait()
    return rc, outcomes, time.monotonic() - t0


def file_status(text: str) -> str:
    """regrtest's outcome of a test file, without its timing: 'passed', 'failed', 'env changed', ..."""
    t = re.sub(r"\s*\(\d[\w .]*\)$", "", text.strip())  # "(1 min 2 sec)"
    if "env changed" in t:
        return "env changed"
    for s in ("passed", "failed", "skipped", "timed out", "crashed", "resource denied",
              "skipped", "interrupted", "run no tests", "no tests ran"):
        if t.startswith(s):
            return s
    return t


def parse_junit(path: str) -> dict[str, str]:
    """Test id -> 'pass', 'skip' or 'fail' (failure or error) from regrtest's JUnit XML."""
    results: dict[str, str] = {}
    if not os.path.exists(path):
        return results
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return results
    for case in root.iter("testcase"):
        name = case.get("name", "")
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            state = "fail"
        elif "skipped" in tags:
            state = "skip"
        else:
            state = "pass"
        # A test reported twice (a subtest failed and the test ended) keeps its worst state.
        if results.get(name) != "fail":
            results[name] = state
    return results


def suite_of(test_id: str) -> str:
    m = _SUITE.search(test_id)
    return m.group(1) if m else "?"


def trace_summary(db: str) -> dict:
    """What the traced pass recorded: processes, events, faults (proof that tracing was on)."""
    out = {"processes": 0, "events": 0, "faults": 0, "fault_samples": []}
    if not os.path.exists(db):
        return out
    con = sqlite3.connect(db)
    try:
        q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        out["processes"] = q("SELECT count(*) FROM processes")[0][0]
        out["events"] = q("SELECT coalesce(sum(n), 0) FROM event_blocks")[0][0]
        out["faults"] = q("SELECT count(*) FROM faults")[0][0]
        out["fault_samples"] = [f"{loc}: {det}" for loc, det in
                                q("SELECT location, detail FROM faults GROUP BY location, detail "
                                  "ORDER BY min(id) LIMIT 20")]
    except sqlite3.Error as exc:
        out["error"] = str(exc)
    finally:
        con.close()
    return out


def compare(suites: list[str], base: dict[str, str], traced: dict[str, str],
            base_files: dict[str, str], traced_files: dict[str, str]) -> dict:
    """Per suite: tests run, failed without, failed with; and the regressions."""
    table = {}
    regressions: list[dict] = []
    for suite in suites:
        b = {t: s for t, s in base.items() if suite_of(t) == suite}
        w = {t: s for t, s in traced.items() if suite_of(t) == suite}
        table[suite] = {
            "run": sum(1 for s in b.values() if s != "skip"),
            "failed_without": sum(1 for s in b.values() if s == "fail"),
            "run_with": sum(1 for s in w.values() if s != "skip"),
            "failed_with": sum(1 for s in w.values() if s == "fail"),
            "missing_with": sum(1 for t, s in b.items() if s == "pass" and t not in w),
        }
        for t, s in sorted(b.items()):
            if s != "pass":
                continue
            if t not in w:
                regressions.append({"suite": suite, "id": t, "with": "missing"})
            elif w[t] == "fail":
                regressions.append({"suite": suite, "id": t, "with": "fail"})
    for f in sorted(set(base_files) | set(traced_files)):
        sb = file_status(base_files.get(f, "not run"))
        sw = file_status(traced_files.get(f, "not run"))
        if sb == "passed" and sw != "passed":
            regressions.append({"suite": suite_of("test." + f), "id": f"{f} [file]",
                                "with": sw, "detail": traced_files.get(f, "not run")})
    return {"table": table, "regressions": regressions}


def match_expected(test_id: str, expected: dict[str, str]) -> str | None:
    for pat, reason in expected.items():
        if test_id == pat or fnmatch.fnmatchcase(test_id, pat):
            return pat
    return None


def print_report(info: dict, result: dict, expected: dict[str, str], times: dict, trace: dict) -> int:
    table = result["table"]
    print()
    print(f"CPython {info['version']} ({info['executable']}): without cutscope "
          f"{times['without']:.0f} s, under cutscope run {times['with']:.0f} s")
    print(f"traced pass recorded {trace['processes']} processes, {trace['events']} events, "
          f"{trace['faults']} faults")
    w = max(len(s) for s in table) if table else 10
    print(f"{'suite':<{w}}  {'run':>6}  {'failed without':>14}  {'failed with':>11}  "
          f"{'missing with':>12}  {'regressions':>11}")
    regs_by_suite: dict[str, int] = {}
    for r in result["regressions"]:
        regs_by_suite[r["suite"]] = regs_by_suite.get(r["suite"], 0) + 1
    for suite, row in table.items():
        print(f"{suite:<{w}}  {row['run']:>6}  {row['failed_without']:>14}  {row['failed_with']:>11}  "
              f"{row['missing_with']:>12}  {regs_by_suite.get(suite, 0):>11}")
    total = {k: sum(r[k] for r in table.values()) for k in ("run", "failed_without", "failed_with",
                                                            "missing_with")}
    print(f"{'total':<{w}}  {total['run']:>6}  {total['failed_without']:>14}  "
          f"{total['failed_with']:>11}  {total['missing_with']:>12}  {len(result['regressions']):>11}")
    unexpected = []
    used = set()
    if result["regressions"]:
        print("\nregressions (pass without cutscope, not with it):")
    for r in result["regressions"]:
        pat = match_expected(r["id"], expected)
        r["expected"] = pat
        if pat is None:
            unexpected.append(r)
        else:
            used.add(pat)
        note = f"  (expected: {expected[pat]})" if pat else ""
        print(f"  {r['id']}: {r.get('detail') or r['with']}{note}")
    stale = [p for p in expected if p not in used]
    if stale:
        print("\nin expected.txt but not a regression in this run (review the list):")
        for p in stale:
            print(f"  {p}")
    if trace["fault_samples"]:
        print("\nfaults recorded inside cutscope (first distinct ones):")
        for s in trace["fault_samples"]:
            print(f"  {s}")
    print()
    if unexpected:
        print(f"conformance: FAILED: {len(unexpected)} regression(s) not in expected.txt")
        return 1
    print(f"conformance: OK ({len(result['regressions'])} regression(s), all in expected.txt)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.jobs < 1:
            raise BadInput("-j must be at least 1 (regrtest's per-file timeout needs worker processes)")
        if args.timeout <= 0:
            raise BadInput("--timeout must be positive")
        unknown = [s for s in args.suites if not re.fullmatch(r"test_\w+", s)]
        if unknown:
            raise BadInput(f"not a test suite name: {unknown[0]!r}")
        expected = load_expected(args.expected)
        python = os.path.abspath(args.python) if os.sep in args.python else (
            shutil.which(args.python) or args.python)
        info = probe(python)
    except BadInput as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    mm = ".".join(info["version"].split(".")[:2])
    json_path = args.json_path or os.path.join(HERE, f"results-{mm}.json")

    work = tempfile.mkdtemp(prefix=f"cutscope-conformance-{mm}-")
    sigint_default()
    env = clean_env()
    regr = ["-m", "test", f"-j{args.jobs}", f"--timeout={args.timeout:g}"]
    for pat in IGNORE:
        regr += ["-i", pat]
    db = os.path.join(work, "trace.db")
    # cutscope run of the same interpreter: its `cutscope` script sits beside it in a venv;
    # `python -m cutscope` is the same command line wherever it is installed.
    launcher = [python, "-m", "cutscope", "run", "--db", db, "--name", "regrtest", "--"]
    traced_env = dict(env)
    if args.strict:
        traced_env["CUTSCOPE_STRICT"] = "1"

    print(f"conformance: CPython {info['version']}, suites: {' '.join(args.suites)}; work dir {work}",
          flush=True)
    times = {}
    xml_without = os.path.join(work, "without.xml")
    xml_with = os.path.join(work, "with.xml")
    os.makedirs(os.path.join(work, "cwd-without"))
    os.makedirs(os.path.join(work, "cwd-with"))
    print("pass 1: without cutscope", flush=True)
    rc1, files1, times["without"] = run_pass(
        "without", [python] + regr + ["--junit-xml", xml_without] + args.suites, env,
        os.path.join(work, "cwd-without"), os.path.join(work, "without.log"))
    print(f"pass 2: under cutscope run (store {db})", flush=True)
    rc2, files2, times["with"] = run_pass(
        "with", launcher + [python] + regr + ["--junit-xml", xml_with] + args.suites, traced_env,
        os.path.join(work, "cwd-with"), os.path.join(work, "with.log"))

    base, traced = parse_junit(xml_without), parse_junit(xml_with)
    trace = trace_summary(db)
    if not base:
        print(f"conformance: the pass without cutscope produced no results (exit {rc1}); "
              f"see {os.path.join(work, 'without.log')}", file=sys.stderr)
        return 2
    if not traced or trace["events"] == 0:
        print(f"conformance: the pass under cutscope produced no results or recorded no events "
              f"(exit {rc2}, {len(traced)} results, {trace['events']} events); "
              f"see {os.path.join(work, 'with.log')}", file=sys.stderr)
        return 2
    result = compare(args.suites, base, traced, files1, files2)
    status = print_report(info, result, expected, times, trace)

    data = {
        "python": info["version"], "executable": info["executable"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": {"without": [python] + regr + args.suites,
                    "with": launcher[:-1] + ["--", python] + regr + args.suites},
        "strict": args.strict, "seconds": {k: round(v, 1) for k, v in times.items()},
        "exit_status": {"without": rc1, "with": rc2}, "trace": trace,
        "suites": result["table"], "regressions": result["regressions"],
        "files": {"without": files1, "with": files2},
        "tests": {"without": base, "with": traced},
    }
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    print(f"results: {json_path}")
    if args.keep or status:
        print(f"logs and JUnit files: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
