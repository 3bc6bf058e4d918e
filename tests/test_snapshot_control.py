"""The local control sockets of snapshots (tracer/control.py): private, and only for their store."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

import cutscope
from cutscope.tracer import control


def test_control_dir_is_private_or_not_used(tmp_path, monkeypatch):
    d = tmp_path / "ctl"
    monkeypatch.setenv("CUTSCOPE_CONTROL_DIR", str(d))
    assert control.control_dir() == str(d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.chmod(d, 0o755)  # others could reach the sockets: not used
    assert control.control_dir() is None
    os.chmod(d, 0o700)
    link = tmp_path / "link"
    link.symlink_to(d)
    monkeypatch.setenv("CUTSCOPE_CONTROL_DIR", str(link))
    assert control.control_dir() is None


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_a_request_reaches_the_process_through_its_socket_only_for_its_own_store(tmp_path,
                                                                                 monkeypatch):
    d = tmp_path / "ctl"
    monkeypatch.setenv("CUTSCOPE_CONTROL_DIR", str(d))
    t = cutscope.start(db=str(tmp_path / "a.db"), name="ctl-main", instrument=False)
    try:
        path = control.process_path(str(d), os.getpid())
        assert t.control is not None and os.path.exists(path)
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
        # A socket name reused by a process of another trace: the message is ignored.
        other = "sqlite:///" + str(tmp_path / "other.db")
        assert control.send(path, {"op": "req", "store": other, "sid": 7, "initiator": "x",
                                   "start": ["ctl-main"], "reply": None})
        assert control.send(path, {"op": "req", "store": t.store.url, "sid": 8, "initiator": "y",
                                   "start": ["ctl-main"], "reply": None})
        assert _wait(lambda: t.main.pending)
        assert t.main.pending == [(8, "y")]  # the one for this store only, in order
        assert control.send(path, {"op": "end", "store": t.store.url, "sid": 8})
        assert _wait(lambda: not t.main.pending)
    finally:
        cutscope.stop()
    assert not os.path.exists(path)  # removed at stop


def test_snapshot_records_cross_the_control_socket_as_named_records():
    """A process's snapshot records, encoded for a coordinator's control socket and
    decoded there, are the same named records (fields by name, the kind first, and
    equal to what was sent), whatever the channel messages' stored form."""
    from cutscope.tracer.records import (ChannelRecord, DoneRecord, StateRecord, channel_record,
                                         done_record, state_record)

    sent = [state_record(3, "p", 7, {"balance": 5}, ["c1"], "p"),
            channel_record(3, "p", "c2", [("p#4", 3, b"abc", None)], True),
            done_record(3, "p")]
    got = control.decode_records(json.loads(json.dumps(control.encode_records(sent))))
    assert [type(r) for r in got] == [StateRecord, ChannelRecord, DoneRecord]
    assert got[0].state == json.dumps({"balance": 5}) and got[0].outgoing == ["c1"]
    assert got[1].complete and got[1].channel == "c2"
    assert got[1].messages[0]["payload"] == b"abc" and got[1].messages[0]["nbytes"] == 3
    assert got[2] == ("snap_done", 3, "p")
    assert sent[1]._replace(complete=False)[:5] == sent[1][:5]
