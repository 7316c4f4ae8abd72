"""Robust (sigma-clipped) statistics for calibration: stacking frames and overscan rows.

`clipped_stack` combines a stack of images pixel by pixel (master bias and flat frames, co-adds);
`clipped_rows` reduces each row of a 2-D array (the overscan strip of a raw amplifier); `robust_sigma`
is the NaN-ignoring 1.4826 MAD scale. The clipping gives the survivors of `astropy.stats.sigma_clip`:
iterative rejection about the median with a robust scale, separate lower and upper limits, at most
``maxiters`` rounds, stopping early when a round rejects nothing, and the survivors are the values
inside the last interval; NaN and inf count as masked.

The loops run in compiled code (`ztfsds._ext._stats`) without the GIL; ``workers > 1`` splits the rows
across threads. Inputs are converted once to C-contiguous float32 (no copy when they already are).
"""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ztfsds._ext import _stats
from ztfsds._ext.reference import MAD_TO_STD, nanmedian_axis0
from ztfsds.errors import ConfigError

__all__ = ["StackResult", "RowStats", "clipped_stack", "clipped_rows", "robust_sigma"]

_CENFUNCS = ("median", "mean")
_STDFUNCS = ("mad_std", "std")
_COMBINES = ("mean", "median")
_MAX_FRAMES = np.iinfo(np.int16).max


@dataclass(frozen=True)
class StackResult:
    """The combination of a stack of images, pixel by pixel.

    Attributes
    ----------
    data : `numpy.ndarray` of float32, shape (ny, nx)
        Mean (or weighted mean, or median) of the values that survived clipping, in the units of the
        input; NaN where none survived.
    std : `numpy.ndarray` of float32, shape (ny, nx)
        Population standard deviation of the survivors (unweighted), in the units of the input; NaN
        where none survived. It is the scatter of one frame, not the error of the combined value.
    nused : `numpy.ndarray` of int16, shape (ny, nx)
        Number of frames that survived clipping.
    """

    data: np.ndarray
    std: np.ndarray
    nused: np.ndarray


@dataclass(frozen=True)
class RowStats:
    """Clipped statistics of each row of a 2-D array.

    Attributes
    ----------
    data : `numpy.ndarray` of float32, shape (nrows,)
        Median (or mean) of each row's surviving values, in the units of the input; NaN where none
        survived.
    std : `numpy.ndarray` of float32, shape (nrows,)
        Population standard deviation of each row's survivors.
    nused : `numpy.ndarray` of int32, shape (nrows,)
        Number of values per row that survived clipping.
    """

    data: np.ndarray
    std: np.ndarray
    nused: np.ndarray


