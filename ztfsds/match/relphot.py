"""Relative photometric refinement, variability statistics and periods of matched lightcurves.

Each epoch's magnitudes come calibrated against PS1 with the zero point of that image (a few 0.01 mag
of error each, from colour terms, clouds and the PS1 stars' own errors). With every star of a quadrant
measured on every epoch, the ensemble of non-variable stars fixes the epochs against each other far
better. `calibrate` fits, by iterated weighted least squares,

    m_ij = M_i + Z_j [+ a_j x_ij + b_j y_ij] + noise,   weights 1 / (magerr_ij^2 + floor^2)

(``M_i`` the mean magnitude of star ``i``, ``Z_j`` the offset of epoch ``j``, optionally a linear term
across the quadrant), by alternating the two closed-form half-steps until the offsets change by less
than 1e-6 mag. The gauge is fixed by ``mean_j Z_j = 0`` (and zero mean spatial terms): the PS1
calibration keeps its average, only the epoch-to-epoch scatter is removed. Between fits, residuals
beyond ``cal_clip`` sigma are dropped and stars whose reduced chi2 exceeds ``cal_var_chi2`` times the
median are rejected as variable. Epochs with fewer than ``min_epoch_cal`` calibration stars, or bad
INFOBITS, keep their magnitudes and get ``catflags`` bit 15.

`source_statistics` then fills the matchfile's ``sources`` columns (means, rms, chi2, Stetson J and
K, von Neumann ratio, skewness, kurtosis, trends, percentiles, counts beyond 1/3/5 sigma...), flags
variables (reduced chi2 above ``var_chi2`` and Stetson J above ``var_stetsonj``) and gives them a
Lomb-Scargle period (`astropy.timeseries.LombScargle`).

The fit starts from the fluxes and each exposure's ``magzp`` every time, so re-running it after
new epochs arrive gives exactly what a rebuild gives.
"""

from __future__ import annotations

import datetime
import logging
import math

import numpy as np
from astropy.table import Table
from astropy.timeseries import LombScargle

from .matchfile import MatchFile
from .params import BAD_EPOCH_CATFLAG, MatchParams

__all__ = ["calibrate", "relative_offsets", "source_statistics", "lomb_scargle_period", "PERCENTILES"]

log = logging.getLogger(__name__)

#: Percentiles of the good calibrated magnitudes in the ``sources.percentiles`` column [%].
PERCENTILES = (1.0, 5.0, 10.0, 15.0, 25.0, 40.0, 60.0, 75.0, 85.0, 90.0, 95.0, 99.0)
_NSIGMA = (1.0, 3.0, 5.0)
_PIXEL_SCALE = 1000.0      # spatial terms are per 1000 px
_XC, _YC = 1535.5, 1539.5  # quadrant centre [px]


def _group_sum(idx, values, n):
    return np.bincount(idx, weights=values, minlength=n)


