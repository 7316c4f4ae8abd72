"""Resample an image (with its variance and mask) from one WCS onto another pixel grid.

Used to put science epochs onto the reference grid (co-adds) and the reference onto a science image
(subtraction). `resample` does it through two WCSs; `PixelMap` is the output-to-input pixel mapping it
builds, and `remap` resamples through a given `PixelMap` (to reuse one mapping for several images, or a
mapping that is not a pair of WCSs).

Notes
-----
* **Mapping.** The exact mapping ``wcs_in.world_to_pixel(wcs_out.pixel_to_world(x, y))`` (astropy, with
  the TPV/SIP distortion) is evaluated only on a coarse grid of nodes every ``grid_step`` output pixels,
  the first and last row and column included, and interpolated to every output pixel by a bicubic
  interpolating spline (`scipy.interpolate.RectBivariateSpline`, evaluated in the compiled kernel). Its
  error is measured where an interpolating spline is worst, at the centres of every other cell and at
  all edge midpoints, and reported as `Resampled.mapping_error`; between two epochs of a real ZTF TPV
  quadrant (20" and 0.05-0.2 deg apart) with ``grid_step=16`` it is ~1e-9 px over every pixel (the
  tolerance of the design is `MAPPING_TOLERANCE`, 0.005 px).
* **Interpolation.** Lanczos3: separable, the 6 x 6 input pixels about the input position, the
  weights normalised to sum 1 on each axis (from a 1024-row table, linearly interpolated: ~1e-7 from the
  exact kernel). Normalised Lanczos3 reproduces a constant exactly but a linear ramp only to ~0.02 px
  (its window's doing), so a star of FWHM 2.5 px shifted by a fraction of a pixel is off by up to
  1.6 % of its peak (1.0 % at 3 px, 0.8 % at 3.5 px, 0.5 % at 5 px: a dipole in a difference image),
  while its flux is kept to < 0.1 %. It rings next to sharp features (cosmic rays, saturated cores),
  and does not smooth (no anti-aliasing when the output pixels are much larger than the input ones).
* **Flux.** Images are in DN per pixel: with ``conserve_flux=True`` each output value is multiplied by
  the ratio of pixel areas, the Jacobian determinant ``|d(x_in, y_in) / d(x_out, y_out)|`` of the
  mapping (from the spline's derivatives), so that the total flux of a star is preserved; with False
  the image is interpolated as a surface brightness (what `reproject` does).
* **Variance.** ``sum w_i^2 var_i`` (times the Jacobian squared): the variance of each output pixel on
  its own is right, but neighbouring output pixels share input pixels, so their noise is *correlated*:
  the variance of a sum of output pixels (an aperture) is not the sum of their variances (for a
  sub-pixel shift, Lanczos3-resampled white noise has a per-pixel variance 0.6-1 x (0.6 at half a pixel on both axes) the
  input's while the variance of large sums is unchanged).
* **Bad pixels.** Input pixels with ``mask & MaskBits.BAD`` or a non-finite value or variance are left
  out and the weights renormalised over the good ones; where the good ones carry less than half of the
  weight the output is NaN and gets ``MaskBits.NAN``. The output mask is the OR of the bits of the input
  pixels whose weight exceeds 0.05 in absolute value (a bad pixel grows by about one pixel), plus
  ``MaskBits.NAN`` for non-finite inputs. Input pixels off the image are treated as bad ones: within
  half a pixel of the edge the window is renormalised over the pixels inside.
* **Off the input.** Output pixels whose input position falls outside the input image (beyond half a
  pixel from the edge pixels' centres) are NaN in the image and the variance, ``MaskBits.NAN`` in the
  mask (ZTF's mask has no "no data" bit) and False in the footprint. Footprint True means "inside the
  input": such a pixel can still be NaN where bad pixels dominate (it then has ``MaskBits.NAN``).
* **Threads.** The kernel releases the GIL; ``workers > 1`` resamples blocks of rows in threads.
"""