def clipped_stack(cube, *, sigma_lower: float = 3.0, sigma_upper: float = 3.0,
                  maxiters: int | None = 5, cenfunc: str = "median", stdfunc: str = "mad_std",
                  combine: str = "mean", weights=None, workers: int = 1) -> StackResult:
    """Sigma-clip a stack of images along its first axis and combine the survivors.

    Each pixel's ``N`` values are clipped independently: values below ``centre - sigma_lower * scale``
    or above ``centre + sigma_upper * scale`` are rejected, the centre and scale recomputed from the
    survivors, and so on until a round rejects nothing (or everything left) or ``maxiters`` rounds were
    done. The survivors are then all the values inside the last interval, which can bring back a value
    rejected in an early round: this is what `astropy.stats.sigma_clip` returns. NaN and inf are
    masked from the start.

    Parameters
    ----------
    cube : array-like, shape (N, ny, nx)
        The frames, any real dtype (converted once to float32), or a sequence of N 2-D frames.
        Masked values of a `numpy.ma.MaskedArray` count as NaN.
    sigma_lower, sigma_upper : float, optional
        Rejection limits below and above the centre, in units of the scale; must be > 0
        (``numpy.inf`` disables one side).
    maxiters : int or None, optional
        Maximum number of rejection rounds (0: no clipping; None: until nothing more is rejected).
    cenfunc : {'median', 'mean'}, optional
        Centre of the clipping interval.
    stdfunc : {'mad_std', 'std'}, optional
        Scale: 1.4826 times the median absolute deviation about the median, or the standard deviation.
    combine : {'mean', 'median'}, optional
        How the survivors are combined.
    weights : array-like of shape (N,), optional
        Non-negative per-frame weights for a weighted mean of the survivors (``combine='mean'`` only).
    workers : int, optional
        Number of threads; rows are split between them. The result does not depend on it.

    Returns
    -------
    result : `StackResult`
        Combined image (float32), standard deviation of the survivors (float32) and number of
        survivors (int16) per pixel.

    Raises
    ------
    ValueError
        If ``cube`` is not 3-D, has no frame, more than 32767 frames, or a non-real dtype.
    ztfsds.errors.ConfigError
        If an option is invalid (a `ValueError` too).

    Examples
    --------
    >>> import numpy as np
    >>> cube = np.full((5, 2, 2), 10.0, dtype=np.float32)
    >>> cube[2, 0, 0] = 1000.0          # a cosmic ray in frame 2
    >>> res = clipped_stack(cube)
    >>> float(res.data[0, 0]), int(res.nused[0, 0])
    (10.0, 4)
    """
    cube = _as_float32(cube, "cube")
    if cube.ndim != 3:
        raise ValueError(f"cube must be 3-D (N, ny, nx), got {cube.ndim}-D array of shape {cube.shape}")
    nframe, ny, nx = cube.shape
    if nframe < 1:
        raise ValueError(f"cube must hold at least one frame, got shape {cube.shape}")
    if nframe > _MAX_FRAMES:
        raise ValueError(f"cube holds {nframe} frames; at most {_MAX_FRAMES} are supported")
    opts = _clip_options(sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc, combine, workers)
    if weights is None:
        w = np.empty(0, dtype=np.float64)
    else:
        if combine != "mean":
            raise ConfigError(f"weights apply to combine='mean' only, got combine={combine!r}")
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if w.shape != (nframe,):
            raise ValueError(f"weights must have shape ({nframe},) (one per frame), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
    data = np.empty((ny, nx), dtype=np.float32)
    std = np.empty((ny, nx), dtype=np.float32)
    nused = np.empty((ny, nx), dtype=np.int16)

    def work(y0: int, y1: int) -> None:
        _stats.stack_rows(cube, y0, y1, w, *opts[:-1], data, std, nused)

    _run_rows(work, ny, opts[-1])
    return StackResult(data=data, std=std, nused=nused)


def clipped_rows(array, *, columns: tuple[int, int] | None = None, sigma_lower: float = 3.0,
                 sigma_upper: float = 3.0, maxiters: int | None = 5, cenfunc: str = "median",
                 stdfunc: str = "mad_std", combine: str = "median", workers: int = 1) -> RowStats:
    """Sigma-clip each row of a 2-D array and combine it (the overscan-row operation).

    The clipping is that of `clipped_stack`, applied to the values ``array[r, c0:c1]`` of each row.

    Parameters
    ----------
    array : array-like, shape (nrows, ncols)
        The data, any real dtype (converted once to float32); NaN/inf and masked values are ignored.
    columns : (int or None, int or None), optional
        Use only columns ``c0:c1`` (for the overscan strip of a raw amplifier image); default: all.
        As in a slice, negative indices count from the end and None means the start or the end.
    sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc, workers
        As in `clipped_stack`.
    combine : {'median', 'mean'}, optional
        How each row's survivors are combined.

    Returns
    -------
    result : `RowStats`
        Per-row combined value (float32), standard deviation of the survivors (float32) and number of
        survivors (int32).

    Raises
    ------
    ValueError
        If ``array`` is not 2-D, or ``columns`` selects no column.
    ztfsds.errors.ConfigError
        If an option is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> strip = np.array([[1.0, 2.0, 3.0, 50.0], [4.0, 4.0, 5.0, 4.0]])
    >>> clipped_rows(strip).data.tolist()
    [2.0, 4.0]
    """
    array = _as_float32(array, "array")
    if array.ndim != 2:
        raise ValueError(f"array must be 2-D (nrows, ncols), got {array.ndim}-D array of shape "
                         f"{array.shape}")
    nrows, ncols = array.shape
    if columns is None:
        c0, c1 = 0, ncols
    else:
        if (not isinstance(columns, (tuple, list)) or len(columns) != 2
                or not all(c is None or isinstance(c, numbers.Integral) for c in columns)):
            raise ValueError(f"columns must be a pair of integers (c0, c1), got {columns!r}")
        c0, c1, _ = slice(*columns).indices(ncols)
    if c1 <= c0:
        raise ValueError(f"columns {c0}:{c1} select no column of an array with {ncols} columns")
    opts = _clip_options(sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc, combine, workers)
    data = np.empty(nrows, dtype=np.float32)
    std = np.empty(nrows, dtype=np.float32)
    nused = np.empty(nrows, dtype=np.int32)

    def work(r0: int, r1: int) -> None:
        _stats.clip_rows(array, r0, r1, c0, c1, *opts[:-1], data, std, nused)

    _run_rows(work, nrows, opts[-1])
    return RowStats(data=data, std=std, nused=nused)


def robust_sigma(x, *, axis: int | None = None):
    """Robust standard deviation: 1.4826 times the median absolute deviation, ignoring NaN and inf.

    Parameters
    ----------
    x : array-like
        The values.
    axis : int, optional
        Axis along which to compute; default: over all values.

    Returns
    -------
    sigma : float or `numpy.ndarray`
        In the units of ``x`` (float64); NaN where there is no finite value.

    Examples
    --------
    >>> robust_sigma([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    1.482602218505602
    """
    a = np.asarray(x, dtype=np.float64)
    if axis is None:
        a = a[np.isfinite(a)]
        if a.size == 0:
            return math.nan
        med = np.median(a)
        return float(MAD_TO_STD * np.median(np.abs(a - med)))
    a = np.moveaxis(np.where(np.isfinite(a), a, np.nan), axis, 0)
    med = nanmedian_axis0(a)
    return MAD_TO_STD * nanmedian_axis0(np.abs(a - med))


def _as_float32(x, name: str) -> np.ndarray:
    """Convert to a C-contiguous float32 array once (no copy when it already is one)."""
    if isinstance(x, np.ma.MaskedArray):
        x = np.ma.filled(x.astype(np.float32), np.nan)
    elif isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) >= 1:
        x = np.stack(x)     # a sequence of frames
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _clip_options(sigma_lower, sigma_upper, maxiters, cenfunc, stdfunc, combine, workers) -> tuple:
    """Validate the clip options once; return the kernel's positional arguments plus ``workers``."""
    for name, value in (("sigma_lower", sigma_lower), ("sigma_upper", sigma_upper)):
        if not isinstance(value, numbers.Real) or not value > 0:
            raise ConfigError(f"{name} must be a number > 0, got {value!r}")
    if maxiters is None:
        niter = -1
    elif isinstance(maxiters, numbers.Integral) and not isinstance(maxiters, bool) and \
            0 <= maxiters <= np.iinfo(np.int32).max:
        niter = int(maxiters)
    else:
        raise ConfigError(f"maxiters must be an integer >= 0 or None, got {maxiters!r}")
    if cenfunc not in _CENFUNCS:
        raise ConfigError(f"cenfunc must be one of {_CENFUNCS}, got {cenfunc!r}")
    if stdfunc not in _STDFUNCS:
        raise ConfigError(f"stdfunc must be one of {_STDFUNCS}, got {stdfunc!r}")
    if combine not in _COMBINES:
        raise ConfigError(f"combine must be one of {_COMBINES}, got {combine!r}")
    if not isinstance(workers, numbers.Integral) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    return (float(sigma_lower), float(sigma_upper), niter, cenfunc == "mean", stdfunc == "std",
            combine == "median", int(workers))


def _run_rows(work: Callable[[int, int], None], nrows: int, workers: int) -> None:
    """Call ``work(r0, r1)`` over row ranges covering ``0:nrows``, on ``workers`` threads.

    The kernels release the GIL, so the threads run in parallel; each range writes disjoint rows.
    """
    if workers == 1 or nrows < 2:
        work(0, nrows)
        return
    # a few ranges per thread balance rows that need more rejection rounds than others
    nchunk = min(nrows, 4 * workers)
    edges = np.linspace(0, nrows, nchunk + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]:
            future.result()
