"""The viewer's widgets: the virtualised space-time lanes and the cut panel."""

from .lanes import LaneHeader, Lanes
from .minimap import Minimap
from .panels import CutPanel

__all__ = ["LaneHeader", "Lanes", "Minimap", "CutPanel"]
