"""Reference images: epoch selection, the reference grid and the outlier-rejecting weighted co-add.

A reference is built per field / CCD / quadrant / filter from the best 15-40 epochs (ZTF_REFERENCE 2.5):

* `select_epochs` keeps the epochs with INFOBITS 0 (or only bits in ``allowed_infobits``), seeing
  FWHM at most ``max_seeing`` and MAGLIM at least ``min_maglim``, a photometric and astrometric
  calibration, then ranks them by the point-source S/N they bring to a co-add (``10**(0.8 MAGLIM)``
  -- depth -- over ``SEEING**2`` -- sharpness) and keeps the best ``max_epochs``.
* `reference_grid` is a distortion-free TAN projection centred on the quadrant's centre in the best
  epoch, with that epoch's local pixel scale and orientation and the quadrant's shape: every epoch is
  resampled onto it, so the reference has one fixed grid whatever its inputs' distortions.
* `coadd` resamples each epoch (background subtracted, scaled to the reference zero point ``zp``) onto
  the grid in row blocks (so memory stays at a few hundred MB for 40 full-size epochs), rejects per
  pixel the values more than ``clip_sigma`` from the median of the epochs (transients, cosmic rays,
  satellite trails, asteroids) using each value's own variance plus 5 % of the median (the epochs'
  different seeing makes bright stars' cores differ by more than their noise), and averages the rest
  with one weight per epoch, the inverse of its background variance (per-pixel weights would weigh
  down the bright pixels of each star and bias fluxes). It returns the image, its variance, the
  number of epochs per pixel (coverage) and a mask.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from ..config import RefimgParams
from ..errors import StageError
from ..products import MaskBits

__all__ = ["select_epochs", "reference_grid", "coadd", "Epoch", "CoaddResult", "NoReferenceError"]

log = logging.getLogger(__name__)


class NoReferenceError(StageError):
    """Too few good epochs to build a reference."""


@dataclass
class Epoch:
    """One calibrated science quadrant as the co-add reads it.

    ``sciimg`` background subtracted [DN at ``magzp``], ``varimg`` [DN^2], ``mskimg`` MaskBits, ``wcs``
    its solved WCS, ``bkg_sigma`` its background noise [DN], ``magzp`` its zero point [mag], ``jd`` the
    exposure start [JD], ``name`` the product it came from.
    """

    sciimg: np.ndarray
    varimg: np.ndarray
    mskimg: np.ndarray
    wcs: WCS
    bkg_sigma: float
    magzp: float
    jd: float
    name: str = ""


@dataclass
class CoaddResult:
    """The co-add on the reference grid: ``image`` [DN at ``zp``], ``variance`` [DN^2], ``coverage``
    (epochs per pixel), ``mask`` (MaskBits: NAN where no epoch covers; elsewhere the informational bits
    of the epochs used), ``weights`` (per epoch)
    and the number of values rejected as outliers."""

    image: np.ndarray
    variance: np.ndarray
    coverage: np.ndarray
    mask: np.ndarray
    weights: np.ndarray
    nrejected: int
    zp: float


def select_epochs(table: Table, params: RefimgParams | None = None, *, allowed_infobits: int = 0) -> Table:
    """The epochs a reference is built from, best first.

    Parameters
    ----------
    table : `~astropy.table.Table`
        One row per candidate epoch with ``infobits``, ``seeing`` [arcsec], ``maglim`` [mag] and ``ok``
        (calibrated: astrometry and zero point); extra columns are kept.
    params : `~ztfsds.config.RefimgParams`, optional
        ``max_seeing``, ``min_maglim``, ``min_epochs``, ``max_epochs``.
    allowed_infobits : int, optional
        INFOBITS that do not disqualify an epoch.

    Returns
    -------
    `~astropy.table.Table`
        The selected rows with a ``score`` column, best first.

    Raises
    ------
    NoReferenceError
        Fewer than ``min_epochs`` epochs pass.
    """
    params = params or RefimgParams()
    infobits = np.asarray(table["infobits"], dtype=np.int64)
    seeing = np.asarray(table["seeing"], dtype=float)
    maglim = np.asarray(table["maglim"], dtype=float)
    ok = (np.asarray(table["ok"], dtype=bool) & ((infobits & ~int(allowed_infobits)) == 0)
          & np.isfinite(seeing) & (seeing > 0) & (seeing <= params.max_seeing)
          & np.isfinite(maglim) & (maglim >= params.min_maglim))
    good = table[ok]
    if len(good) < params.min_epochs:
        raise NoReferenceError(f"{len(good)} good epochs of {len(table)}, a reference needs {params.min_epochs}",
                               infobits=0)
    good = Table(good, copy=True)
    good["score"] = 0.8 * np.asarray(good["maglim"], float) - 2.0 * np.log10(np.asarray(good["seeing"], float))
    good.sort("score", reverse=True)
    return good[:params.max_epochs]


def reference_grid(wcs: WCS, shape: tuple[int, int]) -> WCS:
    """A distortion-free TAN WCS for the reference: centred on the image centre of ``wcs``, with its
    local pixel scale and orientation there (``shape`` is ``(ny, nx)``).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [150.0, 30.0]
    >>> w.wcs.crpix = [50.5, 50.5]; w.wcs.cd = [[-2.8e-4, 0.0], [0.0, 2.8e-4]]
    >>> g = reference_grid(w, (100, 100))
    >>> [round(float(v), 6) for v in g.wcs.crval], g.wcs.ctype[0]
    ([150.0, 30.0], 'RA---TAN')
    """
    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    ra0, dec0 = (float(v) for v in wcs.all_pix2world([[cx, cy]], 0)[0])
    # local Jacobian d(world)/d(pixel) by finite differences, in the tangent plane at the centre
    h = 5.0
    pts = np.array([[cx + h, cy], [cx - h, cy], [cx, cy + h], [cx, cy - h]])
    world = wcs.all_pix2world(pts, 0)
    cosd = math.cos(math.radians(dec0))

    def dw(a, b):
        dra = ((world[a, 0] - world[b, 0] + 180.0) % 360.0 - 180.0) * cosd
        return np.array([dra, world[a, 1] - world[b, 1]]) / (2 * h)

    cd = np.column_stack([dw(0, 1), dw(2, 3)])
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.crval = [ra0, dec0]
    out.wcs.crpix = [cx + 1.0, cy + 1.0]
    out.wcs.cd = cd
    out.wcs.set()
    out.pixel_shape = (nx, ny)
    return out


def coadd(epochs: list[Epoch], grid: WCS, shape: tuple[int, int], *, zp: float, params: RefimgParams | None = None,
          block: int = 512, workers: int = 1, product: str | None = None) -> CoaddResult:
    """Resample, scale, clip and average the epochs onto the reference grid.

    Parameters
    ----------
    epochs : list of `Epoch`
        Background-subtracted epochs (each at its own zero point).
    grid : `~astropy.wcs.WCS`
        The reference grid (`reference_grid`); ``shape`` is its ``(ny, nx)``.
    zp : float
        Zero point of the co-add [mag]: every epoch is scaled by ``10**(0.4 (zp - magzp))``.
    params : `~ztfsds.config.RefimgParams`, optional
        ``clip_sigma`` and ``kernel``.
    block : int, optional
        Rows of the grid resampled and combined at a time (memory).
    workers : int, optional
        Threads of the resampling.
    product : str, optional
        Named in errors.

    Returns
    -------
    CoaddResult
    """
    from .resample import resample

    params = params or RefimgParams()
    if not epochs:
        raise NoReferenceError("no epochs to co-add", infobits=0, product=product)
    ny, nx = shape
    n = len(epochs)
    scale = np.array([10 ** (0.4 * (zp - e.magzp)) for e in epochs])
    weights = 1.0 / np.array([(e.bkg_sigma * s) ** 2 for e, s in zip(epochs, scale)])
    image = np.zeros((ny, nx), np.float32)
    variance = np.zeros((ny, nx), np.float32)
    coverage = np.zeros((ny, nx), np.int16)
    mask = np.zeros((ny, nx), np.int16)
    nrejected = 0
    bad_bits = int(MaskBits.BAD)
    for y0 in range(0, ny, block):
        y1 = min(ny, y0 + block)
        sub = grid[y0:y1, :]
        vals = np.full((n, y1 - y0, nx), np.nan, np.float32)
        vars_ = np.full((n, y1 - y0, nx), np.inf, np.float32)
        masks = np.zeros((n, y1 - y0, nx), np.int16)
        for i, e in enumerate(epochs):
            r = resample(e.sciimg, e.wcs, sub, (y1 - y0, nx), variance=e.varimg, mask=e.mskimg,
                         kernel=params.kernel, workers=workers, product=e.name or product)
            good = r.footprint & np.isfinite(r.image)
            if r.mask is not None:
                good &= (r.mask.astype(np.int32) & bad_bits) == 0
                masks[i] = r.mask
            vals[i][good] = r.image[good] * scale[i]
            vars_[i][good] = r.variance[good] * scale[i] ** 2 if r.variance is not None else \
                (e.bkg_sigma * scale[i]) ** 2
        have = np.isfinite(vals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)       # pixels no epoch covers
            med = np.nanmedian(vals, axis=0) if n > 2 else None
        if med is not None:
            # the epochs' seeing differs: at a star the sharper epochs' cores and the broader epochs'
            # wings depart from the median by tens of percent, which is not an outlier (clipping it
            # would leave each star's co-added profile made of different epochs at different radii,
            # no PSF's, and its flux biased low by several percent); cosmic rays and moving objects,
            # on sky or on sources, depart by much more
            tol = params.clip_sigma * np.sqrt(vars_ + (params.clip_fraction * np.abs(med)) ** 2)
            with np.errstate(invalid="ignore"):
                out = have & (np.abs(vals - med[None]) > tol)
            # never reject every epoch of a pixel
            out &= (have & ~out).any(axis=0)[None]
            nrejected += int(out.sum())
            have &= ~out
        w = np.where(have, weights[:, None, None], 0.0)
        wsum = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            image[y0:y1] = np.where(wsum > 0, np.sum(w * np.where(have, vals, 0.0), axis=0) / wsum, 0.0)
            variance[y0:y1] = np.where(wsum > 0, np.sum(w * w * np.where(have, vars_, 0.0), axis=0) / wsum**2,
                                       np.inf)
        coverage[y0:y1] = have.sum(axis=0)
        # a pixel is flagged when no epoch could be used there; the bits of the epochs kept are
        # informational (saturation in some, for example)
        anybits = np.bitwise_or.reduce(np.where(have, masks, 0), axis=0)
        nodata = coverage[y0:y1] == 0
        mask[y0:y1] = np.where(nodata, np.int16(MaskBits.NAN), anybits & ~np.int16(bad_bits)).astype(np.int16)
        # a pixel saturated in some epochs is the mean of the others only: the unsaturated, broader
        # epochs' value at a bright star's core, not the co-add's PSF; flagged SATURATED (so the
        # subtraction leaves it and its surroundings out, as it does the science image's)
        satur = (np.bitwise_or.reduce(masks, axis=0) & int(MaskBits.SATURATED)) != 0
        mask[y0:y1][satur] |= np.int16(MaskBits.SATURATED)
    log.debug("coadd %s: %d epochs, %d outliers rejected", product, n, nrejected)
    return CoaddResult(image=image, variance=variance, coverage=coverage, mask=mask, weights=weights,
                       nrejected=nrejected, zp=float(zp))


