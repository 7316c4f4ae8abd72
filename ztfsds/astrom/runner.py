"""Product runner of the astrometry stage: sciimg -> WCS in its header, plus the source catalog.

`run_astrom` reads a calibrated quadrant (sciimg, mskimg, varimg), extracts its sources
(`~ztfsds.astrom.extraction.extract`), builds the pointing prior from the header
(`~ztfsds.astrom.solve.prior_wcs`), queries the Gaia-like calibrator catalog around it at the
exposure's epoch (`ztfsds.catalogs.query_for_wcs`), solves (`~ztfsds.astrom.solve.solve_wcs`) and
writes the WCS and the QA cards (ASTROMN, ASTRRMS1/2, ...) into the headers of the quadrant's products,
and the sources with their sky positions as the ``sexcat`` catalog. A quadrant that cannot be solved
gets INFOBITS bit 12 (and whatever else applies), a failed status with the reason, and no WCS: never a
wrong one. Running it again gives the same products.
"""

from __future__ import annotations

import logging
import time

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..catalogs import query_for_wcs
from ..config import Config
from ..errors import ZTFSDSError
from ..products import InfoBits, ProductStatus, ProductStore, read_header, table_hdulist
from ..products.quadrant import read_quadrant, update_quadrant_headers
from .extraction import SourceFlags, extract
from .solve import prior_wcs, solve_wcs

__all__ = ["run_astrom", "ASTROM_EXCLUDE_FLAGS"]

log = logging.getLogger(__name__)

#: Detections with these flags are not used for the solution (saturated, truncated, near masked pixels).
ASTROM_EXCLUDE_FLAGS = int(SourceFlags.SATURATED | SourceFlags.TRUNCATED | SourceFlags.INCOMPLETE)

#: INFOBITS of the astrometry stage (12-19, 21): cleared before a re-run records its own.
ASTROM_INFOBITS = sum(1 << b for b in (12, 13, 14, 15, 16, 17, 18, 19, 21))

#: Margin of the reference query around the prior footprint [arcsec], beyond the prior's search radius.
_QUERY_MARGIN = 60.0


def run_astrom(key, store: ProductStore, config: Config | None = None) -> ProductStatus:
    """Solve the astrometry of one calibrated quadrant and record it in its products.

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        The quadrant (any of its products' keys or file names; the sciimg is used).
    store : `~ztfsds.products.ProductStore`
        Data root holding the calibrated products and the calibrator catalogs
        (``ztfsds catalogs build``).
    config : `~ztfsds.config.Config`, optional
        Parameters (the ``astrom`` set is used and recorded in the headers).

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        ``ok`` when a WCS was written; INFOBITS carries bits 12-21 as ZTF's astrometry sets them.
    """
    config = config or Config()
    params = config.astrom
    start = time.perf_counter()
    try:
        quad = read_quadrant(store, key)
        key, sci, header, msk, var = quad.key, quad.sciimg, quad.header, quad.mskimg, quad.varimg
        sources = extract(sci, msk, var, params=params, gain=header.get("GAIN"),
                          saturate=header.get("SATURATE"), filename=key.filename)
        prior = prior_wcs(header)
        epoch = float(header["OBSJD"]) if "OBSJD" in header else None
        reference = query_for_wcs(store, "gaia", prior, sci.shape,
                                  margin=(params.prior_offset + _QUERY_MARGIN) * u.arcsec, epoch=epoch)
    except ZTFSDSError as exc:
        name = getattr(key, "filename", str(key))
        log.error("astrom %s: %s", name, exc)
        return ProductStatus("astrom", name, ok=False, infobits=int(InfoBits.ASTROM_FAILED), message=str(exc),
                             elapsed=time.perf_counter() - start)

    usable = (np.asarray(sources["flags"]) & ASTROM_EXCLUDE_FLAGS) == 0
    detections = Table(sources[usable], copy=True)
    detections["flags"] = 0
    result = solve_wcs(detections, reference, prior, params=params)

    def update(h: fits.Header) -> None:
        if "INFOBITS" in h:
            h["INFOBITS"] = int(h["INFOBITS"]) & ~ASTROM_INFOBITS
        result.update_header(h)
        config.to_header(h, stages=("astrom",))

    update_quadrant_headers(store, key, update)

    if result.ok:
        world = result.wcs.pixel_to_world(np.asarray(sources["x"]), np.asarray(sources["y"]))
        sources["ra"] = world.ra.deg
        sources["dec"] = world.dec.deg
    cat_header = read_header(store.path(key))
    outputs = [store.path(key), store.write_fits(key.with_suffix("sexcat"),
                                                        table_hdulist(cat_header, sources, "SOURCES"))]
    message = result.message or (f"{result.nmatches} matches, rms {result.rms_arcsec * 1000:.0f} mas"
                                 if result.ok else "astrometric solution failed")
    if not result.ok:
        log.error("astrom %s: %s", key.filename, message)
    return ProductStatus("astrom", key.filename, ok=bool(result.ok), infobits=int(result.infobits),
                         message=message, outputs=outputs, elapsed=time.perf_counter() - start)
