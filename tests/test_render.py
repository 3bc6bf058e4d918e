"""Rendering a cut with real Graphviz ``dot``; ``cutscope render`` / ``check`` / ShiViz export."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from cutscope.cli import main as cli
from cutscope.viewer.model import Trace
from cutscope.viewer.export import load
from cutscope.viewer.render import COLORS, render_file

import viewer_traces

pytestmark = pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                                reason="Graphviz's dot is not installed")

SVG = "{http://www.w3.org/2000/svg}"


def svg_groups(path, cls):
    root = ET.parse(path).getroot()
    return [g for g in root.iter(f"{SVG}g") if cls in (g.get("class") or "").split()]


def edge_title(g):
    return g.find(f"{SVG}title").text


@pytest.fixture
def bank_db(db_url):
    viewer_traces.bank_trace(db_url)
    return db_url


@pytest.fixture
def thin_air_db(db_url):
    viewer_traces.thin_air_trace(db_url)
    return db_url


def test_render_snapshot_cut_marks_the_in_transit_message(bank_db, tmp_path, capsys):
    out = tmp_path / "snap.svg"
    assert cli(["render", "--db", bank_db, "--snapshot", "1", "-o", str(out)]) == 0
    assert "consistent, 1 in transit" in capsys.readouterr().out
    transit = svg_groups(out, "intransit")
    assert len(transit) == 1
    # The marked edge goes from P2's send (P2#2) to P1's receive (P1#4).
    doc = load(bank_db)
    t = Trace(doc)
    [m] = t.in_transit(t.snapshot_cut(1))
    procs = t.processes
    assert edge_title(transit[0]) == f"e{procs.index(m.src)}_{m.send_seq}->e{procs.index(m.dst)}_{m.recv_seq}"
    assert svg_groups(out, "orphan") == []
    # One frontier mark per process of the snapshot.
    assert len([g for g in svg_groups(out, "cut") if "node" in g.get("class")]) == 3


def test_render_thin_air_cut_marks_the_orphan(thin_air_db, tmp_path, capsys):
    out = tmp_path / "thin.svg"
    assert cli(["render", "--db", thin_air_db, "--snapshot", "1", "-o", str(out)]) == 0
    assert "inconsistent (1 orphan)" in capsys.readouterr().out
    [orphan] = svg_groups(out, "orphan")
    t = Trace(load(thin_air_db))
    p1, p2 = t.processes.index("P1"), t.processes.index("P2")
    assert edge_title(orphan) == f"e{p1}_2->e{p2}_1"
    text = out.read_text()
    assert "INCONSISTENT" in text and "from thin air" in text  # the title and the legend


def test_render_png_and_dot(bank_db, tmp_path):
    png, dot = tmp_path / "c.png", tmp_path / "c.dot"
    assert cli(["render", "--db", bank_db, "--cut", "P1=2,P2=3,P3=1", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli(["render", "--db", bank_db, "--cut", "P1=2,P2=3,P3=1", "-o", str(dot)]) == 0
    src = dot.read_text()
    assert src.startswith("digraph")
    # Real dot parses what we wrote.
    subprocess.run(["dot", "-Tcanon", str(dot)], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("args, needle", [
    (["--snapshot", "9"], "no snapshot 9"),
    (["--cut", "P7=1"], "no process 'P7'"),
    (["--cut", "P1=x"], "--cut: not a number"),
])
def test_render_bad_input_is_one_line_and_exit_2(bank_db, tmp_path, args, needle):
    out = tmp_path / "x.svg"
    r = subprocess.run([sys.executable, "-m", "cutscope", "render", "--db", bank_db, *args,
                        "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cutscope: error: ") and needle in r.stderr
    assert not out.exists()


def test_render_bad_extension_and_missing_db(tmp_path, bank_db, capsys):
    assert cli(["render", "--db", bank_db, "--cut", "P1=1", "-o", str(tmp_path / "x.jpg")]) == 2
    assert "use a .svg, .png or .dot" in capsys.readouterr().err
    assert cli(["render", "--db", str(tmp_path / "nope.db"), "--cut", "P1=1",
                "-o", str(tmp_path / "x.svg")]) == 2
    assert "no cutscope database" in capsys.readouterr().err


NUM = re.compile(r"-?\d+(?:\.\d+)?")


def node_center(g):
    """The centre of a node's shape (path, polygon or ellipse) in SVG coordinates."""
    for el in g.iter():
        if el.tag == f"{SVG}ellipse":
            return float(el.get("cx")), float(el.get("cy"))
        if el.tag in (f"{SVG}path", f"{SVG}polygon"):
            nums = [float(v) for v in NUM.findall(el.get("d") or el.get("points"))]
            xs, ys = nums[0::2], nums[1::2]
            return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    raise AssertionError("a node without a shape")


