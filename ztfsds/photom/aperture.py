"""Fixed circular aperture photometry (ZTF's ``sexcat`` apertures) and aperture corrections.

ZTF measures every source of a science image in circular apertures of fixed *diameters*
2, 3, 4, 6, 10 and 14 px (header ``FIXAPERS = '2,3,4,6,10,14'``) and records in the header the
aperture corrections ``APCORn = PSF_mag - AP_mag`` (the median over bright isolated stars) and their
uncertainties ``APCORUNn``. `aperture_photometry` measures the apertures, `aperture_corrections`
derives the corrections from PSF and aperture fluxes, and `apcor_header_cards` writes the keywords.

Notes
-----
* **Exact overlap.** Each pixel contributes ``a * (sci - background)`` where ``a`` is the exact area
  [px^2] of the pixel inside the circle (as photutils' and sep's ``'exact'`` methods); the areas of an
  aperture inside the image and off the masks sum to ``pi r^2`` to rounding. Pixel ``(0, 0)`` is the
  centre of ``sciimg[0, 0]`` and covers ``[-0.5, 0.5] x [-0.5, 0.5]``.
* **Errors.** The pixel values are weighted by ``a``, so their variances by ``a^2``:
  ``fluxerr^2 = sum a^2 var`` with ``var`` from ``varimg`` (which already holds the source's shot noise),
  else ``sum a^2 bkg_rms^2 + max(sum a^2 (sci - background), 0) / gain`` (the sources' shot noise, only
  when ``gain`` is given; clipped at zero after the sum, which keeps it unbiased; in large apertures it is
  SExtractor's ``max(flux, 0) / gain``). SExtractor, sep and photutils sum ``a var``, which overstates
  the background error of the 2 px aperture by 13-30 % (depending on the sub-pixel position) and of the
  14 px one by 2-3 %. Without ``varimg`` and ``bkg_rms`` the errors are NaN.
* **Masked pixels** (``mskimg & MaskBits.BAD``, including ``SATURATED``; non-finite ``sciimg`` or noise
  values; ``sciimg >= saturate``) are left out: ``area_aper`` is the usable area, ``masked_area_aper``
  the masked one, and ``ApertureFlags.MASKED`` is set. With ``fill_masked=True`` the masked area of each
  1 px wide ring about the centre (by pixel-centre distance) is filled with the mean of the usable
  pixels of that ring (within the bounding box of the largest aperture), the flux error is scaled by
  ``sqrt((area + filled) / area)`` and ``CORRECTED`` is set. The part of an aperture off the image is
  never filled: ``TRUNCATED`` says so.
"""

from __future__ import annotations

import enum
import logging
import math

import numpy as np
from astropy import units as u
from astropy.table import Table

from .._ext import _aperture
from ..errors import ConfigError, InputError, PhotometryError, ShapeError
from ..products import MaskBits

__all__ = [
    "ZTF_DIAMETERS",
    "ApertureFlags",
    "apcor_header_cards",
    "aperture_corrections",
    "aperture_photometry",
]

log = logging.getLogger(__name__)

#: ZTF's fixed aperture diameters [px] (header ``FIXAPERS``).
ZTF_DIAMETERS = (2, 3, 4, 6, 10, 14)

#: 2.5 / ln(10): converts a relative flux error to a magnitude error.
_MAG_PER_REL = 2.5 / math.log(10.0)
#: 1 / Phi^-1(3/4): a median absolute deviation in Gaussian sigmas.
_MAD_TO_STD = 1.482602218505602


class ApertureFlags(enum.IntFlag):
    """Bits of the ``flags_aper`` column of `aperture_photometry` (one value per source and aperture).

    Examples
    --------
    >>> from ztfsds.photom.aperture import ApertureFlags
    >>> ApertureFlags(5)
    <ApertureFlags.MASKED|SATURATED: 5>
    """

    MASKED = _aperture.F_MASKED          #: masked pixels overlap the aperture (left out of the sum)
    TRUNCATED = _aperture.F_TRUNCATED    #: the aperture extends beyond the image
    SATURATED = _aperture.F_SATURATED    #: a saturated pixel overlaps the aperture
    CORRECTED = _aperture.F_CORRECTED    #: masked area filled with the ring mean (``fill_masked``)
    EMPTY = _aperture.F_EMPTY            #: no usable pixel: flux and error are NaN


