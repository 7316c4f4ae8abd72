"""Pure-numpy reference implementations of the compiled kernels in `ztfsds._ext`.

Each function computes what one kernel computes, vectorised over the whole array and written for
clarity, not speed. The tests compare kernel and reference on random input; the benchmarks time the
reference as the "numpy" peer. Everything here works in float64, except the calibration passes
(`linear_pass`, `crosstalk_ghost`, `finish_pass`), which repeat the kernels' float32 arithmetic
operation by operation. The source-extraction references (`classify_pixels` to `measure_sources`, for
`ztfsds._ext._extract`) sum in the kernels' order (`numpy.cumsum` is sequential) so that they agree
with them to rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_STD", "nanmedian_axis0", "sigma_clip_axis0", "clipped_stack", "clipped_rows",
           "linear_pass", "crosstalk_ghost", "finish_pass", "cosmic_ray_mask", "classify_pixels",
           "background_cells", "spline_rows", "detection_image", "label_components", "deblend",
           "measure_sources"]

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


# --------------------------------------------------------------------------------------------------
# Source extraction (ztfsds._ext._extract); definitions in the notes of ztfsds.astrom.extraction
# --------------------------------------------------------------------------------------------------

#: pixel codes of `classify_pixels`
EXCLUDED, BKG_EXCLUDED, SATURATED = 1, 2, 4


def _seqsum(a):
    """Sum in index order (as a C loop), 0 for no value."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(np.cumsum(a)[-1]) if a.size else 0.0


def classify_pixels(sci, mask, det_bits, bkg_bits, sat_bits, saturate):
    """Reference of `_extract.classify_rows`: uint8 codes EXCLUDED | BKG_EXCLUDED | SATURATED.

    ``mask`` may be None; ``saturate`` None means no level.
    """
    sci = np.asarray(sci, np.float32)
    finite = np.isfinite(sci)
    code = np.where(finite, 0, EXCLUDED | BKG_EXCLUDED).astype(np.uint8)
    if saturate is not None:
        with np.errstate(invalid="ignore"):
            code[sci >= np.float32(saturate)] |= SATURATED      # +inf too
    if mask is not None:
        m = np.asarray(mask).astype(np.int64)
        code[(m & det_bits) != 0] |= EXCLUDED
        code[(m & bkg_bits) != 0] |= BKG_EXCLUDED
        code[(m & sat_bits) != 0] |= SATURATED
    return code


def _cell_mode(v):
    """(level, rms) of one cell's good values: mean +- 2 sigma clip, then 3-sigma clipping about the
    median on a histogram of mean +- 5 sigma (SExtractor's backstat + backguess)."""
    v = np.asarray(v, np.float32).astype(np.float64)
    n = v.size
    shift = v[0]
    d = v - shift
    mean = _seqsum(d) / n
    t = _seqsum(d * d) / n - mean * mean
    std = np.sqrt(t) if t > 0 else 0.0
    mean += shift
    keep = (v >= mean - 2.0 * std) & (v <= mean + 2.0 * std)
    cnt = int(keep.sum())
    if cnt == 0:
        return mean, std
    d = v[keep] - shift
    m0 = _seqsum(d) / cnt
    t = _seqsum(d * d) / cnt - m0 * m0
    s0 = np.sqrt(t) if t > 0 else 0.0
    m0 += shift
    if not s0 > 0:
        return m0, 0.0
    nlev = min(n + 1, 4096)
    qscale = 10.0 * s0 / nlev
    qzero = m0 - 5.0 * s0
    tt = (v - qzero) * (1.0 / qscale)
    inside = (tt >= 0) & (tt < nlev)
    hist = np.bincount(tt[inside].astype(np.int64), minlength=nlev).astype(np.float64)
    lcut, hcut = 0, nlev - 1
    sig, sig_prev = 10.0 * nlev, 1.0
    mea = med = 0.5 * nlev
    for _ in range(100):
        if not (sig >= 0.1 and abs(sig / sig_prev - 1.0) > 1e-4):
            break
        sig_prev = sig
        h = hist[lcut:hcut + 1]
        c = np.arange(lcut, hcut + 1) + 0.5
        total = _seqsum(h)
        if total <= 0:
            break
        mea = _seqsum(h * c) / total
        t = _seqsum(h * c * c) / total - mea * mea
        sig = np.sqrt(t) if t > 0 else 0.0
        half = 0.5 * total
        cum = np.cumsum(h)
        b = int(np.argmax(cum >= half))      # first bin where the cumulative count reaches half
        below = cum[b - 1] if b > 0 else 0.0
        med = lcut + b + (half - below) / h[b]
        lo, hi = np.floor(med - 3.0 * sig + 0.5), np.floor(med + 3.0 * sig + 0.5)
        lcut = int(lo) if lo > 0 else 0
        hcut = int(hi) if hi < nlev - 1 else nlev - 1
    mode = 2.5 * med - 1.5 * mea if (sig > 0 and abs(mea - med) < 0.3 * sig) else med
    return qzero + mode * qscale, sig * qscale


