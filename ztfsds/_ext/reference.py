"""Pure-numpy reference implementations of the compiled kernels in `ztfsds._ext`.

Each function computes what one kernel computes, vectorised over the whole array and written for
clarity, not speed. The tests compare kernel and reference on random input; the benchmarks time the
reference as the "numpy" peer. Everything here works in float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_STD", "nanmedian_axis0", "sigma_clip_axis0", "clipped_stack", "clipped_rows"]

#: 1 / Phi^-1(3/4): converts a median absolute deviation to a Gaussian sigma (as astropy's mad_std).
MAD_TO_STD = 1.482602218505602


def nanmedian_axis0(x: np.ndarray) -> np.ndarray:
    """Median along axis 0 ignoring NaN, NaN where a column has no finite value.

    Written out (sort, then the mean of the two middle values as ``0.5 * (a + b)``) so that the result is
    bit-for-bit what the kernel computes.
    """
    s = np.sort(x, axis=0)                      # NaN sort last
    n = np.isfinite(s).sum(axis=0)
    lo = np.clip((n - 1) // 2, 0, None)[None]
    hi = np.clip(n // 2, 0, x.shape[0] - 1)[None]
    a = np.take_along_axis(s, lo, axis=0)[0]
    b = np.take_along_axis(s, hi, axis=0)[0]
    med = np.where(n % 2 == 1, a, 0.5 * (a + b))
    return np.where(n > 0, med, np.nan)


def sigma_clip_axis0(x, *, sigma_lower=3.0, sigma_upper=3.0, maxiters=5, cenfunc="median",
                     stdfunc="mad_std"):
    """Sigma clipping along axis 0, as astropy's sigma_clip; returns float64 data, NaN where rejected.

    Non-finite inputs count as masked. Each round computes the interval from the survivors of the
    previous round and rejects what lies outside; a column stops changing once a round rejects nothing
    in it (or rejects all that is left). The loop ends when no column changes or after ``maxiters``
    rounds (``None``: until convergence). The survivors are then all the values inside each column's
    last interval, also values rejected in an earlier round.
    """
    orig = np.array(x, dtype=np.float64)
    orig[~np.isfinite(orig)] = np.nan
    data = orig.copy()
    lo = np.full(orig.shape[1:], -np.inf)
    hi = np.full(orig.shape[1:], np.inf)
    it = 0
    with np.errstate(invalid="ignore"):
        while maxiters is None or it < maxiters:
            it += 1
            alive = np.isfinite(data).any(axis=0)      # an emptied column keeps its last interval
            med = nanmedian_axis0(data)
            cen = med if cenfunc == "median" else _nanmean0(data)
            if stdfunc == "mad_std":
                scale = MAD_TO_STD * nanmedian_axis0(np.abs(data - med))
            else:
                scale = _nanstd0(data)
            lo = np.where(alive, cen - sigma_lower * scale, lo)
            hi = np.where(alive, cen + sigma_upper * scale, hi)
            reject = (data < lo) | (data > hi)          # False for NaN
            if not reject.any():
                break
            data[reject] = np.nan
        return np.where((orig < lo) | (orig > hi), np.nan, orig)


def _nanmean0(data):
    n = np.isfinite(data).sum(axis=0)
    s = np.where(np.isfinite(data), data, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)


def _nanstd0(data):
    mean = _nanmean0(data)
    n = np.isfinite(data).sum(axis=0)
    d2 = np.where(np.isfinite(data), (data - mean) ** 2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt(d2 / n), np.nan)


def _combine0(clipped, combine, weights):
    if combine == "median":
        value = nanmedian_axis0(clipped)
    elif weights is None:
        value = _nanmean0(clipped)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape((-1,) + (1,) * (clipped.ndim - 1))
        good = np.isfinite(clipped)
        sw = np.where(good, w, 0.0).sum(axis=0)
        swx = np.where(good, w * np.where(good, clipped, 0.0), 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(sw > 0, swx / sw, np.nan)
    return value, _nanstd0(clipped), np.isfinite(clipped).sum(axis=0)


def clipped_stack(cube, *, sigma_lower=3.0, sigma_upper=3.0, maxiters=5, cenfunc="median",
                  stdfunc="mad_std", combine="mean", weights=None):
    """Reference of `ztfsds.stats.clipped_stack`: returns ``(data, std, nused)`` as float64/int arrays."""
    clipped = sigma_clip_axis0(cube, sigma_lower=sigma_lower, sigma_upper=sigma_upper,
                               maxiters=maxiters, cenfunc=cenfunc, stdfunc=stdfunc)
    return _combine0(clipped, combine, weights)


def clipped_rows(array, *, columns=None, sigma_lower=3.0, sigma_upper=3.0, maxiters=5,
                 cenfunc="median", stdfunc="mad_std", combine="median"):
    """Reference of `ztfsds.stats.clipped_rows`: returns ``(data, std, nused)`` per row."""
    a = np.asarray(array)
    if columns is not None:
        a = a[:, columns[0]:columns[1]]
    clipped = sigma_clip_axis0(a.T, sigma_lower=sigma_lower, sigma_upper=sigma_upper,
                               maxiters=maxiters, cenfunc=cenfunc, stdfunc=stdfunc)
    return _combine0(clipped, combine, None)
