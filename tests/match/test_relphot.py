"""Relative photometry against the simulator's truth: zero points, noise, variables, periods."""

import numpy as np
import pytest

from ztfsds.match import MatchParams, calibrate, lomb_scargle_period, match_epochs, relative_offsets
from ztfsds.match.synthetic import synthetic_epochs

from .conftest import QUADRANT, survey_times


def _truth(survey, sky):
    ids = survey.reference_source_id
    return sky[np.searchsorted(np.asarray(sky["source_id"]), ids)]


def _clipped_rms_ratio(mf, isref_rows, centre=None):
    """Per object: rms of good points within 5 sigma of the median, over the rms of their magerr."""
    sd = mf.sourcedata
    good = (np.asarray(sd["catflags"]) & 0x7FFF) == 0    # epochs flagged as a whole count here
    mid = np.asarray(sd["matchid"])[good]
    mag = np.asarray(sd["mag"], dtype=float)[good]
    err = np.asarray(sd["magerr"], dtype=float)[good]
    src = mf.sources
    med = np.asarray(src["medianmag"] if centre is None else centre, dtype=float)[mid]
    keep = np.abs(mag - med) < 5 * err
    n = np.bincount(mid[keep], minlength=len(src))
    mean = np.bincount(mid[keep], weights=mag[keep], minlength=len(src)) / np.maximum(n, 1)
    var = np.bincount(mid[keep], weights=(mag[keep] - mean[mid[keep]]) ** 2, minlength=len(src)) / np.maximum(n - 1, 1)
    expected = np.bincount(mid[keep], weights=err[keep] ** 2, minlength=len(src)) / np.maximum(n, 1)
    return np.sqrt(var / np.maximum(expected, 1e-12))[isref_rows], n[isref_rows]


def test_epoch_offsets_recovered(survey, calibrated):
    """The refinement finds each epoch's zero-point error (0.03 mag rms) to better than 2 mmag."""
    rel = np.asarray(calibrated.exposures["relzp"], dtype=float)
    truth = survey.zp_error - survey.zp_error.mean()      # the gauge keeps the PS1 mean
    resid = rel - truth
    assert np.std(survey.zp_error) > 0.02
    assert np.max(np.abs(resid)) < 0.002, np.max(np.abs(resid))
    assert np.all(calibrated.exposures["nrelcal"] > 1000)
    assert np.all(np.asarray(calibrated.sourcedata["catflags"]) & 32768 == 0)


def test_no_epoch_dependent_offsets(survey, sky, calibrated):
    """Calibrated magnitudes of bright constant stars minus the truth: no epoch off by > 5 mmag."""
    sd = calibrated.sourcedata
    sid_of_match = survey.reference_source_id
    truth = _truth(survey, sky)
    const = np.asarray(truth["kind"]) == "star"
    exp_index = {int(e): j for j, e in enumerate(calibrated.exposures["expid"])}
    offsets = []
    for j, (cat, header) in enumerate(survey.epochs):
        rows = sd[np.asarray(sd["expid"]) == header["EXPID"]]
        rows = rows[(np.asarray(rows["matchid"]) < len(sid_of_match)) & (np.asarray(rows["magerr"]) < 0.02)]
        m = np.asarray(rows["matchid"])
        rows = rows[const[m]]
        # the truth of each detection, by source id
        lookup = dict(zip(survey.source_id[j], survey.true_mag[j]))
        true = np.array([lookup.get(s, np.nan) for s in sid_of_match[np.asarray(rows["matchid"])]])
        offsets.append(np.nanmedian(np.asarray(rows["mag"]) - true))
        assert exp_index[int(header["EXPID"])] >= 0
    offsets = np.array(offsets)
    # the ensemble keeps the mean of the PS1 calibrations, so compare epoch to epoch
    spread = offsets - np.median(offsets)
    assert np.max(np.abs(spread)) < 0.005, np.max(np.abs(spread))


def test_rms_matches_photon_noise(survey, sky, matched, calibrated):
    """Non-variable stars: lightcurve rms within 20 % of the photon-noise expectation after refinement."""
    truth = _truth(survey, sky)
    nref = len(survey.reference_source_id)
    isref = np.zeros(len(calibrated.sources), dtype=bool)
    isref[:nref] = True
    const = np.zeros(len(calibrated.sources), dtype=bool)
    const[:nref] = np.asarray(truth["kind"]) != "variable"
    ratio, n = _clipped_rms_ratio(calibrated, isref)
    mag = np.asarray(calibrated.sources["weightedmeanmag"])[isref]
    use = const[isref] & (n >= 50)
    for lo in range(14, 21):
        sel = use & (mag >= lo) & (mag < lo + 1)
        assert np.count_nonzero(sel) > 40, lo
        assert 0.93 < np.median(ratio[sel]) < 1.07, (lo, np.median(ratio[sel]))
    sel = use & (mag < 20.5)
    assert np.mean(np.abs(ratio[sel] - 1) < 0.2) > 0.97
    # before the refinement the bright stars are dominated by the zero-point errors
    raw = calibrate(matched, MatchParams(min_epoch_cal=10**6))       # every epoch "fails": no correction
    ratio_raw, _ = _clipped_rms_ratio(raw, isref, centre=calibrated.sources["medianmag"])
    bright = use & (mag < 16)
    assert np.median(ratio_raw[bright]) > 2 * np.median(ratio[bright])