def background_cells(sci, code, mesh, min_good_frac):
    """Reference of `_extract.cell_stats`: ``(level, rms, ngood)`` of each cell (mesh x mesh pixels, the
    last row and column of cells extended to the edge when the remainder is under half a mesh)."""
    sci = np.asarray(sci, np.float32)
    ny, nx = sci.shape

    def edges(n):
        full, rest = divmod(n, mesh)
        k = max(1, full + (rest >= mesh / 2))     # a remainder under half a cell joins the last cell
        return [(i * mesh, n if i == k - 1 else (i + 1) * mesh) for i in range(k)]

    rows, cols = edges(ny), edges(nx)
    level = np.full((len(rows), len(cols)), np.nan)
    rms = np.full((len(rows), len(cols)), np.nan)
    ngood = np.zeros((len(rows), len(cols)), np.int32)
    for by, (y0, y1) in enumerate(rows):
        for bx, (x0, x1) in enumerate(cols):
            cell = sci[y0:y1, x0:x1]
            good = (np.asarray(code)[y0:y1, x0:x1] & BKG_EXCLUDED) == 0
            vals = cell[good]
            ngood[by, bx] = vals.size
            if vals.size == 0 or vals.size < min_good_frac * cell.size:
                continue
            level[by, bx], rms[by, bx] = _cell_mode(vals)
    return level, rms, ngood


def spline_rows(val, d2, seg, w):
    """Reference of `_extract.spline_rows` (all rows; ``w`` is (4, nx)), float64."""
    val, d2, w = np.asarray(val), np.asarray(d2), np.asarray(w)
    return w[0] * val[:, seg] + w[1] * val[:, seg + 1] + w[2] * d2[:, seg] + w[3] * d2[:, seg + 1]


def detection_image(sub, kernel, rms, code, inv_norm):
    """Reference of `_extract.detection_rows` with a 2-D kernel (an outer product for the separable
    case): the zero-padded correlation times ``inv_norm / rms``, 0 on EXCLUDED pixels or rms <= 0."""
    from scipy import ndimage

    filt = ndimage.correlate(np.asarray(sub, np.float64), np.asarray(kernel, np.float64), mode="constant")
    rms = np.asarray(rms, np.float64)
    ok = ((np.asarray(code) & EXCLUDED) == 0) & (rms > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, filt * inv_norm / np.where(ok, rms, 1.0), 0.0)