def relative_offsets(mag, magerr, obj, epoch, nobj, nepoch, *, use=None, x=None, y=None, params=None):
    """Per-epoch offsets (and spatial terms) from the ensemble of stars, by iterated weighted least squares.

    Parameters
    ----------
    mag, magerr : numpy.ndarray
        Magnitudes and their photometric errors of all detections [mag].
    obj, epoch : numpy.ndarray of int
        Object index (0..nobj-1) and epoch index (0..nepoch-1) of each detection.
    nobj, nepoch : int
        Numbers of objects and epochs.
    use : numpy.ndarray of bool, optional
        Detections allowed in the fit (good flags, small errors); all if None.
    x, y : numpy.ndarray, optional
        Pixel positions [px], needed when ``params.spatial_degree`` is 1.
    params : MatchParams, optional
        ``cal_floor``, ``cal_clip``, ``cal_var_chi2``, ``cal_min_nobs``, ``cal_iterations``,
        ``spatial_degree``, ``min_epoch_cal``.

    Returns
    -------
    dict
        ``offset`` (nepoch, 3) [mag; constant, per 1000 px in x, in y] to subtract, ``offset_err`` (nepoch,)
        [mag], ``rms`` (nepoch,) [mag] of the calibrators' residuals, ``ncal`` (nepoch,), ``star_mean``
        (nobj,) [mag], ``calibrator`` (nobj,) bool and ``used`` (detections in the final fit).
    """
    params = params or MatchParams()
    n = len(mag)
    mag = np.asarray(mag, dtype=np.float64)
    w_all = 1.0 / (np.asarray(magerr, dtype=np.float64) ** 2 + params.cal_floor**2)
    used = np.ones(n, dtype=bool) if use is None else np.asarray(use, dtype=bool).copy()
    used &= np.isfinite(mag) & np.isfinite(w_all)
    spatial = params.spatial_degree == 1 and x is not None and y is not None
    if spatial:
        xs = (np.asarray(x, dtype=np.float64) - _XC) / _PIXEL_SCALE
        ys = (np.asarray(y, dtype=np.float64) - _YC) / _PIXEL_SCALE
        xs = np.where(np.isfinite(xs), xs, 0.0)
        ys = np.where(np.isfinite(ys), ys, 0.0)
    coef = np.zeros((nepoch, 3))
    star = np.zeros(nobj)
    calibrator = np.zeros(nobj, dtype=bool)

    def model_offset(c):
        off = c[epoch, 0]
        if spatial:
            off = off + c[epoch, 1] * xs + c[epoch, 2] * ys
        return off

    for outer in range(params.cal_iterations):
        nper = np.bincount(obj[used], minlength=nobj)
        calibrator = nper >= params.cal_min_nobs
        fit = used & calibrator[obj]
        w = np.where(fit, w_all, 0.0)
        sw_obj = _group_sum(obj, w, nobj)
        sw_ep = _group_sum(epoch, w, nepoch)
        for _ in range(200):
            resid0 = mag - model_offset(coef)
            star = np.where(sw_obj > 0, _group_sum(obj, w * resid0, nobj) / np.where(sw_obj > 0, sw_obj, 1), 0.0)
            r = mag - star[obj]
            new = np.zeros_like(coef)
            if spatial:
                a = np.zeros((nepoch, 3, 3))
                b = np.zeros((nepoch, 3))
                basis = (np.ones(n), xs, ys)
                for p in range(3):
                    b[:, p] = _group_sum(epoch, w * basis[p] * r, nepoch)
                    for q in range(p, 3):
                        a[:, p, q] = a[:, q, p] = _group_sum(epoch, w * basis[p] * basis[q], nepoch)
                ok = np.linalg.det(a) > 1e-12 * np.maximum(a[:, 0, 0], 1e-300) ** 3
                a[~ok] = np.eye(3)
                b[~ok] = 0.0
                new = np.linalg.solve(a, b[..., None])[..., 0]
            else:
                new[:, 0] = np.where(sw_ep > 0, _group_sum(epoch, w * r, nepoch) / np.where(sw_ep > 0, sw_ep, 1), 0.0)
            active = sw_ep > 0
            if np.any(active):
                new[active] -= new[active].mean(axis=0)   # gauge: the PS1 calibration keeps its mean
            new[~active] = 0.0
            change = float(np.max(np.abs(new - coef))) if len(new) else 0.0
            coef = new
            if change < 1e-6:
                break
        resid = mag - star[obj] - model_offset(coef)
        chi = resid * np.sqrt(w_all)
        last = outer == params.cal_iterations - 1
        if last:
            break
        # reject outlying points, then stars that vary
        used &= np.abs(chi) < params.cal_clip
        chi2 = _group_sum(obj, np.where(fit, chi**2, 0.0), nobj)
        dof = np.maximum(np.bincount(obj[fit], minlength=nobj) - 1, 1)
        red = chi2 / dof
        med = float(np.median(red[calibrator])) if np.any(calibrator) else 1.0
        varying = calibrator & (red > params.cal_var_chi2 * max(med, 1e-3))
        used &= ~varying[obj]

    fit = used & calibrator[obj]
    w = np.where(fit, w_all, 0.0)
    ncal = np.bincount(epoch[fit], minlength=nepoch)
    sw_ep = _group_sum(epoch, w, nepoch)
    resid = mag - star[obj] - model_offset(coef)
    rms = np.sqrt(_group_sum(epoch, np.where(fit, resid**2, 0.0), nepoch) / np.maximum(ncal, 1))
    err = np.where(sw_ep > 0, 1.0 / np.sqrt(np.where(sw_ep > 0, sw_ep, 1.0)), np.nan)
    return {"offset": coef, "offset_err": err, "rms": rms, "ncal": ncal, "star_mean": star,
            "calibrator": calibrator & (np.bincount(obj[fit], minlength=nobj) > 0), "used": fit}


