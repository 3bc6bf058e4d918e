"""Saving the explorer's view (v) and reopening it (cutscope view --open FILE)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys

import pytest

import viewer_traces
from test_viewer import SIZE, text_of, wait_for


@pytest.fixture
def bank_db(db_url):
    viewer_traces.bank_trace(db_url)
    return db_url


def test_save_the_view_and_reopen_it(bank_db, db_path):
    from cutscope.viewer.app import CutscopeApp
    from cutscope.viewer.views import read_view

    saved = {}

    async def first():
        app = CutscopeApp(db=bank_db, follow=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            ex = app.explorer
            await pilot.press("up", "right", "up", "up", "c", "slash")
            app.screen.query_one("#filter").value = "kind=recv || k:send"
            await pilot.press("enter", "v")
            status = text_of(app, "#status")
            m = re.search(r"saved the view to (\S+)", status)
            assert m, status
            saved.update(path=m.group(1), cut=dict(ex.cut), n=len(ex))
            assert ex.cut != ex.trace.top() and not ex.consistent
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(first(), 90))
    path = saved["path"]
    assert os.path.dirname(path) == os.path.dirname(os.path.abspath(db_path))
    view = read_view(path)
    assert view["cut"] == saved["cut"] and view["selected"] == "P2" and view["causality"] is True

    async def second():
        app = CutscopeApp(db=bank_db, follow=False, view=view)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.explorer is not None)
            await wait_for(pilot, lambda: "saved view opened" in text_of(app, "#status"))
            ex = app.explorer
            assert ex.cut == saved["cut"] and ex.process == "P2" and ex.show_causality
            assert ex.filter_text == "kind=recv || k:send" and len(ex) == saved["n"]
            assert "INCONSISTENT" in text_of(app, "#verdict")
            await pilot.press("q")

    asyncio.run(asyncio.wait_for(second(), 90))


@pytest.mark.parametrize("content, error", [
    (None, "cannot read the view"),
    ("{not json", "is not a saved view (not JSON"),
    (json.dumps({"format": "cutscope-trace"}), "is not a saved view (no \"format\""),
    (json.dumps({"format": "cutscope-view", "version": 7}), "a view of version 7"),
    (json.dumps({"format": "cutscope-view", "version": 1, "cut": {"P1": -1}}), "\"cut\" must map"),
])
def test_a_bad_view_file_is_one_line_and_exit_2(bank_db, tmp_path, content, error):
    path = tmp_path / "view.json"
    if content is not None:
        path.write_text(content)
    r = subprocess.run([sys.executable, "-m", "cutscope", "view", "--db", bank_db, "--open", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cutscope: error: ") and error in r.stderr
