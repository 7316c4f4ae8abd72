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


@pytest.mark.xfail(reason="open: with the truth-masked sky the median flux ratio is 0.973-0.980 per quadrant "
                          "(the r = 10 px encircled energy, 0.978), but the pull scatter is 3.9 (< 1.5 "
                          "wanted): a few stars at -9 to -12 sigma (bleed trail / crosstalk ghost / CR?)")
def test_star_fluxes_match_truth_within_noise(night):
    cam = make_camera(SEED, shape=(SIZE, SIZE), ccdids=[13])
    path = night.science[0]
    truth_file = truth_path(ProductStore(night.root), ProductKey.parse(path.name))
    pulls = []
    for qid in (1, 2, 3, 4):
        img, _ = _calibrate(path, qid, cam)
        with fits.open(truth_file) as hdul:
            hdr = hdul[f"Q{qid}"].header
            truth = Table(hdul[f"Q{qid}"].data)
        gain = hdr["GAIN"]
        stars = truth[(truth["kind"] == "star") & (truth["mag"] > 14.5) & (truth["mag"] < 17.5)]
        stars = stars[(stars["x"] > 20) & (stars["x"] < SIZE - 21) & (stars["y"] > 20) & (stars["y"] < SIZE - 21)]
        # isolated: no other source brighter than 21 mag within 12 px
        others = truth[truth["mag"] < 21.5]
        iso = [np.sum(np.hypot(others["x"] - s["x"], others["y"] - s["y"]) < 12.0) == 1 for s in stars]
        stars = stars[np.array(iso, dtype=bool)]
        pos = np.column_stack([stars["x"], stars["y"]])
        ap = CircularAperture(pos, r=10.0)
        ann = CircularAnnulus(pos, r_in=14.0, r_out=20.0)
        phot = aperture_photometry(img, ap)
        # Sky: mean of the annulus pixels clear of every source in the truth table. A plain annulus
        # median is biased high in this crowded b = -17 field (sources to r = 24 touch ~10% of the
        # pixels; with sky noise the median moves by ~0.1-0.15 sigma, ~1 DN, i.e. 3-8% of an r = 17
        # star through 314 px), which was the whole ~7% deficit.
        fwhm = float(np.median(truth["fwhm"]))
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        busy = np.zeros(img.shape, dtype=bool)
        for src in truth:
            rad = fwhm * (1.5 + 0.6 * max(0.0, 20.0 - float(src["mag"])))
            x0, y0, h = int(src["x"]), int(src["y"]), int(rad) + 2
            sl = (slice(min(max(y0 - h, 0), SIZE), min(max(y0 + h + 1, 0), SIZE)),
                  slice(min(max(x0 - h, 0), SIZE), min(max(x0 + h + 1, 0), SIZE)))
            busy[sl] |= np.hypot(xx[sl] - src["x"], yy[sl] - src["y"]) < rad
        sky = np.array([np.mean(m.get_values(img)[m.get_values(busy.astype(float)) == 0])
                        for m in ann.to_mask(method="center")])
        flux_dn = phot["aperture_sum"] - sky * ap.area
        # flux within r = 10 px of a Moffat: compare ratios, so the fraction outside cancels out
        true_dn = stars["flux_e"] / gain  # true electrons detected / gain
        sigma = np.sqrt(np.maximum(flux_dn, 0) / gain + ap.area * (1.4826 * np.median(np.abs(img - np.median(img)))) ** 2)
        frac = np.median(flux_dn / true_dn)
        assert 0.97 < frac < 1.01  # the encircled energy of r = 10 px (Moffat wings, faint neighbours)
        pulls.extend((flux_dn - frac * true_dn) / sigma)
    pulls = np.asarray(pulls)
    assert len(pulls) >= 10
    # scatter of the measured fluxes about the truth is the noise (not more than 1.5x it)
    assert np.std(pulls) < 1.5
    assert abs(np.median(pulls)) < 0.5


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
