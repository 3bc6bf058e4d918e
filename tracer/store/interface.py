"""What every store shares: its error, the schema version, the default URL and
the shape of the records the recorder hands it."""

from __future__ import annotations

SCHEMA_VERSION = 2
DEFAULT_URL = "sqlite:///cutscope.db"


class StoreError(Exception):
    """A store that cannot be used: one clear line for the user."""


SNAPSHOT_RECORDS = ("snap_state", "snap_chan", "snap_done")  # a recorder's snapshot records

EVENT_COLUMNS = ("process", "seq", "lamport", "wall_ns", "kind", "channel", "msg", "nbytes",
                 "payload", "data")  # the fields of an event tuple, in order
