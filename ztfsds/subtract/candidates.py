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
from astropy.table import Table

from ..photom.aperture import aperture_photometry
from ..photom.psf import PSFModel
from ..photom.psffit import psf_photometry
from ..products import MaskBits

__all__ = ["find_candidates", "cutouts"]

_LN10 = math.log(10.0)
#: Half-side [px] of the tiles the candidates are measured on (the 18 px aperture + a 1 px move + margin).
_TILE_HALF = 12


def _stamp_model(p_d: np.ndarray) -> PSFModel:
    """P_D as a constant PSF model (its small negative lobes kept: they are part of D's PSF)."""
    stamp = np.asarray(p_d, dtype=np.float64)
    grid = np.pad(stamp / stamp.sum(), 3)
    return PSFModel(basis=grid[None], oversample=1, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)


def _tiles(img, iy, ix, h, fill):
    """``(n, 2h+1, 2h+1)`` boxes of ``img`` centred on the pixels ``(iy, ix)``, ``fill`` beyond the
    image (the dtype of ``img``, float32 for floats)."""
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float32, copy=False)
    ny, nx = img.shape
    off = np.arange(-h, h + 1)
    yy = np.asarray(iy, int)[:, None] + off[None, :]
    xx = np.asarray(ix, int)[:, None] + off[None, :]
    out = img[np.clip(yy, 0, ny - 1)[:, :, None], np.clip(xx, 0, nx - 1)[:, None, :]]
    outside = ((yy < 0) | (yy >= ny))[:, :, None] | ((xx < 0) | (xx >= nx))[:, None, :]
    out[outside] = fill
    return out