def _positions(sorted_keys, keys):
    order = np.argsort(sorted_keys, kind="stable")
    pos = np.searchsorted(sorted_keys, keys, sorter=order)
    pos = np.clip(pos, 0, len(sorted_keys) - 1)
    idx = order[pos]
    if len(keys) and not np.all(sorted_keys[idx] == keys):
        raise ValueError("sourcedata refers to an exposure or object that is not in the matchfile")
    return idx


def _run_max(flag, group, ngroup):
    """Longest run of consecutive True per group (rows sorted by group)."""
    out = np.zeros(ngroup, dtype=np.int64)
    if not len(flag):
        return out
    brk = np.r_[True, (group[1:] != group[:-1]) | ~flag[:-1]]
    run_id = np.cumsum(brk) - 1
    length = np.bincount(run_id, weights=flag.astype(np.float64))
    run_group = group[brk]
    np.maximum.at(out, run_group, length.astype(np.int64))
    return out


def _group_median(values, group, n, start):
    """Median of ``values`` per group (``n`` rows per group, groups starting at ``start`` once sorted)."""
    if not len(values):
        return np.zeros(len(n))
    v = values[np.lexsort((values, group))]
    pos = start + (n - 1) / 2.0
    lo = np.clip(np.floor(pos).astype(np.int64), 0, len(v) - 1)
    hi = np.clip(np.ceil(pos).astype(np.int64), 0, len(v) - 1)
    return np.where(n > 0, 0.5 * (v[lo] + v[hi]), 0.0)


def lomb_scargle_period(t, mag, magerr, *, period_min=0.1, period_max=200.0, samples_per_peak=10):
    """Best Lomb-Scargle period of one lightcurve.

    Parameters
    ----------
    t : array-like
        Times [day].
    mag, magerr : array-like
        Magnitudes and errors [mag].
    period_min, period_max : float, optional
        Search range [day]; the longest period is capped at the time span.
    samples_per_peak : int, optional
        Oversampling of the frequency grid.

    Returns
    -------
    tuple of float
        (period [day], normalised power); (0, 0) with fewer than 5 points.
    """
    t = np.asarray(t, dtype=np.float64)
    if len(t) < 5:
        return 0.0, 0.0
    span = float(np.ptp(t))
    fmin = 1.0 / min(period_max, max(span, period_min * 2))
    fmax = 1.0 / period_min
    ls = LombScargle(t, np.asarray(mag, dtype=np.float64), np.asarray(magerr, dtype=np.float64))
    freq, power = ls.autopower(minimum_frequency=fmin, maximum_frequency=fmax, samples_per_peak=samples_per_peak,
                               method="fast")
    k = int(np.argmax(power))
    # refine the peak on a fine grid around it (the fast method's grid is coarse at high frequency)
    df = (freq[1] - freq[0]) if len(freq) > 1 else fmin
    fine = np.linspace(max(freq[k] - 2 * df, fmin * 0.5), freq[k] + 2 * df, 41)
    fp = ls.power(fine, method="cython")
    j = int(np.argmax(fp))
    return float(1.0 / fine[j]), float(fp[j])


