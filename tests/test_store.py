"""The store and the recorder: real SQLite files, real child processes, a real PostgreSQL."""

from __future__ import annotations

import json
import marshal
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import cutscope
from cutscope.tracer import Tracer
from cutscope.tracer.store import SCHEMA_VERSION, StoreError, open_store
from cutscope.viewer.export import load
from _cpaths import needs_c_paths

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "docs", "cutscope-trace.schema.json")


def run_py(code: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("CUTSCOPE_STRICT", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=e)


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cutscope", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def validate(doc: dict) -> None:
    import jsonschema

    with open(SCHEMA) as f:
        jsonschema.validate(doc, json.load(f))


def test_child_process_that_exits_normally_has_flushed_everything(db_path):
    r = run_py(f"""
        import cutscope
        t = cutscope.start(db={db_path!r}, name="child", instrument=False)
        for i in range(25000):
            cutscope.event("e", i=i)
        # no stop(): exit must flush
    """)
    assert r.returncode == 0, r.stderr
    doc = load(db_path)
    assert [e["seq"] for e in doc["events"]] == list(range(1, 25001))
    validate(doc)


def test_forked_child_records_under_its_own_identity(db_path):
    r = run_py(f"""
        import os, cutscope
        t = cutscope.start(db={db_path!r}, name="parent", instrument=False)
        cutscope.event("before fork")
        pid = os.fork()
        if pid == 0:
            cutscope.event("in child")
            cutscope.stop()
            os._exit(0)
        os.waitpid(pid, 0)
        cutscope.event("after fork")
        print(pid)
    """)
    assert r.returncode == 0, r.stderr
    child = f"parent/{r.stdout.strip()}"
    doc = load(db_path)
    by = {}
    for e in doc["events"]:
        by.setdefault(e["process"], []).append((e["seq"], e["data"]["label"], e["lamport"]))
    assert by["parent"] == [(1, "before fork", 1), (2, "after fork", 2)]
    # The child starts at its own seq 1 and inherits the parent's clock (it happened after).
    assert by[child] == [(1, "in child", 2)]
    procs = {p["name"]: p for p in doc["processes"]}
    assert procs[child]["parent"] == "parent"
    assert procs[child]["pid"] == int(r.stdout)


def test_fork_in_a_busy_process_does_not_deadlock_or_duplicate(db_path):
    r = run_py(f"""
        import os, threading, cutscope
        cutscope.start(db={db_path!r}, name="busy", instrument=False)
        stop = False
        def spin():
            for _ in range(200000):
                if stop:
                    break
                cutscope.event("spin")
        th = threading.Thread(target=spin); th.start()
        pids = []
        for i in range(5):
            pid = os.fork()
            if pid == 0:
                cutscope.event("child", i=i)
                cutscope.stop()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        stop = True; th.join()
    """, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = load(db_path)
    busy = [e["seq"] for e in doc["events"] if e["process"] == "busy"]
    assert busy == list(range(1, len(busy) + 1))
    children = [e for e in doc["events"] if e["process"].startswith("busy/")]
    assert sorted(e["data"]["i"] for e in children) == list(range(5))


def test_sigkill_leaves_a_sound_database_that_still_exports(db_path):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, cutscope
        cutscope.start(db={db_path!r}, name="victim", instrument=False)
        i = 0
        while True:
            cutscope.event("e", i=i); i += 1
            if i == 20000:
                print("ready", flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it while it is writing, after a first batch
        try:
            con = sqlite3.connect(db_path, timeout=5)
            n = con.execute("SELECT count(*) FROM event_blocks").fetchone()[0]
            con.close()
        except sqlite3.OperationalError:
            n = 0
        if n:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    r = cli("export", "--db", db_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    seqs = [e["seq"] for e in doc["events"]]
    assert len(seqs) > 0 and seqs == list(range(1, len(seqs) + 1))  # a prefix, no holes


def test_database_file_is_private(db_path):
    old = os.umask(0o022)
    try:
        t = cutscope.start(db=db_path, instrument=False)
        cutscope.event("x")
        cutscope.stop()
    finally:
        os.umask(old)
    assert os.stat(db_path).st_mode & 0o777 == 0o600
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            assert os.stat(db_path + suffix).st_mode & 0o077 == 0


def test_sqlite_is_in_wal_mode(db_path):
    cutscope.start(db=db_path, instrument=False)
    cutscope.stop()
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_export_validates_against_the_documented_format(db_path, tmp_path):
    t = cutscope.start(db=db_path, name="a", instrument=False, capture_payload=16)
    try:
        a = t.main
        cid = t.channel(None, "a", None, "tcp", "127.0.0.1:1->127.0.0.1:2", True)
        t.channel(cid, None, "b", "tcp", None, True)  # the receiver's half merges in
        msg, stamp, _ = a.send(None, 4, b"ping", channel=cid)
        msg = f"{a.name}#{msg}"  # send returns the seq
        with cutscope.process("b") as b:
            b.recv(cid, msg, stamp, 4, b"ping")
            cutscope.event("done", ok=True)
    finally:
        cutscope.stop()
    out = tmp_path / "trace.json"
    r = cli("export", "--format", "json", "--db", db_path, "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["format"] == "cutscope-trace" and doc["version"] == 1
    assert doc["channels"] == [{"id": cid, "src": "a", "dst": "b", "transport": "tcp",
                                "endpoint": "127.0.0.1:1->127.0.0.1:2", "framed": True, "fifo": True}]
    send, recv, local = doc["events"][0], doc["events"][1], doc["events"][2]
    assert (send["kind"], send["msg"], recv["msg"]) == ("send", "a#1", "a#1")
    assert local["channel"] is None and local["msg"] is None


def test_garbage_instead_of_a_database_is_one_clear_line(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(os.urandom(4096))
    r = cli("export", "--db", str(bad))
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cutscope: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert bad.stat().st_size == 4096  # untouched


@pytest.mark.parametrize("setup", ["missing", "empty", "foreign", "future"])
def test_unusable_databases_are_refused_clearly(tmp_path, setup):
    path = tmp_path / "x.db"
    if setup == "empty":
        path.write_bytes(b"")
    elif setup == "foreign":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE users (id INTEGER)")
        con.commit()
        con.close()
    elif setup == "future":
        open_store(str(path)).close()
        con = sqlite3.connect(path)
        con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
        con.commit()
        con.close()
    r = cli("export", "--db", str(path))
    assert r.returncode == 2, r
    assert r.stderr.startswith("cutscope: error:") and r.stderr.count("\n") == 1, r.stderr
    if setup == "future":
        assert "version 99" in r.stderr
    if setup == "missing":
        assert not path.exists()  # reading never creates a database


@pytest.mark.parametrize("damage", ["encoding", "bytes", "shape"])
def test_a_damaged_event_block_is_one_clear_line_and_the_database_is_untouched(db_path, damage):
    import marshal

    cutscope.start(db=db_path, name="p", instrument=False)
    cutscope.event("a")
    cutscope.stop()
    con = sqlite3.connect(db_path)
    if damage == "encoding":
        con.execute("UPDATE event_blocks SET encoding = 'zstd9'")
    elif damage == "bytes":
        con.execute("UPDATE event_blocks SET data = X'DEADBEEF'")
    else:
        con.execute("UPDATE event_blocks SET data = ?", (marshal.dumps([("p", 1)]),))
    con.commit()
    before = con.execute("SELECT encoding, data FROM event_blocks").fetchall()
    con.close()
    r = cli("export", "--db", db_path)
    assert r.returncode != 0
    assert r.stderr.startswith("cutscope: error: event block 1") and r.stderr.count("\n") == 1, r.stderr
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT encoding, data FROM event_blocks").fetchall() == before
    con.close()


def test_a_version_1_database_is_refused_not_altered(tmp_path):
    path = tmp_path / "v1.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("CREATE TABLE events (process TEXT, seq BIGINT, PRIMARY KEY (process, seq))")
    con.commit()
    con.close()
    size = path.stat().st_size
    for args in (("export", "--db", str(path)), ("run", "--db", str(path), "--", sys.executable, "-c", "")):
        r = cli(*args)
        assert r.returncode == 2 and "schema version 1; this cutscope reads version 2" in r.stderr, r
        assert r.stderr.count("\n") == 1
    assert path.stat().st_size == size
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["meta", "events"]
    con.close()


def test_bad_url_is_one_clear_line():
    r = cli("export", "--db", "nosuchdialect://x/y")
    assert r.returncode == 2 and r.stderr.startswith("cutscope: error:") and r.stderr.count("\n") == 1


def test_a_full_buffer_slows_the_application_instead_of_losing_events():
    from cutscope.tracer.store import MemoryStore

    class SlowStore(MemoryStore):
        def write(self, rows, others):
            time.sleep(0.002)
            super().write(rows, others)

    t = Tracer(name="p", store=SlowStore(), strict=True)
    t.recorder.limit = 100
    t.recorder._reset()
    t.main._append = t.recorder.append
    t.start()
    try:
        for i in range(5000):
            t.main.local("e")
    finally:
        t.stop()
    assert [e[1] for e in t.store.events] == list(range(1, 5001))
    assert t.recorder.dropped == 0


def test_drop_mode_counts_what_it_drops():
    from cutscope.tracer.store import MemoryStore

    store = MemoryStore()
    t = Tracer(name="p", store=store, strict=True, drop=True)
    t.recorder.limit = 50
    t.recorder._reset()
    t.main._append = t.recorder.append
    # Writer not started: the buffer can only overflow.
    for i in range(500):
        t.main.local("e")
    assert t.recorder.dropped == 450
    t.recorder.close()
    assert len(store.events) == 50


def test_a_name_seen_before_is_made_unique_in_order(db_path):
    """A second (third) start under one name is a new logical process: name#2 (#3);
    a thread's logical process is named the same way, and keeps its name in its
    interpreter (entered again, it is the same process)."""
    names = []
    for _ in range(3):
        t = cutscope.start(db=db_path, name="svc", instrument=False)
        cutscope.event("run")
        with cutscope.process("worker") as w:
            cutscope.event("w")
        with cutscope.process("worker") as w2:
            assert w2 is w
        names.append((t.main.name, w.name))
        cutscope.stop()
    assert names == [("svc", "worker"), ("svc#2", "worker#2"), ("svc#3", "worker#3")]
    doc = load(db_path)
    assert sorted((e["process"], e["seq"]) for e in doc["events"] if e["kind"] == "local") == [
        ("svc", 1), ("svc#2", 1), ("svc#3", 1), ("worker", 1), ("worker#2", 1), ("worker#3", 1)]


@pytest.mark.postgres
def test_postgresql_round_trip(pg_url):
    t = cutscope.start(db=pg_url, name="pg-a", instrument=False, capture_payload=8)
    try:
        cid = t.channel(None, "pg-a", "pg-b", "tcp", "x->y", True)
        msg, stamp, _ = t.main.send(None, 3, b"abc", channel=cid)
        msg = f"{t.main.name}#{msg}"  # send returns the seq
        with cutscope.process("pg-b") as b:
            b.recv(cid, msg, stamp, 3, b"abc")
        for i in range(3000):
            cutscope.event("bulk", i=i)
    finally:
        cutscope.stop()
    doc = load(pg_url)
    validate(doc)
    assert len(doc["events"]) == 3002
    recv = [e for e in doc["events"] if e["kind"] == "recv"][0]
    assert recv["msg"] == "pg-a#1" and recv["lamport"] == 2
    assert doc["channels"][0]["src"] == "pg-a" and doc["channels"][0]["dst"] == "pg-b"
    r = cli("export", "--db", pg_url)
    assert r.returncode == 0 and json.loads(r.stdout) == doc


@pytest.mark.postgres
def test_postgresql_processes_on_several_interpreters_share_one_store(pg_url):
    """Four processes create the schema at once and upsert the same channel rows in
    different orders (a deadlock for PostgreSQL, retried): nothing is lost."""
    code = """
        import cutscope, random, sys
        t = cutscope.start(db=sys.argv[1], name=sys.argv[2], instrument=False)
        cids = [f"c{k}" for k in range(8)]
        for i in range(40):
            random.shuffle(cids)
            for c in cids:
                t.channel(c, sys.argv[2] if c[-1] in "0123" else None,
                          None if c[-1] in "0123" else sys.argv[2], "tcp", None, True)
            for k in range(25):
                cutscope.event("x", i=i, k=k)
            t.flush()
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), pg_url, f"h{i}"])
             for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    doc = load(pg_url)
    assert {p["name"] for p in doc["processes"]} == {"h0", "h1", "h2", "h3"}
    assert len(doc["events"]) == 4000
    assert len(doc["channels"]) == 8


def test_a_store_that_fails_for_a_while_loses_nothing():
    from cutscope.tracer.store import MemoryStore

    class Flaky(MemoryStore):
        fails = 5

        def write(self, rows, others):
            if self.fails:
                self.fails -= 1
                raise RuntimeError("database is locked")
            super().write(rows, others)

    store = Flaky()
    t = Tracer(name="p", store=store, strict=True).start()
    try:
        for i in range(3000):
            t.main.local("e", {"i": i})
    finally:
        t.stop()
    assert store.fails == 0
    assert [e[1] for e in store.events] == list(range(1, 3001))
    assert "p" in store.processes_


def _two_live_processes_with_one_name(url, n=4):
    """``n`` interpreters start at once under one name: each gets a name of its own."""
    code = """
        import cutscope, sys
        t = cutscope.start(db=sys.argv[1], name="twin", instrument=False)
        for i in range(300):
            cutscope.event("x", i=i)
        cutscope.event("last", who=sys.argv[2], name=t.main.name)
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), url, str(i)])
             for i in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n
    doc = load(url)
    names = {p["name"] for p in doc["processes"]}
    assert names == {"twin"} | {f"twin#{k}" for k in range(2, n + 1)}
    for name in names:
        seqs = [e["seq"] for e in doc["events"] if e["process"] == name]
        assert seqs == list(range(1, 302))
    last = [e["data"] for e in doc["events"] if e["data"] and e["data"]["label"] == "last"]
    assert {d["name"] for d in last} == names and {d["who"] for d in last} == {
        str(i) for i in range(n)}


def test_live_processes_started_with_one_name_get_one_each(db_path):
    _two_live_processes_with_one_name(db_path)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT count(*) FROM faults").fetchone() == (0,)
    con.close()


@pytest.mark.postgres
def test_live_processes_started_with_one_name_get_one_each_postgresql(pg_url):
    _two_live_processes_with_one_name(pg_url)


# -- event block encodings ------------------------------------------------------------

_text = hst.text(max_size=12)  # any code point, lone surrogates included
_uint = hst.integers(0, 2**64)  # past 2**63: the row goes marshal'd
_rows = hst.lists(hst.tuples(
    hst.sampled_from(["p", "q/12", "ünï"]) | _text, _uint, _uint, _uint,
    hst.sampled_from(["send", "recv", "local", "snapshot"]),
    hst.none() | hst.sampled_from(["p->q#1", "q->p#2"]) | _text,
    hst.none() | _text, _uint,
    hst.none() | hst.binary(max_size=20),
    hst.none() | hst.dictionaries(hst.text(max_size=3), hst.integers(), max_size=2)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows=_rows, cap=hst.sampled_from([0, 4, 100]))
def test_event_blocks_round_trip_in_every_encoding(rows, cap):
    """What a block gives back is each row's stored form (payload capped, data as JSON),
    in order, whichever encoding wrote it and whichever reader reads it: the C encoder
    and decoder, the Python reader of cs2 (the reference), and marshal (no C)."""
    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row
    from cutscope.tracer.process import FAST

    want = [event_row(r, cap) for r in rows]
    data, n, wall = S.encode_block(list(rows), cap)
    assert S.decode_block(1, S.BLOCK_ENCODING, data) == want
    assert n == len(rows) and (not rows or wall == rows[-1][3])
    raw = zlib.compress(marshal.dumps(want, 4), 1)  # what a build without C writes
    assert S.decode_block(1, "marshal4+zlib", raw) == want
    if FAST is not None:
        cs2 = FAST.encode(list(rows), event_row, cap)[0]
        assert FAST.decode(cs2) == want
        assert S.decode_cs(cs2) == want


# Message ids as the integrations make them ("<sender>#<seq>"), and strings that only
# look like them: the first go as (sender, number), the others as strings, and every one
# comes back as it was.
_ids = hst.builds(lambda name, n: f"{name}#{n}", hst.sampled_from(["p", "q/12", "", "a#b", "ünï"]),
                  hst.integers(0, 2**64)) | hst.sampled_from(
    ["p#007", "p#", "#", "p#12a", "p#-1", "p# 1", "p#0", "#0", "p#999999999999999999",
     "p#1000000000000000000", "p##3"])
_proc = hst.sampled_from(["p", "q/12", "ünï"])


@settings(max_examples=300, deadline=None)
@given(rows=hst.lists(hst.tuples(_proc, hst.integers(0, 2**63 - 1), hst.integers(0, 2**63 - 1),
                                 hst.integers(0, 2**63 - 1), hst.sampled_from(["send", "recv"]),
                                 hst.none() | hst.just("c1"), hst.none() | _ids,
                                 hst.integers(0, 100), hst.none(), hst.none()), max_size=40),
       steps=hst.booleans())
@needs_c_paths
def test_cs2_differences_and_message_ids_round_trip(rows, steps):
    """cs2 writes seq and lamport as differences per process and a message id as its
    sender's name and a difference of numbers: whatever the values (in order or not,
    far apart, ids with a name or number that is not the usual), both readers give
    back the rows exactly."""
    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row
    from cutscope.tracer.process import FAST

    if steps:  # the usual shape: each process counts up by one
        count: dict = {}
        rows = [(r[0], count.setdefault(r[0], [r[1] // 2]).append(0) or r[1] // 2 + len(count[r[0]]),
                 *r[2:]) for r in rows]
    cs2 = FAST.encode(list(rows), event_row, 0)[0]
    assert cs2[:4] == b"CS2\0"
    assert FAST.decode(cs2) == rows
    assert S.decode_cs(cs2) == rows


def test_cs1_blocks_are_still_read():
    """A cs1 block as its writer wrote it (compact rows, a marshal'd row with
    data, one with a payload and a non-ASCII name): both readers read it."""
    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row
    from cutscope.tracer.process import FAST

    cs1 = (b'CS1\x00\x06\x01p\x04send\x02c1\x01q\x04recv\x03p#1\x04\x00\x00\x01\x01\xd0\x0f'
           b'\x01\x03\x00@\x00\x03\x01\x02\xe8\x07\x04\x03\x06@\x013)\n\xda\x01q\xe9\x02\x00\x00'
           b'\x00\xe9\x03\x00\x00\x00\xe9x\x05\x00\x00\xda\x05localNN\xe9\x00\x00\x00\x00Nz\x0e'
           b'{"label": "x"}\x018)\n\xf5\x05\x00\x00\x00\xc3\xbcn\xc3\xaf\xe9\x07\x00\x00\x00\xe9\t'
           b'\x00\x00\x00\xe9\xd0\x07\x00\x00\xda\x04recv\xda\x02c2\xfa\x03q#2\xe9\x03\x00\x00\x00'
           b'\xf3\x03\x00\x00\x00abcN')
    want = [("p", 1, 1, 1000, "send", "c1", None, 64, None, None),
            ("q", 1, 2, 1500, "recv", "c1", "p#1", 64, None, None),
            ("q", 2, 3, 1400, "local", None, None, 0, None, '{"label": "x"}'),
            ("ünï", 7, 9, 2000, "recv", "c2", "q#2", 3, b"abc", None)]
    assert S.decode_cs(cs1) == want
    assert S.decode_block(1, "cs1+zlib", zlib.compress(cs1)) == want
    if FAST is not None:
        assert FAST.decode(cs1) == want
    with pytest.raises(StoreError):  # the name says cs2, the bytes are cs1
        S.decode_block(1, "cs2+zlib", zlib.compress(cs1))


@settings(max_examples=300, deadline=None)
@given(rows=_rows, cut=hst.integers(0, 10_000), flip=hst.integers(0, 10_000))
@needs_c_paths
def test_a_damaged_cs2_block_is_an_error_or_rows_never_a_crash(rows, cut, flip):
    """Truncated or altered cs2 bytes: both readers raise one of the errors that
    decode_block turns into a StoreError, or return tuples; never a crash."""
    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row
    from cutscope.tracer.process import FAST

    data = bytearray(FAST.encode(list(rows), event_row, 0)[0])
    if flip < len(data):
        data[flip] ^= 0x5A
    data = bytes(data[:max(4, len(data) - cut % (len(data) + 1))])
    for reader in (FAST.decode, S.decode_cs):
        try:
            got = reader(data)
        except (ValueError, IndexError, EOFError, TypeError):  # decode_block: a StoreError
            continue
        assert type(got) is list and all(type(r) is tuple and len(r) == 10 for r in got)
    from cutscope.viewer.model.columns import ProcessIndex
    try:
        cols = FAST.decode_columns(data, ProcessIndex())
    except ValueError:  # decode_columns: a StoreError
        pass
    else:
        assert len(cols) == 9 and len(cols[1]) == 8 * len(cols[4])


def _columns_of(block, monkeypatch, fast):
    """``codec.decode_columns`` of ``block`` with the C decoder or the Python reference,
    made comparable: the columns as lists, the process index's names in order; or the
    StoreError's class."""
    from array import array
    from cutscope.tracer.store import codec as S
    from cutscope.viewer.model.columns import ProcessIndex

    if not fast:
        monkeypatch.setattr(S, "FAST", None)
    pindex = ProcessIndex()
    try:
        cols = S.decode_columns(block, pindex)
    except StoreError:
        return StoreError
    out = []
    for c, code in zip(cols[:4], "iqqq"):
        a = array(code)
        a.frombytes(c)
        out.append(a.tolist())
    return out + [list(c) for c in cols[4:]] + [list(pindex)]


@settings(max_examples=300, deadline=None)
@given(rows=_rows, cap=hst.sampled_from([0, 4, 100]), ids=hst.lists(_ids, max_size=10))
@needs_c_paths
def test_c_block_columns_are_the_python_readers(rows, cap, ids):
    """``decode_columns``, which reads a block straight into columns (process indexes,
    seq, lamport, wall, kind, channel, msg, nbytes, and payload/data where set), gives
    what the Python reader's tuples split into columns give, for every kind of event:
    compact rows, marshal'd rows (payload, data, values past 2**63), derived and
    written-out message ids; or both raise a StoreError."""
    from cutscope.tracer.store import codec as S
    from cutscope.tracer.store.values import event_row

    rows = list(rows) + [("q/12", i, i, i, "recv", "c1", m, 1, None, None) for i, m in enumerate(ids)]
    data, _, _ = S.encode_block(list(rows), cap)
    block = S.EncodedBlock(1, S.BLOCK_ENCODING, data)
    with pytest.MonkeyPatch.context() as mp:
        got = _columns_of(block, mp, True)
    with pytest.MonkeyPatch.context() as mp:
        want = _columns_of(block, mp, False)
    assert got == want
    if want is not StoreError:
        stored = [event_row(r, cap) for r in rows]
        assert want[6] == [r[6] for r in stored]
        assert want[8] == [(i, r[8], r[9]) for i, r in enumerate(stored)
                           if r[8] is not None or r[9] is not None]


@settings(max_examples=200, deadline=None)
@given(pids=hst.lists(hst.integers(0, 5), max_size=300))
@needs_c_paths
def test_c_group_is_a_stable_sort_by_process(pids):
    from array import array
    from cutscope.tracer.process import FAST

    order, counts = FAST.group(array("i", pids), 6)
    got = array("q")
    got.frombytes(order)
    assert got.tolist() == sorted(range(len(pids)), key=pids.__getitem__)
    assert counts == [pids.count(i) for i in range(6)]
    with pytest.raises(ValueError):
        FAST.group(array("i", pids + [6]), 6)
    with pytest.raises(TypeError):
        FAST.group(array("q", pids), 6)


@pytest.mark.parametrize("drop", [False, True])
def test_the_buffer_bound_counts_the_events_of_the_c_paths(drop):
    """The C paths pack events into chunks (one buffer item, up to 64 events): the
    bound is in events all the same. Drop mode keeps at most the limit and counts every
    event it drops; without it the application waits and nothing is lost."""
    from cutscope.tracer import process
    from cutscope.tracer.store import MemoryStore

    class SlowStore(MemoryStore):
        def write(self, rows, others):
            time.sleep(0.002)
            super().write(rows, others)

    t = Tracer(name="p", store=SlowStore(), strict=True, drop=drop)
    t.recorder.limit = 1000
    t.recorder._reset()
    t.main._append, t.main._check = t.recorder.push, t.recorder.check
    ep = process.OutEndpoint(t.main, "c")
    if not drop:
        t.start()
    try:
        for _ in range(20_000):
            t.main.send(ep, 1)
            assert t.recorder.buffered() <= 1000 + 256  # checked every 256 events
        if drop:
            # The Python path checks the bound every CHECK_MASK + 1 events: up to
            # CHECK_MASK events can follow the last check. The C paths keep the limit.
            slack = 0 if process.FAST is not None else process.CHECK_MASK
            kept = t.recorder.buffered()
            assert kept <= 1000 + slack and t.recorder.dropped + kept == 20_000
            if process.FAST is not None:
                assert any(type(x) is process.FAST.Chunk for x in t.recorder._buf)
    finally:
        if drop:
            t.recorder.close()
        else:
            t.stop()
    seqs = [e[1] for e in t.store.events]
    if drop:
        assert len(seqs) == kept and seqs == sorted(seqs)
    else:
        assert seqs == list(range(1, 20_001)) and t.recorder.dropped == 0


def test_both_stores_provide_the_store_protocol(tmp_path):
    """SqlStore and MemoryStore each have every member of the ``Store`` protocol that
    the tracer, the snapshot coordinator and the integrations call (none is probed
    with getattr), with the signatures the protocol names."""
    import inspect

    from cutscope.tracer.store.interface import Store
    from cutscope.tracer.store import MemoryStore

    methods = [n for n, v in vars(Store).items() if not n.startswith("_") and callable(v)]
    fields = list(Store.__annotations__)
    assert "live_and_ends" in methods and "listen" in methods and "notify" in fields
    sql = open_store(f"sqlite:///{tmp_path}/p.db")
    try:
        for store in (sql, MemoryStore()):
            for name in fields:
                assert hasattr(store, name), (type(store).__name__, name)
            for name in methods:
                impl = getattr(store, name, None)
                assert callable(impl), (type(store).__name__, name)
                want = list(inspect.signature(getattr(Store, name)).parameters)[1:]
                assert list(inspect.signature(impl).parameters) == want, (type(store).__name__, name)
            assert store.listen(("cutscope_rep",), print) is None  # no notifications
        mem = MemoryStore()
        mem.claim_name("a", 1, "h", None, 10, None)
        mem.write([], [("channel", "c1", "a", "b", "tcp", None, True, True)])
        live, ends = mem.live_and_ends(5)
        assert [r["name"] for r in live] == ["a"] and [e["id"] for e in ends] == ["c1"]
    finally:
        sql.close()


def test_sqlite_tables_are_the_models_tables(tmp_path):
    """The SQLite file store creates its tables from SQL text (no SQLAlchemy): the
    same tables, column for column, as SQLAlchemy creates from the models."""
    import contextlib
    import sqlite3

    from sqlalchemy import create_engine

    from cutscope.tracer.store.schema import Base

    open_store(f"sqlite:///{tmp_path}/text.db").close()
    engine = create_engine(f"sqlite:///{tmp_path}/models.db")
    Base.metadata.create_all(engine)
    engine.dispose()

    def tables(path):
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name: " ".join(sql.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())
                for name, sql in rows}

    assert tables(tmp_path / "text.db") == tables(tmp_path / "models.db")


def test_sqlite_store_does_not_import_sqlalchemy(tmp_path):
    """A traced process on an SQLite file, and the launcher's, never import
    SQLAlchemy (its import was most of a traced process's start-up): the store
    speaks to the file through the standard library's sqlite3. Nor does a traced
    program that does not use asyncio import it."""
    db = tmp_path / "t.db"
    code = ("import sys, cutscope\n"
            f"t = cutscope.start(db={str(db)!r}, name='p')\n"
            "with cutscope.process('q'):\n"
            "    cutscope.event('hello')\n"
            "cutscope.stop()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy')[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    launcher = os.path.join(os.path.dirname(sys.executable), "cutscope")
    out = subprocess.run([launcher, "run", "--db", str(db), "--", sys.executable, "-c",
                          "import sys; print('sqlalchemy' in sys.modules, 'asyncio' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"  # (wrapt 2 imports asyncio: wrapt<2)
    doc = open_store(str(db), create=False).load()
    assert {e["process"] for e in doc["events"]} >= {"q"}


def test_both_stores_apply_the_same_records_alike(tmp_path):
    """The recorder's records, through ``write`` and a coordinator's ``finish_snapshot``,
    give the same document in a SQLite store and a memory store: process rows and
    their heartbeats and ends, channel upserts, snapshot states, closed channels,
    in-transit messages, and the records each store drops (after a snapshot ended,
    except a partial one's incomplete channel states)."""
    from cutscope.tracer.records import channel_record, done_record, state_record
    from cutscope.tracer.store import MemoryStore

    msg = ("a#3", 5, b"hello", None)
    batches = [
        [("process", "a", 11, "h", None, 100, "argv a", 0), ("process", "b", 12, "h", "a", 110, None),
         ("channel", "c1", "a", None, "tcp", None, True, True),
         ("channel", "c1", None, "b", "tcp", "127.0.0.1:1", True, True),
         ("heartbeat", ["a", "b", "nobody"], 200), ("fault", 210, "a", "here", "one line")],
        [state_record(1, "b", 4, {"x": 1}, ["c2"], "a"), channel_record(1, "b", "c1", [msg], False),
         channel_record(1, "b", "c1", [msg, msg], True), channel_record(1, "b", "c1", [], True),
         done_record(1, "b"), done_record(1, "nobody"), channel_record(1, "nobody", "c9", [], True)],
        [state_record(2, "a", 7, {"y": 2}, [], "a"), ("ended", "b", 300)],
    ]
    late = [state_record(1, "a", 9, {}, [], "a"), channel_record(2, "a", "c1", [msg], False),
            channel_record(2, "a", "c1", [msg], True), done_record(2, "a")]
    docs = []
    sql = open_store(f"sqlite:///{tmp_path}/same.db")
    try:
        for store in (sql, MemoryStore()):
            s1 = store.create_snapshot("a", 50)
            s2 = store.create_snapshot("a", 60)
            assert (s1, s2) == (1, 2)
            for others in batches:
                store.write([], others)
            assert store.finish_snapshot(1, "complete", [], 400)
            assert store.finish_snapshot(2, "partial", ["b"], 410)
            store.write([], late)  # 1 ended: all dropped; 2 partial: only the incomplete channel
            doc = store.load()
            docs.append({k: doc[k] for k in ("processes", "channels", "snapshots")})
            assert store.snapshot_progress(1)["states"]["b"]["closed"] == ["c1"]
    finally:
        sql.close()
    assert docs[0] == docs[1]
    snaps = {s["id"]: s for s in docs[0]["snapshots"]}
    assert [p["name"] for p in docs[0]["processes"]] == ["a", "b"]
    assert set(snaps[1]["processes"]) == {"b"} and snaps[1]["processes"]["b"]["done"]
    assert [(c["channel"], c["complete"], len(c["messages"])) for c in snaps[1]["channels"]] == [
        ("c1", True, 3)]
    assert snaps[2]["processes"]["a"]["done"] is False
    assert [(c["channel"], c["complete"], len(c["messages"])) for c in snaps[2]["channels"]] == [
        ("c1", False, 1)]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't.db'}"
    return request.getfixturevalue("pg_url")


def test_a_reading_sees_one_state_of_the_store_while_a_writer_goes_on(any_url):
    """load() and document_and_blocks() read the document and every event block in
    one read transaction: blocks and processes written after the reading began are
    not in it (a streamed export is one consistent trace, not a mix of two)."""
    url = any_url
    t = cutscope.start(db=url, name="a", instrument=False)
    try:
        t.main.local("one")
        t.flush()
    finally:
        cutscope.stop()
    reader, writer = open_store(url), open_store(url)
    try:
        items = reader.document_and_blocks()
        doc = next(items)
        writer.write([("b", 1, 1, 5, "local", None, None, 0, None, None)],
                     [])
        blocks = list(items)
        assert [e[0] for b in blocks for e in b] == ["a"]
        assert [p["name"] for p in doc["processes"]] == ["a"]
        assert len(reader.load()["events"]) == 2  # a new reading sees the new block
    finally:
        reader.close()
        writer.close()
