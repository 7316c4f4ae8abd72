"""Pure-numpy reference of `ztfsds._ext._resample` (Lanczos3 resampling through a spline mapping).

Written for clarity, in float64: the mapping and its derivatives come straight from scipy's
`~scipy.interpolate.RectBivariateSpline.ev`, the Lanczos3 weights from ``sinc`` (no table), and every
output pixel gathers its whole 6 x 6 window (no fast path). Memory grows as 36 x the output size: use it
on small images. The tests compare it with the kernel on random input; see the kernel module for the
rules (bad taps, renormalisation, mask growth, off-image pixels).
"""

from __future__ import annotations

import numpy as np

__all__ = ["lanczos3", "lanczos3_weights", "remap", "TAPS"]

#: Tap offsets of the window about ``floor(X)``.
TAPS = np.arange(-2, 4)


def lanczos3(d):
    """The Lanczos kernel of order 3: ``sinc(d) sinc(d / 3)`` for ``|d| < 3``, else 0."""
    d = np.asarray(d, dtype=float)
    return np.where(np.abs(d) < 3.0, np.sinc(d) * np.sinc(d / 3.0), 0.0)


def lanczos3_weights(t):
    """Normalised weights (..., 6) of the taps ``floor + TAPS`` for fractional offsets t in [0, 1)."""
    w = lanczos3(np.asarray(t, dtype=float)[..., None] - TAPS)
    return w / w.sum(axis=-1, keepdims=True)


def remap(image, spline_x, spline_y, shape_out, *, variance=None, mask=None, conserve_flux=True,
          bad_bits=0, nodata_bit=0, mask_weight=0.05, min_weight=0.5):
    """Resample ``image`` onto ``shape_out`` with input position ``(spline_x, spline_y).ev(y, x)``.

    Parameters
    ----------
    image : ndarray (ny, nx)
        Input values.
    spline_x, spline_y : `~scipy.interpolate.RectBivariateSpline`
        Input x and y [px] as functions of (output y, output x) [px].
    shape_out : tuple of int
        ``(ny, nx)`` of the output.
    variance, mask : ndarray, optional
        Input variance and integer mask.
    conserve_flux : bool, optional
        Multiply by the Jacobian determinant (and the variance by its square).
    bad_bits, nodata_bit : int, optional
        Mask bits that exclude a tap; the bit for non-finite taps, NaN and off-image outputs.
    mask_weight, min_weight : float, optional
        Taps with ``|w| > mask_weight`` pass their bits on; fewer good weight than ``min_weight`` gives NaN.

    Returns
    -------
    image, variance, mask, footprint : ndarray
        float64, float64 or None, int64 or None, bool.
    """
    ny, nx = image.shape
    yo, xo = np.mgrid[0:shape_out[0], 0:shape_out[1]].astype(float)
    yo, xo = yo.ravel(), xo.ravel()
    X, Y = spline_x.ev(yo, xo), spline_y.ev(yo, xo)
    jac = np.abs(spline_x.ev(yo, xo, dy=1) * spline_y.ev(yo, xo, dx=1)
                 - spline_x.ev(yo, xo, dx=1) * spline_y.ev(yo, xo, dy=1))
    if not conserve_flux:
        jac = np.ones_like(jac)
    inside = (X >= -0.5) & (X <= nx - 0.5) & (Y >= -0.5) & (Y <= ny - 0.5)
    Xs, Ys = np.where(inside, X, 0.0), np.where(inside, Y, 0.0)
    x0, y0 = np.floor(Xs), np.floor(Ys)
    w = lanczos3_weights(Ys - y0)[:, :, None] * lanczos3_weights(Xs - x0)[:, None, :]   # (n, 6 rows, 6 cols)
    xx = x0.astype(int)[:, None, None] + TAPS[None, None, :]
    yy = y0.astype(int)[:, None, None] + TAPS[None, :, None]
    on = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
    xc, yc = np.clip(xx, 0, nx - 1), np.clip(yy, 0, ny - 1)
    v = np.asarray(image, dtype=float)[yc, xc]
    finite = np.isfinite(v)
    vv = None
    if variance is not None:
        vv = np.asarray(variance, dtype=float)[yc, xc]
        finite &= np.isfinite(vv)
    bits = np.where(finite, 0, nodata_bit)
    good = on & finite
    if mask is not None:
        m = np.asarray(mask).astype(np.int64)[yc, xc]
        bits = bits | m
        good &= (m & bad_bits) == 0
    bits = np.where(on & (np.abs(w) > mask_weight), bits, 0)
    mo = np.bitwise_or.reduce(bits.reshape(len(X), -1), axis=1)
    wg = np.where(good, w, 0.0)
    wsum = wg.sum(axis=(1, 2))
    ok = inside & (wsum >= min_weight)
    safe = np.where(ok, wsum, 1.0)
    out = np.where(ok, (wg * np.where(good, v, 0.0)).sum(axis=(1, 2)) / safe * jac, np.nan)
    var_out = None
    if variance is not None:
        var_out = np.where(ok, (wg**2 * np.where(good, vv, 0.0)).sum(axis=(1, 2)) / safe**2 * jac**2, np.nan)
        var_out = var_out.reshape(shape_out)
    mo = np.where(ok, mo, mo | nodata_bit)
    mo = np.where(inside, mo, nodata_bit)
    return (out.reshape(shape_out), var_out, None if mask is None else mo.reshape(shape_out),
            inside.reshape(shape_out))
