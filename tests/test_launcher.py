"""`cutscope run`: an unmodified program traced through sitecustomize, its children
each their own logical process, exit codes passed through, bad input in one line."""

from __future__ import annotations

import os
import subprocess
import textwrap

from cutscope.viewer.export import load
from _sockutil import CUTSCOPE, PY, clean_env

PROGRAM = textwrap.dedent(r'''
    import os, subprocess, sys
    from cutscope.tracer import active
    import cutscope
    t = active()
    print("NAME", t.main.name if t else None, flush=True)
    cutscope.event("hello", depth=len(sys.argv))
    cutscope.start()  # the program starting cutscope itself changes nothing
    assert active() is t
    if sys.argv[1:] and sys.argv[1] == "spawn":
        subprocess.run([sys.executable, __file__, "child"], check=True)
    if sys.argv[1:] and sys.argv[1] == "fail":
        sys.exit(7)
''')


def _run(tmp_path, *args, program_args=(), env=None, cwd=None):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    return subprocess.run([CUTSCOPE, "run", *args, "--", PY, str(prog), *program_args],
                          capture_output=True, text=True, env=env or clean_env(), timeout=60,
                          cwd=cwd)


def test_run_traces_program_and_children(tmp_path):
    db = tmp_path / "t.db"
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    # a relative --db is made absolute, so children in other directories share it
    r = _run(tmp_path, "--db", "t.db", "--name", "top", program_args=["spawn"], cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    names = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("NAME")]
    assert names[0] == "top"
    assert len(names) == 2 and names[1].startswith("top/") and names[1] != "top/"
    doc = load(str(db))
    procs = {p["name"]: p for p in doc["processes"]}
    assert set(procs) == {"top", names[1]}
    assert procs[names[1]]["parent"] == "top"
    labels = {(e["process"], e["kind"]) for e in doc["events"]}
    assert ("top", "local") in labels and (names[1], "local") in labels
    assert oct(os.stat(db).st_mode & 0o777) == oct(0o600)


def test_run_passes_the_exit_code_and_payload_setting(tmp_path):
    db = tmp_path / "t.db"
    r = _run(tmp_path, "--db", str(db), "--capture-payload", "16", program_args=["fail"])
    assert r.returncode == 7
    assert "NAME" in r.stdout


def test_run_does_not_instrument_twice_when_nested(tmp_path):
    """`cutscope run -- cutscope run -- python prog.py`: one tracer, one name, PYTHONPATH
    with the boot directory once."""
    db = tmp_path / "t.db"
    prog = tmp_path / "prog.py"
    prog.write_text("import os\nprint(os.environ['PYTHONPATH'])\n" + PROGRAM)
    r = subprocess.run([CUTSCOPE, "run", "--db", str(db), "--name", "outer", "--",
                        CUTSCOPE, "run", "--db", str(db), "--name", "inner", "--", PY, str(prog)],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split(os.pathsep)
    assert len([p for p in first if p.endswith("_boot")]) == 1
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("NAME")] == ["NAME inner"]


def test_run_bad_input_is_one_line(tmp_path):
    for args in (["run"], ["run", "--", "no-such-program-xyz"],
                 ["run", "--capture-payload", "-3", "--", PY, "-c", "pass"],
                 ["run", "--db", str(tmp_path / "no" / "dir" / "t.db"), "--", PY, "-c", "pass"]):
        r = subprocess.run([CUTSCOPE, *args], capture_output=True, text=True, env=clean_env(),
                           timeout=60)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cutscope: error: "), (args, r.stderr)


def test_run_traces_sockets_of_an_unmodified_program(tmp_path):
    """A plain socket program (no cutscope import) under the launcher records its traffic."""
    db = tmp_path / "t.db"
    prog = tmp_path / "net.py"
    prog.write_text(textwrap.dedent('''
        import socket, threading
        srv = socket.create_server(("127.0.0.1", 0))
        def serve():
            c, _ = srv.accept()
            c.sendall(c.recv(100)[::-1])
            c.close()
        t = threading.Thread(target=serve); t.start()
        c = socket.create_connection(srv.getsockname())
        c.sendall(b"abc")
        assert c.recv(100) == b"cba"
        c.close(); t.join(); srv.close()
    '''))
    r = subprocess.run([CUTSCOPE, "run", "--db", str(db), "--name", "net", "--", PY, str(prog)],
                       capture_output=True, text=True, env=clean_env(CUTSCOPE_STRICT="1"),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    doc = load(str(db))
    assert [c for c in doc["channels"] if c["framed"]]
    assert {e["kind"] for e in doc["events"]} >= {"send", "recv"}
