"""Cone, polygon and image-footprint queries of the stored calibrator catalogs.

`query` selects the sources of one catalog kind inside a region (a cone, a sky polygon, or the
footprint of an image given by its WCS and shape), optionally at another epoch and brighter than a
magnitude limit; `query_for_wcs` is the astrometry stage's call: the sources on a quadrant under its
pointing-prior WCS, with a margin for the prior's error.

How: the region's bounding cone, widened by the farthest any source can have moved
(``pm_max x |epoch - ref_epoch|`` from the manifest), picks the order-6 partitions to read; within
each, the rows whose order-14 ``healpix`` index lies in the cone's pixels at a finer order are found
by binary search; only those are propagated to ``epoch`` (`ztfsds.catalogs.propagate.propagate`) and
tested exactly against the region (great-circle distance for a cone, the gnomonic projection for a
polygon, the WCS's own pixel coordinates for a footprint).

Examples
--------
>>> import tempfile
>>> import astropy.units as u
>>> from astropy.coordinates import SkyCoord
>>> from astropy.table import Table
>>> from ztfsds.catalogs import CatalogStore, query
>>> cat = CatalogStore(tempfile.mkdtemp())
>>> stars = Table({"source_id": [1, 2], "ra": [10.0, 10.2], "dec": [0.0, 0.0], "ra_error": [0.1, 0.1],
...                "dec_error": [0.1, 0.1], "pmra": [1000.0, 0.0], "pmdec": [0.0, 0.0],
...                "pmra_error": [0.1, 0.1], "pmdec_error": [0.1, 0.1], "phot_g_mean_mag": [15.0, 16.0]})
>>> _ = cat.write("gaia", stars, provenance={"provider": "doctest"})
>>> t = query(cat, "gaia", SkyCoord(10.0 * u.deg, 0.0 * u.deg), 1 * u.arcmin, epoch=2461041.5)  # J2026.0
>>> len(t), f"{(t['ra'][0] - 10.0) * 3600:.3f}", f"{t['ra_error'][0]:.2f}"
(1, '10.000', '1.00')
"""

from __future__ import annotations

import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord, angular_separation
from astropy.table import Table, vstack
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .. import camera as _camera
from ..errors import ConfigError
from .healpix import cone_pixels, index_ranges, search_order, select_ranges
from .propagate import epoch_jyear, propagate
from .schema import get_schema
from .store import as_catalog_store

__all__ = ["DEFAULT_WCS_MARGIN", "query", "query_for_wcs"]

log = logging.getLogger(__name__)

#: Default margin of `query_for_wcs`: a pointing prior is off by ~2' (real ZTF c13 q3 of field 655).
DEFAULT_WCS_MARGIN = 3.0 * u.arcmin
# Round-off allowance of the prefilter cones [deg]: the exact test comes after.
_EPS = 1e-6


def _radec(coord: SkyCoord) -> tuple[float, float]:
    if not isinstance(coord, SkyCoord) or not coord.isscalar:
        raise ConfigError(f"center must be a scalar SkyCoord, got {coord!r}")
    c = coord.icrs
    return float(c.ra.deg), float(c.dec.deg)


def _angle_deg(value, name: str) -> float:
    if not isinstance(value, u.Quantity) or not value.isscalar or not value.unit.is_equivalent(u.deg):
        raise ConfigError(f"{name} must be a scalar angle Quantity (e.g. 10 * u.arcmin), got {value!r}")
    deg = float(value.to_value(u.deg))
    if not np.isfinite(deg) or deg < 0:
        raise ConfigError(f"{name} must be finite and non-negative, got {value!r}")
    return deg


def _unit_vectors(ra, dec) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _mean_direction(ra, dec) -> tuple[float, float]:
    v = _unit_vectors(np.asarray(ra, float), np.asarray(dec, float)).mean(axis=0)
    return float(np.degrees(np.arctan2(v[1], v[0])) % 360.0), float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))


def _separation_deg(ra0, dec0, ra, dec) -> np.ndarray:
    return np.degrees(angular_separation(np.radians(ra0), np.radians(dec0), np.radians(ra), np.radians(dec)))