from __future__ import annotations

import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.interpolate import RectBivariateSpline

from .._ext import _resample
from ..errors import ConfigError, InputError, ShapeError
from ..products import MaskBits

__all__ = ["Resampled", "PixelMap", "resample", "remap", "MAPPING_TOLERANCE"]

log = logging.getLogger(__name__)

#: Largest acceptable error [px] of the interpolated pixel mapping; above it `PixelMap` logs a warning.
MAPPING_TOLERANCE = 0.005
#: Kernels `resample` knows.
KERNELS = ("lanczos3",)
#: Rows of the Lanczos3 weight table (linear interpolation between rows: ~1e-7 error on a weight).
_NTAB = 1024
#: An input pixel passes its mask bits on when its normalised weight exceeds this in absolute value.
_MASK_WEIGHT = 0.05
#: Below this good weight (after leaving out bad inputs) the output pixel is NaN.
_MIN_WEIGHT = 0.5
#: Bit for non-finite inputs, NaN outputs and output pixels off the input (ZTF's mask has no "no data").
NODATA_BIT = int(MaskBits.NAN)


@dataclass(frozen=True)
class Resampled:
    """An image resampled onto a new pixel grid.

    Attributes
    ----------
    image : ndarray of float32, shape (ny, nx)
        Resampled values [DN per output pixel when flux is conserved]; NaN off the input and where bad
        inputs carry more than half of the weight.
    variance : ndarray of float32 or None
        Variance [DN^2] of each output pixel (correlated between neighbours: see the module notes);
        None when no variance was given.
    mask : ndarray of int16 or None
        `~ztfsds.products.MaskBits` of each output pixel; None when no mask was given.
    footprint : ndarray of bool
        True where the output pixel falls on the input image.
    mapping_error : float
        Largest difference [px] between the interpolated and the exact pixel mapping at the check points
        (centres of every other cell and all edge midpoints of the coarse grid).
    """

    image: np.ndarray
    variance: np.ndarray | None
    mask: np.ndarray | None
    footprint: np.ndarray
    mapping_error: float