def source_statistics(sourcedata: Table, sources: Table, params: MatchParams | None = None,
                      raw_mag: np.ndarray | None = None) -> Table:
    """Fill the ``sources`` statistics from calibrated ``sourcedata`` (rows sorted by matchid, mjd).

    Parameters
    ----------
    sourcedata : `~astropy.table.Table`
        Calibrated detections (``matchid``, ``mjd``, ``hjd``, ``mag``, ``magerr``, ``catflags``, ``ra``, ``dec``).
    sources : `~astropy.table.Table`
        Objects (``matchid`` sorted); a copy is returned with the statistics filled.
    params : MatchParams, optional
        ``var_floor``, ``var_chi2``, ``var_stetsonj``, ``var_min_nobs`` and the period range.
    raw_mag : numpy.ndarray, optional
        Uncalibrated magnitudes of the rows (for ``uncalibmeanmag``).

    Returns
    -------
    `~astropy.table.Table`
        ``sources`` with ``nobs``, ``ngoodobs``, ``meanmag``, ``medianmag``, ``weightedmeanmag``, ``magrms``,
        ``weightedmagrms``, ``chisq`` (reduced), ``stetsonj``, ``stetsonk``, ``vonneumannratio``, ...,
        ``variable`` and ``period`` [day].
    """
    params = params or MatchParams()
    out = sources.copy()
    nobj = len(out)
    ids = np.asarray(out["matchid"], dtype=np.int64)
    obj_all = _positions(ids, np.asarray(sourcedata["matchid"], dtype=np.int64))
    out["nobs"] = np.bincount(obj_all, minlength=nobj)
    out["nobsrel"] = out["nobs"]
    good = (np.asarray(sourcedata["catflags"]).astype(np.int64) == 0)
    mag_all = np.asarray(sourcedata["mag"], dtype=np.float64)
    good &= np.isfinite(mag_all)
    if raw_mag is not None:
        nall = np.bincount(obj_all, minlength=nobj)
        s = _group_sum(obj_all, np.where(np.isfinite(raw_mag), raw_mag, 0.0), nobj)
        out["uncalibmeanmag"] = np.where(nall > 0, s / np.maximum(nall, 1), 0.0)
    obj = obj_all[good]
    m = mag_all[good]
    e = np.asarray(sourcedata["magerr"], dtype=np.float64)[good]
    t = np.asarray(sourcedata["mjd"], dtype=np.float64)[good]
    n = np.bincount(obj, minlength=nobj)
    out["ngoodobs"] = n
    out["ngoodobsrel"] = n
    has = n > 0
    nn = np.maximum(n, 1)
    mean = _group_sum(obj, m, nobj) / nn
    w = 1.0 / (e**2 + params.var_floor**2)
    sw = _group_sum(obj, w, nobj)
    wmean = _group_sum(obj, w * m, nobj) / np.where(sw > 0, sw, 1)
    d = m - mean[obj]
    var = _group_sum(obj, d**2, nobj) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    wd = m - wmean[obj]
    wrms = np.sqrt(_group_sum(obj, w * wd**2, nobj) / np.where(sw > 0, sw, 1))
    chisq = _group_sum(obj, w * wd**2, nobj) / np.maximum(n - 1, 1)
    # order statistics: sort each object's good magnitudes
    order = np.lexsort((m, obj))
    ms = m[order]
    start = np.r_[0, np.cumsum(n)[:-1]]

    def pct(q):
        pos = start + (n - 1) * q / 100.0
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, start + n - 1)
        lo = np.clip(lo, 0, max(len(ms) - 1, 0))
        hi = np.clip(hi, 0, max(len(ms) - 1, 0))
        if not len(ms):
            return np.zeros(nobj)
        f = pos - np.floor(pos)
        return np.where(has, ms[lo] * (1 - f) + ms[hi] * f, 0.0)
    median = pct(50.0)
    mad = _group_median(np.abs(m - median[obj]), obj, n, start)
    medmagerr = _group_median(e, obj, n, start)
    minmag = np.full(nobj, np.inf)
    maxmag = np.full(nobj, -np.inf)
    np.minimum.at(minmag, obj, m)
    np.maximum.at(maxmag, obj, m)
    # shape: skewness and small-sample kurtosis
    m2 = _group_sum(obj, d**2, nobj) / nn
    m3 = _group_sum(obj, d**3, nobj) / nn
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where((n > 2) & (m2 > 0), m3 / m2**1.5, 0.0)
        nf = n.astype(np.float64)
        s4 = var**2
        kurt = np.where((n > 3) & (s4 > 0),
                        nf * (nf + 1) / ((nf - 1) * (nf - 2) * (nf - 3)) * _group_sum(obj, d**4, nobj) / s4
                        - 3 * (nf - 1) ** 2 / ((nf - 2) * (nf - 3)), 0.0)
        # Stetson J (unpaired: P = delta^2 - 1) and K
        delta = np.sqrt(nf / np.maximum(nf - 1, 1))[obj] * wd * np.sqrt(w)
        p = delta**2 - 1.0
        stetj = np.where(n > 1, _group_sum(obj, np.sign(p) * np.sqrt(np.abs(p)), nobj) / nn, 0.0)
        stetk = np.where(n > 1, (_group_sum(obj, np.abs(delta), nobj) / nn)
                         / np.sqrt(_group_sum(obj, delta**2, nobj) / nn), 0.0)
        # consecutive pairs in time (rows are sorted by matchid, mjd)
        same = np.r_[obj[1:] == obj[:-1], False] if len(obj) else np.zeros(0, dtype=bool)
        dm = np.r_[m[1:] - m[:-1], 0.0] if len(m) else np.zeros(0)
        dt = np.r_[t[1:] - t[:-1], 0.0] if len(t) else np.zeros(0)
        vn = np.where((n > 1) & (var > 0), _group_sum(obj, np.where(same, dm**2, 0.0), nobj)
                      / np.maximum(n - 1, 1) / var, 0.0)
        slope = np.where(same & (dt > 0), dm / np.where(dt > 0, dt, 1.0), 0.0)
        maxslope = np.zeros(nobj)
        if len(obj):
            np.maximum.at(maxslope, obj, np.abs(slope))
        npos = np.bincount(obj[same & (slope > 0)], minlength=nobj)
        # linear trend [mag/day]
        tm = _group_sum(obj, t, nobj) / nn
        dtt = t - tm[obj]
        sxx = _group_sum(obj, dtt**2, nobj)
        trend = np.where(sxx > 0, _group_sum(obj, dtt * d, nobj) / np.where(sxx > 0, sxx, 1), 0.0)
    out["meanmag"] = np.where(has, mean, 0.0)
    out["weightedmeanmag"] = np.where(has, wmean, 0.0)
    out["medianmag"] = median
    out["medianabsdev"] = mad
    out["medmagerr"] = medmagerr
    out["magrms"] = np.where(n > 1, std, 0.0)
    out["weightedmagrms"] = np.where(has, wrms, 0.0)
    out["chisq"] = np.where(n > 1, chisq, np.nan)
    out["minmag"] = np.where(has, minmag, 0.0)
    out["maxmag"] = np.where(has, maxmag, 0.0)
    out["skewness"] = skew
    out["smallkurtosis"] = kurt
    out["stetsonj"] = np.where(n > 1, stetj, np.nan)
    out["stetsonk"] = np.where(n > 1, stetk, np.nan)
    out["vonneumannratio"] = vn
    out["maxslope"] = maxslope
    out["npairposslope"] = npos
    out["lineartrend"] = trend
    out["percentiles"] = np.column_stack([pct(q) for q in PERCENTILES]) if nobj else np.zeros((0, 12))
    amp = np.where(has, maxmag - minmag, 0.0)
    out["nmedianbufferrange"] = np.bincount(obj[np.abs(m - median[obj]) < 0.1 * amp[obj]], minlength=nobj)
    sig = std[obj]
    for k, ns in enumerate(_NSIGMA):
        above = d > ns * sig     # fainter than the mean by ns sigma
        below = d < -ns * sig
        out["nabovemeanbystd"][:, k] = np.bincount(obj[above], minlength=nobj)
        out["nbelowmeanbystd"][:, k] = np.bincount(obj[below], minlength=nobj)
        out["nconsecabovemeanbystd"][:, k] = _run_max(above, obj, nobj)
        out["nconsecbelowmeanbystd"][:, k] = _run_max(below, obj, nobj)
        out["nconsecfrommeanbystd"][:, k] = _run_max(above | below, obj, nobj)
    # "con": fraction of 3-point runs beyond 2 sigma on one side (Wozniak 2000)
    beyond = np.where(d > 2 * sig, 1, np.where(d < -2 * sig, -1, 0))
    same2 = np.zeros(len(obj), dtype=bool)
    if len(obj) > 2:
        same2[:-2] = (obj[2:] == obj[:-2]) & (beyond[:-2] != 0) & (beyond[1:-1] == beyond[:-2]) & (
            beyond[2:] == beyond[:-2])
    out["con"] = np.where(n > 2, np.bincount(obj[same2], minlength=nobj) / np.maximum(n - 2, 1), 0.0)
    # astrometric rms [arcsec] around the mean position of all detections
    ra_all = np.asarray(sourcedata["ra"], dtype=np.float64)
    dec_all = np.asarray(sourcedata["dec"], dtype=np.float64)
    nall = np.bincount(obj_all, minlength=nobj)
    ra_m = _group_sum(obj_all, ra_all, nobj) / np.maximum(nall, 1)
    dec_m = _group_sum(obj_all, dec_all, nobj) / np.maximum(nall, 1)
    dra = (ra_all - ra_m[obj_all] + 180.0) % 360.0 - 180.0
    off2 = (dra * np.cos(np.radians(dec_all))) ** 2 + (dec_all - dec_m[obj_all]) ** 2
    out["astrometricrms"] = np.where(nall > 1, np.sqrt(_group_sum(obj_all, off2, nobj) / np.maximum(nall, 1)) * 3600.0,
                                     0.0)
    # variables and their periods
    # robust variance of the normalised deviations from the median (1 for noise whatever the outliers)
    z = np.abs(m - median[obj]) / np.sqrt(e**2 + params.var_floor**2)
    robust = _group_median(z, obj, n, start) ** 2 * 1.4826**2
    variable = ((n >= params.var_min_nobs) & (chisq > params.var_chi2) & (stetj > params.var_stetsonj)
                & (robust > params.var_robust))
    out["variable"] = variable.astype(np.uint8)
    period = np.zeros(nobj)
    power = np.zeros(nobj)
    for k in np.flatnonzero(variable):
        sel = slice(start[k], start[k] + n[k])
        rows = np.sort(order[sel])     # this object's good rows, in time order
        period[k], power[k] = lomb_scargle_period(t[rows], m[rows], e[rows], period_min=params.period_min,
                                                  period_max=params.period_max,
                                                  samples_per_peak=params.samples_per_peak)
    out["period"] = period
    out["periodpower"] = power
    return out


