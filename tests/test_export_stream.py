"""``cutscope export`` (JSON) writes the document as it makes it: byte for byte what
``write_json(store.load())`` writes, and its progress on a terminal only."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

import pytest

import cutscope
import viewer_traces
from cutscope.tracer.store import open_store
from cutscope.viewer.export import load, store_json, write_json


def _reference(url: str) -> str:
    buf = io.StringIO()
    write_json(load(url), buf)
    return buf.getvalue()


def _cli(*args, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CUTSCOPE_STRICT", None)
    return subprocess.run([sys.executable, "-m", "cutscope", *args], stdout=subprocess.PIPE,
                          stderr=stderr, timeout=120, env=env)


def _odd_trace(url: str) -> None:
    """Everything a stored event can be: payloads, recorded values (nested, not
    ASCII), unframed events, a process registered before a name that sorts first,
    rows written twice and out of order."""
    t = cutscope.start(db=url, name="main", instrument=False, capture_payload=16)
    try:
        z, a = t.process("zeta"), t.process("alpha é")
        t.channel("za", "zeta", "alpha é", "queue", None, True)
        z.local("start", {"balance": 10, "nested": {"list": [1, 2.5, None, "ü"], "ok": True}})
        m, st, _ = z.send(None, 5, payload=b"\x00hi\xff", channel="za")
        a.recv("za", f"zeta#{m}", st, 5, payload=b"\x00hi\xff")
        a.unframed("send", "raw", 3, b"abc")
        a.unframed("recv", "raw", 2)
        a.local("empty", {})
        z.record(1, "zeta")
        t.flush()
    finally:
        cutscope.stop()
    store = open_store(url)
    try:
        # the same (process, seq) written again (two live processes with one name),
        # and a process's rows out of seq order
        store.write([("zeta", 2, 2, 5, "send", "za", None, 7, None, None),
                     ("late", 2, 9, 6, "local", None, None, 0, None, '{"label": "b"}'),
                     ("late", 1, 8, 7, "recv", "za", "zeta#2", 1, None, None)], [])
    finally:
        store.close()


@pytest.mark.parametrize("make", ["bank", "odd", "big", "empty"])
def test_export_is_the_document_byte_for_byte(tmp_path, make):
    url = f"sqlite:///{tmp_path / 't.db'}"
    if make == "bank":
        viewer_traces.bank_trace(url)
    elif make == "odd":
        _odd_trace(url)
    elif make == "big":
        viewer_traces.big_trace(url, 3000, procs=5)
    else:
        cutscope.start(db=url, name="main", instrument=False)
        cutscope.stop()
    want = _reference(url)
    out = tmp_path / "out.json"
    r = _cli("export", "--db", url, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == want
    assert r.stderr == b""  # not a terminal: no progress
    r = _cli("export", "--db", url)
    assert r.stdout.decode("utf-8") == want
    buf = io.StringIO()
    store = open_store(url, create=False)
    try:
        store_json(store, buf)
    finally:
        store.close()
    assert buf.getvalue() == want


def test_export_shows_progress_on_a_terminal_only(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    viewer_traces.big_trace(url, 2000, procs=3)
    out = tmp_path / "out.json"
    master, slave = pty.openpty()
    try:
        r = _cli("export", "--db", url, "-o", str(out), stderr=slave)
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert r.returncode == 0
    n = len(load(url)["events"])
    assert f"writing the events: {n:,} of {n:,} (100%)".encode() in seen
    assert b"reading the events" in seen
    assert out.read_text(encoding="utf-8") == _reference(url)