def _cubic_basis(knots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The four non-zero cubic B-splines and their derivatives at x (de Boor's recurrence).

    Returns the index of the first of the four coefficients (int32), their values (n, 4) and their
    derivatives (n, 4), all float64.
    """
    t = np.asarray(knots, dtype=float)
    x = np.asarray(x, dtype=float)
    ncoef = len(t) - 4
    i = np.clip(np.searchsorted(t, x, side="right") - 1, 3, ncoef - 1)
    n = np.zeros((len(x), 4))
    n[:, 0] = 1.0
    left = np.zeros((len(x), 4))
    right = np.zeros((len(x), 4))
    quad = None
    for j in range(1, 4):
        if j == 3:
            quad = n[:, :3].copy()          # the degree-2 B-splines i-2 .. i, for the derivatives
        left[:, j] = x - t[i + 1 - j]
        right[:, j] = t[i + j] - x
        saved = np.zeros(len(x))
        for r in range(j):
            temp = n[:, r] / (right[:, r + 1] + left[:, j - r])
            n[:, r] = saved + right[:, r + 1] * temp
            saved = left[:, j - r] * temp
        n[:, j] = saved
    # B'_{m,3} = 3 (B_{m,2} / (t[m+3] - t[m]) - B_{m+1,2} / (t[m+4] - t[m+1])), m = i - 3 + r
    d = np.zeros((len(x), 4))
    for r in range(4):
        m = i - 3 + r
        if r > 0:
            d[:, r] += 3.0 * quad[:, r - 1] / (t[m + 3] - t[m])
        if r < 3:
            d[:, r] -= 3.0 * quad[:, r] / (t[m + 4] - t[m + 1])
    return (i - 3).astype(np.int32), n, d


def _nodes(n: int, step: int) -> np.ndarray:
    """Evenly spaced node positions from 0 to n - 1 (at least 4 nodes, spacing at most ``step``)."""
    last = max(n - 1, 3)
    count = max(math.ceil(last / step), 3) + 1
    return np.linspace(0.0, float(last), count)


@dataclass(frozen=True)
class PixelMap:
    """Output-to-input pixel mapping: exact on a coarse grid of nodes, a bicubic spline in between.

    Build it with `from_wcs` or `from_function`; call `evaluate` for the interpolated input positions.

    Attributes
    ----------
    shape_out : tuple of int
        ``(ny, nx)`` of the output grid.
    grid_step : int
        Largest spacing [output px] of the nodes.
    spline_x, spline_y : `~scipy.interpolate.RectBivariateSpline`
        Input x and y [px] as functions of (output y, output x) [px].
    error : float
        Largest distance [px] between the spline and the exact mapping at the centres of every other
        cell and at the edge midpoints of the node grid (NaN when none maps to a finite position).
    """

    shape_out: tuple[int, int]
    grid_step: int
    spline_x: RectBivariateSpline
    spline_y: RectBivariateSpline
    error: float

    @classmethod
    def from_function(cls, func: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                      shape_out: tuple[int, int], *, grid_step: int = 16) -> PixelMap:
        """Tabulate ``func(x_out, y_out) -> (x_in, y_in)`` [px, 0-based] on the node grid.

        Parameters
        ----------
        func : callable
            The exact mapping, vectorised over arrays of output pixel coordinates.
        shape_out : tuple of int
            ``(ny, nx)`` of the output grid.
        grid_step : int, optional
            Node spacing [output px].

        Returns
        -------
        PixelMap

        Examples
        --------
        >>> pm = PixelMap.from_function(lambda x, y: (x + 0.25, y - 1.5), (64, 64))
        >>> [round(float(v), 6) for v in pm.evaluate(10.0, 20.0)]
        [10.25, 18.5]
        """
        if int(grid_step) < 1:
            raise ConfigError(f"grid_step must be a positive number of pixels, got {grid_step!r}")
        grid_step = int(grid_step)
        ny, nx = shape_out
        yn, xn = _nodes(ny, grid_step), _nodes(nx, grid_step)
        gx, gy = np.meshgrid(xn, yn)
        px, py = (np.asarray(a, dtype=float) for a in func(gx, gy))
        bad = ~(np.isfinite(px) & np.isfinite(py))
        if bad.all():
            # nothing maps anywhere (no overlap at all): a constant mapping far off any image
            log.warning("the pixel mapping is undefined at every node: every output pixel is off the input")
            px = np.full_like(gx, -1e9)
            py = np.full_like(gy, -1e9)
        elif bad.any():
            # undefined far from the input (beyond 90 deg of a tangent point): fill with the nearest
            # defined node, which is itself far off the input image
            from scipy.ndimage import distance_transform_edt

            log.warning("the pixel mapping is undefined at %d of %d nodes (far from the input image)",
                        int(bad.sum()), bad.size)
            idx = distance_transform_edt(bad, return_distances=False, return_indices=True)
            px, py = px[tuple(idx)], py[tuple(idx)]
        sx = RectBivariateSpline(yn, xn, px, kx=3, ky=3, s=0)
        sy = RectBivariateSpline(yn, xn, py, kx=3, ky=3, s=0)
        error = cls._check(func, sx, sy, xn, yn)
        if error > MAPPING_TOLERANCE:
            log.warning("interpolated pixel mapping is off by up to %.3g px (> %g px): use a smaller grid_step",
                        error, MAPPING_TOLERANCE)
        return cls((int(ny), int(nx)), grid_step, sx, sy, error)

    @classmethod
    def from_wcs(cls, wcs_in, wcs_out, shape_out: tuple[int, int], *, grid_step: int = 16,
                 product: str | None = None) -> PixelMap:
        """The mapping from the pixels of ``wcs_out`` to those of ``wcs_in`` through the sky.

        Parameters
        ----------
        wcs_in, wcs_out : `~astropy.wcs.WCS`
            Celestial WCSs of the input image and of the output grid (distortions included).
        shape_out : tuple of int
            ``(ny, nx)`` of the output grid.
        grid_step : int, optional
            Node spacing [output px].
        product : str, optional
            Named in errors.

        Returns
        -------
        PixelMap

        Raises
        ------
        InputError
            A WCS without two celestial axes.
        """
        win, wout = _celestial(wcs_in, "wcs_in", product), _celestial(wcs_out, "wcs_out", product)

        def func(x, y):
            return win.world_to_pixel(wout.pixel_to_world(x, y))

        return cls.from_function(func, shape_out, grid_step=grid_step)

    @staticmethod
    def _check(func, sx, sy, xn, yn) -> float:
        """Largest spline error [px] at the centres of every other cell and at all edge midpoints."""
        xm, ym = 0.5 * (xn[1:] + xn[:-1]), 0.5 * (yn[1:] + yn[:-1])
        # the interior error is uniform: every other cell (in both directions) is enough and halves the cost
        cx, cy = np.meshgrid(np.r_[xm[::2], xm[-1]], np.r_[ym[::2], ym[-1]])
        ex = np.concatenate([xm, xm, np.full(len(ym), xn[0]), np.full(len(ym), xn[-1])])
        ey = np.concatenate([np.full(len(xm), yn[0]), np.full(len(xm), yn[-1]), ym, ym])
        x, y = np.concatenate([cx.ravel(), ex]), np.concatenate([cy.ravel(), ey])
        px, py = (np.asarray(a, dtype=float) for a in func(x, y))
        err = np.hypot(sx.ev(y, x) - px, sy.ev(y, x) - py)
        err = err[np.isfinite(err)]
        return float(err.max()) if err.size else float("nan")

    def evaluate(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated input position ``(x_in, y_in)`` [px] of output pixel positions ``(x, y)`` [px]."""
        y, x = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(x, dtype=float))
        return self.spline_x.ev(y, x), self.spline_y.ev(y, x)

    def jacobian(self, x, y) -> np.ndarray:
        """``|d(x_in, y_in) / d(x_out, y_out)|``: input pixel area per output pixel at ``(x, y)``."""
        y, x = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(x, dtype=float))
        sx, sy = self.spline_x, self.spline_y
        return np.abs(sx.ev(y, x, dy=1) * sy.ev(y, x, dx=1) - sx.ev(y, x, dx=1) * sy.ev(y, x, dy=1))

    def _kernel_inputs(self):
        """Coefficients (ncy, ncx) of both splines and the B-spline bases of every output row and column."""
        ty, tx = self.spline_x.get_knots()
        shape = (len(ty) - 4, len(tx) - 4)
        cx = np.ascontiguousarray(self.spline_x.get_coeffs().reshape(shape))
        cy = np.ascontiguousarray(self.spline_y.get_coeffs().reshape(shape))
        rows = _cubic_basis(ty, np.arange(self.shape_out[0], dtype=float))
        cols = _cubic_basis(tx, np.arange(self.shape_out[1], dtype=float))
        return cx, cy, rows, cols


