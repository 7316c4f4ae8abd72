"""Candidates on a difference image: detection in Scorr, measurements on D, cutouts.

`find_candidates` takes the ZOGY outputs (D, its PSF P_D, Scorr), the science image, the reference
resampled onto it, the mask and the variance of D, and returns one row per local extremum of Scorr
with ``|Scorr| >= threshold`` (ZTF: 5; positive and negative, ``isdiffpos``), measured as ZTF's
candidate fields are (ZTF_REFERENCE 2.7):

* position: the Scorr peak refined by a 3x3 paraboloid, then by the PSF fit (``xpos``, ``ypos``, 0-based);
* ``flux``/``sigflux`` [DN], ``magpsf``/``sigmapsf``, ``chipsf``: PSF fit (flux and position) of P_D on D
  (`ztfsds.photom.psffit.psf_photometry`), magnitudes at the science zero point;
* ``magap``/``sigmagap`` (14 px diameter), ``magapbig``/``sigmagapbig`` (18 px), ``magdiff = magap -
  magpsf``;
* shape on ``s D`` (``s`` the candidate's sign) over the 7x7 box: second moments -> ``aimage``,
  ``bimage``, ``elong``, ``fwhm`` (``2.3548 sqrt((a^2 + b^2) / 2)``);
* ``nbad`` (masked pixels in the 5x5 box), ``nneg`` (negative pixels of ``s D`` in it), ``sumrat``
  (``sum(s D) / sum(|D|)`` over it), ``mindtoedge`` [px], ``scorr`` (peak ``|Scorr|``);
* the nearest reference-catalog sources (``distnr`` [px], ``magnr``, ``sigmagnr``, ``chinr``,
  ``sharpnr``) when a reference PSF catalog is given (positions already on the science grid);
* the 63x63 cutouts of the science image, the reference and the difference centred on the candidate
  (``cutouts``: ``(n, 3, size, size)`` float32, NaN off the image).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi
from astropy.table import Table

from ..photom.aperture import aperture_photometry
from ..photom.psf import PSFModel
from ..photom.psffit import psf_photometry
from ..products import MaskBits

__all__ = ["find_candidates", "cutouts"]

_LN10 = math.log(10.0)


def _stamp_model(p_d: np.ndarray) -> PSFModel:
    """P_D as a constant PSF model (its small negative lobes kept: they are part of D's PSF)."""
    stamp = np.asarray(p_d, dtype=np.float64)
    grid = np.pad(stamp / stamp.sum(), 2)
    return PSFModel(basis=grid[None], oversample=1, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)


def cutouts(images, x, y, size: int = 63) -> np.ndarray:
    """``(n, len(images), size, size)`` float32 stamps centred on the pixels nearest to ``(x, y)``
    (NaN beyond the image edges)."""
    n = len(x)
    h = size // 2
    out = np.full((n, len(images), size, size), np.nan, np.float32)
    for k, img in enumerate(images):
        ny, nx = img.shape
        pad = np.full((ny + 2 * h, nx + 2 * h), np.nan, np.float32)
        pad[h:h + ny, h:h + nx] = img
        for i in range(n):
            ix, iy = int(round(float(x[i]))), int(round(float(y[i])))
            if -h <= ix < nx + h and -h <= iy < ny + h:
                out[i, k] = pad[iy:iy + size, ix:ix + size]
    return out


def _peaks(scorr, usable, threshold, min_separation):
    """Pixels that are the extremum of their neighbourhood with |Scorr| >= threshold: (y, x, sign)."""
    s = np.where(usable, scorr, 0.0)
    found = []
    for sign in (1.0, -1.0):
        v = sign * s
        size = 2 * int(min_separation) + 1
        peak = (v >= threshold) & (v == ndi.maximum_filter(v, size=size, mode="constant", cval=0.0))
        yy, xx = np.nonzero(peak)
        found.extend((int(a), int(b), sign) for a, b in zip(yy, xx))
    return found


def find_candidates(diff, psf_diff, scorr, sciimg, refimg, mskimg, var_diff, *, zp: float,
                    threshold: float = 5.0, min_separation: float = 3.0, edge: int = 3, size: int = 63,
                    refcat: Table | None = None, max_candidates: int = 5000) -> tuple[Table, np.ndarray]:
    """Detect and measure the candidates of a difference image.

    Parameters
    ----------
    diff, psf_diff, scorr : numpy.ndarray or PSFModel
        ZOGY's D [DN at ``zp``], P_D (a `~ztfsds.photom.psf.PSFModel`, see
        `ztfsds.subtract.runner.difference_psf`, or an odd unit-sum stamp) and Scorr [sigma].
    sciimg, refimg : numpy.ndarray
        The science image and the reference resampled and scaled onto it (for the cutouts).
    mskimg : numpy.ndarray
        Combined MaskBits of science and reference on the science grid.
    var_diff : numpy.ndarray
        Variance of D [DN^2].
    zp : float
        Zero point of D (the science image's MAGZP) [mag].
    threshold : float, optional
        ``|Scorr|`` of a detection [sigma].
    min_separation : float, optional
        Extrema closer than this [px] are one candidate (the larger ``|Scorr|``).
    edge : int, optional
        Extrema closer than this to the image edge are not candidates [px].
    size : int, optional
        Cutout side [px].
    refcat : `~astropy.table.Table`, optional
        Reference PSF catalog with ``x``, ``y`` on the science grid, ``mag``, ``sigmag``, ``chi``,
        ``sharp``.
    max_candidates : int, optional
        At most this many (by ``|Scorr|``; ZTF's candid arithmetic allows 5000 per quadrant).

    Returns
    -------
    table : `~astropy.table.Table`
        One row per candidate (see the module notes), sorted by ``|Scorr|`` descending, ``tblid`` its
        index.
    stamps : numpy.ndarray
        ``(n, 3, size, size)`` cutouts: science, reference, difference.
    """
    ny, nx = diff.shape
    bad = (np.asarray(mskimg).astype(np.int32) & int(MaskBits.BAD)) != 0
    usable = ~bad & np.isfinite(scorr) & np.isfinite(diff)
    usable[:edge, :] = usable[-edge:, :] = False
    usable[:, :edge] = usable[:, -edge:] = False
    peaks = _peaks(scorr, usable, threshold, min_separation)
    peaks.sort(key=lambda p: -abs(float(scorr[p[0], p[1]])))
    peaks = peaks[:max_candidates]
    n = len(peaks)
    iy = np.array([p[0] for p in peaks], dtype=int)
    ix = np.array([p[1] for p in peaks], dtype=int)
    sign = np.array([p[2] for p in peaks], dtype=float)
    # sub-pixel position: 1-D parabolas through the peak and its neighbours in Scorr
    sc = np.where(np.isfinite(scorr), scorr, 0.0)
    x = ix.astype(float)
    y = iy.astype(float)
    for k in range(n):
        j, i, s = iy[k], ix[k], sign[k]
        if 0 < i < nx - 1:
            a, b, c = s * sc[j, i - 1], s * sc[j, i], s * sc[j, i + 1]
            den = a - 2 * b + c
            if den < 0:
                x[k] += float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
        if 0 < j < ny - 1:
            a, b, c = s * sc[j - 1, i], s * sc[j, i], s * sc[j + 1, i]
            den = a - 2 * b + c
            if den < 0:
                y[k] += float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    table = Table()
    table["tblid"] = np.arange(n, dtype=np.int32)
    table["xpos"], table["ypos"] = x, y
    table["isdiffpos"] = np.where(sign > 0, "t", "f")
    table["scorr"] = np.abs(sc[iy, ix]).astype(np.float64)
    dfill = np.where(np.isfinite(diff), diff, 0.0).astype(np.float32)
    vfill = np.where(np.isfinite(var_diff) & (var_diff > 0), var_diff, np.inf).astype(np.float32)
    if n:
        model = psf_diff if isinstance(psf_diff, PSFModel) else _stamp_model(psf_diff)
        rms = np.sqrt(np.where(np.isfinite(vfill), vfill, 0.0)).astype(np.float32)
        flux, ferr, chi2 = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        for sgn in (1.0, -1.0):
            sel = np.nonzero(sign == sgn)[0]
            if not len(sel):
                continue
            img = (sgn * dfill).astype(np.float32)
            guess = np.maximum(5.0 * img[iy[sel], ix[sel]], 1.0)
            fp = psf_photometry(img, model, x[sel], y[sel], guess, mskimg=mskimg, bkg_rms=rms, group_radius=0.0,
                                recentre=True, max_shift=1.0)
            flux[sel] = sgn * np.asarray(fp["flux"], dtype=float)
            ferr[sel] = np.asarray(fp["flux_err"], dtype=float)
            chi2[sel] = np.asarray(fp["chi2"], dtype=float)
            fx, fy = np.asarray(fp["x"], dtype=float), np.asarray(fp["y"], dtype=float)
            ok = np.isfinite(fx) & np.isfinite(fy) & (np.hypot(fx - x[sel], fy - y[sel]) <= 1.0)
            x[sel] = np.where(ok, fx, x[sel])
            y[sel] = np.where(ok, fy, y[sel])
        table["xpos"], table["ypos"] = x, y
        ap = aperture_photometry(dfill, x, y, (14.0, 18.0), mskimg=mskimg, varimg=np.where(np.isfinite(vfill),
                                 vfill, 0.0).astype(np.float32))
        apf, ape = np.asarray(ap["flux_aper"], dtype=float), np.asarray(ap["fluxerr_aper"], dtype=float)
    else:
        flux = ferr = chi2 = np.zeros(0)
        apf = ape = np.zeros((0, 2))
    table["flux"], table["sigflux"] = flux, ferr
    with np.errstate(divide="ignore", invalid="ignore"):
        af = np.abs(flux)
        table["magpsf"] = np.where(af > 0, zp - 2.5 * np.log10(af), np.nan)
        table["sigmapsf"] = np.where(af > 0, 2.5 / _LN10 * ferr / af, np.nan)
        table["chipsf"] = chi2
        for col, k in (("magap", 0), ("magapbig", 1)):
            f = sign * apf[:, k] if n else np.zeros(0)
            table[col] = np.where(f > 0, zp - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
            table["sig" + col] = np.where(f > 0, 2.5 / _LN10 * ape[:, k] / np.where(f > 0, f, 1.0), np.nan)
        table["magdiff"] = table["magap"] - table["magpsf"]
    a_im, b_im, elong, fwhm, nbad, nneg, sumrat = (np.full(n, np.nan) for _ in range(7))
    for k in range(n):
        j, i, s = iy[k], ix[k], sign[k]
        y0, y1, x0, x1 = max(j - 3, 0), min(j + 4, ny), max(i - 3, 0), min(i + 4, nx)
        box = s * dfill[y0:y1, x0:x1].astype(float)
        w = np.clip(box, 0.0, None)
        if w.sum() > 0:
            gy, gx = np.mgrid[y0:y1, x0:x1]
            cx, cy = (w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()
            x2 = (w * (gx - cx) ** 2).sum() / w.sum()
            y2 = (w * (gy - cy) ** 2).sum() / w.sum()
            xy = (w * (gx - cx) * (gy - cy)).sum() / w.sum()
            half, root = 0.5 * (x2 + y2), math.sqrt((0.5 * (x2 - y2)) ** 2 + xy**2)
            a_im[k], b_im[k] = math.sqrt(max(half + root, 1e-6)), math.sqrt(max(half - root, 1e-6))
            elong[k] = a_im[k] / b_im[k]
            fwhm[k] = 2.3548 * math.sqrt(0.5 * (a_im[k] ** 2 + b_im[k] ** 2))
        y0, y1, x0, x1 = max(j - 2, 0), min(j + 3, ny), max(i - 2, 0), min(i + 3, nx)
        nbad[k] = bad[y0:y1, x0:x1].sum()
        p = s * dfill[y0:y1, x0:x1].astype(float)
        nneg[k] = (p < 0).sum()
        tot = np.abs(p).sum()
        sumrat[k] = p.sum() / tot if tot > 0 else np.nan
    table["aimage"], table["bimage"], table["elong"], table["fwhm"] = a_im, b_im, elong, fwhm
    table["nbad"] = nbad.astype(np.int32) if n else np.zeros(0, np.int32)
    table["nneg"] = nneg.astype(np.int32) if n else np.zeros(0, np.int32)
    table["sumrat"] = sumrat
    table["mindtoedge"] = np.minimum.reduce([x, y, nx - 1 - x, ny - 1 - y]) if n else np.zeros(0)
    for col in ("distnr", "magnr", "sigmagnr", "chinr", "sharpnr"):
        table[col] = np.full(n, np.nan)
    if refcat is not None and len(refcat) and n:
        from scipy.spatial import cKDTree

        rx, ry = np.asarray(refcat["x"], float), np.asarray(refcat["y"], float)
        ok = np.isfinite(rx) & np.isfinite(ry)
        tree = cKDTree(np.column_stack([rx[ok], ry[ok]]))
        d, j = tree.query(np.column_stack([x, y]))
        rows = np.nonzero(ok)[0][j]
        table["distnr"] = d
        for col, src in (("magnr", "mag"), ("sigmagnr", "sigmag"), ("chinr", "chi"), ("sharpnr", "sharp")):
            table[col] = np.asarray(refcat[src], dtype=float)[rows]
    stamps = cutouts([np.asarray(sciimg, np.float32), np.asarray(refimg, np.float32), np.asarray(diff, np.float32)],
                     x, y, size)
    for col, unit in (("xpos", "pix"), ("ypos", "pix"), ("flux", "adu"), ("sigflux", "adu"), ("magpsf", "mag"),
                      ("sigmapsf", "mag"), ("magap", "mag"), ("magapbig", "mag"), ("fwhm", "pix"),
                      ("distnr", "pix"), ("magnr", "mag")):
        table[col].unit = unit
    return table, stamps
