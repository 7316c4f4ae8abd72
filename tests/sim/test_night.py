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
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

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


def _moffat_in_aperture(fwhm, dx, dy, radius, beta=3.0):
    """Fractions of unit circular Moffats at offsets (dx, dy) inside a centred circle (astropy model)."""
    from astropy.modeling.models import Moffat2D

    g = np.arange(-radius + 0.125, radius, 0.25)
    xx, yy = np.meshgrid(g, g)
    inside = np.hypot(xx, yy) < radius
    px, py = xx[inside], yy[inside]
    out = []
    for f, x0, y0 in zip(np.atleast_1d(fwhm), np.atleast_1d(dx), np.atleast_1d(dy)):
        gamma = f / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        model = Moffat2D((beta - 1.0) / (np.pi * gamma**2), x0, y0, gamma, beta)
        out.append(float(model(px, py).sum() * 0.25**2))
    return np.array(out)


def test_star_fluxes_match_truth_within_noise(night):
    """Aperture fluxes of clean stars (r = 10 px, true sky removed) scatter about the truth as the noise.

    Clean: no defect, saturated, cosmic-ray or crosstalk-ghost pixel (the truth's MASK HDU) within
    12 px, and the wings of the other sources put less than 0.5 sigma into the aperture (astropy
    Moffat2D of the true FWHMs; that light is subtracted). The calibration is the test's own: master bias from the night's bias
    frames, overscan rows, the published non-linearity and the true flat; the sky is the true sky map
    (SKYE, SKYGRADX/Y) in DN.
    """
    cam = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    radius = 10.0
    pulls, ratios = [], []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
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
        gain, rn = hdr["GAIN"], hdr["READNOI"]
        # the sky plane of the truth header: sky_e (1 + gx u + gy v), u, v in -0.5..0.5 over the array
        u_, v_ = (xx - (SIZE - 1) / 2) / SIZE, (yy - (SIZE - 1) / 2) / SIZE
        sky = hdr["SKYE"] * (1.0 + hdr["SKYGRADX"] * u_ + hdr["SKYGRADY"] * v_) / gain
        # plus the pedestal the other amplifiers' sky puts here through crosstalk (~0.4 DN; the
        # crosstalk is not calibrated here): X[victim, source] times the source's sky [DN]
        with fits.open(truth_file) as hdul:
            skies = {q: hdul[f"Q{q}"].header["SKYE"] / hdul[f"Q{q}"].header["GAIN"] for q in (1, 2, 3, 4)}
        xt = cam.crosstalk(13)
        sky += sum(xt[qid - 1, q - 1] * skies[q] * np.median(cam.flat(13, q, "zr")) for q in (1, 2, 3, 4) if q != qid)
        stars = truth[(truth["kind"] == "star") & (truth["mag"] > 14.0) & (truth["mag"] < 19.0)
                      & (truth["x"] > 20) & (truth["x"] < SIZE - 21) & (truth["y"] > 20) & (truth["y"] < SIZE - 21)]
        for s in stars:
            x0, y0 = float(s["x"]), float(s["y"])
            near = np.hypot(xx - x0, yy - y0) < radius + 2
            if mask[near].any():
                continue
            true_dn = float(s["flux_e"]) / gain
            var_sky = np.pi * radius**2 * (sky[int(y0), int(x0)] / gain + (rn / gain) ** 2)
            sigma = np.sqrt(true_dn / gain + var_sky)
            others = truth[(truth["source_id"] != s["source_id"])
                           & (np.hypot(truth["x"] - x0, truth["y"] - y0) < 40)]
            others = others[np.asarray(others["flux_e"]) / gain > 0.02 * sigma]
            # extended sources spill more than a PSF's wings: no galaxy within 30 px
            if np.any((others["kind"] == "galaxy") & (np.hypot(others["x"] - x0, others["y"] - y0) < 25)
                      & (np.asarray(others["flux_e"]) / gain > 1.0 * sigma)):
                continue
            contamination = float(np.sum(np.asarray(others["flux_e"]) / gain * _moffat_in_aperture(
                np.asarray(others["fwhm"]), np.asarray(others["x"]) - x0, np.asarray(others["y"]) - y0, radius)))
            if contamination > 0.5 * sigma:
                continue
            ap = CircularAperture((x0, y0), r=radius)
            # less the light the neighbours' wings put in the aperture
            flux = float(aperture_photometry(img - sky, ap)["aperture_sum"][0]) - contamination
            # the Moffat's encircled energy within the aperture at this star's FWHM
            expected = true_dn * float(_moffat_in_aperture(float(s["fwhm"]), 0.0, 0.0, radius)[0])
            ratios.append(flux / expected)
            pulls.append((flux - expected) / sigma)
    assert len(pulls) >= 20
    ratio, z = float(np.median(ratios)), np.asarray(pulls)
    print(f"\n{len(z)} stars: median measured/true {ratio:.4f}, pulls mean {z.mean():.2f} std {z.std():.2f}")
    assert abs(ratio - 1.0) < 0.01
    # the scatter of the measured fluxes about the truth is the noise
    assert 0.7 < np.std(z) < 1.3
    assert abs(np.median(z)) < 0.4


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