@functools.lru_cache(maxsize=1)
def _lanczos3_table(ntab: int = _NTAB) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Lanczos3 weights of the taps -2 .. 3 for t = q / ntab (q = 0 .. ntab) and row differences."""
    t = np.arange(ntab + 1) / ntab
    d = t[:, None] - np.arange(-2, 4)[None, :]
    w = np.where(np.abs(d) < 3.0, np.sinc(d) * np.sinc(d / 3.0), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    dw = np.zeros_like(w)
    dw[:-1] = w[1:] - w[:-1]
    w.flags.writeable = False
    dw.flags.writeable = False
    return w, dw


def _celestial(wcs, name: str, product: str | None):
    """The 2-axis celestial part of ``wcs``, or an InputError."""
    if not getattr(wcs, "has_celestial", False):
        raise InputError(product, f"{name} has no celestial axes (got {type(wcs).__name__}): cannot map pixels "
                                  "through the sky")
    cel = wcs.celestial if wcs.pixel_n_dim != 2 else wcs
    if cel.pixel_n_dim != 2:
        raise InputError(product, f"{name} has {cel.pixel_n_dim} celestial pixel axes, expected 2")
    return cel


def _as_image(a, name: str, product: str | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.size == 0:
        raise InputError(product, f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(product, f"{name} must be a numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_mask(mask, shape, product: str | None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ShapeError(product, mask.shape, shape, hdu="mask")
    if not np.issubdtype(mask.dtype, np.integer):
        raise InputError(product, f"mask must be an integer bit mask, got dtype {mask.dtype}")
    if mask.dtype != np.int16:
        lo, hi = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
        if lo < -32768 or hi > 32767:
            raise InputError(product, f"mask values {lo}..{hi} do not fit the int16 mskimg bits")
    return np.ascontiguousarray(mask, dtype=np.int16)


def remap(image, pixmap: PixelMap, *, variance=None, mask=None, kernel: str = "lanczos3",
          conserve_flux: bool = True, workers: int = 1, product: str | None = None) -> Resampled:
    """Resample an image through a precomputed `PixelMap` (see `resample` for everything else).

    Parameters
    ----------
    image : array_like (ny, nx)
        Input image [DN].
    pixmap : PixelMap
        Output-to-input mapping; the output shape is ``pixmap.shape_out``.
    variance : array_like (ny, nx), optional
        Input variance [DN^2].
    mask : array_like of int (ny, nx), optional
        Input `~ztfsds.products.MaskBits`.
    kernel : {'lanczos3'}, optional
        Interpolation kernel.
    conserve_flux : bool, optional
        Scale by the pixel-area ratio (DN per pixel images); False interpolates surface brightness.
    workers : int, optional
        Threads.
    product : str, optional
        Named in errors.

    Returns
    -------
    Resampled

    Examples
    --------
    >>> import numpy as np
    >>> img = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    >>> pm = PixelMap.from_function(lambda x, y: (x + 1.0, y), (64, 64))
    >>> out = remap(img, pm)
    >>> float(out.image[10, 10]) == float(img[10, 11]), bool(out.footprint[10, 63])
    (True, False)
    """
    if kernel not in KERNELS:
        raise ConfigError(f"unknown resampling kernel {kernel!r}: expected one of {KERNELS}")
    if int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")
    img = _as_image(image, "image", product)
    var = None
    if variance is not None:
        var = np.asarray(variance)
        if var.shape != img.shape:
            raise ShapeError(product, var.shape, img.shape, hdu="variance")
        var = _as_image(var, "variance", product)
    msk = None if mask is None else _as_mask(mask, img.shape, product)

    ny, nx = pixmap.shape_out
    dummy_f = np.zeros((1, 1), np.float32)
    dummy_m = np.zeros((1, 1), np.int16)
    var_k = var if var is not None else dummy_f
    msk_k = msk if msk is not None else dummy_m
    busy = np.empty(img.shape, np.uint8)
    _resample.busy_map(img, var_k, msk_k, var is not None, msk is not None, int(MaskBits.BAD),
                       np.empty(img.shape, np.uint8), busy)

    cx, cy, (iy, by, dby), (ix, bx, dbx) = pixmap._kernel_inputs()
    wtab, dwtab = _lanczos3_table()
    out = np.empty((ny, nx), np.float32)
    out_var = np.empty((ny, nx), np.float32) if var is not None else dummy_f
    out_msk = np.empty((ny, nx), np.int16) if msk is not None else dummy_m
    foot = np.empty((ny, nx), np.uint8)

    def run(rows):
        _resample.resample_rows(img, var_k, msk_k, busy, var is not None, msk is not None, cx, cy, iy, by, dby,
                                ix, bx, dbx, wtab, dwtab, out, out_var, out_msk, foot, rows[0], rows[1],
                                bool(conserve_flux), int(MaskBits.BAD), NODATA_BIT, _MASK_WEIGHT, _MIN_WEIGHT)

    workers = int(workers)
    if workers == 1:
        run((0, ny))
    else:
        edges = np.linspace(0, ny, min(ny, 4 * workers) + 1).astype(int)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, zip(edges[:-1], edges[1:])))
    return Resampled(out, out_var if var is not None else None, out_msk if msk is not None else None,
                     foot.view(bool), pixmap.error)


def resample(image, wcs_in, wcs_out, shape_out, *, variance=None, mask=None, kernel: str = "lanczos3",
             conserve_flux: bool = True, grid_step: int = 16, workers: int = 1,
             product: str | None = None) -> Resampled:
    """Resample an image, its variance and its mask from ``wcs_in`` onto the pixel grid of ``wcs_out``.

    Parameters
    ----------
    image : array_like (ny, nx)
        Input image [DN per pixel]; converted to float32.
    wcs_in : `~astropy.wcs.WCS`
        WCS of ``image`` (TPV or SIP distortion allowed).
    wcs_out : `~astropy.wcs.WCS`
        WCS of the output grid.
    shape_out : tuple of int
        ``(ny, nx)`` of the output [px].
    variance : array_like (ny, nx), optional
        Input variance [DN^2].
    mask : array_like of int (ny, nx), optional
        Input `~ztfsds.products.MaskBits` (``mskimg``).
    kernel : {'lanczos3'}, optional
        Interpolation kernel.
    conserve_flux : bool, optional
        Multiply by the ratio of pixel areas (the Jacobian of the mapping) so that total fluxes are
        preserved; False interpolates the values as a surface brightness.
    grid_step : int, optional
        Spacing [output px] of the nodes where the mapping is computed exactly.
    workers : int, optional
        Threads resampling blocks of rows.
    product : str, optional
        The product (file name or key) named in errors.

    Returns
    -------
    Resampled
        Image, variance, mask, footprint and the measured mapping error; see the module notes for NaN,
        off-image pixels and the correlated noise.

    Raises
    ------
    InputError
        Non-2-D or mismatched arrays (`~ztfsds.errors.ShapeError`), a WCS without celestial axes, a bad
        ``shape_out``.
    ConfigError
        An unknown kernel, ``grid_step < 1`` or ``workers < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = [150.0, 2.0], [32.0, 32.0], [-2.8e-4, 2.8e-4]
    >>> shifted = w.deepcopy()
    >>> shifted.wcs.crpix = [31.5, 32.0]       # output pixel x maps to input pixel x + 0.5
    >>> img = np.zeros((64, 64), np.float32)
    >>> img[32, 30] = 100.0
    >>> out = resample(img, w, shifted, (64, 64))
    >>> round(float(np.nansum(out.image)), 3), out.mapping_error < 1e-6
    (100.0, True)
    """
    try:
        shape_out = tuple(int(n) for n in shape_out)
    except (TypeError, ValueError):
        raise InputError(product, f"shape_out must be (ny, nx), got {shape_out!r}") from None
    if len(shape_out) != 2 or min(shape_out) < 1:
        raise InputError(product, f"shape_out must be two positive sizes (ny, nx), got {shape_out!r}")
    if kernel not in KERNELS:
        raise ConfigError(f"unknown resampling kernel {kernel!r}: expected one of {KERNELS}")
    img = _as_image(image, "image", product)
    pixmap = PixelMap.from_wcs(wcs_in, wcs_out, shape_out, grid_step=grid_step, product=product)
    return remap(img, pixmap, variance=variance, mask=mask, kernel=kernel, conserve_flux=conserve_flux,
                 workers=workers, product=product)