def aperture_photometry(sciimg, x, y, diameters=ZTF_DIAMETERS, *, mskimg=None, varimg=None,
                        background=0.0, bkg_rms=None, gain=None, saturate=None, fill_masked=False,
                        product=None) -> Table:
    """Fluxes of every source in fixed circular apertures, with the exact pixel overlap.

    Parameters
    ----------
    sciimg : array_like
        (ny, nx) science image [DN].
    x, y : array_like
        Source positions [px], 0-based (x = column, y = row), one value per source.
    diameters : sequence of float, optional
        Aperture diameters [px]; ZTF's ``(2, 3, 4, 6, 10, 14)`` by default.
    mskimg : array_like of int or bool, optional
        (ny, nx) `~ztfsds.products.MaskBits` image: pixels with a `MaskBits.BAD` bit are left out and
        those with ``SATURATED`` flag the aperture. A boolean mask: True = leave out.
    varimg : array_like, optional
        (ny, nx) variance [DN^2] including the sources' shot noise (calibration's ``varimg``).
    background : float or array_like or Background, optional
        Background [DN] subtracted per pixel: a scalar, an (ny, nx) map, or the `Background` of
        `ztfsds.astrom.extraction.background` (its ``level``; its ``rms`` becomes the default ``bkg_rms``).
    bkg_rms : float or array_like, optional
        Background noise [DN] (scalar or (ny, nx) map), used when ``varimg`` is not given.
    gain : float, optional
        [e-/DN]: adds the sources' shot noise to errors from ``bkg_rms`` (ignored with ``varimg``).
    saturate : float, optional
        [DN]: pixels at or above it count as saturated (in addition to the mask's SATURATED bit).
    fill_masked : bool, optional
        Fill masked pixels with the mean of their ring (see the module notes) instead of only leaving
        them out.
    product : str, optional
        Name of the image, for error messages.

    Returns
    -------
    astropy.table.Table
        One row per source, in input order: ``x``, ``y`` [pix]; per aperture (columns of shape
        (n, naper), apertures in the order of ``diameters``): ``flux_aper``, ``fluxerr_aper`` [adu],
        ``mag_aper``, ``magerr_aper`` (instrumental, ``-2.5 log10(flux)``; NaN for ``flux <= 0``)
        [mag], ``area_aper`` (usable area), ``masked_area_aper`` [pix^2], ``nmasked_aper`` (masked pixels
        touching the aperture) and ``flags_aper`` (`ApertureFlags`). ``meta['FIXAPERS']`` holds the
        diameters as in the header.

    Raises
    ------
    ztfsds.errors.ShapeError
        An image that is not 2-D or not of the science image's shape.
    ztfsds.errors.InputError
        Non-numeric images, or x and y of different lengths.
    ztfsds.errors.ConfigError
        Non-positive diameters, gain or saturate.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.photom.aperture import aperture_photometry
    >>> t = aperture_photometry(np.ones((50, 50), np.float32), [25.0], [25.3], bkg_rms=1.0)
    >>> np.round(t["flux_aper"][0] / (np.pi * np.array([1, 1.5, 2, 3, 5, 7]) ** 2), 12)
    array([1., 1., 1., 1., 1., 1.])
    """
    sci = _as_image(sciimg, "sciimg", product)
    shape = sci.shape
    diam = _diameters(diameters)
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise InputError(product, f"x and y differ in length ({xs.size} and {ys.size})")
    if gain is not None and not (_positive(gain)):
        raise ConfigError(f"gain must be a positive number of e-/DN, got {gain!r}")
    if saturate is not None and not _positive(saturate):
        raise ConfigError(f"saturate must be a positive number of DN, got {saturate!r}")

    if hasattr(background, "level"):        # a Background of ztfsds.astrom.extraction
        if bkg_rms is None:
            bkg_rms = background.rms
        background = background.level
    bkg_map, bkg_scalar = _scalar_or_map(background, "background", shape, product)
    msk, bad_bits, sat_bits = _as_mask(mskimg, shape, product)
    if varimg is not None:
        noise, mode, rms_scalar = _as_image(varimg, "varimg", product, shape), _aperture.NOISE_VAR_MAP, 0.0
    elif bkg_rms is not None:
        noise, rms_scalar = _scalar_or_map(bkg_rms, "bkg_rms", shape, product)
        mode = _aperture.NOISE_RMS_MAP if noise is not None else _aperture.NOISE_RMS_SCALAR
    else:
        noise, mode, rms_scalar = None, _aperture.NOISE_NONE, 0.0

    order = np.argsort(diam, kind="stable")
    radii = np.ascontiguousarray(0.5 * diam[order])
    # positions far off the image touch nothing: NaN keeps the kernel's integer box arithmetic small
    pad = radii[-1] + 2.0
    kx = np.where((xs > -pad) & (xs < shape[1] + pad) & (ys > -pad) & (ys < shape[0] + pad), xs, np.nan)
    # row order keeps the image rows of consecutive sources in cache (a third faster on a quadrant)
    rows = np.argsort(ys, kind="stable")
    n, na = xs.size, radii.size
    flux, var, area, marea = (np.empty((n, na)) for _ in range(4))
    nmask = np.empty((n, na), dtype=np.int32)
    flags = np.empty((n, na), dtype=np.uint16)
    dummy = np.zeros((1, 1), np.float32)
    _aperture.aperture_sums(sci, msk if msk is not None else np.zeros((1, 1), np.int16), msk is not None,
                            bad_bits, sat_bits, bkg_map if bkg_map is not None else dummy, bkg_map is not None,
                            bkg_scalar, noise if noise is not None else dummy, mode, rms_scalar,
                            1.0 / float(gain) if gain is not None else 0.0,
                            float(saturate) if saturate is not None else 0.0,
                            np.ascontiguousarray(kx[rows]), np.ascontiguousarray(ys[rows]), radii,
                            bool(fill_masked), flux, var, area, marea, nmask, flags)
    undo = np.argsort(order, kind="stable")
    back = np.empty_like(rows)
    back[rows] = np.arange(n)
    flux, var, area, marea, nmask, flags = (a[back][:, undo] for a in (flux, var, area, marea, nmask, flags))

    if mode == _aperture.NOISE_NONE:
        var = np.full_like(flux, np.nan)
    err = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = flux > 0
        mag = np.where(pos, -2.5 * np.log10(np.where(pos, flux, 1.0)), np.nan)
        magerr = np.where(pos, _MAG_PER_REL * err / flux, np.nan)

    table = Table(meta={"FIXAPERS": _fixapers(diam)})
    columns = (
        ("x", xs, u.pix, "source x (0-based column)"),
        ("y", ys, u.pix, "source y (0-based row)"),
        ("flux_aper", flux, u.adu, "flux in each fixed aperture (exact pixel overlap)"),
        ("fluxerr_aper", err, u.adu, "1-sigma error of flux_aper"),
        ("mag_aper", mag, u.mag, "instrumental magnitude -2.5 log10(flux_aper)"),
        ("magerr_aper", magerr, u.mag, "1-sigma error of mag_aper"),
        ("area_aper", area, u.pix**2, "usable (unmasked, on-image) area of each aperture"),
        ("masked_area_aper", marea, u.pix**2, "masked area of each aperture"),
        ("nmasked_aper", nmask, None, "masked pixels touching each aperture"),
        ("flags_aper", flags, None, "ApertureFlags of each aperture"),
    )
    for name, values, unit, description in columns:
        table[name] = values
        table[name].unit = unit
        table[name].description = description
    log.debug("%s: %d sources x %d apertures measured", product or "aperture_photometry", n, na)
    return table


