"""A simulated night against its own truth, measured with independent code (photutils, numpy).

The calibration here is deliberately written in the test (overscan median, the camera's published
non-linearity, the true flat) so that the simulator is checked without any pipeline code.
"""

import datetime as dt
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from truthphot import check_pulls, clean_star_pulls

from ztfsds import camera
from ztfsds.products import ProductKey, ProductStore
from ztfsds.sim import simulate_night, truth_path
from ztfsds.sim.instrument import make_camera

SEED = 11
SIZE = 512


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    return simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=SEED,
                          nbias=4, nflat=4)


def _calibrate(path, qid, cam):
    """Independent calibration of one raw quadrant: overscan rows, linearity, flat -> DN."""
    with fits.open(path) as hdul:
        raw = hdul[qid].data.astype(np.float64)
        over = hdul[4 + qid].data.astype(np.float64)
        header = hdul[0].header
    bias = np.median(over[:, 5:25], axis=1)[:, None]
    a, b = camera.nonlinearity_coefficients(13, qid, dt.date(2020, 9, 24))
    dn = camera.linearize(raw - bias, a, b)
    return dn / cam.flat(13, qid, "zr"), header


def test_products_written(night):
    assert len(night.science) == 2 and len(night.calibration) == (4 + 4)
    store = ProductStore(night.root)
    for path in night.science + night.calibration:
        key = ProductKey.parse(path.name)
        assert store.path(key) == path
        with fits.open(path) as hdul:
            assert len(hdul) == 9
            assert hdul[1].data.shape == (SIZE, SIZE) and hdul[5].data.shape == (SIZE, 30)
            assert hdul[1].data.dtype.kind == "u" and hdul[1].data.dtype.itemsize == 2
    manifest = json.loads((night.root / "sim" / "manifest.json").read_text())
    assert manifest["seed"] == SEED and manifest["shape"] == [SIZE, SIZE]
    for path in night.science:
        assert truth_path(store, ProductKey.parse(path.name)).exists()
    assert len(night.schedule) == 2


def test_deterministic(tmp_path, night):
    again = simulate_night(tmp_path, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=SEED,
                           nbias=4, nflat=4)
    for a, b in zip(night.science, again.science):
        assert a.name == b.name
        with fits.open(a) as ha, fits.open(b) as hb:
            assert np.array_equal(ha[3].data, hb[3].data)


def _master_bias(night, qid):
    """Median of the night's bias frames, each less its overscan rows [DN]."""
    frames = []
    for p in night.calibration:
        if p.name.endswith("_b.fits"):
            with fits.open(p) as hdul:
                raw = hdul[qid].data.astype(np.float64)
                over = hdul[4 + qid].data.astype(np.float64)
            frames.append(raw - np.median(over[:, 5:25], axis=1)[:, None])
    return np.median(frames, axis=0)


def test_star_fluxes_match_truth_within_noise(night):
    """Aperture fluxes of clean stars (r = 10 px, true sky removed) scatter about the truth as the noise.

    Clean stars and their photometry: tests/truthphot.py. The calibration is the test's own: master bias
    from the night's bias frames, overscan rows, the published non-linearity and the true flat; the sky
    is the true sky map (SKYE, SKYGRADX/Y) in DN.
    """
    cam = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    pulls, ratios = [], []
    bias = {qid: _master_bias(night, qid) for qid in (1, 2, 3, 4)}
    for path, qid in [(p, q) for p in night.science for q in (1, 2, 3, 4)]:
        truth_file = truth_path(ProductStore(night.root), ProductKey.parse(path.name))
        with fits.open(path) as hdul:
            raw = hdul[qid].data.astype(np.float64)
            over = hdul[4 + qid].data.astype(np.float64)
        a, b = camera.nonlinearity_coefficients(13, qid, dt.date(2020, 9, 24))
        dn = raw - np.median(over[:, 5:25], axis=1)[:, None] - bias[qid]
        img = camera.linearize(dn, a, b) / cam.flat(13, qid, "zr")
        with fits.open(truth_file) as hdul:
            hdr = hdul[f"Q{qid}"].header
            truth = Table(hdul[f"Q{qid}"].data)
            mask = hdul[f"MASK{qid}"].data
            skies = {q: hdul[f"Q{q}"].header["SKYE"] / hdul[f"Q{q}"].header["GAIN"] for q in (1, 2, 3, 4)}
        # the true sky plus the pedestal the other amplifiers' sky puts here through crosstalk (~0.4 DN;
        # the crosstalk is not calibrated here): X[victim, source] times the source's sky [DN]
        xt = cam.crosstalk(13)
        pedestal = sum(xt[qid - 1, q - 1] * skies[q] * np.median(cam.flat(13, q, "zr")) for q in (1, 2, 3, 4)
                       if q != qid)
        r, p, _ = clean_star_pulls(img, None, truth, hdr, mask, pedestal=pedestal)
        ratios.extend(r)
        pulls.extend(p)
    check_pulls(ratios, pulls)


