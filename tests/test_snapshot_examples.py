"""The snapshot examples run as a user runs them: thin_air.py and demo.py (`make demo`)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd, timeout=240):
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_thin_air_shows_the_inconsistent_cut_and_check_reports_it(tmp_path):
    r = run([os.path.join(ROOT, "examples", "thin_air.py"), "--db", str(tmp_path / "t.db")],
            cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "a real snapshot: snapshot 1: complete" in out
    assert "{'alice': 90, 'bob': 110}" in out
    assert "alice's send inside, bob's receive outside\n  consistent: True; in transit: ['alice#1']" in out
    assert "consistent: False; orphans (received, never sent): ['alice#1']" in out
    assert "a message from thin air" in out and "(exit status 1)" in out


def test_demo_runs_both_banks_snapshots_them_live_and_draws_a_cut(tmp_path):
    r = run([os.path.join(ROOT, "examples", "demo.py"), "--out", str(tmp_path / "demo"),
             "--seconds", "5", "--snapshots", "2", "--no-view"], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.count("money conserved: yes") == 2
    assert "2 live snapshots, 2 complete, money conserved in every one: yes" in out
    assert "every one verifies against the events" in out
    svg = [f for f in os.listdir(tmp_path / "demo") if f.endswith(".svg")]
    assert len(svg) == 1
    assert (tmp_path / "demo" / svg[0]).read_text().lstrip().startswith(("<?xml", "<svg"))
