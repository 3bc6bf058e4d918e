"""SVG pictures of the viewer's screens (pytest-textual-snapshot) over one small fixed trace.

The trace is ``viewer_traces.bank_trace``, recorded through the real tracer
into a real SQLite file and opened as a document (so the screen's title does
not name a temporary path). The pictures are in ``tests/__snapshots__/``;
after a deliberate change of the screens, ``pytest tests/test_viewer_pictures.py
--snapshot-update`` writes them anew, and they are looked at before they are
committed. A picture that differs fails the test, and the plugin writes an
HTML report of the difference.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from cutscope.viewer.app import CutscopeApp
from cutscope.viewer.export import load

import viewer_traces

pytest.importorskip("pytest_textual_snapshot")

SIZE = (140, 34)


@pytest.fixture
def bank_doc(db_url):
    viewer_traces.bank_trace(db_url)
    return load(db_url)


async def loaded(pilot) -> None:
    deadline = time.monotonic() + 30
    while pilot.app.explorer is None:
        assert time.monotonic() < deadline, "the trace did not load"
        await pilot.pause(0.05)
    await pilot.pause()


def picture(snap_compare, doc, press=(), before=None) -> bool:
    async def run_before(pilot):
        await loaded(pilot)
        if before is not None:
            await before(pilot)

    return snap_compare(CutscopeApp(doc=doc, follow=False), press=list(press), terminal_size=SIZE,
                        run_before=run_before)


def test_picture_main_screen(snap_compare, bank_doc):
    assert picture(snap_compare, bank_doc)


def test_picture_cut_with_an_orphan_and_in_transit(snap_compare, bank_doc):
    # P2's frontier back by two: P2 no longer sent what P3 received (orphans), and P1's
    # messages to P2 are in transit.
    assert picture(snap_compare, bank_doc, press=["right", "up", "up"])


def test_picture_causality_of_the_selected_event(snap_compare, bank_doc):
    assert picture(snap_compare, bank_doc, press=["b", "right", "up", "up", "up", "c"])


def test_picture_snapshots_screen(snap_compare, bank_doc):
    assert picture(snap_compare, bank_doc, press=["p"])


def test_picture_filtered_lanes(snap_compare, bank_doc):
    async def type_filter(pilot):
        await pilot.press("slash", *"k:send", "enter")

    assert picture(snap_compare, bank_doc, before=type_filter)


def test_picture_hidden_relay_and_collapsed_locals(snap_compare, db_url):
    viewer_traces.relay_trace(db_url)
    assert picture(snap_compare, load(db_url), press=["right", "h", "x"])


def test_picture_logical_time_layout(snap_compare, bank_doc):
    assert picture(snap_compare, bank_doc, press=["z", "right", "up", "up"])