def aperture_corrections(psf_flux, aper_flux, aper_flux_err=None, *, select=None, clip=3.0, maxiter=10,
                         min_stars=5, product=None):
    """ZTF's aperture corrections ``APCORn = PSF_mag - AP_mag`` and their uncertainties ``APCORUNn``.

    For each aperture, ``d = -2.5 log10(psf_flux / aper_flux)`` of the selected stars is sigma-clipped
    about its median (robust sigma: 1.4826 x MAD, combined in quadrature with each star's own
    ``1.0857 aper_flux_err / aper_flux`` when given) until no star changes; ``APCOR`` is the median of
    the survivors and ``APCORUN`` their robust sigma over ``sqrt(n)``.

    Parameters
    ----------
    psf_flux : array_like
        (n,) PSF-fit fluxes [DN] (the total flux of the PSF model).
    aper_flux : array_like
        (n, naper) aperture fluxes [DN] (``flux_aper`` of `aperture_photometry`), or (n,) for one
        aperture.
    aper_flux_err : array_like, optional
        Errors of ``aper_flux`` [DN], same shape.
    select : array_like of bool, optional
        (n,) the stars to use: bright, isolated, unsaturated (for example extraction ``flags == 0``,
        ``flags_aper == 0`` in every aperture, S/N between 50 and 500). Default: every star with
        positive fluxes.
    clip : float, optional
        Clipping threshold [sigma].
    maxiter : int, optional
        Most clipping rounds.
    min_stars : int, optional
        Fewest surviving stars per aperture.
    product : str, optional
        Name of the image, for error messages.

    Returns
    -------
    apcor, apcor_unc : numpy.ndarray
        (naper,) ``PSF_mag - AP_mag`` [mag] and its uncertainty [mag].

    Raises
    ------
    ztfsds.errors.PhotometryError
        Fewer than ``min_stars`` usable stars in an aperture.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.photom.aperture import aperture_corrections
    >>> psf = np.full(20, 1000.0)
    >>> ap = np.column_stack([psf * 0.5, psf * 0.99]) * np.linspace(0.999, 1.001, 20)[:, None]
    >>> apcor, unc = aperture_corrections(psf, ap)
    >>> np.round(apcor, 3)
    array([-0.753, -0.011])
    """
    psf = np.asarray(psf_flux, dtype=np.float64).ravel()
    ap = np.asarray(aper_flux, dtype=np.float64)
    if ap.ndim == 1:
        ap = ap[:, None]
    if ap.ndim != 2 or ap.shape[0] != psf.size:
        raise InputError(product, f"aper_flux has shape {ap.shape}, expected ({psf.size}, naper)")
    err = None
    if aper_flux_err is not None:
        err = np.asarray(aper_flux_err, dtype=np.float64).reshape(ap.shape)
    sel = np.ones(psf.size, bool) if select is None else np.asarray(select, dtype=bool).ravel()
    if sel.shape != psf.shape:
        raise InputError(product, f"select has {sel.size} values for {psf.size} stars")
    if not (clip > 0 and maxiter >= 0 and min_stars >= 1):
        raise ConfigError(f"need clip > 0, maxiter >= 0 and min_stars >= 1, got {clip}, {maxiter}, {min_stars}")

    naper = ap.shape[1]
    apcor, unc = np.empty(naper), np.empty(naper)
    for k in range(naper):
        with np.errstate(divide="ignore", invalid="ignore"):
            d = -2.5 * np.log10(psf / ap[:, k])
            own = np.zeros_like(d) if err is None else _MAG_PER_REL * err[:, k] / ap[:, k]
        ok = sel & (psf > 0) & (ap[:, k] > 0) & np.isfinite(d) & np.isfinite(own)
        keep = ok
        for _ in range(maxiter + 1):
            if keep.sum() < min_stars:
                break
            med = np.median(d[keep])
            sigma = _MAD_TO_STD * np.median(np.abs(d[keep] - med))
            # the tiny floor keeps exact ties when the scatter is zero (noise-free input)
            new = ok & (np.abs(d - med) <= clip * np.sqrt(sigma**2 + own**2) + 1e-12)
            if np.array_equal(new, keep):
                break
            keep = new
        nkeep = int(keep.sum())
        if nkeep < min_stars:
            raise PhotometryError(f"only {nkeep} usable stars (need {min_stars}) for the aperture correction "
                                  f"of aperture {k + 1}", product=product)
        apcor[k] = np.median(d[keep])
        unc[k] = _MAD_TO_STD * np.median(np.abs(d[keep] - apcor[k])) / math.sqrt(nkeep)
    return apcor, unc