def test_variables_and_periods(survey, sky, calibrated):
    """Variables are flagged with few false positives; periodic ones get their true period."""
    truth = _truth(survey, sky)
    nref = len(truth)
    src = calibrated.sources[:nref]
    flagged = np.asarray(src["variable"]) == 1
    isvar = np.asarray(truth["kind"]) == "variable"
    periodic = isvar & np.isin(np.asarray(truth["var_type"]), ["sine", "sawtooth"])
    # detectable: peak-to-peak amplitude over 6 times the typical error
    detectable = periodic & (np.asarray(truth["amplitude"]) > 6 * np.asarray(src["medmagerr"]))
    assert np.count_nonzero(detectable) >= 20
    assert np.mean(flagged[detectable]) > 0.9
    assert np.count_nonzero(flagged & ~isvar) <= 0.001 * np.count_nonzero(~isvar) + 5
    true_p = np.asarray(truth["period"])[periodic & flagged]
    got_p = np.asarray(src["period"])[periodic & flagged]
    good = np.abs(got_p / true_p - 1) < 0.01
    assert np.mean(good) > 0.85, np.column_stack([true_p, got_p])[~good]


def test_spatial_term():
    """A 0.02 mag gradient across the quadrant per epoch is removed with spatial_degree=1."""
    from astropy.coordinates import SkyCoord

    from ztfsds.sim.sky import make_sky

    sky = make_sky(SkyCoord(280.0, 10.0, unit="deg"), 0.35, seed=5, transients=False)
    bright = sky[(np.asarray(sky["r"]) < 18.5)]
    syn = synthetic_epochs(bright, "zr", survey_times(20, 60, seed=4), seed=6, zp_gradient=0.02,
                           outlier_fraction=0.0, kinds=("star",))
    matched = match_epochs(syn.epochs, reference=syn.reference, **QUADRANT)
    flat = calibrate(matched, MatchParams(spatial_degree=0))
    tilt = calibrate(matched, MatchParams(spatial_degree=1))
    rms = {}
    for name, mf in (("flat", flat), ("tilt", tilt)):
        src = mf.sources
        b = (np.asarray(src["ngoodobs"]) >= 15) & (np.asarray(src["medmagerr"]) < 0.01)
        rms[name] = np.median(np.asarray(src["magrms"])[b])
    assert rms["tilt"] < 0.6 * rms["flat"], rms
    assert np.max(np.hypot(tilt.exposures["relzpx"], tilt.exposures["relzpy"])) > 0.01


def test_relative_offsets_equal_least_squares():
    """The alternating solution equals the dense weighted least-squares solution with the same gauge."""
    rng = np.random.default_rng(0)
    nobj, nep = 30, 8
    obj, ep = np.meshgrid(np.arange(nobj), np.arange(nep), indexing="ij")
    obj, ep = obj.ravel(), ep.ravel()
    keep = rng.uniform(size=obj.size) > 0.2
    obj, ep = obj[keep], ep[keep]
    star = rng.uniform(14, 18, nobj)
    zp = rng.normal(0, 0.05, nep)
    err = rng.uniform(0.005, 0.03, obj.size)
    mag = star[obj] + zp[ep] + rng.normal(size=obj.size) * err
    fit = relative_offsets(mag, err, obj, ep, nobj, nep, params=MatchParams(cal_iterations=1, cal_floor=0.0,
                                                                            cal_min_nobs=2))
    # dense solve: unknowns star means and offsets, plus the gauge row sum(Z) = 0
    a = np.zeros((obj.size + 1, nobj + nep))
    a[np.arange(obj.size), obj] = 1 / err
    a[np.arange(obj.size), nobj + ep] = 1 / err
    a[-1, nobj:] = 1e3
    b = np.r_[mag / err, 0.0]
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(fit["offset"][:, 0], sol[nobj:], atol=2e-6)
    assert np.allclose(fit["star_mean"], sol[:nobj], atol=2e-6)


def test_lomb_scargle_period():
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 200, 80))
    mag = 15 + 0.2 * np.sin(2 * np.pi * t / 3.7) + rng.normal(0, 0.01, t.size)
    period, power = lomb_scargle_period(t, mag, np.full(t.size, 0.01))
    assert period == pytest.approx(3.7, rel=1e-3)
    assert power > 0.9
    assert lomb_scargle_period(t[:3], mag[:3], np.ones(3)) == (0.0, 0.0)
