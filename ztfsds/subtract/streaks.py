"""Streaks on a background-subtracted image: satellite and aircraft trails, fast-moving asteroids.

ZTF masks satellite tracks with bit 0 of its masks (``MaskBits.SATELLITE_TRACK``) and finds streaking
asteroids with ZStreak + the DeepStreaks CNNs (ZTF_REFERENCE 2.10). `detect_streaks` is a classical
line finder for a difference image D (or a Scorr map, or a background-subtracted science image):

1. normalise by the noise (``sigma``: scalar, map, or a robust estimate), zero the masked pixels and
   clip the result to ``[-5, 5]`` sigma, so that a cosmic ray or a bright star weighs no more than a
   few pixels of a faint trail;
2. bin by ``binning`` (4: a 3080 x 3072 quadrant becomes 770 x 768 blocks), renormalise the blocks to
   unit noise (robustly: correlated noise, as in Scorr, is handled) and keep the blocks above
   ``_BLOCK_THRESHOLD``;
3. Hough-vote those blocks; each peak of the accumulator is a candidate line, refined by orthogonal
   regression on the blocks near it and split into segments at gaps;
4. on the full-resolution image, along each candidate: the across-line profile (median along the
   line, so stars lying on it do not count) fitted by a Gaussian of free centre and width; the
   along-line profile (the matched-filter amplitude per pixel of length); the end points where that
   profile falls to half its median (a maximal-subarray search, so gaps of noise do not cut a faint
   trail); the line re-fitted to the centres of its pieces; repeated twice;
5. accepted when its length is at least ``min_length``, its width (FWHM) within ``[min_width,
   max_width]``, and its S/N *computed from the median of its pieces' amplitudes* at least
   ``threshold``: a line through a few stars or a blob (a galaxy, a subtraction residual of a bright
   star) has a median piece near zero and is rejected, a uniform trail is not.

`streak_mask` rasterises the streaks (for ``MaskBits.SATELLITE_TRACK``) and `on_streak` tells which
positions (candidates) lie on one.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import scipy.ndimage as ndi
from astropy.table import Table

from .._ext import _streaks
from ..errors import ConfigError, InputError
from ..products import MaskBits
from ..stats import robust_sigma

__all__ = ["detect_streaks", "on_streak", "streak_mask"]

log = logging.getLogger(__name__)

#: Normalised pixels are clipped to this range [sigma] before binning.
_CLIP = 5.0
#: Blocks (binned, unit-noise) above this vote in the Hough transform [sigma].
_BLOCK_THRESHOLD = 2.5
#: Largest number of Hough peaks examined.
_MAX_PEAKS = 250
#: Half-width of the band of blocks that belong to a Hough line [blocks].
_BAND = 1.5
#: Smallest fraction of a streak's pieces whose amplitude is near the median one.
_MIN_UNIFORM = 0.6
#: Smallest length / width of a streak.
_MIN_ELONGATION = 4.0
#: Smallest S/N of a candidate on the blocks, from their median along it, as a fraction of ``threshold``.
_BLOCK_SNR_FRACTION = 0.5
#: FWHM of a Gaussian / its sigma.
_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))

_COLUMNS = (("x0", "pix"), ("y0", "pix"), ("x1", "pix"), ("y1", "pix"), ("length", "pix"), ("width", "pix"),
            ("angle", "deg"), ("flux", None), ("snr", None))


def _make_table(values=None) -> Table:
    values = values or {}
    t = Table({name: np.asarray(values.get(name, []), np.float64) for name, _ in _COLUMNS})
    for name, unit in _COLUMNS:
        if unit:
            t[name].unit = unit
    return t


# --------------------------------------------------------------------------------------------------
# preparation: normalised, masked, clipped image and its binned version


def _bad_pixels(mask, shape, product):
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(product, f"mask shape {m.shape} differs from the image's {shape}")
    if m.dtype == bool:
        return m
    # a trail already flagged must not hide itself
    bad_bits = int(MaskBits.BAD) & ~int(MaskBits.SATELLITE_TRACK)
    return (m.astype(np.int32, copy=False) & bad_bits) != 0


def _normalise(image, sigma, bad, product):
    """``(S, good, sigma_scalar)``: float32 image / sigma, zero where bad or non-finite."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 8:
        raise InputError(product, f"streak detection needs a 2-d image, got shape {img.shape}")
    finite = np.isfinite(img)
    good = finite if bad is None else finite & ~bad
    if sigma is None:
        sub = img[::3, ::3][good[::3, ::3]]
        s = robust_sigma(sub - np.median(sub)) if sub.size > 100 else math.nan
        if not (s > 0 and math.isfinite(s)):
            raise InputError(product, "cannot estimate the noise of the image (too few good pixels)")
        inv = np.float32(1.0 / s)
        scalar = s
    else:
        sig = np.asarray(sigma, dtype=np.float32)
        if sig.ndim == 0:
            s = float(sig)
            if not (s > 0 and math.isfinite(s)):
                raise InputError(product, f"sigma must be positive and finite, got {s}")
            inv = np.float32(1.0 / s)
            scalar = s
        else:
            if sig.shape != img.shape:
                raise InputError(product, f"sigma map shape {sig.shape} differs from the image's {img.shape}")
            ok = np.isfinite(sig) & (sig > 0)
            good &= ok
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.where(ok, 1.0 / sig, 0.0).astype(np.float32)
            scalar = float(np.median(sig[::3, ::3][ok[::3, ::3]])) if ok.any() else math.nan
    s_img = np.where(good, img, np.float32(0.0)) * inv
    return s_img.astype(np.float32, copy=False), good, scalar


