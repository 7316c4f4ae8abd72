"""ztfsds: the Zwicky Transient Facility Science Data System.

Raw camera exposures to calibrated images, catalogs, difference images, alerts and lightcurves. Stages
live in subpackages (`ztfsds.calib`, `ztfsds.astrom`, ...); the instrument, product conventions and
configuration in `ztfsds.camera`, `ztfsds.products` and `ztfsds.config`.
"""

from ._version import __version__

__all__ = ["__version__"]
