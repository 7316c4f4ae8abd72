"""Sky regions of ZTF fields and CCDs: what a catalog build fetches.

`field_region` is the cone a provider fetches for a field (or one CCD of it): it covers the nominal
outline of every quadrant (`ztfsds.camera.quadrant_footprint`) plus a margin for pointing offsets
and the astrometric prior's search margin. `ccd_cell` tells which positions belong to a CCD's cell of
the focal plane: the part of the field's tangent plane nearer to that CCD than to any other (the CCD
itself, half of each gap around it, and everything outward of the mosaic's edge).

Examples
--------
>>> from ztfsds.catalogs.regions import field_region
>>> center, radius = field_region(655)
>>> print(f"{center.ra.deg:.3f} {center.dec.deg:.2f} {radius.to_value('deg'):.2f}")
55.061 33.35 5.29
"""

from __future__ import annotations

import functools

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord

from .. import camera as _camera
from ..errors import ConfigError

__all__ = ["DEFAULT_MARGIN", "field_region", "ccd_cell"]

#: Margin added around the quadrant outlines: the sim's pointing offsets are < 1', a real pointing
#: prior is off by ~2' (ZTF c13 q3 of field 655), and the astrometry stage queries 3' around it.
DEFAULT_MARGIN = 5.0 * u.arcmin


def _check_ccd(ccdid):
    if ccdid is not None and int(ccdid) not in _camera.CCDIDS:
        raise ConfigError(f"ccdid must be 1..16 or None, got {ccdid!r}")


def field_region(field: int, ccdid: int | None = None, *, margin=DEFAULT_MARGIN) -> tuple[SkyCoord, Angle]:
    """Cone covering a ZTF field, or one CCD of it, under the nominal pointing.

    Parameters
    ----------
    field : int
        ZTF field id.
    ccdid : int, optional
        One CCD (1-16); None for the whole field.
    margin : `~astropy.units.Quantity`, optional
        Added to the radius [angle].

    Returns
    -------
    center : `~astropy.coordinates.SkyCoord`
        The field centre, or the centre of the CCD's corners.
    radius : `~astropy.coordinates.Angle`
        Largest distance from ``center`` to a quadrant corner, plus ``margin``.
    """
    _check_ccd(ccdid)
    ccds = _camera.CCDIDS if ccdid is None else (int(ccdid),)
    corners = [_camera.quadrant_footprint(field, c, q) for c in ccds for q in _camera.QIDS]
    ra = np.concatenate([c.ra.deg for c in corners])
    dec = np.concatenate([c.dec.deg for c in corners])
    pts = SkyCoord(ra * u.deg, dec * u.deg)
    if ccdid is None:
        center = _camera.field_center(field)
    else:
        xyz = pts.cartesian.xyz.value.mean(axis=1)
        center = SkyCoord(np.degrees(np.arctan2(xyz[1], xyz[0])) % 360.0 * u.deg,
                          np.degrees(np.arctan2(xyz[2], np.hypot(xyz[0], xyz[1]))) * u.deg)
    radius = Angle(center.separation(pts).max()) + Angle(margin)
    return SkyCoord(center.ra, center.dec, frame="icrs"), radius.to(u.deg)


@functools.lru_cache(maxsize=1)
def _ccd_boxes() -> np.ndarray:
    """(16, 4) EW min, EW max, NS min, NS max of the CCD outlines in the focal plane [deg]."""
    boxes = np.empty((len(_camera.CCDIDS), 4))
    for k, c in enumerate(_camera.CCDIDS):
        xy = _camera.ccd_corners(c).to_value(u.deg)
        boxes[k] = xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()
    return boxes


def ccd_cell(field: int, ccdid: int, ra, dec) -> np.ndarray:
    """Which positions lie in a CCD's cell of a field's focal plane.

    A position belongs to the CCD whose outline (in the field's gnomonic tangent plane, nominal
    pointing) is nearest; inside a CCD that is the CCD itself. The cells of a field's 16 CCDs tile
    the sky around it without overlap. Pointing offsets and rotations (< 1.5' at the mosaic edge in
    the simulator; the gaps are 7.7' and 11.1' wide) never move a CCD's pixels out of its cell.

    Parameters
    ----------
    field : int
        ZTF field id.
    ccdid : int
        CCD id, 1-16.
    ra, dec : array-like
        Positions [deg].

    Returns
    -------
    `numpy.ndarray` of bool

    Examples
    --------
    >>> c, _ = field_region(655, 13)
    >>> [bool(ccd_cell(655, k, c.ra.deg, c.dec.deg)[0]) for k in (9, 13, 14)]
    [False, True, False]
    """
    _check_ccd(ccdid)
    center = _camera.field_center(field)
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    if ra.size == 0:
        return np.zeros(0, dtype=bool)
    ew, ns = _camera.tangent_project(ra, dec, center.ra.deg, center.dec.deg)
    # points more than 90 deg away project through the antipode; they belong to no cell
    far = center.separation(SkyCoord(ra * u.deg, dec * u.deg)).deg >= 89.0
    b = _ccd_boxes()
    dx = np.maximum(np.maximum(b[:, 0][:, None] - ew, 0.0), ew - b[:, 1][:, None])
    dy = np.maximum(np.maximum(b[:, 2][:, None] - ns, 0.0), ns - b[:, 3][:, None])
    nearest = np.argmin(np.hypot(dx, dy), axis=0)
    return (np.asarray(_camera.CCDIDS)[nearest] == int(ccdid)) & ~far