def _magerr_model(mag, sources, params):
    """The ensemble's rms at each magnitude: median weighted rms of non-variable stars in 0.25-mag bins."""
    ok = (np.asarray(sources["ngoodobs"]) >= max(params.cal_min_nobs, 3)) & (np.asarray(sources["variable"]) == 0)
    wm = np.asarray(sources["weightedmeanmag"], dtype=np.float64)[ok]
    rms = np.asarray(sources["weightedmagrms"], dtype=np.float64)[ok]
    if len(wm) < 10:
        return None
    edges = np.arange(np.floor(wm.min() * 4) / 4, wm.max() + 0.25, 0.25)
    which = np.digitize(wm, edges)
    centres, values = [], []
    for b in np.unique(which):
        sel = which == b
        if np.count_nonzero(sel) >= 5:
            centres.append(float(np.median(wm[sel])))
            values.append(float(np.median(rms[sel])))
    if len(centres) < 2:
        return None
    return np.interp(mag, centres, values)


def calibrate(matchfile: MatchFile, params: MatchParams | None = None) -> MatchFile:
    """Relative photometric refinement of a matchfile, its statistics, variable flags and periods.

    Parameters
    ----------
    matchfile : MatchFile
        Output of `ztfsds.match.match_epochs` (or a matchfile read back: the fit starts again from the
        fluxes and each exposure's ``magzp``).
    params : MatchParams, optional
        Fit, rejection and variability parameters.

    Returns
    -------
    MatchFile
        A new matchfile: ``sourcedata.mag`` calibrated [mag] (``magerr`` unchanged, the photometric error;
        ``magerrmodel`` the ensemble rms at that magnitude), ``catflags`` bit 15 on epochs with bad INFOBITS
        or a failed refinement, ``exposures`` with ``relzp``, ``relzpunc``, ``relzprms``, ``relzpx``,
        ``relzpy``, ``nrelcal``, and ``sources`` statistics (see `source_statistics`).
    """
    params = params or MatchParams()
    exposures = matchfile.exposures.copy()
    sd = matchfile.sourcedata.copy()
    sources = matchfile.sources.copy()
    for name, dtype in (("relzp", np.float32), ("relzpunc", np.float32), ("relzprms", np.float32),
                        ("relzpx", np.float32), ("relzpy", np.float32), ("nrelcal", np.int32)):
        if name not in exposures.colnames:
            exposures[name] = np.zeros(len(exposures), dtype=dtype)
    for name, dtype in (("variable", np.uint8), ("period", np.float64), ("periodpower", np.float32)):
        if name not in sources.colnames:
            sources[name] = np.zeros(len(sources), dtype=dtype)
    nexp, nobj = len(exposures), len(sources)
    ep = _positions(np.asarray(exposures["expid"], dtype=np.int64), np.asarray(sd["expid"], dtype=np.int64))
    obj = _positions(np.asarray(sources["matchid"], dtype=np.int64), np.asarray(sd["matchid"], dtype=np.int64))
    flux = np.asarray(sd["psfflux"], dtype=np.float64)
    ferr = np.asarray(sd["psffluxerr"], dtype=np.float64)
    magzp = np.asarray(exposures["magzp"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = magzp[ep] - 2.5 * np.log10(flux)
        err = 2.5 / math.log(10) * ferr / flux
    infobad = (np.asarray(exposures["infobits"]).astype(np.int64) & int(params.bad_infobits)) != 0
    base_flags = np.asarray(sd["catflags"]).astype(np.int64) & 0x7FFF
    use = (base_flags == 0) & ~infobad[ep] & (err < params.cal_max_magerr) & np.isfinite(raw)
    fit = relative_offsets(raw, err, obj, ep, nobj, nexp, use=use, x=np.asarray(sd["xpos"]), y=np.asarray(sd["ypos"]),
                           params=params)
    failed = (fit["ncal"] < params.min_epoch_cal) | infobad
    coef = np.where(failed[:, None], 0.0, fit["offset"])
    xs = (np.asarray(sd["xpos"], dtype=np.float64) - _XC) / _PIXEL_SCALE
    ys = (np.asarray(sd["ypos"], dtype=np.float64) - _YC) / _PIXEL_SCALE
    off = (coef[ep, 0] + np.where(np.isfinite(xs), coef[ep, 1] * xs, 0.0)
           + np.where(np.isfinite(ys), coef[ep, 2] * ys, 0.0))
    sd["mag"] = (raw - off).astype(np.float32)
    sd["magerr"] = err.astype(np.float32)
    sd["catflags"] = (base_flags | np.where(failed[ep], BAD_EPOCH_CATFLAG, 0)).astype(np.uint16)
    exposures["relzp"] = coef[:, 0].astype(np.float32)
    exposures["relzpx"] = coef[:, 1].astype(np.float32)
    exposures["relzpy"] = coef[:, 2].astype(np.float32)
    exposures["relzpunc"] = np.where(failed, np.nan, fit["offset_err"]).astype(np.float32)
    exposures["relzprms"] = np.where(failed, np.nan, fit["rms"]).astype(np.float32)
    exposures["nrelcal"] = fit["ncal"].astype(np.int32)
    sources = source_statistics(sd, sources, params, raw_mag=raw)
    model = _magerr_model(np.asarray(sd["mag"], dtype=np.float64), sources, params)
    sd["magerrmodel"] = (model if model is not None else err).astype(np.float32)
    attrs = dict(matchfile.attrs)
    attrs["nCalibrationSources"] = np.int64(int(np.count_nonzero(fit["calibrator"])))
    lim = np.asarray(exposures["limitmag"], dtype=np.float64)
    attrs["globalMaglimit"] = np.float32(np.nanmedian(lim) if np.any(np.isfinite(lim)) else np.nan)
    attrs["calibratedSinceLastMatch"] = np.int64(1)
    attrs["datetimeCalibrated"] = np.bytes_(
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f").encode())
    log.info("relative calibration: %d calibrators, %d/%d epochs refined, offsets rms %.4f mag, %d variables",
             int(np.count_nonzero(fit["calibrator"])), int(np.count_nonzero(~failed)), nexp,
             float(np.std(coef[~failed, 0])) if np.any(~failed) else float("nan"),
             int(np.count_nonzero(sources["variable"])))
    return MatchFile(attrs=attrs, exposures=exposures, sources=sources, sourcedata=sd,
                     transients=matchfile.transients, transientdata=matchfile.transientdata)
