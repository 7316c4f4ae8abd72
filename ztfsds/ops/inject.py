"""Fake transients: point sources injected into science images, with their truth, to measure recovery.

The demo night (`ztfsds.ops.night.run_night` with nothing to process) has too small a sky for the
simulator's few supernovae to be a useful yardstick, so it inserts the `inject_stage` between photometry
and subtraction on tonight's exposures: each quadrant gets ``n`` point sources, rendered with the
quadrant's own PSF model (`ztfsds.subtract.fakes.inject_point_sources`, with their photon noise) at
magnitudes 0.7 to 2.5 mag brighter than its 5-sigma limit (``MAGLIM``), away from the edges, masked
pixels and catalogued sources. The science image is rewritten (atomically) with ``FAKES`` (the number
injected) and ``FAKESEED`` in its header, and the truth is written to
``<root>/ops/fakes/<night>/<quadrant>_fakes.fits`` (`fakes_path`): ``fake_id``, ``x``, ``y`` [px, 0-based],
``ra``, ``dec`` [deg], ``mag`` [mag], ``flux`` [DN]. `ztfsds.ops.report.transient_recovery` counts
them with the simulator's transients (kind ``'fake'``).

This is what ZTF's own pipeline does to monitor its detection efficiency; the injected images are the
demo's science images (nothing else in the archive is marked fake but the header keyword).
"""

from __future__ import annotations

import functools
import logging
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import ZTFSDSError
from ..products import ProductKey, ProductStatus, ProductStore
from .pipeline import Stage, quadrant_name

__all__ = ["inject_stage", "inject_fakes", "fakes_path", "FAKES_DIR", "FAKE_MAG_OFFSETS"]

log = logging.getLogger(__name__)

#: Directory of the injection truth tables under the data root.
FAKES_DIR = "ops/fakes"
#: Magnitudes of the fakes relative to the image's 5-sigma limit MAGLIM: uniform in this range [mag].
FAKE_MAG_OFFSETS = (-2.5, -0.7)
_EDGE = 24  # [px] from the image edges (the subtraction's tiles and cutouts)
_CLEAR = 6.0  # [px] from catalogued sources and masked pixels


def fakes_path(store: ProductStore, key: ProductKey) -> Path:
    """The injection truth table of a quadrant-exposure: ``<root>/ops/fakes/<night>/<quadrant>_fakes.fits``."""
    return Path(store.root) / FAKES_DIR / key.night / f"{quadrant_name(key)}_fakes.fits"