def test_psf_fwhm_matches_requested_seeing(night):
    from astropy.modeling import fitting, models

    cam = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    path = night.science[0]
    truth_file = truth_path(ProductStore(night.root), ProductKey.parse(path.name))
    img, _ = _calibrate(path, 1, cam)
    with fits.open(truth_file) as hdul:
        hdr = hdul["Q1"].header
        truth = Table(hdul["Q1"].data)
    stars = truth[(truth["kind"] == "star") & (truth["mag"] > 14) & (truth["mag"] < 16.5)
                  & (truth["x"] > 15) & (truth["x"] < SIZE - 16) & (truth["y"] > 15) & (truth["y"] < SIZE - 16)]
    fwhms = []
    fitter = fitting.LevMarLSQFitter()
    for s in stars:
        x0, y0 = int(round(s["x"])), int(round(s["y"]))
        cut = img[y0 - 10:y0 + 11, x0 - 10:x0 + 11]
        cut = cut - np.median(img)
        yy, xx = np.mgrid[-10:11, -10:11]
        model = models.Moffat2D(amplitude=cut.max(), x_0=s["x"] - x0, y_0=s["y"] - y0, gamma=2.0, alpha=3.0)
        fit = fitter(model, xx, yy, cut)
        fwhms.append(fit.fwhm)
    assert len(fwhms) >= 3
    measured = float(np.median(fwhms))
    expected = float(np.median(stars["fwhm"]))
    assert abs(measured / expected - 1) < 0.05
    assert abs(hdr["SEEING"] / expected - 1) < 0.1


def test_calibration_frames_recover_camera(night):
    """Bias level, read noise and gain (photon transfer from two flats) agree with the camera to 2%."""
    cam = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    biases = sorted(p for p in night.calibration if p.name.endswith("_b.fits"))
    flats = sorted(p for p in night.calibration if p.name.endswith("_f.fits"))
    for qid in (1, 3):
        ch = cam.channel(13, qid)
        b = [fits.getdata(p, qid).astype(np.float64) for p in biases[:2]]
        ob = [fits.getdata(p, 4 + qid).astype(np.float64) for p in biases[:2]]
        # bias level: overscan columns 5-25 carry bias level + floating bias
        level = np.median(ob[0][:, 5:25])
        assert abs(level - ch.bias_level) / ch.bias_level < 0.02 or abs(level - ch.bias_level) < 5
        good = cam.defects(13, qid) == 0
        d = b[0] - b[1]
        d -= np.median(d, axis=1)[:, None]  # the two frames' floating biases differ row by row
        d = d[good]
        for _ in range(3):  # 5-sigma clipped standard deviation (MAD is biased on integer data)
            d = d[np.abs(d - d.mean()) < 5 * d.std()]
        rn_dn = np.sqrt(d.var() / 2 - 1.0 / 12.0)  # minus the ADC's quantisation noise
        f = [fits.getdata(p, qid).astype(np.float64) - np.median(fits.getdata(p, 4 + qid)[:, 5:25].astype(np.float64), axis=1)[:, None]
             for p in flats[:2]]
        a, bb = camera.nonlinearity_coefficients(13, qid, dt.date(2020, 9, 24))
        f = [camera.linearize(x, a, bb) for x in f]
        diff = (f[0] - f[1])[good]
        mean = 0.5 * (f[0] + f[1])[good].mean()
        gain = mean / (np.var(diff) / 2 - rn_dn**2)
        assert abs(gain / ch.gain - 1) < 0.02, (gain, ch.gain)
        assert abs(rn_dn * ch.gain / ch.read_noise - 1) < 0.02, (rn_dn * ch.gain, ch.read_noise)


def test_zenith_pointing_and_fast_movers_do_not_crash(tmp_path):
    # seed 2 used to crash: an airmass of 0.99992 at the zenith, and a fast mover's track as 1-element arrays
    a = simulate_night(tmp_path / "a", fields=[655], ccds=[13], nexp=3, filters=["zr"], size=96, seed=2,
                       density_scale=3, nbias=1, nflat=1)
    b = simulate_night(tmp_path / "b", fields=[655, 656, 657], ccds=[13], nexp=1, filters=["zr"], size=512,
                       seed=2, density_scale=3, nbias=1, nflat=1)
    assert len(a.science) == 3 and len(b.science) == 3
