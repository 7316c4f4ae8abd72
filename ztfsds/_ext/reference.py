"""Pure-numpy reference implementations of the compiled kernels in `ztfsds._ext`.

Each function computes what one kernel computes, vectorised over the whole array and written for
clarity, not speed. The tests compare kernel and reference on random input; the benchmarks time the
reference as the "numpy" peer. Everything here works in float64, except the calibration passes
(`linear_pass`, `crosstalk_ghost`, `finish_pass`), which repeat the kernels' float32 arithmetic
operation by operation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_STD", "nanmedian_axis0", "sigma_clip_axis0", "clipped_stack", "clipped_rows",
           "linear_pass", "crosstalk_ghost", "finish_pass", "cosmic_ray_mask"]

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


# --------------------------------------------------------------------------------------------------
# Per-exposure calibration (ztfsds._ext._calib)
# --------------------------------------------------------------------------------------------------

def linear_pass(raw, level, bias, a, b, sat_x, ceiling, adc_max):
    """Reference of `_calib.linear_rows`: returns ``(lin, sat)`` (float32, uint8).

    ``x = raw - level[:, None] - bias``, ``lin = x / ((a x + b) x + 1)`` in float32; ``sat`` is 2 where
    ``raw >= adc_max`` or ``x >= ceiling``, else 1 where ``x >= sat_x``, else 0.
    """
    f32 = np.float32
    r = np.asarray(raw).astype(f32)
    x = (r - np.asarray(level, f32)[:, None]) - np.asarray(bias, f32)
    sat = np.where((r >= f32(adc_max)) | (x >= f32(ceiling)), 2, (x >= f32(sat_x)).astype(np.uint8))
    sat = sat.astype(np.uint8)
    den = (f32(a) * x + f32(b)) * x + f32(1.0)
    return x / den, sat


def crosstalk_ghost(sources, shape):
    """Reference of `_calib.ghost_rows` summed over sources: the ghost image [DN], float32.

    ``sources`` is a sequence of ``(source, source_sat or None, coef, clip, flip_y, flip_x)``; each adds
    ``coef * min(source', clip)`` with ``source'`` flipped as asked and set to ``clip`` where the
    saturation code is 2.
    """
    f32 = np.float32
    ghost = np.zeros(shape, dtype=f32)
    for source, sat, coef, clip, flip_y, flip_x in sources:
        sl = (slice(None, None, -1 if flip_y else 1), slice(None, None, -1 if flip_x else 1))
        v = np.minimum(np.asarray(source, f32)[sl], f32(clip))
        if sat is not None:
            v = np.where(np.asarray(sat)[sl] == 2, f32(clip), v)
        ghost += f32(coef) * v
    return ghost


def finish_pass(lin, sat, flat, bpm, ghost, inv_gain, rn2, ghost_k2, bleed_lin, sat_bit, ghost_bit,
                nan_bit):
    """Reference of `_calib.finish_rows`: returns ``(sci, var, mask, fmax)`` (float32, float32, int16,
    float).

    ``ghost`` may be None (no crosstalk removal).
    """
    f32 = np.float32
    lin = np.asarray(lin, f32)
    if ghost is not None:
        lin = lin - np.asarray(ghost, f32)
    flat = np.asarray(flat, f32)
    good = (np.asarray(bpm) == 0) & (flat > 0)
    fmax = float(flat[good].max()) if good.any() else 0.0
    sat = np.asarray(sat) != 0
    v = np.where(lin > 0, lin, f32(0.0)) * f32(inv_gain) + f32(rn2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sci = lin / flat
        var = v / (flat * flat)
    up = np.vstack([sat[:1], sat[:-1]])
    down = np.vstack([sat[1:], sat[-1:]])
    mask = np.array(bpm, dtype=np.int16)
    mask[sat | ((up | down) & (lin >= f32(bleed_lin)))] |= np.int16(sat_bit)
    if ghost is not None:
        g = np.asarray(ghost, f32)
        mask[(g > 0) & (g * g > f32(ghost_k2) * v)] |= np.int16(ghost_bit)
    bad = ~((flat > 0) & np.isfinite(sci) & np.isfinite(var))
    sci[bad] = np.nan
    var[bad] = np.nan
    mask[bad] |= np.int16(nan_bit)
    return sci, var, mask, fmax


def _windows(img, radius):
    """The (2 radius + 1)^2 shifted copies of an image reflected at its edges, as (dy, dx, shifted)."""
    pad = np.pad(img, radius, mode="reflect")
    ny, nx = img.shape
    return [(dy, dx, pad[radius + dy:radius + dy + ny, radius + dx:radius + dx + nx])
            for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def cosmic_ray_mask(sci, var, mask, skip_self, skip_near, sigma, contrast, margin, grow_sigma):
    """Reference of `_calib.cosmic_ray_rows` + `cosmic_ray_grow_rows`: returns ``(hits, flagged)`` bool.

    ``hits`` are the pixels that pass the test; ``flagged`` adds the pixels the hits grow into. See the
    notes of `ztfsds._ext._calib` for the definition (images of at least 3 x 3 pixels).
    """
    sci = np.asarray(sci, np.float32)
    sci64 = sci.astype(np.float64)
    var = np.asarray(var, np.float32).astype(np.float64)
    mask = np.asarray(mask, np.int16)
    win = _windows(sci64, 2)
    finite = np.all([np.isfinite(w) for _, _, w in win], axis=0)
    cheb = [max(abs(dy), abs(dx)) for dy, dx, _ in win]
    with np.errstate(invalid="ignore"):
        nb = np.sort(np.stack([w for (_, _, w), d in zip(win, cheb) if d == 1]), axis=0)
        m = 0.5 * (nb[3] + nb[4])
        rs = np.sort(np.stack([w for (_, _, w), d in zip(win, cheb) if d == 2]), axis=0)
        b = 0.5 * (rs[7] + rs[8])
        near_bad = np.any([(w & np.int16(skip_near)) != 0 for _, _, w in _windows(mask, 1)], axis=0)
        free = (mask & np.int16(skip_self)) == 0
        d = sci64 - m
        sharp = d > contrast * (m - b + margin * np.sqrt(var))
        hits = free & finite & ~near_bad & (d > 0) & (d * d > sigma * sigma * var) & (sci64 >= nb[6]) & sharp
        # (reflected across an edge, a hit's neighbour is one of its real neighbours)
        touch = np.any([w for _, _, w in _windows(hits.astype(np.uint8), 1)], axis=0)
        grown = free & finite & touch & (d > 0) & (d * d > grow_sigma * grow_sigma * var) & sharp
    return hits, hits | grown
