"""The floating bias: the per-row bias level measured in a quadrant's overscan strip.

IPAC's correction: a clipped robust statistic of each row of the serial overscan (columns 5-25 of
30, away from the trail of the last pixel read), then a low-order fit along the rows, so that the
read noise of 20 overscan pixels per row is not printed into the image as row stripes.
"""

from __future__ import annotations

import numpy as np

from ..config import CalibParams
from ..errors import InputError
from ..stats import clipped_rows

__all__ = ["overscan_level"]

#: Rows whose clipped overscan mean is this many robust sigma from the fit are left out of it.
_ROW_CLIP = 4.0


def overscan_level(overscan, params: CalibParams | None = None, *, filename=None) -> np.ndarray:
    """Floating-bias level of each row [DN] from a raw overscan strip.

    Parameters
    ----------
    overscan : array-like, shape (ny, ncol)
        The raw overscan strip of one quadrant (science orientation rows, as the quadrant).
    params : `~ztfsds.config.CalibParams`, optional
        ``overscan_columns`` (columns used), ``overscan_clip_sigma`` (clipping of each row) and
        ``overscan_poly_order`` (Legendre order of the fit along rows; 0 is a constant).
    filename : str, optional
        Named in errors.

    Returns
    -------
    numpy.ndarray
        float32 (ny,): the fitted level of each row.

    Raises
    ------
    ztfsds.errors.InputError
        If the strip is not 2-D, has fewer columns than configured, or has no finite value in a
        configured column range of most rows.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> rows = np.arange(200)
    >>> strip = 500.0 + 0.01 * rows[:, None] + rng.normal(0, 1.5, (200, 30))
    >>> level = overscan_level(strip)
    >>> bool(np.all(np.abs(level - (500.0 + 0.01 * rows)) < 0.3))
    True
    """
    params = params or CalibParams()
    strip = np.asarray(overscan)
    c0, c1 = params.overscan_columns
    if strip.ndim != 2 or strip.shape[1] < c1:
        raise InputError(filename, f"overscan strip has shape {strip.shape}: need 2-D with >= {c1} columns")
    rows = clipped_rows(strip, columns=(c0, c1), sigma_lower=params.overscan_clip_sigma,
                        sigma_upper=params.overscan_clip_sigma, combine="mean")
    level = rows.data.astype(np.float64)
    good = np.isfinite(level) & (rows.nused > 0)
    ny = len(level)
    if good.sum() < max(params.overscan_poly_order + 2, ny // 2):
        raise InputError(filename, f"overscan strip: only {int(good.sum())} of {ny} rows have valid pixels")
    t = np.linspace(-1.0, 1.0, ny)
    order = params.overscan_poly_order
    for _ in range(5):
        coef = np.polynomial.legendre.legfit(t[good], level[good], order)
        fit = np.polynomial.legendre.legval(t, coef)
        resid = level - fit
        scale = 1.4826 * np.median(np.abs(resid[good])) or 1e-6
        keep = good & (np.abs(resid) < _ROW_CLIP * scale)
        if np.array_equal(keep, good) or keep.sum() <= order + 1:
            break
        good = keep
    return fit.astype(np.float32)