def edge_points(g):
    path = g.find(f".//{SVG}path")
    nums = [float(v) for v in NUM.findall(path.get("d"))]
    return list(zip(nums[0::2], nums[1::2])), path


def nodes_by_title(path):
    root = ET.parse(path).getroot()
    return {g.find(f"{SVG}title").text: g for g in root.iter(f"{SVG}g")
            if "node" in (g.get("class") or "").split()}


def assert_straight(points):
    (x0, y0), (x1, y1) = points[0], points[-1]
    for x, y in points:  # every control point on the segment's line: a straight arrow
        assert abs((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) <= 1.0 * max(1.0, abs(x1 - x0) + abs(y1 - y0))


def test_render_draws_lanes_a_straight_cut_line_and_straight_arrows(bank_db, tmp_path):
    out = tmp_path / "snap.svg"
    assert cli(["render", "--db", bank_db, "--snapshot", "1", "-o", str(out)]) == 0
    t = Trace(load(bank_db))
    cut = t.snapshot_cut(1)
    nodes = nodes_by_title(out)
    # The cut: one mark per lane, all on one horizontal line, joined by straight edges.
    marks = [node_center(g) for g in svg_groups(out, "cut") if "node" in g.get("class")]
    assert len(marks) == 3
    cut_y = marks[0][1]
    assert all(abs(y - cut_y) < 0.5 for _, y in marks)
    line = [g for g in svg_groups(out, "cut") if "edge" in g.get("class")]
    assert len(line) == 4  # left end -> P1 -> P2 -> P3 -> right end
    for g in line:
        pts, path = edge_points(g)
        assert all(abs(y - cut_y) < 0.5 for _, y in pts)
        assert path.get("stroke") == COLORS["cut"]
    # Each process is a vertical lane: its events share one x, in seq order downwards,
    # above the line when inside the cut and below it when outside.
    for p in ("P1", "P2", "P3"):
        i = t.processes.index(p)
        centers = [(s, node_center(nodes[f"e{i}_{s}"])) for s in t.seqs[p]]
        assert len({round(x) for _, (x, _) in centers}) == 1
        ys = [y for _, (_, y) in centers]
        assert ys == sorted(ys) and len(set(ys)) == len(ys)
        for s, (_, y) in centers:
            cls = nodes[f"e{i}_{s}"].get("class").split()
            if s <= cut[p]:
                assert y < cut_y and "inside" in cls
            else:
                assert y > cut_y and "outside" in cls
    # Every message is a straight arrow; it points down the page, and only the in-transit
    # one (blue) crosses the line.
    msgs = svg_groups(out, "msg") + svg_groups(out, "intransit")
    assert len(msgs) == len(t.messages)
    for g in msgs:
        pts, path = edge_points(g)
        assert_straight(pts)
        assert pts[-1][1] > pts[0][1]
        crosses = pts[0][1] < cut_y < pts[-1][1]
        assert crosses == ("intransit" in g.get("class"))
        assert path.get("stroke") == (COLORS["intransit"] if crosses else COLORS["msg"])
    text = out.read_text()
    assert "a window" not in text  # a small trace is drawn whole


def test_render_orphan_arrow_crosses_the_line_upwards_in_red(thin_air_db, tmp_path):
    out = tmp_path / "thin.svg"
    assert cli(["render", "--db", thin_air_db, "--snapshot", "1", "-o", str(out)]) == 0
    [orphan] = svg_groups(out, "orphan")
    pts, path = edge_points(orphan)
    assert_straight(pts)
    cut_y = node_center(svg_groups(out, "cut")[0])[1]
    assert pts[0][1] > cut_y > pts[-1][1]  # sent below the line, received above it
    assert path.get("stroke") == COLORS["orphan"] and path.get("stroke-dasharray")


def test_large_trace_renders_a_window_around_the_cut_and_says_so(tmp_path):
    from test_analysis import Sim

    sim = Sim(["a", "b", "c"])
    for i in range(700):
        sim.send("a", "b")
        sim.deliver("a", "b")
        sim.send("b", "c")
        sim.deliver("b", "c")
    doc = sim.doc()
    assert len(doc["events"]) == 2800
    cut = {"a": 600, "b": 900, "c": 300}
    out = render_file(doc, cut, str(tmp_path / "big.svg"), window=10)
    nodes = nodes_by_title(out)
    events = [g for g in nodes.values() if "event" in g.get("class").split()]
    assert 30 <= len(events) <= 200  # a window, not 2800 events
    # The left-out runs are marked on their lanes, and they and the drawn events add up.
    gaps = svg_groups(out, "gap")
    left = sum(int(g.find(f".//{SVG}text").text.split()[1].replace(",", "")) for g in gaps)
    assert left + len(events) == 2800
    text = open(out, encoding="utf-8").read()
    assert f"{len(events)} of 2,800 events drawn, {left:,} left out" in text
    assert "a window of the trace: 10 events on each side of every frontier" in text
    assert svg_groups(out, "intransit") or svg_groups(out, "orphan")
    for g in svg_groups(out, "intransit"):
        assert_straight(edge_points(g)[0])


def test_check_passes_on_a_recorded_snapshot(bank_db, capsys):
    assert cli(["check", "--db", bank_db]) == 0
    assert "1 snapshot checked" in capsys.readouterr().out
    assert cli(["check", "--db", bank_db, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] is True and res["problems"] == [] and res["snapshots"] == 1


def test_check_fails_on_the_thin_air_snapshot(thin_air_db, capsys):
    assert cli(["check", "--db", thin_air_db]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "inconsistent cut" in lines[0] and "P1#2" in lines[0]


def test_check_fails_when_a_stored_channel_state_lost_its_message(bank_db, db_path, capsys):
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("DELETE FROM snapshot_messages").rowcount == 1
    assert cli(["check", "--db", bank_db]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert "channel c21" in line and "P2#2" in line


def test_check_bad_database_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    assert cli(["check", "--db", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("cutscope: error: ")


def test_shiviz_export_has_the_regex_and_vector_clocks(bank_db, tmp_path):
    out = tmp_path / "t.log"
    assert cli(["export", "--db", bank_db, "--format", "shiviz", "-o", str(out)]) == 0
    lines = out.read_text().split("\n")
    assert lines[0] == r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})"
    assert lines[1] == ""
    # ShiViz's regex, in Python's syntax, over the rest of the file.
    rx = re.compile(r"(?P<event>.*)\n(?P<host>\S*) (?P<clock>{.*})")
    body = "\n".join(lines[2:])
    entries = [(m["event"], m["host"], json.loads(m["clock"])) for m in rx.finditer(body)]
    t = Trace(load(bank_db))
    assert len(entries) == sum(len(t.events[p]) for p in t.processes)
    # Each host's own component counts its events 1, 2, 3, ... in file order.
    seen: dict[str, int] = {}
    for _, host, clock in entries:
        seen[host] = seen.get(host, 0) + 1
        assert clock[host] == seen[host]
    # A receive's clock covers its send's.
    by_event = {e: c for e, _, c in entries}
    sends = {e.split()[1]: c for e, c in by_event.items() if e.startswith("send ")}
    for e, c in by_event.items():
        if e.startswith("recv "):
            sc = sends[e.split()[1]]
            assert all(c.get(h, 0) >= v for h, v in sc.items())


@pytest.fixture
def relay_db(db_url):
    viewer_traces.relay_trace(db_url)
    return db_url


def test_render_hidden_lane_draws_dashed_links_through_it(relay_db, tmp_path, capsys):
    out = tmp_path / "hidden.svg"
    assert cli(["render", "--db", relay_db, "--cut", "client=4,relay=7,server=3", "--hide", "relay",
                "-o", str(out)]) == 0
    t = Trace(load(relay_db))
    text = out.read_text()
    heads = [g.find(f"{SVG}text").text for g in svg_groups(out, "lanehead")]
    assert heads == ["client", "server"]  # no lane for the relay
    ri = t.processes.index("relay")
    assert f"e{ri}_" not in text
    # Every message of the client and the server goes through the relay: each is one
    # dashed arrow from a visible send to the visible receive it leads to, straight.
    links = svg_groups(out, "transitive")
    ci, si = t.processes.index("client"), t.processes.index("server")
    titles = sorted(edge_title(g) for g in links)
    want = []
    for r in range(3):  # client #3+4r -> server #1+3r; server #3+3r -> client #4+4r
        want += [f"e{ci}_{3 + 4 * r}->e{si}_{1 + 3 * r}", f"e{si}_{3 + 3 * r}->e{ci}_{4 + 4 * r}"]
    assert titles == sorted(want)
    for g in links:
        pts, path = edge_points(g)
        assert_straight(pts)
        assert path.get("stroke") == COLORS["transitive"]
        assert path.get("stroke-dasharray")
    assert svg_groups(out, "msg") == [] and svg_groups(out, "intransit") == []
    assert "hidden: relay" in text


def test_render_lanes_in_the_given_order_and_grouped(db_path, tmp_path):
    url = f"sqlite:///{db_path}"
    viewer_traces.relay_trace(url)
    t = Trace(load(url))
    cut = "client=1"

    def heads(*extra):
        out = tmp_path / "o.svg"
        assert cli(["render", "--db", url, "--cut", cut, "-o", str(out), *extra]) == 0
        return [g.find(f"{SVG}text").text for g in svg_groups(out, "lanehead")]

    assert heads() == [p for p in t.processes if t.seqs[p]]
    assert heads("--order", "server,client") == ["server", "client", "relay"]


def test_render_groups_lanes_adjacent(db_url):
    from cutscope.viewer.render import arrange, build
    assert arrange(["bank-1", "client", "bank_2", "relay", "bank-3"], grouped=True) == \
        ["bank-1", "bank_2", "bank-3", "client", "relay"]
    assert arrange(["bank-1", "client", "bank_2"], order=["client"], hidden={"bank_2"},
                   grouped=True) == ["client", "bank-1"]
    viewer_traces.bank_trace(db_url)
    t = Trace(load(db_url))
    g = build(t, {"P1": 1, "P2": 1, "P3": 1}, order=["P1", "P3", "P2"])
    assert re.findall(r"head\d+ \[label=(\w+)", g.source) == ["P1", "P3", "P2"]


@pytest.mark.parametrize("args, needle", [
    (["--hide", "nobody"], "no process 'nobody'"),
    (["--hide", "client,relay,server"], "every process with events is hidden"),
    (["--order", "nobody"], "no process 'nobody'"),
])
def test_render_hide_bad_input_is_one_line(relay_db, tmp_path, capsys, args, needle):
    out = tmp_path / "x.svg"
    assert cli(["render", "--db", relay_db, "--cut", "client=1", "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