def apcor_header_cards(diameters, apcor, apcor_unc):
    """Header cards ``FIXAPERS``, ``APCORn`` and ``APCORUNn`` as in a ZTF science image header.

    Parameters
    ----------
    diameters : sequence of float
        Aperture diameters [px].
    apcor, apcor_unc : array_like
        ``PSF_mag - AP_mag`` and its uncertainty [mag], one per aperture (`aperture_corrections`).

    Returns
    -------
    list of tuple
        ``(keyword, value, comment)``, ready for ``astropy.io.fits.Header.extend``; every card fits in
        80 characters.

    Raises
    ------
    ztfsds.errors.ConfigError
        Lengths differ, more than 9 apertures, or a non-finite value (FITS headers hold no NaN).

    Examples
    --------
    >>> from ztfsds.photom.aperture import apcor_header_cards
    >>> for card in apcor_header_cards([2, 10], [-0.68324399, -0.010023], [0.0013668936, 0.0006952677]):
    ...     print(card)
    ('FIXAPERS', '2,10', 'fixed aperture diameters used [pixels]')
    ('APCOR1', -0.68324399, 'PSF_mag - AP_mag for AP.diam= 2.0 pix.')
    ('APCORUN1', 0.0013668936, 'Uncertainty in APCOR1 [mag]')
    ('APCOR2', -0.010023, 'PSF_mag - AP_mag for AP.diam=10.0 pix.')
    ('APCORUN2', 0.0006952677, 'Uncertainty in APCOR2 [mag]')
    """
    diam = _diameters(diameters)
    apcor = np.asarray(apcor, dtype=np.float64).ravel()
    unc = np.asarray(apcor_unc, dtype=np.float64).ravel()
    if not (apcor.size == unc.size == diam.size):
        raise ConfigError(f"{diam.size} diameters but {apcor.size} APCOR and {unc.size} APCORUN values")
    if diam.size > 9:
        raise ConfigError(f"at most 9 apertures fit the APCORUNn keywords, got {diam.size}")
    if not (np.isfinite(apcor).all() and np.isfinite(unc).all()):
        raise ConfigError("APCOR/APCORUN values must be finite to be written to a FITS header")
    cards = [("FIXAPERS", _fixapers(diam), "fixed aperture diameters used [pixels]")]
    for n, (d, a, s) in enumerate(zip(diam, apcor, unc), start=1):
        cards.append((f"APCOR{n}", round(float(a), 8), f"PSF_mag - AP_mag for AP.diam={d:4.1f} pix."))
        cards.append((f"APCORUN{n}", float(f"{s:.10g}"), f"Uncertainty in APCOR{n} [mag]"))
    return cards


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _positive(value) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0