class _Cone:
    def __init__(self, center, radius):
        self.ra, self.dec = _radec(center)
        self.radius = _angle_deg(radius, "radius")

    def bounding(self):
        return self.ra, self.dec, self.radius

    def contains(self, ra, dec):
        return _separation_deg(self.ra, self.dec, ra, dec) <= self.radius

    def describe(self):
        return {"region": "cone", "ra": self.ra, "dec": self.dec, "radius": self.radius}


class _Polygon:
    """Great-circle polygon: straight in the gnomonic projection about its centre."""

    def __init__(self, vertices):
        if not isinstance(vertices, SkyCoord) or vertices.isscalar or len(vertices) < 3:
            raise ConfigError("polygon must be a SkyCoord of at least 3 vertices")
        v = vertices.icrs
        self.vra, self.vdec = np.asarray(v.ra.deg, float), np.asarray(v.dec.deg, float)
        self.ra, self.dec = _mean_direction(self.vra, self.vdec)
        self.radius = float(_separation_deg(self.ra, self.dec, self.vra, self.vdec).max())
        if self.radius >= 60.0:
            raise ConfigError(f"polygon spans {self.radius:.1f} deg from its centre; at most 60 deg")
        self.vx, self.vy = _camera.tangent_project(self.vra, self.vdec, self.ra, self.dec)

    def bounding(self):
        return self.ra, self.dec, self.radius

    def contains(self, ra, dec):
        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        inside = np.zeros(ra.shape, dtype=bool)
        near = _separation_deg(self.ra, self.dec, ra, dec) <= self.radius + _EPS
        if not near.any():
            return inside
        x, y = _camera.tangent_project(ra[near], dec[near], self.ra, self.dec)
        odd = np.zeros(x.shape, dtype=bool)
        xj, yj = self.vx[-1], self.vy[-1]
        for xi, yi in zip(self.vx, self.vy):  # even-odd rule, one pass per edge
            crosses = (yi > y) != (yj > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = (xj - xi) * (y - yi) / (yj - yi) + xi
            odd ^= crosses & (x < xc)
            xj, yj = xi, yi
        inside[near] = odd
        return inside

    def describe(self):
        return {"region": "polygon", "ra": self.ra, "dec": self.dec, "radius": self.radius}


class _Footprint:
    """Pixels ``-0.5 - m <= x <= nx - 0.5 + m`` (0-based centres) of an image under its WCS."""

    def __init__(self, wcs, shape, margin):
        if not isinstance(wcs, WCS) or not wcs.has_celestial:
            raise ConfigError(f"wcs must be a celestial astropy WCS, got {wcs!r}")
        if shape is None:
            if wcs.array_shape is None:
                raise ConfigError("give the image shape (ny, nx): the WCS has no pixel_shape")
            shape = wcs.array_shape
        if len(shape) != 2 or min(shape) < 1:
            raise ConfigError(f"shape must be (ny, nx), got {shape!r}")
        self.wcs = wcs.celestial
        self.ny, self.nx = int(shape[0]), int(shape[1])
        if margin is None:
            self.margin = 0.0
        elif isinstance(margin, u.Quantity) and margin.unit == u.pix:
            self.margin = float(margin.value)
        else:
            unit = u.Unit(self.wcs.wcs.cunit[0])
            unit = unit if unit.is_equivalent(u.deg) else u.deg  # FITS default for celestial axes
            scale = float(np.mean(proj_plane_pixel_scales(self.wcs))) * unit
            self.margin = _angle_deg(margin, "margin") / scale.to_value(u.deg)
        m = self.margin
        xs = np.array([-0.5 - m, self.nx - 0.5 + m, self.nx - 0.5 + m, -0.5 - m, 0.5 * (self.nx - 1)])
        ys = np.array([-0.5 - m, -0.5 - m, self.ny - 0.5 + m, self.ny - 0.5 + m, 0.5 * (self.ny - 1)])
        ra, dec = self.wcs.pixel_to_world_values(xs, ys)
        self.ra, self.dec = float(ra[-1]), float(dec[-1])
        # the corners bound the footprint of a projection without strong distortion; 1% spare
        self.radius = 1.01 * float(_separation_deg(self.ra, self.dec, ra[:4], dec[:4]).max())

    def bounding(self):
        return self.ra, self.dec, self.radius

    def contains(self, ra, dec):
        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        if ra.size == 0:
            return np.zeros(0, dtype=bool)
        with np.errstate(invalid="ignore"):
            x, y = self.wcs.world_to_pixel_values(ra, dec)
        m = self.margin
        with np.errstate(invalid="ignore"):
            return ((x >= -0.5 - m) & (x <= self.nx - 0.5 + m) & (y >= -0.5 - m) & (y <= self.ny - 0.5 + m)
                    & (_separation_deg(self.ra, self.dec, ra, dec) <= self.radius))

    def describe(self):
        return {"region": "wcs", "ra": self.ra, "dec": self.dec, "radius": self.radius,
                "shape": [self.ny, self.nx], "margin_pix": self.margin}


def _region(center, radius, polygon, wcs, shape, margin):
    given = [center is not None or radius is not None, polygon is not None, wcs is not None]
    if sum(given) != 1:
        raise ConfigError("give exactly one region: center and radius, polygon, or wcs (and shape)")
    if given[0]:
        if center is None or radius is None:
            raise ConfigError("a cone needs both center and radius")
        return _Cone(center, radius)
    if given[1]:
        return _Polygon(polygon)
    return _Footprint(wcs, shape, margin)


def query(store, kind: str, center: SkyCoord | None = None, radius: u.Quantity | None = None, *,
          polygon: SkyCoord | None = None, wcs: WCS | None = None, shape: tuple[int, int] | None = None,
          margin: u.Quantity | None = None, epoch=None, mag_limit: float | None = None,
          columns=None) -> Table:
    """Sources of a stored calibrator catalog inside a region.

    Give exactly one region: ``center`` and ``radius`` (a cone), ``polygon`` (vertices joined by
    great circles), or ``wcs`` with ``shape`` (an image footprint, widened by ``margin``).

    Parameters
    ----------
    store : path-like or `~ztfsds.products.ProductStore` or `~ztfsds.catalogs.CatalogStore`
        The data root.
    kind : {'gaia', 'ps1'}
        Catalog kind.
    center : `~astropy.coordinates.SkyCoord`, optional
        Cone centre (scalar, any frame).
    radius : `~astropy.units.Quantity`, optional
        Cone radius [angle].
    polygon : `~astropy.coordinates.SkyCoord`, optional
        Polygon vertices, in order (either sense), spanning less than 60 deg from their centre.
    wcs : `~astropy.wcs.WCS`, optional
        Celestial WCS of an image.
    shape : tuple of int, optional
        ``(ny, nx)`` of that image (default the WCS's ``array_shape``).
    margin : `~astropy.units.Quantity`, optional
        Widening of the image footprint on every side [angle, or pixels as ``u.pix``].
    epoch : `~astropy.time.Time` or float, optional
        Epoch of the returned positions (a Time or a Julian date). For ``'gaia'`` the positions are
        propagated from each row's ``ref_epoch`` with its proper motion and ``ra_error``,
        ``dec_error`` grow with the proper-motion errors; the region is tested at ``epoch``. None
        (default) returns the positions at the reference epoch. ``'ps1'`` has no proper motions:
        its positions are returned as stored, whatever the epoch.
    mag_limit : float, optional
        Keep sources with the kind's magnitude (``phot_g_mean_mag``, ``rmag``) at most this; rows
        without that magnitude are dropped.
    columns : sequence of str, optional
        Return only these columns, in this order (the stored ``healpix`` index may be asked for);
        default every schema column.

    Returns
    -------
    `~astropy.table.Table`
        One row per source (sorted by the id column ``source_id`` or ``objid``), columns with units;
        ``meta`` holds ``catalog`` (the kind), ``epoch`` (Julian year of the positions; None for the
        reference epoch) and the region. Empty (with every column) when nothing is inside.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        The catalog has not been built under this data root.
    ztfsds.errors.FITSFormatError
        A partition file the region needs is unreadable or corrupted (the error names it).
    ztfsds.errors.ConfigError
        Bad arguments (no region or two, an unknown column, an epoch that is not a Time or JD).
    """
    schema = get_schema(kind)
    region = _region(center, radius, polygon, wcs, shape, margin)
    cat = as_catalog_store(store)
    manifest = cat.read_manifest(kind)
    names = [n for n in manifest.column_names if n != "healpix"] if columns is None else list(columns)
    unknown = [n for n in names if n not in manifest.column_names]
    if unknown:
        raise ConfigError(f"{kind!r} catalogs have no column(s) {unknown}; columns: {manifest.column_names}")
    target = None if epoch is None else epoch_jyear(epoch)
    moving = target is not None and schema.has_proper_motions
    pad = 0.0
    if moving and manifest.ref_epoch_range:
        dt = max(abs(target - e) for e in manifest.ref_epoch_range)
        pad = manifest.pm_max * dt / 3.6e6
    ra0, dec0, r = region.bounding()
    search = r + pad + _EPS
    order = search_order(search, coarsest=manifest.order, finest=manifest.index_order)
    starts, stops = index_ranges(cone_pixels(ra0, dec0, search, order), order, manifest.index_order)
    parts = []
    for p in cone_pixels(ra0, dec0, search, manifest.order):
        if not cat.partition_path(kind, p, manifest.order).is_file():
            continue
        t = cat.read_partition(kind, p, manifest.order)
        parts.append(t[select_ranges(t["healpix"], starts, stops)])
    table = vstack(parts, join_type="exact") if parts else cat._empty(manifest)
    if moving and len(table):
        table = propagate(table, epoch)
    keep = region.contains(np.asarray(table["ra"], float), np.asarray(table["dec"], float))
    if mag_limit is not None:
        with np.errstate(invalid="ignore"):
            keep &= np.asarray(table[schema.mag_column], float) <= float(mag_limit)
    table = table[keep]
    table = table[np.argsort(np.asarray(table[schema.id_column]), kind="stable")]
    out = Table([table[n] for n in names], names=names)
    out.meta.update(catalog=kind, epoch=target if moving else None, **region.describe())
    log.debug("%s query %s: %d sources from %d partitions", kind, region.describe(), len(out), len(parts))
    return out


def query_for_wcs(store, kind: str, wcs: WCS, shape: tuple[int, int] | None = None, *,
                  margin: u.Quantity = DEFAULT_WCS_MARGIN, epoch=None, mag_limit: float | None = None,
                  columns=None) -> Table:
    """Sources on an image (a science quadrant under its pointing-prior WCS), plus a margin.

    Parameters
    ----------
    store : path-like or `~ztfsds.products.ProductStore` or `~ztfsds.catalogs.CatalogStore`
        The data root.
    kind : {'gaia', 'ps1'}
        Catalog kind.
    wcs : `~astropy.wcs.WCS`
        The image's WCS (e.g. `ztfsds.camera.nominal_wcs`, or the sciimg header's).
    shape : tuple of int, optional
        ``(ny, nx)`` of the image (default the WCS's ``array_shape``).
    margin : `~astropy.units.Quantity`, optional
        Widening on every side [angle, or ``u.pix``]; default `DEFAULT_WCS_MARGIN` (3'), which
        covers a pointing prior's error.
    epoch : `~astropy.time.Time` or float, optional
        Epoch of the positions (the exposure's mid-time; a Time or a Julian date).
    mag_limit : float, optional
        Faint limit on the kind's magnitude.
    columns : sequence of str, optional
        Columns to return.

    Returns
    -------
    `~astropy.table.Table`
        As `query`.
    """
    return query(store, kind, wcs=wcs, shape=shape, margin=margin, epoch=epoch, mag_limit=mag_limit,
                 columns=columns)