def _bin(s_img, good, b):
    """Blocks of ``b x b`` of the clipped image: sum / sqrt(number of good pixels), renormalised to
    unit robust noise."""
    ny, nx = s_img.shape
    my, mx = -(-ny // b), -(-nx // b)
    tot = np.zeros((my, mx), np.float32)
    ngood = np.zeros((my, mx), np.int32)
    _streaks.bin_clipped(s_img, good.view(np.uint8), b, _CLIP, tot, ngood)
    blocks = tot / np.sqrt(np.maximum(ngood, 1)).astype(np.float32)
    usable = ngood >= (b * b) // 2
    vals = blocks[usable][::3]
    if vals.size > 50:
        med = float(np.median(vals))
        rs = robust_sigma(vals - med)
        if rs > 0 and math.isfinite(rs):
            blocks = (blocks - med) / np.float32(rs)
    blocks[~usable] = 0.0
    return blocks


# --------------------------------------------------------------------------------------------------
# Hough transform of the blocks above threshold


def _hough_peaks(py, px, shape, n_theta):
    """Peaks of the Hough accumulator (one vote per block): arrays (theta [rad], rho [blocks], votes),
    strongest first."""
    ny, nx = shape
    theta = (np.arange(n_theta) + 0.5) * (math.pi / n_theta)
    c, s = np.cos(theta), np.sin(theta)
    rmax = math.hypot(ny, nx)
    n_rho = int(2 * rmax) + 3
    counts = np.zeros((n_rho, n_theta), np.int32)
    _streaks.hough(px, py, c, s, rmax, counts)
    acc = counts.astype(np.float32)
    # a little smoothing across rho: a line between two block rows splits its votes
    acc = acc + 0.5 * (np.roll(acc, 1, axis=0) + np.roll(acc, -1, axis=0))
    peak = (acc >= ndi.maximum_filter(acc, size=(5, 5), mode="wrap")) & (acc >= 3.0)
    ir, it = np.nonzero(peak)
    votes = acc[ir, it]
    order = np.argsort(-votes, kind="stable")[:_MAX_PEAKS]
    return theta[it[order]], ir[order] - 1 - rmax, votes[order]


def _block_snr(blocks, cx, cy, ux, uy, t0, t1):
    """Robust S/N of a line segment on the blocks: median of its samples (one per block) x sqrt(n)."""
    t = np.arange(t0, t1 + 0.5)
    v = ndi.map_coordinates(blocks, [cy + t * uy, cx + t * ux], order=1, mode="constant", cval=0.0,
                            prefilter=False)
    return float(np.median(v)) * math.sqrt(v.size)


def _fit_line(x, y, w):
    """Weighted orthogonal regression: (centre x, centre y, unit direction ux, uy)."""
    sw = w.sum()
    cx, cy = (w * x).sum() / sw, (w * y).sum() / sw
    dx, dy = x - cx, y - cy
    sxx, syy, sxy = (w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()
    ang = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    return cx, cy, math.cos(ang), math.sin(ang)


def _segments_from_peak(theta, rho, bx, by, bw, free, max_gap, min_points):
    """Runs of free blocks along a Hough line: list of (cx, cy, ux, uy, t0, t1, indices) in blocks."""
    ux, uy = -math.sin(theta), math.cos(theta)
    nxv, nyv = math.cos(theta), math.sin(theta)
    # the blocks within a wide band: every later selection is among them
    wide = np.flatnonzero(np.abs(bx * nxv + by * nyv - rho) <= 3.0 * _BAND)
    wide = wide[free[wide]]
    out = []
    if wide.size < min_points:
        return out
    x, y, w = bx[wide], by[wide], bw[wide]
    cx, cy = rho * nxv, rho * nyv
    d = (x - cx) * nxv + (y - cy) * nyv
    sel = np.flatnonzero(np.abs(d) <= _BAND)
    if sel.size < min_points:
        return out
    t = (x[sel] - cx) * ux + (y[sel] - cy) * uy
    order = np.argsort(t)
    sel, t = sel[order], t[order]
    breaks = np.flatnonzero(np.diff(t) > max_gap) + 1
    for run in np.split(np.arange(sel.size), breaks):
        if run.size < min_points:
            continue
        idx = sel[run]
        lx, ly, lux, luy = _fit_line(x[idx], y[idx], w[idx])
        # gather again around the fitted line, within the run's extent (plus a gap)
        tt = (x - lx) * lux + (y - ly) * luy
        dd = (x - lx) * -luy + (y - ly) * lux
        tr = tt[idx]
        near = (np.abs(dd) <= _BAND) & (tt >= tr.min() - max_gap) & (tt <= tr.max() + max_gap)
        idx = np.flatnonzero(near)
        if idx.size < min_points:
            continue
        lx, ly, lux, luy = _fit_line(x[idx], y[idx], w[idx])
        tt = (x[idx] - lx) * lux + (y[idx] - ly) * luy
        out.append((lx, ly, lux, luy, float(tt.min()), float(tt.max()), wide[idx]))
    return out


# --------------------------------------------------------------------------------------------------
# full-resolution measurement along a line


_WIDTHS = np.arange(0.8, 12.01, 0.2)
_CENTRES = np.arange(-3.0, 3.01, 0.25)


@functools.lru_cache(maxsize=8)
def _templates(hw):
    """Unit-peak Gaussians on s = -hw..hw: (templates (n_w * n_c, n_s), their squared norms)."""
    s = np.arange(-hw, hw + 1.0)
    sig = _WIDTHS[:, None, None] / _FWHM
    tpl = np.exp(-0.5 * ((s[None, None, :] - _CENTRES[None, :, None]) / sig) ** 2)
    tpl = tpl.reshape(-1, s.size)
    return tpl, (tpl * tpl).sum(axis=1)


def _fit_profile(prof, s):
    """Least-squares Gaussian (free amplitude, centre, FWHM; zero background): (amp, centre, fwhm)."""
    tpl, tt = _templates(int(s[-1]))
    tp = tpl @ prof
    amp = tp / tt
    gain = np.where(amp > 0, tp * amp, -np.inf)     # chi2 reduction of each template
    iw, ic = np.unravel_index(int(np.argmax(gain)), (_WIDTHS.size, _CENTRES.size))
    return float(amp[iw * _CENTRES.size + ic]), float(_CENTRES[ic]), float(_WIDTHS[iw])


def _max_subarray(v):
    """Indices (i, j) (inclusive) of the contiguous run of largest sum."""
    c = np.concatenate([[0.0], np.cumsum(v)])
    # best j maximising c[j+1] - min_{i<=j} c[i]
    running = np.minimum.accumulate(c)
    # index of the running minimum
    is_new = np.concatenate([[True], c[1:] < running[:-1]])
    cmin_idx = np.maximum.accumulate(np.where(is_new, np.arange(c.size), 0))
    gains = c[1:] - running[:-1]
    j = int(np.argmax(gains))
    i = int(cmin_idx[j])
    return i, j


def _clip_to_image(cx, cy, ux, uy, t0, t1, shape):
    """Clip the along-line range [t0, t1] to the image's pixel centres box."""
    ny, nx = shape
    lo, hi = t0, t1
    for c, u, n in ((cx, ux, nx), (cy, uy, ny)):
        if abs(u) < 1e-9:
            if not (-0.5 <= c <= n - 0.5):
                return None
            continue
        a, b = (-0.5 - c) / u, (n - 0.5 - c) / u
        lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    return (lo, hi) if hi > lo else None


def _strip(s_img, cx, cy, ux, uy, t0, t1, hw):
    """Samples of the image on the grid (s across, t along): (strip (ns, nt), s, t)."""
    t = np.arange(math.floor(t0), math.ceil(t1) + 1.0)
    s = np.arange(-hw, hw + 1.0)
    xs = cx + t[None, :] * ux - s[:, None] * uy
    ys = cy + t[None, :] * uy + s[:, None] * ux
    vals = ndi.map_coordinates(s_img, [ys.ravel(), xs.ravel()], order=1, mode="constant", cval=0.0,
                               prefilter=False)
    return vals.reshape(xs.shape), s, t


def _along(strip, s, dc, fwhm):
    """Matched-filter amplitude per pixel of length [sigma] and its noise, for a Gaussian cross-section."""
    g = np.exp(-0.5 * ((s - dc) / (fwhm / _FWHM)) ** 2)
    g2 = float((g * g).sum())
    # the local background, from both sides of the line (a star's halo, a residual sky gradient)
    side = np.abs(s - dc) >= max(2.0 * fwhm, 5.0)
    bkg = np.median(strip[side], axis=0) if side.sum() >= 4 else 0.0
    return (g @ strip - g.sum() * bkg) / g2, 1.0 / math.sqrt(g2)


def _refit_line(strip, s, t, t0, t1, dc, fwhm):
    """Offset ``s = a t + b`` of the streak's centre line, from the centroids of its pieces."""
    n_piece = int(np.clip((t1 - t0) / max(8.0, 3.0 * fwhm), 1, 24))
    if n_piece < 2:
        return 0.0, dc
    edges = np.linspace(t0, t1 + 1e-6, n_piece + 1)
    near = np.abs(s - dc) <= 2.0 * fwhm
    sn = s[near]
    tc, sc, wc = [], [], []
    for k in range(n_piece):
        sel = (t >= edges[k]) & (t < edges[k + 1])
        if sel.sum() < 2:
            continue
        p = np.clip(np.median(strip[near][:, sel], axis=1), 0.0, None)
        if p.sum() <= 0:
            continue
        tc.append(t[sel].mean())
        sc.append((p * sn).sum() / p.sum())
        wc.append(p.sum())
    if len(tc) < 2:
        return 0.0, dc
    a, b = np.polyfit(np.array(tc), np.array(sc), 1, w=np.sqrt(np.array(wc)))
    return float(a), float(b)


def _measure(s_img, line, width, max_width, min_length, shape, n_iter=6):
    """Refine one candidate line on the full-resolution normalised image.

    Returns dict (cx, cy, ux, uy, t0, t1, width, amp, snr, uniform) or None.
    """
    cx, cy, ux, uy, t0, t1 = line
    hw = math.ceil(max(2.0 * max_width, 8.0))
    fwhm = width
    for _ in range(n_iter):
        margin = max(16.0, 3.0 * fwhm, 0.5 * (t1 - t0))
        rng = _clip_to_image(cx, cy, ux, uy, t0 - margin, t1 + margin, shape)
        if rng is None:
            return None
        strip, s, t = _strip(s_img, cx, cy, ux, uy, rng[0], rng[1], hw)
        inside = (t >= t0) & (t <= t1)
        if inside.sum() < 3:
            return None
        amp, dc, fwhm = _fit_profile(np.median(strip[:, inside], axis=1), s)
        if not amp > 0:
            return None
        along, noise = _along(strip, s, dc, fwhm)
        level = float(np.median(along[inside]))
        if not level > 0:
            return None
        # end points where the profile falls to half its level; stars on the line (clipped to the
        # level) cannot pull the run towards them, nor a dipole cut it
        i, j = _max_subarray(np.clip(along, -level, level + noise) - 0.5 * level)
        old = (t0, t1)
        t0, t1 = float(t[i]), float(t[j])
        if t1 - t0 < 0.6 * min_length:      # a star, most often
            return None
        a, b = _refit_line(strip, s, t, t0, t1, dc, fwhm)
        nx_, ny_ = -uy, ux
        cx, cy = cx + b * nx_, cy + b * ny_
        norm = math.hypot(1.0, a)
        ux, uy = (ux + a * nx_) / norm, (uy + a * ny_) / norm
        t0, t1 = t0 / norm, t1 / norm
        moved = max(abs(b), abs(a) * max(abs(t0), abs(t1)))
        grew = (i == 0 and rng[0] > t[0] - 0.5 and t[0] > _image_t_range(cx, cy, ux, uy, shape)[0] + 1) or \
               (j == t.size - 1 and t[-1] < _image_t_range(cx, cy, ux, uy, shape)[1] - 1)
        if moved < 0.2 and not grew and abs(t0 - old[0]) < 1.5 and abs(t1 - old[1]) < 1.5:
            break
    pad = 2.0 * fwhm + 3.0
    rng = _clip_to_image(cx, cy, ux, uy, t0 - pad, t1 + pad, shape)
    if rng is None:
        return None
    strip, s, t = _strip(s_img, cx, cy, ux, uy, rng[0], rng[1], hw)
    inside = (t >= t0) & (t <= t1)
    if inside.sum() < 4:
        return None
    amp, dc, fwhm = _fit_profile(np.median(strip[:, inside], axis=1), s)
    if not amp > 0:
        return None
    along, noise = _along(strip, s, dc, fwhm)
    t0, t1 = _refine_ends(along, t, t0, t1, noise, fwhm, rng)
    inside = (t >= t0 - 0.5) & (t <= t1 + 0.5)
    if inside.sum() < 4:
        return None
    along = along[inside]
    n_t = int(inside.sum())
    plen = max(3.0, fwhm)
    n_piece = int(max(4, min(64, round(n_t / plen))))
    if n_t < n_piece:
        return None
    pieces = np.array([p.mean() for p in np.array_split(along, n_piece)])
    med = float(np.median(pieces))
    # the pieces' scatter: white noise at least, more where the noise is correlated (Scorr) or where the
    # "streak" is a chain of stars or the halo of a bright one (robust: a star on a trail is one outlier)
    sig_piece = noise / math.sqrt(n_t / n_piece)
    sig_piece = max(sig_piece, robust_sigma(np.diff(pieces)) / math.sqrt(2.0))
    # a uniform trail has most pieces alike (bar stars and crossings); a chain of stars, a blob does not
    uniform = float(np.mean(np.abs(pieces - med) <= 3.0 * sig_piece + 0.5 * med))
    # nor holes: two stars side by side have a gap between them (a trail may lose 10 % of its pieces
    # to masked pixels or subtraction residuals)
    if float(np.quantile(pieces[1:-1], 0.1)) < 0.5 * med - 3.0 * sig_piece:
        uniform = 0.0
    cx, cy = cx - dc * uy, cy + dc * ux
    return {"cx": cx, "cy": cy, "ux": ux, "uy": uy, "t0": t0, "t1": t1, "width": fwhm,
            "amp": float(np.median(along)), "snr": med / sig_piece * math.sqrt(n_piece), "uniform": uniform}


def _refine_ends(along, t, t0, t1, noise, fwhm, rng):
    """Sub-pixel end points: where the (lightly smoothed) profile crosses half its level, or the image
    edge when the streak runs off it."""
    inside = (t >= t0) & (t <= t1)
    level = float(np.median(along[inside]))
    if not level > 0:
        return t0, t1
    sm = ndi.uniform_filter1d(np.clip(along, -level, level + noise), max(3, round(fwhm)), mode="nearest")
    half = 0.5 * level
    idx = np.flatnonzero(inside)
    i, j = int(idx[0]), int(idx[-1])
    out = []
    for k, step, edge in ((i, -1, rng[0]), (j, 1, rng[1])):
        # walk outwards from the end while above half, inwards while below
        while 0 <= k + step < t.size and sm[k + step] >= half:
            k += step
        while 0 <= k - step < t.size and sm[k] < half and abs(k - (i if step < 0 else j)) < fwhm + 2:
            k -= step
        if not (0 <= k + step < t.size):
            out.append(float(edge))
            continue
        a, b = sm[k], sm[k + step]
        frac = (a - half) / (a - b) if a != b else 0.5
        out.append(float(t[k] + step * min(max(frac, 0.0), 1.0)))
    return out[0], out[1]


def _image_t_range(cx, cy, ux, uy, shape):
    r = _clip_to_image(cx, cy, ux, uy, -1e9, 1e9, shape)
    return r if r is not None else (0.0, 0.0)


# --------------------------------------------------------------------------------------------------
# public API


def detect_streaks(image, *, sigma=None, mask=None, threshold: float = 12.0, min_length: float = 15.0,
                   width: float = 3.0, min_width: float = 1.4, max_width: float = 10.0, binning: int = 4,
                   max_tries: int = 200, product: str | None = None) -> Table:
    """Find the linear features (satellite trails, streaking asteroids) of a background-subtracted image.

    Parameters
    ----------
    image : array-like
        (ny, nx) background-subtracted image: a difference image D [DN], a Scorr map [sigma] or a
        science image minus its background. Only positive streaks are sought.
    sigma : float or array-like, optional
        Its noise [image units]: a scalar or an (ny, nx) map; default: 1.4826 MAD of the good pixels.
    mask : array-like, optional
        (ny, nx) bool (True = bad) or integer `~ztfsds.products.MaskBits` (``BAD`` bits, bar
        ``SATELLITE_TRACK``, are ignored). Non-finite pixels are always ignored.
    threshold : float, optional
        Smallest S/N of a streak, from the median amplitude of its pieces (robust to stars on it).
    min_length : float, optional
        Shortest streak [px] (between the points where its profile falls to half).
    width : float, optional
        Expected FWHM of the streak's cross-section [px] (the starting value of its fit).
    max_tries : int, optional
        Most line candidates measured at full resolution (the strongest Hough peaks first): bounds the
        time on images with many bright residuals (each measurement costs ~3 ms).
    min_width, max_width : float, optional
        Accepted range of the fitted FWHM [px]: narrower features are cosmic rays or bad columns,
        wider ones extended sources.
    binning : int, optional
        Block size of the downsampled image searched by the Hough transform [px].
    product : str, optional
        Named in errors.

    Returns
    -------
    `~astropy.table.Table`
        One row per streak, highest ``snr`` first: ``x0, y0, x1, y1`` [px, 0-based end points, where
        the profile falls to half its level or the streak leaves the image; ordered so that the
        direction from the first to the second has ``angle`` in [0, 180)], ``length`` [px], ``width``
        (FWHM of the cross-section) [px], ``angle`` [deg, from +x towards +y], ``flux`` (integrated
        across the streak, per pixel of length [image units x px]; the median along it) and ``snr``
        (from the median of its pieces and their measured scatter, so correlated noise, stars on
        the streak and non-uniform features count against it).

    Notes
    -----
    About 0.26 s for a full 3080 x 3072 quadrant on one core (the Hough search on 4 x 4 blocks; the
    full-resolution work only along the candidates). Streaks crossing at small angles (< ~10 deg)
    may be merged or cut at the crossing; near-parallel faint streaks confuse the width fit.
    """
    if not threshold > 0 or not min_length > 0 or not 0 < min_width < max_width or not width > 0:
        raise ConfigError("detect_streaks: threshold, min_length, width must be positive and "
                          "0 < min_width < max_width")
    if int(binning) < 1:
        raise ConfigError(f"detect_streaks: binning must be >= 1, got {binning}")
    b = int(binning)
    shape = np.shape(image)
    bad = _bad_pixels(mask, tuple(shape), product)
    s_img, good, sig_scalar = _normalise(image, sigma, bad, product)
    blocks = _bin(s_img, good, b)
    by, bx = np.nonzero(blocks > _BLOCK_THRESHOLD)
    if bx.size < 3:
        return _make_table()
    bw = np.minimum(blocks[by, bx], 2.0 * _BLOCK_THRESHOLD).astype(np.float64)
    bx = bx.astype(np.float64)
    by = by.astype(np.float64)
    n_theta = int(np.clip(max(blocks.shape), 180, 360))
    thetas, rhos, _ = _hough_peaks(by, bx, blocks.shape, n_theta)
    free = np.ones(bx.size, bool)
    tried = np.zeros(bx.size, bool)
    max_gap = max(3.0, 12.0 / b)
    min_points = 3
    rows = []
    ntried = 0
    for theta, rho in zip(thetas, rhos):
        if free.sum() < min_points or ntried >= max_tries:
            break
        for lx, ly, lux, luy, t0, t1, idx in _segments_from_peak(theta, rho, bx, by, bw, free, max_gap,
                                                                  min_points):
            if (t1 - t0 + 1.0) * b < 0.9 * min_length:
                continue
            # a segment made only of blocks already measured and rejected (a star's) is not tried again
            if np.mean(tried[idx]) >= 0.9:
                continue
            if _block_snr(blocks, lx, ly, lux, luy, t0, t1) < _BLOCK_SNR_FRACTION * threshold:
                continue
            # blocks -> pixels: block k covers pixels k b .. k b + b - 1
            line = (lx * b + 0.5 * (b - 1), ly * b + 0.5 * (b - 1), lux, luy, t0 * b - 0.5 * b, t1 * b + 0.5 * b)
            ntried += 1
            m = _measure(s_img, line, width, max_width, min_length, s_img.shape)
            ok = m is not None
            if ok:
                length = m["t1"] - m["t0"]
                ok = (length >= max(min_length, _MIN_ELONGATION * m["width"])
                      and min_width <= m["width"] <= max_width and m["snr"] >= threshold and m["uniform"] >= _MIN_UNIFORM)
            if not ok:
                tried[idx] = True
                continue
            # the blocks of this streak are spent
            px = (bx * b + 0.5 * (b - 1) - m["cx"])
            py = (by * b + 0.5 * (b - 1) - m["cy"])
            tt = px * m["ux"] + py * m["uy"]
            dd = np.abs(-px * m["uy"] + py * m["ux"])
            free &= ~((dd <= b * _BAND + m["width"]) & (tt >= m["t0"] - b) & (tt <= m["t1"] + b))
            rows.append(m)
    if not rows:
        return _make_table()
    rows = _merge(rows)
    out = {name: [] for name, _ in _COLUMNS}
    for m in rows:
        ux, uy = m["ux"], m["uy"]
        if uy < 0 or (uy == 0 and ux < 0):
            ux, uy, t0, t1 = -ux, -uy, -m["t1"], -m["t0"]
        else:
            t0, t1 = m["t0"], m["t1"]
        out["x0"].append(m["cx"] + t0 * ux)
        out["y0"].append(m["cy"] + t0 * uy)
        out["x1"].append(m["cx"] + t1 * ux)
        out["y1"].append(m["cy"] + t1 * uy)
        out["length"].append(t1 - t0)
        out["width"].append(m["width"])
        out["angle"].append(math.degrees(math.atan2(uy, ux)) % 180.0)
        # amplitude [sigma] x sqrt(2 pi) sigma_g = integral across the line, in image units
        out["flux"].append(m["amp"] * math.sqrt(2.0 * math.pi) * m["width"] / _FWHM * sig_scalar)
        out["snr"].append(m["snr"])
    table = _make_table(out)
    table.sort("snr", reverse=True)
    log.debug("detect_streaks: %d streak(s)", len(table))
    return table


def _merge(rows):
    """Join the pieces of one streak (cut where it crosses another) and drop duplicates."""
    rows = sorted(rows, key=lambda m: -(m["t1"] - m["t0"]))
    kept = []
    for m in rows:
        for k in kept:
            cosang = abs(m["ux"] * k["ux"] + m["uy"] * k["uy"])
            if cosang < math.cos(math.radians(3.0)):
                continue
            ends_x = m["cx"] + np.array([m["t0"], m["t1"]]) * m["ux"]
            ends_y = m["cy"] + np.array([m["t0"], m["t1"]]) * m["uy"]
            px, py = ends_x - k["cx"], ends_y - k["cy"]
            along = px * k["ux"] + py * k["uy"]
            across = np.abs(-px * k["uy"] + py * k["ux"])
            if np.any(across > k["width"] + m["width"] + 2.0):
                continue
            lo, hi = float(along.min()), float(along.max())
            gap = max(lo - k["t1"], k["t0"] - hi, 0.0)
            if gap > max(30.0, 0.5 * (k["t1"] - k["t0"] + hi - lo)):
                continue
            lk, lm = k["t1"] - k["t0"], max(0.0, min(hi, k["t1"]) - max(lo, k["t0"]))
            # the part of m beyond k adds its S/N (in quadrature) and its length-weighted amplitude
            extra = max(0.0, (hi - lo) - lm)
            if extra > 0:
                frac = extra / max(hi - lo, 1e-9)
                k["snr"] = math.hypot(k["snr"], m["snr"] * math.sqrt(frac))
                k["amp"] = (k["amp"] * lk + m["amp"] * extra) / (lk + extra)
            k["t0"], k["t1"] = min(lo, k["t0"]), max(hi, k["t1"])
            break
        else:
            kept.append(m)
    return sorted(kept, key=lambda m: -m["snr"])


def _rows(streaks):
    x0, y0 = np.asarray(streaks["x0"], float), np.asarray(streaks["y0"], float)
    x1, y1 = np.asarray(streaks["x1"], float), np.asarray(streaks["y1"], float)
    w = np.asarray(streaks["width"], float)
    return x0, y0, x1, y1, w


def on_streak(x, y, streaks, *, tol: float = 2.0) -> np.ndarray:
    """Which positions lie on a streak: within ``width + tol`` of one of its segments.

    Parameters
    ----------
    x, y : array-like
        0-based pixel positions (for instance of candidates).
    streaks : `~astropy.table.Table`
        `detect_streaks` output (``x0, y0, x1, y1, width``).
    tol : float, optional
        Extra distance [px].

    Returns
    -------
    `numpy.ndarray`
        bool, one per position.
    """
    x = np.atleast_1d(np.asarray(x, np.float64))
    y = np.atleast_1d(np.asarray(y, np.float64))
    hit = np.zeros(np.broadcast(x, y).shape, bool)
    for x0, y0, x1, y1, w in zip(*_rows(streaks)):
        hit |= _distance_to_segment(x, y, x0, y0, x1, y1) <= w + tol
    return hit


def _distance_to_segment(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    l2 = dx * dx + dy * dy
    t = np.zeros_like(x) if l2 == 0 else np.clip(((x - x0) * dx + (y - y0) * dy) / l2, 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def streak_mask(shape, streaks, *, grow: float = 2.0) -> np.ndarray:
    """Pixels of the streaks: centres within ``width + grow`` of a segment (its ends included).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    streaks : `~astropy.table.Table`
        `detect_streaks` output.
    grow : float, optional
        Extra half-width [px].

    Returns
    -------
    `numpy.ndarray`
        bool (ny, nx); ``mask[m] |= MaskBits.SATELLITE_TRACK`` flags them.
    """
    ny, nx = (int(v) for v in shape)
    out = np.zeros((ny, nx), bool)
    for x0, y0, x1, y1, w in zip(*_rows(streaks)):
        _fill_capsule(out, x0, y0, x1, y1, w + grow)
    return out


def _fill_capsule(out, x0, y0, x1, y1, r):
    """Set the pixels whose centres lie within r of the segment."""
    ny, nx = out.shape
    ylo, yhi = max(0, math.ceil(min(y0, y1) - r)), min(ny - 1, math.floor(max(y0, y1) + r))
    if yhi < ylo:
        return
    yy = np.arange(ylo, yhi + 1, dtype=np.float64)
    lo, hi = _capsule_rows(yy, x0, y0, x1, y1, r)
    with np.errstate(invalid="ignore"):
        lo = np.clip(np.ceil(lo), 0, nx).astype(np.int64)
        hi = np.clip(np.floor(hi), -1, nx - 1).astype(np.int64)
    for k in np.flatnonzero(hi >= lo):
        out[ylo + k, lo[k]:hi[k] + 1] = True


def _capsule_rows(yy, x0, y0, x1, y1, r):
    """x-interval (lo, hi) of each row y within distance r of the segment (lo > hi when empty)."""
    lo = np.full(yy.shape, np.inf)
    hi = np.full(yy.shape, -np.inf)
    for cx, cy in ((x0, y0), (x1, y1)):
        h2 = r * r - (yy - cy) ** 2
        h = np.sqrt(np.clip(h2, 0.0, None))
        ok = h2 >= 0
        lo = np.where(ok, np.minimum(lo, cx - h), lo)
        hi = np.where(ok, np.maximum(hi, cx + h), hi)
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    if length > 0:
        ux, uy = dx / length, dy / length
        # constraints on x: 0 <= (x - x0) ux + (y - y0) uy <= L and |-(x - x0) uy + (y - y0) ux| <= r
        a_lo, a_hi = np.full(yy.shape, -np.inf), np.full(yy.shape, np.inf)
        for coef, base, cmin, cmax in ((ux, (yy - y0) * uy, 0.0, length), (-uy, (yy - y0) * ux, -r, r)):
            if abs(coef) < 1e-12:
                inside = (base >= cmin) & (base <= cmax)
                a_lo = np.where(inside, a_lo, np.inf)
                a_hi = np.where(inside, a_hi, -np.inf)
                continue
            e1, e2 = (cmin - base) / coef, (cmax - base) / coef
            a_lo = np.maximum(a_lo, np.minimum(e1, e2))
            a_hi = np.minimum(a_hi, np.maximum(e1, e2))
        ok = a_hi >= a_lo
        lo = np.where(ok, np.minimum(lo, x0 + a_lo), lo)
        hi = np.where(ok, np.maximum(hi, x0 + a_hi), hi)
    return lo, hi
