"""The viewer's screens: the cut explorer (main) and the snapshots list."""

from .main import MainScreen
from .snapshots import SnapshotsScreen

__all__ = ["MainScreen", "SnapshotsScreen"]
