"""Calibrator catalogs: the Gaia-like astrometric and PS1-like photometric references.

The catalogs live under the data root, one per kind (``'gaia'``, ``'ps1'``), partitioned by HEALPix
pixel (nested, order 6) into FITS tables with a manifest::

    <root>/catalogs/gaia/manifest.json
    <root>/catalogs/gaia/Norder=6/Dir=0/Npix=1234.fits
    <root>/catalogs/ps1/...

Public API:

- `build_catalogs`: fetch the catalogs of ZTF fields (or some of their CCDs) from a provider and
  store them; re-builds are idempotent and overlapping fields merge without duplicates.
- `query`: the sources in a cone, a sky polygon or an image footprint, at an epoch (Gaia positions
  propagated with their proper motions, errors grown), brighter than a magnitude limit.
- `query_for_wcs`: the sources on a quadrant under its (pointing-prior) WCS, plus a margin: what
  the astrometry and photometry stages call.
- `propagate`: a Gaia-like table at another epoch (pure function).
- Providers (the `Provider` protocol): `SimProvider` (the simulator's exports), `LocalFileProvider`
  (a user's FITS/ECSV/CSV/VOTable/Parquet table), `GaiaArchiveProvider` and `VizierPS1Provider`
  (online, astroquery; offline they raise `~ztfsds.errors.CatalogUnavailableError`).
- `CatalogStore` and `CatalogManifest`: the storage layout, partition I/O and merging.
- `field_region` and `ccd_cell`: the sky region of a field or CCD.
- `KINDS` and `SCHEMAS`: the catalog kinds and their columns (`ztfsds.catalogs.schema`).

Examples
--------
>>> import tempfile
>>> import astropy.units as u
>>> from ztfsds import camera
>>> from ztfsds.sim import simulate_night
>>> from ztfsds.catalogs import build_catalogs, query_for_wcs
>>> root = tempfile.mkdtemp()
>>> night = simulate_night(root, fields=[655], ccds=[13], nexp=1, size=64, seed=3, nbias=1, nflat=1)
>>> _ = build_catalogs(root, [655])
>>> wcs = camera.nominal_wcs(655, 13, 3)
>>> stars = query_for_wcs(root, "gaia", wcs, (3080, 3072), epoch=night.schedule["jd"][0], mag_limit=18)
>>> stars.colnames[:3], str(stars["ra"].unit)
(['source_id', 'ra', 'dec'], 'deg')
"""

from .build import build_catalogs, resolve_providers
from .online import GaiaArchiveProvider, VizierPS1Provider
from .propagate import MISSING_PM_ERROR, propagate
from .providers import LocalFileProvider, Provider, SimProvider
from .query import DEFAULT_WCS_MARGIN, query, query_for_wcs
from .regions import ccd_cell, field_region
from .schema import KINDS, SCHEMAS
from .store import CatalogManifest, CatalogStore

__all__ = [
    "build_catalogs",
    "resolve_providers",
    "query",
    "query_for_wcs",
    "DEFAULT_WCS_MARGIN",
    "propagate",
    "MISSING_PM_ERROR",
    "Provider",
    "SimProvider",
    "LocalFileProvider",
    "GaiaArchiveProvider",
    "VizierPS1Provider",
    "CatalogStore",
    "CatalogManifest",
    "field_region",
    "ccd_cell",
    "KINDS",
    "SCHEMAS",
]