def label_components(det, thresh, min_area):
    """Reference of `_extract.label`: the int32 map of the 8-connected components of
    ``det >= thresh`` with at least ``min_area`` pixels, numbered from 1 in raster order of their
    first pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(np.asarray(det) >= np.float32(thresh), structure=np.ones((3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_area
    keep[0] = False
    # renumber the kept components by their first pixel in raster order
    flat = lab.ravel()
    first = np.full(n + 1, flat.size)
    np.minimum.at(first, flat, np.arange(flat.size))
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(first[kept])]
    newid = np.zeros(n + 1, np.int32)
    newid[order] = np.arange(1, len(order) + 1)
    return newid[lab]


def deblend(det, sub, rms, segm, thresh, nthresh, mincont, minrise, s2):
    """Reference of `_extract.deblend`: ``(objects, blended)``.

    ``segm`` is a `label_components` map; ``objects`` lists, per object, the flat indices (raster
    order) of its pixels, component after component (the objects of a split component in no
    particular order); ``blended`` says whether each came from a split component. Each level's parts
    are found anew with `scipy.ndimage.label`: first on ``det``, then each part on ``sub / rms`` with
    the ``minrise`` criterion.
    """
    from scipy import ndimage

    det = np.asarray(det, np.float32)
    rms = np.asarray(rms, np.float32)
    sub = np.asarray(sub, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        # float32 division, as the kernel
        raw = np.where(rms > 0, sub / np.where(rms > 0, rms, np.float32(1)), np.float32(0)).astype(np.float64)
    segm = np.asarray(segm)
    objects, blended = [], []
    for comp in range(1, int(segm.max()) + 1 if segm.size else 1):
        idx = np.flatnonzero(segm.ravel() == comp)
        first = _split_component(det.astype(np.float64), idx, thresh, nthresh, mincont, 0.0, s2, ndimage)
        parts = []
        for part in first:
            parts += _split_component(raw, np.sort(part), thresh, nthresh, mincont, minrise, s2, ndimage)
        for p in parts:
            objects.append(np.sort(p))
            blended.append(len(parts) > 1)
    return objects, np.array(blended, bool)


def _split_component(img, idx, thresh, nthresh, mincont, minrise, s2, ndimage):
    """The parts (arrays of flat indices) of the pixels ``idx`` (raster order) of ``img``."""
    ny, nx = img.shape
    member = np.zeros(img.shape, bool)
    member.ravel()[idx] = True
    v = img.ravel()[idx]
    peak = float(np.float32(v.max()))
    if len(idx) < 2 or nthresh < 2 or not peak > thresh * (1.0 + 1e-9):
        return [idx]
    yy, xx = np.unravel_index(idx, img.shape)
    # two local maxima at least minrise above the threshold are needed
    nmax = 0
    for y, x, val in zip(yy, xx, v):
        if val < thresh + minrise:
            continue
        y0, y1, x0, x1 = max(y - 1, 0), min(y + 2, ny), max(x - 1, 0), min(x + 2, nx)
        nmax += not (member[y0:y1, x0:x1] & (img[y0:y1, x0:x1] > val)).any()
    if nmax < 2:
        return [idx]
    v = v.astype(np.float32).astype(np.float64)      # the kernel sorts and levels float32 values
    lnratio = np.log(peak / thresh)
    with np.errstate(divide="ignore", invalid="ignore"):
        lev = np.where(v > thresh, np.floor(nthresh * np.log(v / thresh) / lnratio), 0)
    lev = np.minimum(lev, nthresh - 1).astype(int)
    ys, xs = yy.min(), xx.min()
    box = np.zeros((yy.max() - ys + 1, xx.max() - xs + 1), bool)
    nodes = []          # [level, members (bool over idx), sum, npix, parent, peak]
    node_lab = {}
    for L in range(nthresh - 1, -1, -1):
        box[:] = False
        above = lev >= L
        box[yy[above] - ys, xx[above] - xs] = True
        lab, n = ndimage.label(box, structure=np.ones((3, 3), bool))
        labs = np.where(above, lab[yy - ys, xx - xs], 0)
        node_lab[L] = (labs, len(nodes))
        for k in range(1, n + 1):
            mem = labs == k
            nodes.append([L, mem, _seqsum(v[mem]), int(mem.sum()), -1, float(v[mem].max())])
    for nd in nodes:
        if nd[0] > 0:
            labs, first = node_lab[nd[0] - 1]
            nd[4] = first + labs[np.argmax(nd[1])] - 1
    if max(sum(1 for nd in nodes if nd[0] == L) for L in range(nthresh)) < 2:
        return [idx]
    value0 = mincont * nodes[-1][2]
    nsig = [0] * len(nodes)
    ok = [True] * len(nodes)
    mark = [False] * len(nodes)
    for L in range(nthresh - 2, -1, -1):
        tk = thresh * np.exp(lnratio * (L + 1) / nthresh)
        children = [i for i, nd in enumerate(nodes) if nd[0] == L + 1]
        sig = {i: nodes[i][2] - tk * nodes[i][3] > value0 and nodes[i][5] - tk >= minrise for i in children}
        for i in children:
            nsig[nodes[i][4]] += sig[i]
            ok[nodes[i][4]] &= ok[i]
        for i in children:
            if nsig[nodes[i][4]] > 1 and ok[i] and sig[i]:
                mark[i] = True
        for i, nd in enumerate(nodes):
            if nd[0] == L and nsig[i] > 1:
                ok[i] = False
    if ok[-1]:
        return [idx]
    objs = [i for i in range(len(nodes)) if mark[i]]
    owner = np.full(len(idx), -1)
    for o, i in enumerate(objs):
        owner[nodes[i][1]] = o
    # the rest: the largest Gaussian (weighted moments + s2, normalised to the object's sum)
    x = (xx - xx[0]).astype(np.float64)
    y = (yy - yy[0]).astype(np.float64)
    logp = []
    for o in range(len(objs)):
        m = owner == o
        w = v[m]
        S = _seqsum(w)
        mx, my = _seqsum(w * x[m]) / S, _seqsum(w * y[m]) / S
        cxx = _seqsum(w * x[m] * x[m]) / S - mx * mx + s2
        cyy = _seqsum(w * y[m] * y[m]) / S - my * my + s2
        cxy = _seqsum(w * x[m] * y[m]) / S - mx * my
        det2 = max(cxx * cyy - cxy * cxy, s2 * s2)
        ex, ey = x - mx, y - my
        logp.append(np.log(S) - 0.5 * np.log(det2)
                    - 0.5 * (cyy / det2 * ex * ex + cxx / det2 * ey * ey + 2.0 * (-cxy / det2) * ex * ey))
    rest = owner < 0
    owner[rest] = np.argmax(np.array(logp), axis=0)[rest]
    return [idx[owner == o] for o in range(len(objs))]


def _pixel_values(sub, var, rms, inv_gain, code, segm, own, y, x, yc2, xc2):
    """Values and variances of pixels (y, x) as object ``own`` sees them (mirror replacement);
    returns (valid, neighbour, excluded, off, value, variance)."""
    ny, nx = sub.shape
    y, x = np.asarray(y), np.asarray(x)

    def inside(yy, xx):
        return (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)

    def clean(yy, xx, ins):
        cy, cx = np.where(ins, yy, 0), np.where(ins, xx, 0)
        sg = segm[cy, cx]
        return ins & ((code[cy, cx] & EXCLUDED) == 0) & ((sg == 0) | (sg == own))

    ins = inside(y, x)
    cy, cx = np.where(ins, y, 0), np.where(ins, x, 0)
    c_self = clean(y, x, ins)
    excl = ins & ~c_self & ((code[cy, cx] & EXCLUDED) != 0)
    neigh = ins & ~c_self & ~excl
    my, mx = yc2 - y, xc2 - x
    mins = inside(my, mx)
    c_mirror = clean(my, mx, mins)
    use_mirror = ins & ~c_self & c_mirror
    valid = c_self | use_mirror
    sy, sx = np.where(c_self, y, np.where(use_mirror, my, 0)), np.where(c_self, x, np.where(use_mirror, mx, 0))
    val = sub[sy, sx].astype(np.float64)
    vv = _variance(var, rms, inv_gain, sy, sx, val)
    return valid, neigh, excl, ~ins, val, vv


def _variance(var, rms, inv_gain, y, x, val):
    r = rms[y, x].astype(np.float64)
    bkg = r * r + np.where(val > 0, val * inv_gain, 0.0)
    if var is None:
        return bkg
    v = var[y, x].astype(np.float64)
    return np.where(np.isfinite(v), v, bkg)


def measure_sources(sub, var, rms, inv_gain, code, segm, blended, fthresh, aper_radius, sw_default,
                    sw_min, sw_max, maxiter, minstep):
    """Reference of `_extract.measure`: ``(out, flags)`` for the objects of ``segm`` (numbered from 1).

    ``out`` has the kernel's columns (``_extract.M_*``); ``var`` may be None.
    """
    from . import _extract as K

    sub = np.asarray(sub, np.float32)
    rms = np.asarray(rms, np.float32)
    nobj = int(segm.max()) if segm.size else 0
    out = np.full((nobj, K.N_MEASURE), np.nan)
    flags = np.zeros(nobj, np.int32)
    for j in range(nobj):
        own = j + 1
        py, px = np.nonzero(segm == own)
        out[j], flags[j] = _measure_one(sub, var, rms, inv_gain, code, segm, own, py, px, fthresh,
                                        aper_radius, sw_default, sw_min, sw_max, maxiter, minstep, K)
        if blended[j]:
            flags[j] |= K.F_BLENDED
    return out, flags


def _measure_one(sub, var, rms, inv_gain, code, segm, own, py, px, fthresh, R, sw_default, sw_min,
                 sw_max, maxiter, minstep, K):
    ny, nx = sub.shape
    o = np.full(K.N_MEASURE, np.nan)
    f = 0
    n = len(py)
    x0, y0 = float(px[0]), float(py[0])
    I = sub[py, px].astype(np.float64)
    V = _variance(var, rms, inv_gain, py, px, I)
    dx, dy = px - x0, py - y0
    S = _seqsum(I)
    k = int(np.argmax(I))
    peak, xpk, ypk = I[k], px[k], py[k]
    if np.any(code[py, px] & SATURATED):
        f |= K.F_SATURATED
    if np.any((py == 0) | (py == ny - 1) | (px == 0) | (px == nx - 1)):
        f |= K.F_TRUNCATED
    pad = np.pad((np.asarray(code) & EXCLUDED) != 0, 1)
    if any(pad[py + 1 + a, px + 1 + b].any() for a in (-1, 0, 1) for b in (-1, 0, 1)):
        f |= K.F_INCOMPLETE
    ok = S > 0
    if ok:
        mx, my = _seqsum(I * dx) / S, _seqsum(I * dy) / S
        x2 = _seqsum(I * dx * dx) / S - mx * mx
        y2 = _seqsum(I * dy * dy) / S - my * my
        xy = _seqsum(I * dx * dy) / S - mx * my
        ok = x2 >= 0 and y2 >= 0
    if not ok:
        mx, my = _seqsum(dx) / n, _seqsum(dy) / n
        x2 = _seqsum(dx * dx) / n - mx * mx
        y2 = _seqsum(dy * dy) / n - my * my
        xy = _seqsum(dx * dy) / n - mx * my
    if x2 * y2 - xy * xy < 1.0 / 144.0:
        x2 += 1.0 / 12.0
        y2 += 1.0 / 12.0
    xiso, yiso = x0 + mx, y0 + my
    ddx, ddy = px - xiso, py - yiso
    ex2, ey2, exy = _seqsum(V * ddx * ddx), _seqsum(V * ddy * ddy), _seqsum(V * ddx * ddy)
    if S > 0:
        ex2, ey2, exy = ex2 / (S * S), ey2 / (S * S), exy / (S * S)
    else:
        ex2 = ey2 = exy = np.nan
    # FWHM (SExtractor's FWHM_IMAGE)
    lev0 = max(peak / 5.0, fthresh * float(rms[ypk, xpk]))
    use = (I > lev0) & (lev0 > 0) & ((code[py, px] & SATURATED) == 0)
    d2 = ddx * ddx + ddy * ddy
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(np.where(use, I, 1.0))
    w = I * I
    fs, fsx, fsxx = _seqsum(w[use]), _seqsum((d2 * w)[use]), _seqsum((d2 * d2 * w)[use])
    fsy, fsxy = _seqsum((lg * w)[use]), _seqsum((lg * d2 * w)[use])
    t = fs * fsxx - fsx * fsx
    fwhm = np.nan
    if abs(t) > 0:
        kk = max(-(fs * fsxy - fsx * fsy) / t, 1.0 / (13.0 * np.sqrt(x2 * y2 - xy * xy)))
        fwhm = 1.6651092223153954 / np.sqrt(kk)
        fwhm -= 1.0 / (4.0 * fwhm)
    o[[K.M_FWHM, K.M_X_ISO, K.M_Y_ISO, K.M_X2, K.M_Y2, K.M_XY, K.M_FLUX_ISO, K.M_VAR_ISO, K.M_PEAK,
       K.M_NPIX, K.M_X_PEAK, K.M_Y_PEAK]] = [fwhm, xiso, yiso, x2, y2, xy, S, _seqsum(V), peak, n, xpk, ypk]
    xc2, yc2 = 2 * int(np.floor(xiso + 0.5)), 2 * int(np.floor(yiso + 0.5))
    # aperture and growth curve
    R2 = R * R
    ngrowth = 256
    gscale = ngrowth / R2
    growth = np.zeros(ngrowth)
    Fa = Va = 0.0
    ys = np.arange(int(np.floor(yiso - R + 0.5)), int(np.floor(yiso + R + 0.5)) + 1)
    xs = np.arange(int(np.floor(xiso - R + 0.5)), int(np.floor(xiso + R + 0.5)) + 1)
    for y in ys:
        for x in xs:
            dxp, dyp = x - xiso, y - yiso
            ox, oy = max(abs(dxp) - 0.5, 0.0), max(abs(dyp) - 0.5, 0.0)
            if ox * ox + oy * oy >= R2:
                continue
            valid, neigh, excl, off, val, vv = (a[()] if np.ndim(a) else a for a in _pixel_values(
                sub, var, rms, inv_gain, code, segm, own, np.array(y), np.array(x), yc2, xc2))
            if neigh:
                f |= K.F_NEIGHBOURS
            if excl or off:
                f |= K.F_INCOMPLETE
            if not valid:
                continue
            ox, oy = abs(dxp) + 0.5, abs(dyp) + 0.5
            if ox * ox + oy * oy <= R2:
                Fa += val
                Va += vv
                for a in range(3):
                    sy = dyp + (a - 1) / 3.0
                    for b in range(3):
                        sx = dxp + (b - 1) / 3.0
                        growth[min(int((sx * sx + sy * sy) * gscale), ngrowth - 1)] += val / 9.0
                continue
            cnt = 0
            for a in range(5):
                sy = dyp + (a - 2.0) / 5
                for b in range(5):
                    sx = dxp + (b - 2.0) / 5
                    cnt += (sx * sx + sy * sy) < R2       # (the kernel adds the squares in this order)
            if cnt == 0:
                continue
            fr = cnt / 25.0
            Fa += fr * val
            Va += fr * vv
            growth[min(int((dxp * dxp + dyp * dyp) * gscale), ngrowth - 1)] += fr * val
    o[K.M_FLUX_APER], o[K.M_VAR_APER] = Fa, Va
    r50 = np.nan
    if Fa > 0:
        half, cum = 0.5 * Fa, 0.0
        for g in range(ngrowth):
            if growth[g] > 0 and cum + growth[g] >= half:
                r50 = np.sqrt((g + (half - cum) / growth[g]) / ngrowth * R2)
                break
            cum += growth[g]
    o[K.M_FLUX_RADIUS] = r50
    # windowed centroid
    sw = 2.0 * r50 / 2.3548200450309493 if np.isfinite(r50) else sw_default
    sw = min(max(sw, sw_min), sw_max)
    inv2s2, rad2 = 0.5 / (sw * sw), 16.0 * sw * sw
    xw, yw = xiso, yiso
    converged, Sw, niter = False, 0.0, 0
    E = (0.0, 0.0, 0.0)
    for it in range(maxiter):
        ylo, yhi = int(np.floor(yw - 4 * sw + 0.5)), int(np.floor(yw + 4 * sw + 0.5))
        xlo, xhi = int(np.floor(xw - 4 * sw + 0.5)), int(np.floor(xw + 4 * sw + 0.5))
        gy, gx = np.mgrid[ylo:yhi + 1, xlo:xhi + 1]
        gy, gx = gy.ravel(), gx.ravel()
        ddx, ddy = gx - xw, gy - yw
        inw = ddx * ddx + ddy * ddy < rad2
        gy, gx, ddx, ddy = gy[inw], gx[inw], ddx[inw], ddy[inw]
        valid, _, _, _, val, vv = _pixel_values(sub, var, rms, inv_gain, code, segm, own, gy, gx, yc2, xc2)
        gy, gx, ddx, ddy, val, vv = gy[valid], gx[valid], ddx[valid], ddy[valid], val[valid], vv[valid]
        w = np.exp(-ddy * ddy * inv2s2) * np.exp(-ddx * ddx * inv2s2)
        Sw = _seqsum(w * val)
        SwX, SwY = _seqsum(w * val * ddx), _seqsum(w * val * ddy)
        E = (_seqsum(w * w * vv * ddx * ddx), _seqsum(w * w * vv * ddy * ddy), _seqsum(w * w * vv * ddx * ddy))
        niter = it + 1
        if not Sw > 0:
            break
        sx, sy = 2.0 * SwX / Sw, 2.0 * SwY / Sw
        xw += sx
        yw += sy
        if sx * sx + sy * sy < minstep * minstep:
            converged = True
            break
    if not Sw > 0 or not converged or (xw - xiso) ** 2 + (yw - yiso) ** 2 > 4.0 * sw * sw:
        f |= K.F_WIN_FALLBACK
        o[[K.M_X_WIN, K.M_Y_WIN, K.M_ERRX2, K.M_ERRY2, K.M_ERRXY]] = [xiso, yiso, ex2, ey2, exy]
    else:
        o[[K.M_X_WIN, K.M_Y_WIN]] = [xw, yw]
        o[[K.M_ERRX2, K.M_ERRY2, K.M_ERRXY]] = [4.0 * e / (Sw * Sw) for e in E]
    o[K.M_SIGMA_WIN], o[K.M_NITER] = sw, niter
    return o, f
