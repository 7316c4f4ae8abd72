"""ZOGY image subtraction (Zackay, Ofek & Gal-Yam 2016) as IPAC's ``py_zogy.py`` computes it for ZTF.

`zogy` takes a new image ``N`` and a reference ``R`` that are already aligned, background-subtracted and
flux-matched (``R`` scaled to the zero point of ``N``), their PSF stamps ``P_N``, ``P_R``, scalar robust
background sigmas ``SN``, ``SR`` [DN] and optionally per-pixel variance maps ``V_N``, ``V_R`` [DN^2], and
returns the difference image ``D``, its PSF ``P_D``, the score ``S`` and the corrected score ``S_corr``.

Equations (hats are 2-D discrete Fourier transforms; ZOGY paper equation numbers)::

    den2  = SN^2 |P_R|^2 + SR^2 |P_N|^2 + eps                 (eps = 1e-8 DN^2, as IPAC)
    D^    = (P_R^ N^ - P_N^ R^) / sqrt(den2)                   (13)
    F_D   = 1 / sqrt(SN^2 + SR^2);   D = IFFT(D^) / F_D        (15; D in flux units of N)
    P_D^  = P_R^ P_N^ / (F_D sqrt(den2))                       (14)
    S^    = F_D D^ conj(P_D^) = k_N^ N^ - k_R^ R^              (17)
    k_R^  = conj(P_R^) |P_N^|^2 / den2,  k_N^ = conj(P_N^) |P_R^|^2 / den2     (28, 29)
    V_S_N = V_N (*) k_N^2,  V_S_R = V_R (*) k_R^2              (26, 27; (*) circular convolution)
    S_N   = IFFT(k_N^ N^),  S_R = IFFT(k_R^ R^)                (S = S_N - S_R)
    V_ast = dx^2 (d_x S_N)^2 + dy^2 (d_y S_N)^2 + the same for S_R          (30-33)
    S_corr = S / sqrt(V_S_N + V_S_R + V_ast)

``d_x s = s - np.roll(s, 1, axis=1)`` (x = column), ``d_y`` the same along rows, as IPAC. All transforms
are circular on the image grid (no padding, as IPAC's 2017 version): a source within a PSF width of an
edge also acts on the opposite edge. The PSF stamps are placed with their central pixel at the origin of
the grid (IPAC puts the stamp at the image centre and applies ``fftshift``; identical for even-sized
images such as ZTF quadrants). ``D`` has PSF ``P_D`` and white noise of standard deviation
``sigma_D = 1 / F_D`` [DN] where the variance is ``SN^2`` and ``SR^2``; a point source of flux ``f`` [DN,
zero point of N] in N only appears in ``D`` as ``f P_D`` and in ``S_corr`` with peak ~ its matched-filter
S/N. A source in R only (a fading or vanished source) is negative in ``D``, ``S`` and ``S_corr``.

Implementation
--------------
Real transforms (`scipy.fft.rfft2` and an inverse along rows then columns) in single precision
(complex64 half-spectra), ``workers`` threads per transform. The full-size transforms are those of
``N``, ``R``, ``D``, ``S_N``, ``S_R`` and, with variance maps, of ``V_N``, ``V_R``, ``k_N^2``,
``k_R^2`` and ``V_S``. The PSF transforms are those of the stamps alone (rows first, on the stamp's rows
only). The kernels ``k_N``, ``k_R`` and ``P_D`` are computed on a small grid (8 stamp widths, at least
64 px; the image grid when that is smaller): the transform of a stamp on any grid samples the same
continuous spectrum, so the small grid gives the same kernels up to their wings beyond 4 stamp widths,
which wrap around (at the 1e-7 level for realistic PSFs). The Fourier-space arithmetic and the
``S_corr`` denominator are compiled one-pass kernels (`ztfsds._ext._zogy`). Without variance maps
``V_S_N = SN^2 sum(k_N^2)`` is a constant and four full-size transforms are saved.

Examples
--------
>>> import numpy as np
>>> from ztfsds.subtract.zogy import zogy
>>> yy, xx = np.mgrid[-7:8, -7:8]
>>> psf = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2)); psf /= psf.sum()
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(0, 3, (64, 64)).astype(np.float32)
>>> new = rng.normal(0, 5, (64, 64)).astype(np.float32)
>>> new[25:40, 25:40] += 2000 * psf                       # a transient of 2000 DN at (32, 32)
>>> res = zogy(new, ref, psf, psf, sigma_new=5.0, sigma_ref=3.0)
>>> round(res.sigma_D, 3), res.P_D.shape, round(float(res.P_D.sum()), 6)
(5.831, (15, 15), 1.0)
>>> int(np.argmax(res.S)) == 32 * 64 + 32, bool(res.Scorr[32, 32] > 5)
(True, True)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from .._ext import _zogy
from ..errors import InputError, ShapeError

__all__ = ["EPS", "ZogyResult", "zogy"]

log = logging.getLogger(__name__)

#: IPAC's regulariser of the denominator of eq. 13 [DN^2]
EPS = 1.0e-8
#: the small grid of the kernels spans this many stamp widths (and at least MIN_KERNEL_GRID px)
KERNEL_GRID_STAMPS = 8
MIN_KERNEL_GRID = 64


@dataclass
class ZogyResult:
    """The products of `zogy`.

    Attributes
    ----------
    D : ndarray of float32
        Difference image ``N - R`` [DN, in the flux units (zero point) of the new image]; NaN on masked
        pixels. Its PSF is ``P_D``; its noise is white with standard deviation ``sigma_D`` where the
        variance maps equal the scalar sigmas.
    P_D : ndarray of float32
        PSF of ``D``: an odd stamp, the size of the larger input stamp, centred, unit sum (normalised;
        the sum before normalisation is ``psf_fraction``). Fit it to ``D`` for the flux of a transient.
    S : ndarray of float32
        Score image (eq. 17) ``S = S_N - S_R`` [DN^-1 scaled]; NaN on masked pixels.
    Scorr : ndarray of float32
        Corrected score ``S / sqrt(V_S_N + V_S_R + V_ast)`` [sigma]; detect at ``|Scorr| >= 5``;
        NaN on masked pixels.
    F_D : float
        Flux zero point of the normalised difference image, ``1 / sqrt(SN^2 + SR^2)`` [DN^-1].
    sigma_D : float
        Standard deviation of the noise of ``D``, ``1 / F_D`` [DN].
    psf_fraction : float
        Sum of ``P_D`` within its stamp before normalisation (1 - the flux in the wings outside it).
    """

    D: np.ndarray
    P_D: np.ndarray
    S: np.ndarray
    Scorr: np.ndarray
    F_D: float
    sigma_D: float
    psf_fraction: float


def zogy(new, ref, psf_new, psf_ref, *, sigma_new: float, sigma_ref: float, var_new=None, var_ref=None,
         mask=None, dx: float = 0.25, dy: float = 0.25, workers: int = 1,
         product: str | os.PathLike | None = None) -> ZogyResult:
    """Subtract a flux-matched reference from a new image with ZOGY (IPAC's ``py_zogy.py`` equations).

    Parameters
    ----------
    new, ref : array_like, 2-D
        New and reference images [DN], same shape, aligned, background-subtracted, and flux-matched (the
        reference already scaled to the new image's zero point). Converted to float32. Bad pixels must be
        set to 0 by the caller (or flagged in ``mask``, where they are set to 0 here); any other
        non-finite pixel is an error.
    psf_new, psf_ref : array_like, 2-D
        PSF stamps of the two images: odd sizes (not necessarily equal), centred on the central pixel,
        at most the image size. Normalised to unit sum here.
    sigma_new, sigma_ref : float
        Scalar robust background sigmas ``SN``, ``SR`` [DN], > 0.
    var_new, var_ref : array_like, optional
        Per-pixel variance maps [DN^2] for the ``S_corr`` noise (eqs. 26-27); default ``sigma**2``
        everywhere. Must be finite and >= 0 outside ``mask``.
    mask : array_like of bool, optional
        True where a pixel of either image is unusable. Those pixels of ``new`` and ``ref`` are set to 0
        and their variance to 0 (a 0-filled pixel carries no noise), and ``D``, ``S`` and ``Scorr`` are
        NaN there. Only the masked pixels themselves are NaN: their neighbours within a kernel width
        see the 0-fill (grow the mask beforehand to blank them too).
    dx, dy : float, optional
        Astrometric registration uncertainties along x (columns) and y (rows) [px] for ``V_ast``.
    workers : int, optional
        Threads per FFT (`scipy.fft` ``workers``); the element-wise kernels are single-threaded.
    product : str or path-like, optional
        The new image's product name or file, for error messages.

    Returns
    -------
    ZogyResult
        ``D``, ``P_D``, ``S``, ``Scorr``, ``F_D``, ``sigma_D`` and ``psf_fraction``.

    Raises
    ------
    ShapeError
        Images, variance maps or mask of different shapes; a stamp larger than the image.
    InputError
        Non-2-D input, even-sized or non-positive PSF stamps, non-finite pixels outside ``mask``,
        non-positive sigmas, negative ``dx``/``dy``, ``workers < 1``.
    """
    new, ref, var_new, var_ref, mask = _check_images(new, ref, var_new, var_ref, mask, product)
    shape = new.shape
    ny, nx = shape
    psf_new = _check_psf(psf_new, shape, "psf_new", product)
    psf_ref = _check_psf(psf_ref, shape, "psf_ref", product)
    sn, sr = (_check_positive(v, name, product) for v, name in ((sigma_new, "sigma_new"), (sigma_ref, "sigma_ref")))
    for v, name in ((dx, "dx"), (dy, "dy")):
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise InputError(product, f"{name} must be a finite number >= 0 px, got {v!r}")
    workers = int(workers)
    if workers < 1:
        raise InputError(product, f"workers must be >= 1, got {workers}")

    sn2, sr2 = sn * sn, sr * sr
    f_d = 1.0 / math.sqrt(sn2 + sr2)

    # Kernels k_N, k_R and P_D on the small grid (float64; cheap)
    kern = _small_kernels(psf_new, psf_ref, shape, sn2, sr2, f_d)

    # V_S_N + V_S_R (eqs. 26-27): a map with variance maps (convolutions by k^2), else a constant.
    # Done first so that at most four full-size spectra are alive at a time.
    v_const = 0.0
    spectra_v = []
    for var, s2, name in ((var_new, sn2, "kn2"), (var_ref, sr2, "kr2")):
        if var is None:
            v_const += s2 * kern["sum_" + name]
        else:
            spectra_v.append((sfft.rfft2(var, workers=workers), _stamp_rfft2(kern[name], shape, workers)))
    del var_new, var_ref
    v_s = None
    if len(spectra_v) == 2:
        (v_hat, k_hat), (vr_hat, kr_hat) = spectra_v
        del spectra_v
        _zogy.variance_spectrum(v_hat, k_hat, vr_hat, kr_hat)
        del k_hat, vr_hat, kr_hat
        v_s = _irfft2(v_hat, shape, workers)
        del v_hat
    elif spectra_v:
        v_hat, k_hat = spectra_v.pop()
        v_hat *= k_hat
        del k_hat
        v_s = _irfft2(v_hat, shape, workers)
        del v_hat

    # Fourier transforms of the images and of the PSFs on the full grid (complex64 half-spectra)
    p_n = _stamp_rfft2(psf_new, shape, workers)
    p_r = _stamp_rfft2(psf_ref, shape, workers)
    n_hat = sfft.rfft2(new, workers=workers)
    r_hat = sfft.rfft2(ref, workers=workers)
    del new, ref

    # D^ (in flux units), S_N^, S_R^ in one pass: p_n <- D^, n_hat <- S_N^, r_hat <- S_R^
    _zogy.spectra(p_n, p_r, n_hat, r_hat, sn2, sr2, EPS, 1.0 / f_d)
    del p_r
    d = _irfft2(p_n, shape, workers)
    del p_n
    s_n = _irfft2(n_hat, shape, workers)
    del n_hat
    s_r = _irfft2(r_hat, shape, workers)
    del r_hat

    s_out = v_s if v_s is not None else np.empty(shape, np.float32)
    v_arg = v_s if v_s is not None else np.zeros((1, 1), np.float32)
    scorr = np.empty(shape, np.float32)
    use_mask = mask is not None
    mask_arg = mask.view(np.uint8) if use_mask else np.zeros((1, 1), np.uint8)
    _zogy.scorr(s_n, s_r, v_arg, v_const, float(dx) ** 2, float(dy) ** 2, s_out, scorr, mask_arg, use_mask)
    if use_mask:
        d[mask] = np.nan
    log.debug("zogy %dx%d: sigma_D %.4g DN, P_D fraction in stamp %.6f", ny, nx, 1.0 / f_d,
              kern["psf_fraction"])
    return ZogyResult(D=d, P_D=kern["p_d"], S=s_out, Scorr=scorr, F_D=f_d, sigma_D=1.0 / f_d,
                      psf_fraction=kern["psf_fraction"])


def _check_positive(v, name, product) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise InputError(product, f"{name} must be a number [DN], got {v!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise InputError(product, f"{name} must be finite and > 0 DN, got {v!r}")
    return v


def _as_image(a, name, product):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise InputError(product, f"{name} must be a 2-D image, got {a.ndim} dimensions")
    return a


def _check_images(new, ref, var_new, var_ref, mask, product):
    new = _as_image(new, "new", product)
    ref = _as_image(ref, "ref", product)
    if ref.shape != new.shape:
        raise ShapeError(product, ref.shape, new.shape, hdu="ref")
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != new.shape:
            raise ShapeError(product, mask.shape, new.shape, hdu="mask")
        if not mask.any():
            mask = None
    out = {}
    for name, a in (("new", new), ("ref", ref), ("var_new", var_new), ("var_ref", var_ref)):
        if a is None:
            out[name] = None
            continue
        a = _as_image(a, name, product)
        if a.shape != new.shape:
            raise ShapeError(product, a.shape, new.shape, hdu=name)
        if mask is not None:
            masked = a[mask]
            if np.any(masked != 0):  # (NaN != 0 too) zero-fill the masked pixels, on a copy
                a = np.where(mask, np.float32(0), a)
        if not np.isfinite(a).all():
            raise InputError(product, f"{name} has non-finite pixels outside the mask (0-fill them or pass mask=)")
        if name.startswith("var") and (a < 0).any():
            raise InputError(product, f"{name} has negative variances")
        out[name] = a
    return out["new"], out["ref"], out["var_new"], out["var_ref"], mask


def _check_psf(p, shape, name, product):
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise InputError(product, f"{name} must be a 2-D stamp of odd sizes, got shape {p.shape}")
    if p.shape[0] > shape[0] or p.shape[1] > shape[1]:
        raise ShapeError(product, p.shape, shape, hdu=name)
    total = p.sum()
    if not (np.isfinite(p).all() and total > 0):
        raise InputError(product, f"{name} must be finite with a positive sum, got sum {total!r}")
    return p / total


def _embed_rows(stamp, nx, dtype):
    """The stamp's rows on a grid ``nx`` wide, the central column at x = 0 (wrapped)."""
    sy, sx = stamp.shape
    rows = np.zeros((sy, nx), dtype)
    rows[:, (np.arange(sx) - sx // 2) % nx] = stamp
    return rows


def _stamp_rfft2(stamp, shape, workers):
    """`scipy.fft.rfft2` of the stamp on a ``shape`` grid with its central pixel at the origin.

    Rows first (only the stamp's rows are non-zero), then columns: about half the cost of a full
    `~scipy.fft.rfft2`, the same numbers. complex64.
    """
    ny, nx = shape
    sy = stamp.shape[0]
    q = sfft.rfft(_embed_rows(stamp, nx, np.float32), axis=1, workers=workers)
    full = np.zeros((ny, nx // 2 + 1), np.complex64)
    full[(np.arange(sy) - sy // 2) % ny] = q
    return sfft.fft(full, axis=0, overwrite_x=True, workers=workers)


def _irfft2(a, shape, workers):
    """Inverse of `~scipy.fft.rfft2` (float32 from complex64), destroying ``a``.

    Columns then rows, in place: faster than `scipy.fft.irfft2` (which copies) by about a third.
    """
    a = sfft.ifft(a, axis=0, overwrite_x=True, workers=workers)
    return sfft.irfft(a, n=shape[1], axis=1, overwrite_x=True, workers=workers)


def _small_grid(shape, psf_new, psf_ref):
    m = max(psf_new.shape + psf_ref.shape)
    size = max(KERNEL_GRID_STAMPS * m, MIN_KERNEL_GRID)
    return tuple(n if sfft.next_fast_len(size) >= n else sfft.next_fast_len(size) for n in shape)


def _small_kernels(psf_new, psf_ref, shape, sn2, sr2, f_d):
    """``k_N^2``, ``k_R^2`` (centred stamps of the small grid), their sums, and ``P_D`` (float64)."""
    grid = _small_grid(shape, psf_new, psf_ref)
    p_n = np.fft.rfft2(_origin(psf_new, grid))
    p_r = np.fft.rfft2(_origin(psf_ref, grid))
    an = np.abs(p_n) ** 2
    ar = np.abs(p_r) ** 2
    den2 = sn2 * ar + sr2 * an + EPS
    kn = np.fft.irfft2(np.conj(p_n) * ar / den2, s=grid)
    kr = np.fft.irfft2(np.conj(p_r) * an / den2, s=grid)
    p_d = np.fft.fftshift(np.fft.irfft2(p_r * p_n / (f_d * np.sqrt(den2)), s=grid))
    sy = max(psf_new.shape[0], psf_ref.shape[0])
    sx = max(psf_new.shape[1], psf_ref.shape[1])
    cy, cx = grid[0] // 2, grid[1] // 2
    p_d = p_d[cy - sy // 2:cy + sy // 2 + 1, cx - sx // 2:cx + sx // 2 + 1]
    fraction = float(p_d.sum())
    kn2 = np.fft.fftshift(kn**2)
    kr2 = np.fft.fftshift(kr**2)
    return {
        # fftshift puts the origin at index n // 2; odd-sized stamps for _stamp_rfft2 (drop the first
        # row/column of an even grid: the kernel's far wing, at the 1e-7 level)
        "kn2": _crop_centred(kn2[len(kn2) % 2 == 0:, kn2.shape[1] % 2 == 0:]),
        "kr2": _crop_centred(kr2[len(kr2) % 2 == 0:, kr2.shape[1] % 2 == 0:]),
        "sum_kn2": float((kn**2).sum()),
        "sum_kr2": float((kr**2).sum()),
        "p_d": (p_d / fraction).astype(np.float32),
        "psf_fraction": fraction,
    }


def _crop_centred(k2, rel=1e-10):
    """The odd centred stamp ``k2`` cut to the box holding every value above ``rel`` of its maximum.

    What is left out is below float32 resolution of the convolution; the row transforms of
    `_stamp_rfft2` then run on ~30 rows instead of the small grid's.
    """
    cy, cx = k2.shape[0] // 2, k2.shape[1] // 2
    iy, ix = np.nonzero(np.abs(k2) > rel * np.abs(k2).max())
    ry = int(np.abs(iy - cy).max())
    rx = int(np.abs(ix - cx).max())
    return np.ascontiguousarray(k2[cy - ry:cy + ry + 1, cx - rx:cx + rx + 1])


def _origin(stamp, grid):
    """The stamp on a float64 grid with its central pixel at the origin (wrapped)."""
    rows = _embed_rows(stamp, grid[1], np.float64)
    full = np.zeros(grid)
    full[(np.arange(stamp.shape[0]) - stamp.shape[0] // 2) % grid[0]] = rows
    return full