def _place(rng, n, shape, mask, sources_xy) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` positions [px] clear of the edges, of masked pixels and of the sources and each other."""
    ny, nx = shape
    taken = np.asarray(sources_xy, float).reshape(-1, 2)
    xs, ys = [], []
    for _ in range(50 * n):
        if len(xs) == n:
            break
        x, y = rng.uniform(_EDGE, nx - 1 - _EDGE), rng.uniform(_EDGE, ny - 1 - _EDGE)
        if len(taken) and np.min(np.hypot(taken[:, 0] - x, taken[:, 1] - y)) < _CLEAR:
            continue
        iy, ix = int(round(y)), int(round(x))
        r = int(_CLEAR)
        if np.any(mask[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1] != 0):
            continue
        xs.append(x)
        ys.append(y)
        taken = np.vstack([taken, [[x, y]]])
    return np.asarray(xs), np.asarray(ys)


def inject_fakes(key, store: ProductStore, config=None, *, n: int = 8, seed: int = 0) -> ProductStatus:
    """Inject ``n`` fake point sources into a photometrically calibrated science image (a stage runner).

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        The quadrant's sciimg (with WCS, ``MAGZP``, ``MAGLIM`` and a ``sciimgpsf`` model).
    store : `~ztfsds.products.ProductStore`
        The data root.
    config : `~ztfsds.config.Config`, optional
        Unused (the stage signature).
    n : int, optional
        Fakes per quadrant.
    seed : int, optional
        With the quadrant's name, seeds positions, magnitudes and photon noise (a re-run injects the same).

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        Outputs: the sciimg and the truth table; not ok when the image lacks its calibration.
    """
    from astropy.wcs import WCS

    from ..photom.forced import psf_from_hdulist
    from ..products import read_image, write_fits
    from ..products.quadrant import science_key
    from ..subtract.fakes import inject_point_sources

    key = science_key(key)
    name = quadrant_name(key)
    try:
        sci, header = read_image(store.path(key))
        if "FAKES" in header:
            return ProductStatus("inject", key.filename, ok=True, message=f"{header['FAKES']} fakes already in",
                                 outputs=[store.path(key), fakes_path(store, key)])
        for word in ("MAGZP", "MAGLIM", "CTYPE1"):
            if word not in header:
                raise ZTFSDSError(f"{key.filename}: no {word} (astrometry or photometry failed)")
        msk, _ = read_image(store.path(key.with_suffix("mskimg")))
        with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
            psf = psf_from_hdulist(hdul)
        cat_path = store.path(key.with_suffix("psfcat"))
        sources = Table.read(cat_path) if cat_path.exists() else Table({"x": [], "y": []})
    except (ZTFSDSError, OSError, KeyError) as exc:
        return ProductStatus("inject", key.filename, ok=False, message=str(exc))
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    x, y = _place(rng, int(n), sci.shape, msk, np.column_stack([sources["x"], sources["y"]]))
    mag = float(header["MAGLIM"]) + rng.uniform(*FAKE_MAG_OFFSETS, len(x))
    flux = 10.0 ** (-0.4 * (mag - float(header["MAGZP"])))
    out = inject_point_sources(sci, psf, x, y, flux, gain=float(header.get("GAIN", 0.0)) or None, rng=rng,
                               product=key.filename)
    ra, dec = WCS(header, naxis=2).all_pix2world(x, y, 0) if len(x) else (np.zeros(0), np.zeros(0))
    truth = Table({"fake_id": np.arange(len(x), dtype=np.int64), "x": x, "y": y, "ra": np.mod(ra, 360.0),
                   "dec": dec, "mag": mag, "flux": flux})
    truth["x"].unit = truth["y"].unit = "pix"
    truth["ra"].unit = truth["dec"].unit = "deg"
    truth["mag"].unit = "mag"
    truth.meta.update({"SCIIMG": key.filename, "MAGZP": float(header["MAGZP"]), "MAGLIM": float(header["MAGLIM"])})
    path = fakes_path(store, key)
    hdu = fits.table_to_hdu(truth)
    hdu.name = "FAKES"
    write_fits(path, [fits.PrimaryHDU(), hdu])
    header["FAKES"] = (len(x), "fake point sources injected (ztfsds.ops.inject)")
    header["FAKESEED"] = (int(seed), "seed of the fake injection")
    store.write_fits(key, fits.PrimaryHDU(out, header))  # the truth first: an interrupted run injects again
    return ProductStatus("inject", key.filename, ok=True, message=f"{len(x)} fakes, {mag.min() if len(x) else 0:.2f}"
                         f"-{mag.max() if len(x) else 0:.2f} mag", outputs=[store.path(key), path])


def _inject_done(key, store, config, db=None):
    from ..products import read_header

    try:
        h = read_header(store.path(key))
    except (ZTFSDSError, OSError):
        return None
    return True if "FAKES" in h and fakes_path(store, key).exists() else None


def inject_stage(n: int = 8, *, seed: int = 0) -> Stage:
    """The fake-injection `~ztfsds.ops.pipeline.Stage` ('inject'), to insert between 'photom' and 'subtract'.

    Parameters
    ----------
    n : int, optional
        Fakes per quadrant.
    seed : int, optional
        Injection seed.

    Returns
    -------
    `~ztfsds.ops.pipeline.Stage`
    """
    return Stage("inject", functools.partial(inject_fakes, n=int(n), seed=int(seed)), _inject_done)