def _mosaic_origins(n, tile):
    """Lower-left pixel (x, y) of each of ``n`` tiles of side ``tile`` laid out row by row."""
    ncol = max(int(math.ceil(math.sqrt(n))), 1)
    k = np.arange(n)
    return (k % ncol) * tile, (k // ncol) * tile


def _mosaic(tiles):
    """The ``(n, t, t)`` tiles side by side in one image (rows of ``ceil(sqrt(n))`` tiles; the empty
    places of the last row are filled with the first tile's fill value 0)."""
    n, t, _ = tiles.shape
    ncol = max(int(math.ceil(math.sqrt(n))), 1)
    nrow = -(-n // ncol)
    full = np.zeros((nrow * ncol, t, t), tiles.dtype)
    full[:n] = tiles
    return np.ascontiguousarray(full.reshape(nrow, ncol, t, t).transpose(0, 2, 1, 3).reshape(nrow * t, ncol * t))


def cutouts(images, x, y, size: int = 63) -> np.ndarray:
    """``(n, len(images), size, size)`` float32 stamps centred on the pixels nearest to ``(x, y)``
    (NaN beyond the image edges)."""
    ix = np.round(np.asarray(x, dtype=float)).astype(int)
    iy = np.round(np.asarray(y, dtype=float)).astype(int)
    out = np.full((len(ix), len(images), size, size), np.nan, np.float32)
    for k, img in enumerate(images):
        out[:, k] = _tiles(np.asarray(img, np.float32), iy, ix, size // 2, np.nan)
    return out


def _peaks(scorr, usable, threshold, min_separation):
    """Pixels that are the extremum of their neighbourhood with |Scorr| >= threshold: (y, x, sign).

    A pixel at or above the threshold is a peak when no pixel of the ``(2r+1)^2`` box around it (r =
    ``min_separation``) is larger (ties are all kept). Only the few pixels above the threshold are
    compared with their boxes (the box's pixels below the threshold can never be larger): the same
    peaks as a full-image maximum filter, at a fraction of its cost.
    """
    ny, nx = scorr.shape
    r = int(min_separation)
    with np.errstate(invalid="ignore"):
        above = (np.abs(scorr) >= threshold) & usable
    yy, xx = np.nonzero(above)
    v = scorr[yy, xx].astype(np.float64)
    sign = np.where(v > 0, 1.0, -1.0)
    sv = sign * v
    peak = np.ones(len(yy), bool)
    for dy in range(-r, r + 1):
        # a box reaching beyond the image: the clipped index is a pixel of the box, as good a comparison
        y = np.clip(yy + dy, 0, ny - 1)
        for dx in range(-r, r + 1):
            if dy or dx:
                x = np.clip(xx + dx, 0, nx - 1)
                nb = np.where(usable[y, x], scorr[y, x], 0.0)
                peak &= sign * nb <= sv
    return [(int(a), int(b), float(c)) for a, b, c in zip(yy[peak], xx[peak], sign[peak])]


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
    mskimg = np.asarray(mskimg)
    bad = (mskimg & int(MaskBits.BAD)) != 0
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
    x, y = ix.astype(float), iy.astype(float)
    sc = _tiles(scorr, iy, ix, 1, 0.0).astype(np.float64) * sign[:, None, None]
    sc[~np.isfinite(sc)] = 0.0
    for offset, (a, b, c) in ((x, (sc[:, 1, 0], sc[:, 1, 1], sc[:, 1, 2])), (y, (sc[:, 0, 1], sc[:, 1, 1], sc[:, 2, 1]))):
        den = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            offset += np.where(den < 0, np.clip(0.5 * (a - c) / den, -0.5, 0.5), 0.0)

    table = Table()
    table["tblid"] = np.arange(n, dtype=np.int32)
    table["xpos"], table["ypos"] = x, y
    table["isdiffpos"] = np.where(sign > 0, "t", "f")
    table["scorr"] = np.abs(sc[:, 1, 1]) if n else np.zeros(0)
    # everything below is measured on (2h+1)^2 tiles round the peaks, laid side by side in one small
    # mosaic: the PSF fits (fit radius 3, model boxes of 6 px, 1 px moves) and the 18 px apertures
    # see the same pixels as on the full image, at a fraction of the full image's cost; the tiles of
    # negative candidates are sign-flipped so that one fit measures them all
    h = _TILE_HALF
    dt = _tiles(diff, iy, ix, h, 0.0) * sign[:, None, None].astype(np.float32)
    dt[~np.isfinite(dt)] = 0.0
    vt = _tiles(var_diff, iy, ix, h, 0.0)
    vt[~(np.isfinite(vt) & (vt > 0))] = 0.0
    mt = _tiles(mskimg, iy, ix, h, int(MaskBits.NAN))
    if n:
        model = psf_diff if isinstance(psf_diff, PSFModel) else _stamp_model(psf_diff)
        d_mos, v_mos, m_mos = _mosaic(dt), _mosaic(vt), _mosaic(mt)
        ox, oy = _mosaic_origins(n, 2 * h + 1)
        mx, my = x - ix + ox + h, y - iy + oy + h
        guess = np.maximum(5.0 * dt[:, h, h], 1.0)
        fp = psf_photometry(d_mos, model, mx, my, guess, mskimg=m_mos, bkg_rms=np.sqrt(v_mos), group_radius=0.0,
                            recentre=True, max_shift=1.0, psf_xy=(x, y))
        flux = sign * np.asarray(fp["flux"], dtype=float)
        ferr = np.asarray(fp["flux_err"], dtype=float)
        chi2 = np.asarray(fp["chi2"], dtype=float)
        fx, fy = np.asarray(fp["x"], dtype=float), np.asarray(fp["y"], dtype=float)
        ok = np.isfinite(fx) & np.isfinite(fy) & (np.hypot(fx - mx, fy - my) <= 1.0)
        mx, my = np.where(ok, fx, mx), np.where(ok, fy, my)
        x, y = mx - ox - h + ix, my - oy - h + iy
        table["xpos"], table["ypos"] = x, y
        ap = aperture_photometry(d_mos, mx, my, (14.0, 18.0), mskimg=m_mos, varimg=v_mos)
        apf = np.asarray(ap["flux_aper"], dtype=float) * sign[:, None]
        ape = np.asarray(ap["fluxerr_aper"], dtype=float)
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
    # shape: second moments of the positive part of s D over the 7x7 box round the peak pixel
    box = dt[:, h - 3:h + 4, h - 3:h + 4].astype(np.float64)
    w = np.clip(box, 0.0, None)
    g = np.arange(-3, 4, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        wsum = w.sum(axis=(1, 2))
        cx = (w * g[None, None, :]).sum(axis=(1, 2)) / wsum
        cy = (w * g[None, :, None]).sum(axis=(1, 2)) / wsum
        ddx = g[None, None, :] - cx[:, None, None]
        ddy = g[None, :, None] - cy[:, None, None]
        x2 = (w * ddx**2).sum(axis=(1, 2)) / wsum
        y2 = (w * ddy**2).sum(axis=(1, 2)) / wsum
        xy = (w * ddx * ddy).sum(axis=(1, 2)) / wsum
        half, root = 0.5 * (x2 + y2), np.sqrt((0.5 * (x2 - y2)) ** 2 + xy**2)
        a_im = np.where(wsum > 0, np.sqrt(np.maximum(half + root, 1e-6)), np.nan)
        b_im = np.where(wsum > 0, np.sqrt(np.maximum(half - root, 1e-6)), np.nan)
        elong = a_im / b_im
        fwhm = 2.3548 * np.sqrt(0.5 * (a_im**2 + b_im**2))
        # the 5x5 box: masked pixels, negative pixels of s D, sum(s D) / sum(|D|)
        p = dt[:, h - 2:h + 3, h - 2:h + 3].astype(np.float64)
        nbad = ((mt[:, h - 2:h + 3, h - 2:h + 3] & int(MaskBits.BAD)) != 0).sum(axis=(1, 2))
        nneg = (p < 0).sum(axis=(1, 2))
        tot = np.abs(p).sum(axis=(1, 2))
        sumrat = np.where(tot > 0, p.sum(axis=(1, 2)) / tot, np.nan)
    table["aimage"], table["bimage"], table["elong"], table["fwhm"] = a_im, b_im, elong, fwhm
    table["nbad"] = nbad.astype(np.int32)
    table["nneg"] = nneg.astype(np.int32)
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