def _diameters(diameters) -> np.ndarray:
    diam = np.asarray(diameters, dtype=np.float64).ravel()
    if diam.size == 0 or not (np.isfinite(diam).all() and (diam > 0).all()):
        raise ConfigError(f"aperture diameters must be positive numbers of pixels, got {diameters!r}")
    return diam


def _fixapers(diam) -> str:
    return ",".join(f"{d:g}" for d in diam)


def _as_image(arr, name, product, shape=None) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or (shape is not None and a.shape != tuple(shape)):
        raise ShapeError(product, a.shape, shape if shape is not None else ("ny", "nx"), name)
    if a.dtype.kind not in "fiu":
        raise InputError(product, f"{name} must hold real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _scalar_or_map(value, name, shape, product):
    """(map, 0.0) for an image, (None, scalar) for a number."""
    a = np.asarray(value)
    if a.ndim == 0:
        if a.dtype.kind not in "fiu":
            raise InputError(product, f"{name} must be a number or an image, got {value!r}")
        return None, float(a)
    return _as_image(a, name, product, shape), 0.0


def _as_mask(mskimg, shape, product):
    """(int16 mask or None, bits that exclude a pixel, bits that mark it saturated)."""
    if mskimg is None:
        return None, 0, 0
    m = np.asarray(mskimg)
    if m.shape != tuple(shape):
        raise ShapeError(product, m.shape, shape, "mskimg")
    if m.dtype == bool:
        return np.ascontiguousarray(m, dtype=np.int16), 1, 0
    if m.dtype.kind not in "iu":
        raise InputError(product, f"mskimg must be an integer MaskBits image, got dtype {m.dtype}")
    # MaskBits live in bits 0-12: the int16 view keeps them for any integer dtype
    return (np.ascontiguousarray(m.astype(np.int16, copy=False)), int(MaskBits.BAD),
            int(MaskBits.SATURATED))
