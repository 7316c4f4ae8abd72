"""Sky geometry of the archive: image footprints, their HEALPix cover, point-in-footprint, distances.

A footprint is the four sky corners of an image's pixel grid (the outer pixel edges, in order around the
image), from its WCS. `cover_pixels` lists the order-`~ztfsds.archive.schema.COVER_ORDER` HEALPix pixels
a footprint may touch (those of the circle through its corners, a superset), which is what the
``quadimage_cover`` index stores; `contains` then decides exactly, on the tangent plane at the point.

Examples
--------
>>> import numpy as np
>>> corners = np.array([[10.0, -1.0], [12.0, -1.0], [12.0, 1.0], [10.0, 1.0]])
>>> contains(corners, np.array([11.0, 12.5]), np.array([0.5, 0.0])).tolist()
[True, False]
>>> round(float(angular_distance(0.0, 0.0, 0.0, 1.0 / 3600)), 6)
1.0
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..catalogs.healpix import cone_pixels, healpix_index
from .schema import COVER_ORDER, HPX_ORDER

__all__ = ["footprint_corners", "image_centre", "cover_pixels", "contains", "angular_distance", "hpx_of"]


def hpx_of(ra, dec) -> np.ndarray:
    """``hpx`` column values (nested order `~ztfsds.archive.schema.HPX_ORDER`) of positions [deg]."""
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    out = np.full(ra.shape, -1, dtype=np.int64)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if ok.any():
        out[ok] = healpix_index(np.mod(ra[ok], 360.0), dec[ok], order=HPX_ORDER)
    return out


def footprint_corners(header: fits.Header, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Sky corners of an image from its header WCS.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        Image header with a celestial WCS (``CTYPE1``) and ``NAXIS1``/``NAXIS2`` (or ``shape``).
    shape : (int, int), optional
        ``(ny, nx)`` when the header has no NAXISn (a catalog product's header).

    Returns
    -------
    `numpy.ndarray` or None
        ``(4, 2)`` RA, Dec [deg] of the pixel-grid corners (0,0), (nx,0), (nx,ny), (0,ny) (outer edges);
        None without a WCS.
    """
    if "CTYPE1" not in header:
        return None
    if shape is None:
        ny, nx = int(header.get("NAXIS2", header.get("ZNAXIS2", 0))), int(header.get("NAXIS1", header.get("ZNAXIS1", 0)))
    else:
        ny, nx = shape
    if nx <= 0 or ny <= 0:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = WCS(header, naxis=2)
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.all_pix2world(x, y, 0)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return None
    return np.column_stack([np.mod(ra, 360.0), dec])


def image_centre(corners: np.ndarray) -> tuple[float, float]:
    """Centre of a footprint: the normalised mean of its corners' unit vectors [deg]."""
    v = _unit(corners[:, 0], corners[:, 1]).mean(axis=0)
    v /= np.linalg.norm(v)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arcsin(np.clip(v[2], -1, 1))))


def cover_pixels(corners: np.ndarray, order: int = COVER_ORDER) -> np.ndarray:
    """Nested HEALPix pixels of ``order`` that may overlap a footprint (its circumscribed circle's)."""
    ra0, dec0 = image_centre(corners)
    radius = float(np.max(angular_distance(ra0, dec0, corners[:, 0], corners[:, 1]))) / 3600.0
    return cone_pixels(ra0, dec0, radius * 1.001, order)


def _unit(ra, dec) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def angular_distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance [arcsec] between positions [deg] (haversine: exact at small separations)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    s = (np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0)))) * 3600.0


def contains(corners, ra, dec) -> np.ndarray:
    """Whether positions fall inside footprints (gnomonic projection at each position, then the signs
    of the cross products of the convex quadrilateral's edges).

    Parameters
    ----------
    corners : array-like
        ``(4, 2)`` one footprint, or ``(n, 4, 2)`` one per position; RA, Dec [deg] in order around it.
    ra, dec : array-like
        ``(n,)`` positions [deg].

    Returns
    -------
    `numpy.ndarray` of bool
    """
    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    c = np.asarray(corners, float)
    if c.ndim == 2:
        c = np.broadcast_to(c, (ra.size, 4, 2))
    p = _unit(ra, dec)                                  # (n, 3)
    v = _unit(c[..., 0], c[..., 1])                     # (n, 4, 3)
    dots = np.einsum("nk,nck->nc", p, v)
    # tangent-plane basis at each position
    east = np.stack([-np.sin(np.radians(ra)), np.cos(np.radians(ra)), np.zeros_like(ra)], axis=-1)
    north = np.cross(p, east)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.einsum("nck,nk->nc", v, east) / dots
        eta = np.einsum("nck,nk->nc", v, north) / dots
    # the point is the origin: inside iff the cross products of consecutive corners share a sign
    cross = xi * np.roll(eta, -1, axis=1) - eta * np.roll(xi, -1, axis=1)
    inside = (np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)) & np.all(dots > 0, axis=1)
    return inside & np.all(np.isfinite(c.reshape(len(ra), -1)), axis=1)
