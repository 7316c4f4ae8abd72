"""Tests of the simulated camera (ztfsds.sim.instrument) and readout chain (ztfsds.sim.raw).

The measurements here are written independently of the simulator (plain numpy): overscan row
medians, bias differences, the photon-transfer gain, ghost amplitudes, so that the truth the
simulator reports is checked against what a calibration stage would measure.
"""

import datetime
import time

import numpy as np
import pytest
from astropy.io import fits

from ztfsds import camera as zcam
from ztfsds.camera import amp_corner, crosstalk_mirror
from ztfsds.errors import ConfigError, InputError, ShapeError
from ztfsds.products import MaskBits
from ztfsds.sim.instrument import (
    TRUE_GAIN_MEAN,
    TRUE_READ_NOISE_RANGE,
    ChannelTruth,
    make_camera,
)
from ztfsds.sim.raw import (
    COSMIC_RAY_RATE,
    bleed_columns,
    delinearize32,
    electrons_to_raw,
    raw_header,
    simulate_bias_ccd,
    simulate_dome_flat_ccd,
    write_raw_ccd,
)

QIDS = (1, 2, 3, 4)
SHAPE = (256, 256)


@pytest.fixture(scope="module")
def cam():
    return make_camera(7, shape=SHAPE, ccdids=(1, 6, 13))


def _const(level, shape=SHAPE):
    return {q: np.full(shape, level, dtype=np.float32) for q in QIDS}


# ---- independent measurement helpers ---------------------------------------------------------------


def _overscan_rows(ov):
    """Per-row median of overscan columns 5-24 (as ztfimg does)."""
    return np.median(ov[:, 5:25].astype(np.float64), axis=1)


def _oscan_corrected(raw, ov):
    """Subtract a degree-3 polynomial fit of the overscan row medians (as ztfimg does)."""
    rows = np.arange(ov.shape[0])
    fit = np.polyval(np.polyfit(rows, _overscan_rows(ov), 3), rows)
    return raw.astype(np.float64) - fit[:, None]


def _good_columns(d):
    """Columns whose robust scatter is normal (drops noisy columns)."""
    mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    return mad < 1.5 * np.median(mad)


def _clipped(values, nsig=5.0):
    v = np.asarray(values, dtype=np.float64).ravel()
    for _ in range(5):
        med = np.median(v)
        sig = 1.4826 * np.median(np.abs(v - med))
        v = v[np.abs(v - med) < nsig * sig]
    return v


def _remove_row_trend(d, deg=5):
    """Subtract a low-order polynomial of the row means (a floating-bias difference)."""
    rows = np.arange(d.shape[0])
    means = np.array([_clipped(r).mean() for r in d])
    return d - np.polyval(np.polyfit(rows, means, deg), rows)[:, None]


def _raw_from_true(y, a, b):
    """Independent inversion of DN_true = x / (A x^2 + B x + 1) by fixed-point iteration."""
    x = np.array(y, dtype=np.float64)
    for _ in range(50):
        x = y * (a * x * x + b * x + 1.0)
    return x


# ---- the camera ------------------------------------------------------------------------------------


def test_camera_deterministic_and_independent_of_subset():
    a = make_camera(3, shape=(64, 64), ccdids=[2, 9])
    b = make_camera(3, shape=(64, 64), ccdids=[9])
    c = make_camera(4, shape=(64, 64), ccdids=[9])
    for q in QIDS:
        assert a.channel(9, q) == b.channel(9, q)
        assert a.channel(9, q) != c.channel(9, q)
        np.testing.assert_array_equal(a.flat(9, q, "zg"), b.flat(9, q, "zg"))
        np.testing.assert_array_equal(a.defects(9, q), b.defects(9, q))
        np.testing.assert_array_equal(a.bias_structure(9, q), b.bias_structure(9, q))
        assert not np.array_equal(a.flat(9, q, "zg"), c.flat(9, q, "zg"))
    np.testing.assert_array_equal(a.crosstalk(9), b.crosstalk(9))
    # asking in another order (cache state) changes nothing
    np.testing.assert_array_equal(make_camera(3, shape=(64, 64), ccdids=[9]).flat(9, 4, "zg"), a.flat(9, 4, "zg"))
    with pytest.raises(ConfigError):
        b.channel(2, 1)
    with pytest.raises(ConfigError):
        make_camera(-1)
    with pytest.raises(ConfigError):
        make_camera(1, ccdids=[17])


def test_channel_truth_values():
    cam = make_camera(5, shape=(16, 16))
    date = datetime.date(2020, 9, 24)
    chans = [cam.channel(c, q) for c in zcam.CCDIDS for q in QIDS]
    assert len(chans) == 64 and all(isinstance(ch, ChannelTruth) for ch in chans)
    gains = np.array([ch.gain for ch in chans])
    assert abs(gains.mean() - TRUE_GAIN_MEAN) < 0.1
    assert 0.015 < gains.std() / gains.mean() < 0.045
    for ch in chans:
        assert ch.rcid == zcam.rcid(ch.ccdid, ch.qid)
        assert ch.amp_name == zcam.amp_name(ch.qid)
        assert TRUE_READ_NOISE_RANGE[0] <= ch.read_noise <= TRUE_READ_NOISE_RANGE[1]
        assert 300 <= ch.bias_level <= 1000
        assert (ch.nonlin_a, ch.nonlin_b) == zcam.nonlinearity_coefficients(ch.ccdid, ch.qid, date)
        # the ADC clips before the full well is reached
        assert ch.adc_saturation_electrons < ch.full_well < 1.12 * ch.adc_saturation_electrons
        assert 3.6e5 < ch.full_well < 4.8e5


def test_flat_normalisation_prnu_and_vignetting():
    cam = make_camera(8, shape=(32, 32))
    for c in (1, 6):
        allq = np.concatenate([cam.flat(c, q, "zr").ravel() for q in QIDS])
        assert abs(np.median(allq) - 1.0) < 1e-3
    f = cam.flat(6, 2, "zr")
    assert f.dtype == np.float32 and not f.flags.writeable
    # vignetting: within each CCD, quadrants farther from the axis are darker, as -v r^2 / R^2
    dm, dr2 = [], []
    for c in zcam.CCDIDS:
        means = np.array([cam.flat(c, q, "zr").mean() for q in QIDS])
        r2 = np.array([np.sum(zcam.quadrant_corners(c, q).value.mean(axis=0) ** 2) for q in QIDS])
        dm.extend(means - means.mean())
        dr2.extend(r2 - r2.mean())
    slope = np.polyfit(dr2, dm, 1)[0]
    assert slope == pytest.approx(-0.05 / 5.22**2, rel=0.3)

    big = make_camera(8, shape=(512, 512), ccdids=[6])
    for code, rms in (("zg", 0.009), ("zr", 0.007), ("zi", 0.006)):
        f = big.flat(6, 1, code).astype(np.float64)
        d = np.diff(f, axis=1)  # white PRNU from neighbour differences; the smooth part cancels
        assert np.std(_clipped(d)) / np.sqrt(2) / f.mean() == pytest.approx(rms, rel=0.05)


def test_defect_codes_and_rates(cam):
    allowed = int(MaskBits.DEAD | MaskBits.LOW_RESPONSIVITY | MaskBits.HIGH_RESPONSIVITY | MaskBits.NOISY)
    n_hot = n_pix = 0
    for c in cam.ccdids:
        for q in QIDS:
            d = cam.defects(c, q)
            assert d.dtype == np.int32 and d.shape == SHAPE
            assert not np.any(d & ~allowed)
            hot = cam.hot_pixels(c, q)
            assert np.all(d[hot["y"], hot["x"]] & int(MaskBits.NOISY))
            for x in cam.noisy_columns(c, q)["x"]:
                assert np.all(d[:, x] & int(MaskBits.NOISY))
            n_hot += len(hot)
            n_pix += d.size
    expected = 1e-4 * n_pix
    assert abs(n_hot - expected) < 5 * np.sqrt(expected) + 1


def test_crosstalk_matrix_and_mirror(cam):
    x = cam.crosstalk(13)
    assert x.shape == (4, 4) and np.all(np.diag(x) == 0)
    off = x[~np.eye(4, dtype=bool)]
    assert np.all((off >= 1e-4) & (off <= 1e-3))
    assert amp_corner(1, SHAPE) == (0, 0) and amp_corner(2, SHAPE) == (0, 255)
    img = np.zeros(SHAPE)
    img[10, 20] = 1
    assert np.argwhere(crosstalk_mirror(img, 1, 2)).tolist() == [[10, 235]]
    assert np.argwhere(crosstalk_mirror(img, 1, 3)).tolist() == [[245, 235]]
    assert np.argwhere(crosstalk_mirror(img, 1, 4)).tolist() == [[245, 20]]


# ---- the readout chain -----------------------------------------------------------------------------


def test_electrons_to_raw_deterministic(cam):
    e = _const(800.0)
    a = electrons_to_raw(e, 13, cam, "zr", rng=np.random.default_rng(1))
    b = electrons_to_raw(e, 13, cam, "zr", rng=np.random.default_rng(1))
    c = electrons_to_raw(e, 13, cam, "zr", rng=np.random.default_rng(2))
    for q in QIDS:
        assert a[0][q].dtype == np.uint16 and a[0][q].shape == SHAPE
        assert a[1][q].dtype == np.uint16 and a[1][q].shape == (SHAPE[0], 30)
        np.testing.assert_array_equal(a[0][q], b[0][q])
        np.testing.assert_array_equal(a[1][q], b[1][q])
        np.testing.assert_array_equal(a[2]["floating_bias"][q], b[2]["floating_bias"][q])
        assert not np.array_equal(a[0][q], c[0][q])
    assert len(a[2]["cosmic_rays"]) == len(b[2]["cosmic_rays"])
    np.testing.assert_array_equal(e[1], 800.0)  # input untouched


def test_orientation_flip(cam):
    e = _const(500.0)
    e[1][10:20, 30:40] = 5e4
    a = electrons_to_raw(e, 1, cam, "zg", rng=3)
    b = electrons_to_raw(e, 1, cam, "zg", rng=3, orientation_flip=True)
    for q in QIDS:
        np.testing.assert_array_equal(b[0][q], a[0][q][::-1, ::-1])
        np.testing.assert_array_equal(b[1][q], a[1][q][::-1, ::-1])
    assert b[2]["orientation_flip"] and not a[2]["orientation_flip"]


def test_overscan_follows_bias_and_floating_bias(cam):
    quads, ovs, truth = electrons_to_raw(_const(1500.0), 6, cam, "zr", rng=11)
    rows = np.arange(SHAPE[0])
    for q in QIDS:
        ch = cam.channel(6, q)
        expected = ch.bias_level + truth["floating_bias"][q]
        # per-row median (ztfimg's estimator): within 0.5 DN of the truth; its scatter is
        # ~1.25 * read noise / sqrt(20) and the ADC's integer steps bias it by up to ~0.3 DN
        med = _overscan_rows(ovs[q])
        assert abs(np.mean(med - expected)) < 0.35
        assert np.sqrt(np.mean((med - expected) ** 2)) < 1.5 * 1.2533 * ch.read_noise_dn / np.sqrt(20) + 0.3
        assert np.max(np.abs(np.polyval(np.polyfit(rows, med, 3), rows) - expected)) < 0.5
        # per-row mean: unbiased
        mean = ovs[q][:, 5:25].astype(np.float64).mean(axis=1)
        assert abs(np.mean(mean - expected)) < 0.1
        assert np.max(np.abs(np.polyval(np.polyfit(rows, mean, 3), rows) - expected)) < 0.3
        # the floating bias is not a constant: a per-exposure row profile
        assert np.ptp(truth["floating_bias"][q]) > 0.1


def test_bias_level_and_read_noise_from_two_biases(cam):
    b1, o1, t1 = simulate_bias_ccd(cam, 13, rng=21)
    b2, o2, t2 = simulate_bias_ccd(cam, 13, rng=22)
    for q in QIDS:
        ch = cam.channel(13, q)
        # bias level: the overscan level less this exposure's floating bias
        level = np.median(o1[q][:, 5:25]) - np.mean(t1["floating_bias"][q])
        assert level == pytest.approx(ch.bias_level, rel=0.02, abs=1.0)
        # the image area sits at bias_level + floating bias + the fixed structure
        img = _oscan_corrected(b1[q], o1[q])
        assert np.median(img) == pytest.approx(np.median(cam.bias_structure(13, q)), abs=0.7)
        # read noise from the difference of two biases
        d = b1[q].astype(np.float64) - b2[q].astype(np.float64)
        d = _remove_row_trend(d)[:, _good_columns(d)]
        var = np.var(_clipped(d)) / 2.0 - 1.0 / 12.0  # less the ADC rounding (Sheppard)
        assert np.sqrt(var) * ch.gain == pytest.approx(ch.read_noise, rel=0.02)


def test_gain_from_photon_transfer():
    cam = make_camera(11, shape=(512, 512), ccdids=[5])
    f1, fo1, _ = simulate_dome_flat_ccd(cam, 5, "zr", 20000.0, rng=31)
    f2, fo2, _ = simulate_dome_flat_ccd(cam, 5, "zr", 20000.0, rng=32)
    b1, bo1, _ = simulate_bias_ccd(cam, 5, rng=33)
    b2, bo2, _ = simulate_bias_ccd(cam, 5, rng=34)
    for q in QIDS:
        ch = cam.channel(5, q)
        bias = _oscan_corrected(b1[q], bo1[q])
        db = b1[q].astype(np.float64) - b2[q].astype(np.float64)
        rn2 = np.var(_clipped(_remove_row_trend(db)[:, _good_columns(db)])) / 2.0
        s1 = _oscan_corrected(f1[q], fo1[q]) - bias
        s2 = _oscan_corrected(f2[q], fo2[q]) - bias
        d = s1 - s2
        good = _good_columns(d)
        signal = np.mean(_clipped(0.5 * (s1 + s2)[:, good]))
        var = np.var(_clipped(d[:, good])) / 2.0
        gain = signal / (var - rn2)
        assert gain == pytest.approx(ch.gain, rel=0.02), (q, gain, ch.gain)


def test_nonlinearity_applied():
    # the 2018 table has the strongest non-linearity (~+1 % at 36 kDN)
    cam = make_camera(12, shape=SHAPE, ccdids=[3], date="2019-06-01")
    level = 220000.0
    quads, ovs, truth = simulate_dome_flat_ccd(cam, 3, "zi", level, rng=41, exptime=0.0)
    bias, bov, _ = simulate_bias_ccd(cam, 3, rng=42)
    xt = cam.crosstalk(3)
    true_dn = {q: level * cam.response(3, q, "zi").astype(np.float64) / cam.channel(3, q).gain for q in QIDS}
    fractions = []
    for v in QIDS:
        ch = cam.channel(3, v)
        y = true_dn[v] + sum(xt[v - 1, s - 1] * crosstalk_mirror(true_dn[s], s, v) for s in QIDS if s != v)
        measured = _oscan_corrected(quads[v], ovs[v]) - _oscan_corrected(bias[v], bov[v])
        ok = (cam.defects(3, v) == 0) & ~truth["saturated"][v]
        frac = np.median(measured[ok] / y[ok]) - 1.0
        expected = np.median(_raw_from_true(y[ok], ch.nonlin_a, ch.nonlin_b) / y[ok]) - 1.0
        assert frac == pytest.approx(expected, abs=5e-4), v
        fractions.append(expected)
    assert max(np.abs(fractions)) > 0.005  # visibly non-linear


def _star(shape, y0, x0, total, sigma=2.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    g = np.exp(-0.5 * ((yy - y0) ** 2 + (xx - x0) ** 2) / sigma**2)
    return (total * g / g.sum()).astype(np.float32)


def test_saturation_and_bleed_trails(cam):
    e = _const(300.0)
    e[1] += _star(SHAPE, 100, 128, 5e8)
    quads, ovs, truth = electrons_to_raw(e, 13, cam, "zr", rng=51, cosmic_rays=False)
    raw = quads[1]
    assert raw[100, 128] == zcam.ADC_MAX
    clipped = raw == zcam.ADC_MAX
    assert np.all(truth["saturated"][1][clipped])
    assert np.all(raw[truth["bleed"][1]] == zcam.ADC_MAX)  # bleed trails read 65535 (full well > ADC)
    # the saturated region is a trail along the column
    col_extent = np.count_nonzero(clipped[:, 128])
    row_extent = np.count_nonzero(clipped[100, :])
    assert col_extent > 4 * row_extent
    rows = np.flatnonzero(clipped[:, 128])
    assert rows.min() < 100 - 20 and rows.max() > 100 + 20
    assert not truth["saturated"][2].any()


def test_bleed_columns_conserves_charge():
    rng = np.random.default_rng(0)
    im = rng.uniform(0, 50, (200, 20)).astype(np.float32)
    im[100, 5] = 3000.0
    im[110, 5] = 2000.0  # a second over-full pixel on the same trail
    im[30, 12] = 900.0
    total = im.astype(np.float64).sum()
    mask = bleed_columns(im, 100.0)
    assert im.max() <= 100.0 + 1e-3
    assert im.astype(np.float64).sum() == pytest.approx(total, rel=1e-6)
    assert mask[:, 5].sum() >= (3000 + 2000) / 100 - 2
    assert mask[:, 12].sum() >= 8 and not mask[:, 0].any()


def test_crosstalk_ghost_in_neighbour_amplifiers(cam):
    ccd = 13
    e = _const(200.0)
    e[1] += _star(SHAPE, 90, 60, 3e8)
    star, sov, truth = electrons_to_raw(e, ccd, cam, "zr", rng=61, cosmic_rays=False)
    blank, bov, _ = electrons_to_raw(_const(200.0), ccd, cam, "zr", rng=62, cosmic_rays=False)
    src = cam.channel(ccd, 1)
    trail = truth["bleed"][1]
    assert trail.sum() > 20
    xt = cam.crosstalk(ccd)
    for v in (2, 3, 4):
        diff = _oscan_corrected(star[v], sov[v]) - _oscan_corrected(blank[v], bov[v])
        where = crosstalk_mirror(trail, 1, v)
        ghost = np.median(diff[where])
        expected = xt[v - 1, 0] * src.full_well / src.gain
        assert 5.0 < expected < 70.0  # a ~65 kDN source gives a 6-60 DN ghost
        assert ghost == pytest.approx(expected, rel=0.1, abs=1.0), (v, ghost, expected)
        assert np.all(truth["crosstalk"]["ghost_mask"][v][where])
        assert truth["crosstalk"]["ghost_peak"][v] == pytest.approx(expected, rel=0.05)
    # and nothing there without the star: the ghost is not a fixed pattern
    assert abs(np.median(diff[~truth["crosstalk"]["ghost_mask"][4]])) < 0.5


def test_dead_low_high_pixels_in_dome_flat(cam):
    n_dead = n_low = n_high = 0
    for ccd, seed in ((1, 71), (13, 72)):
        quads, ovs, truth = simulate_dome_flat_ccd(cam, ccd, "zg", 25000.0, rng=seed, exptime=0.0)
        for q in QIDS:
            d = cam.defects(ccd, q)
            sig = _oscan_corrected(quads[q], ovs[q]) - np.median(cam.bias_structure(ccd, q))
            ratio = sig / cam.flat(ccd, q, "zg")
            ratio /= np.median(ratio[d == 0])
            dead = (d & int(MaskBits.DEAD)) != 0
            assert np.all(np.abs(sig[dead]) < 30)  # only bias structure and read noise
            low, high = d == int(MaskBits.LOW_RESPONSIVITY), d == int(MaskBits.HIGH_RESPONSIVITY)
            if low.any():
                assert np.median(ratio[low]) == pytest.approx(0.3, rel=0.03)
            if high.any():
                assert np.median(ratio[high]) == pytest.approx(1.5, rel=0.03)
            # dividing by the true flat leaves only shot and read noise (the PRNU alone is 0.9 %)
            shot = np.sqrt(25000.0 + cam.channel(ccd, q).read_noise ** 2) / 25000.0
            assert np.std(_clipped(ratio[d == 0])) == pytest.approx(shot, rel=0.05)
            n_dead, n_low, n_high = n_dead + dead.sum(), n_low + low.sum(), n_high + high.sum()
    assert n_dead > 0 and n_low > 0 and n_high > 0


def test_hot_pixels_collect_charge(cam):
    exptime = 30.0
    quads, ovs, _ = electrons_to_raw(_const(0.0), 6, cam, "zr", rng=81, exptime=exptime, cosmic_rays=False)
    bias, bov, _ = simulate_bias_ccd(cam, 6, rng=82)
    for q in QIDS:
        ch = cam.channel(6, q)
        hot = cam.hot_pixels(6, q)
        d = cam.defects(6, q)
        hot = hot[(d[hot["y"], hot["x"]] & int(MaskBits.DEAD)) == 0]
        excess = (_oscan_corrected(quads[q], ovs[q]) - _oscan_corrected(bias[q], bov[q]))[hot["y"], hot["x"]]
        expected = np.asarray(hot["rate"]) * exptime / ch.gain
        tol = 6 * np.sqrt(expected / ch.gain + 2 * ch.read_noise_dn**2 + 1) + 0.02 * expected
        assert np.all(np.abs(excess - expected) < tol)


def test_cosmic_rays():
    full = zcam.QUADRANT_SHAPE[0] * zcam.QUADRANT_SHAPE[1] * (15e-4) ** 2  # cm^2
    assert 100 < COSMIC_RAY_RATE * full * 0.5 < 300  # hits per full quadrant in 30 s
    shape = (512, 512)
    cam = make_camera(9, shape=shape, ccdids=[2])
    exptime = 300.0
    quads, ovs, truth = electrons_to_raw(_const(100.0, shape), 2, cam, "zr", rng=91, exptime=exptime)
    clean, cov, _ = electrons_to_raw(_const(100.0, shape), 2, cam, "zr", rng=92, exptime=exptime,
                                     cosmic_rays=False)
    crs = truth["cosmic_rays"]
    expected = 4 * COSMIC_RAY_RATE * shape[0] * shape[1] * (15e-4) ** 2 * exptime / 60.0
    assert abs(len(crs) - expected) < 5 * np.sqrt(expected)
    assert set(crs.colnames) >= {"qid", "x", "y", "electrons"}
    assert np.all((crs["electrons"] > 0) & (crs["electrons"] <= 20000 * 1.0001))
    for q in QIDS:
        gain = cam.channel(2, q).gain
        diff = _oscan_corrected(quads[q], ovs[q]) - _oscan_corrected(clean[q], cov[q])
        mine = crs[crs["qid"] == q]
        hit = truth["cosmic_ray_mask"][q]
        # all the charge is where the truth says
        assert diff[hit].sum() * gain == pytest.approx(mine["electrons"].sum(), rel=0.03)
        noisy = cam.defects(2, q) != 0
        for row in mine:
            y, x = int(round(row["y"])), int(round(row["x"]))
            near = np.hypot(mine["x"] - row["x"], mine["y"] - row["y"]) < 12
            box = (slice(max(y - 4, 0), y + 5), slice(max(x - 4, 0), x + 5))
            if near.sum() > 1 or noisy[box].any():
                continue
            npix = diff[box].size  # each pixel of the difference has 2 x (sky + read noise^2) e-^2
            sigma = np.sqrt(npix * 2 * (100.0 + cam.channel(2, q).read_noise ** 2))
            assert diff[box].sum() * gain == pytest.approx(row["electrons"], rel=0.03, abs=5 * sigma)
    for q in QIDS:
        assert truth["cosmic_ray_mask"][q].sum() >= np.sum(crs["qid"] == q)


def test_overscan_trail_of_last_pixel(cam):
    e = _const(0.0)
    # q1 is read from column 0, so its last pixel of each row is column nx - 1
    e[1][:, -1] = 250000.0
    quads, ovs, truth = electrons_to_raw(e, 13, cam, "zr", rng=95, cosmic_rays=False)
    ov = ovs[1].astype(np.float64)
    ch = cam.channel(13, 1)
    first = ov[:, 0].mean() - ov[:, 10:25].mean()
    assert first == pytest.approx(ch.overscan_tail * 250000.0 * np.median(cam.flat(13, 1, "zr")[:, -1]) / ch.gain,
                                  rel=0.2, abs=0.5)
    assert abs(ov[:, 5:10].mean() - ov[:, 10:25].mean()) < 0.15  # columns 5 on are clean


def test_delinearize32_matches_camera():
    y = np.random.default_rng(0).uniform(-20, 70000, 100000).astype(np.float32)
    for a, b in ((-8.66e-12, 2.69e-7), (-1.62e-11, 1.03e-6), (-4.65e-12, 3.39e-8)):
        np.testing.assert_allclose(delinearize32(y.copy(), a, b), zcam.delinearize(y.astype(np.float64), a, b),
                                   atol=0.02, rtol=0)


def test_input_validation(cam):
    e = _const(1.0)
    with pytest.raises(ConfigError):
        electrons_to_raw({1: e[1]}, 13, cam, "zr", rng=0)
    with pytest.raises(ShapeError):
        electrons_to_raw({q: np.zeros((10, 10), np.float32) for q in QIDS}, 13, cam, "zr", rng=0)
    bad = dict(e)
    bad[2] = np.full(SHAPE, -1.0, np.float32)
    with pytest.raises(InputError):
        electrons_to_raw(bad, 13, cam, "zr", rng=0)
    with pytest.raises(ConfigError):
        electrons_to_raw(e, 2, cam, "zr", rng=0)
    with pytest.raises(ConfigError):
        electrons_to_raw(e, 13, cam, "zz", rng=0)


# ---- raw files -------------------------------------------------------------------------------------


def _read_raw(path):
    """Test-only reader: (primary header, {qid: quadrant}, {qid: overscan}, hdul length, kinds)."""
    with fits.open(path) as hdul:
        n = len(hdul)
        kinds = [type(h).__name__ for h in hdul]
        primary = hdul[0].header.copy()
        assert hdul[0].data is None
        quads = {q: (hdul[q].data.copy(), hdul[q].header.copy()) for q in QIDS}
        ovs = {q: (hdul[4 + q].data.copy(), hdul[4 + q].header.copy()) for q in QIDS}
    return primary, quads, ovs, n, kinds


def test_raw_file_round_trip(cam, tmp_path):
    quads, ovs, _ = electrons_to_raw(_const(900.0), 13, cam, "zr", rng=101)
    header = raw_header(ccdid=13, obsjd=2459116.9317708, field=655, airmass=1.018)
    plain = write_raw_ccd(tmp_path / "ztf_20200924431770_000655_zr_c13_o.fits", quads, ovs, header)
    packed = write_raw_ccd(tmp_path / "ztf_20200924431770_000655_zr_c13_o.fits.fz", quads, ovs, header,
                           compress=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([plain.name, packed.name])  # no temporaries
    p1, q1, o1, n1, k1 = _read_raw(plain)
    p2, q2, o2, n2, k2 = _read_raw(packed)
    assert n1 == n2 == 9
    assert k1[1:] == ["ImageHDU"] * 8 and k2[1:] == ["CompImageHDU"] * 8
    assert p1["NFRAMES"] == 8 and p1["INSTRUME"] == "ZTF/MOSAIC" and p1["CCD_ID"] == 13
    for q in QIDS:
        for got, ref, shape in ((q1[q], quads[q], SHAPE), (o1[q], ovs[q], (SHAPE[0], 30)),
                                (q2[q], quads[q], SHAPE), (o2[q], ovs[q], (SHAPE[0], 30))):
            data, h = got
            assert data.dtype == np.uint16 and data.shape == shape
            np.testing.assert_array_equal(data, ref)
            assert h["CCD_ID"] == 13 and h["QID"] == q and h["AMP_ID"] == q - 1
            assert h["AMP_NAME"] == zcam.amp_name(q) and h["GAIN"] == 6.0 and h["READNOI"] == 9.0
        assert q1[q][1]["EXTNAME"] == str(q) and o1[q][1]["EXTNAME"] == str(q + 4)
    assert packed.stat().st_size < plain.stat().st_size


def test_raw_header_keywords():
    h = raw_header(ccdid=13, obsjd=2459116.9317708, field=655, airmass=1.018, exptime=30.0)
    assert h["ORIGIN"] == "Zwicky Transient Facility"
    assert (h["IMGTYPE"], h["FILTER"], h["FILTERID"], h["FIELDID"]) == ("object", "ZTF_r", 2, 655)
    assert h["OBSMJD"] == pytest.approx(h["OBSJD"] - 2400000.5)
    assert h["DATE-OBS"].startswith("2020-09-24T10:21:4")
    assert h["RAD"] == pytest.approx(55.0608, abs=1e-3) and h["DECD"] == pytest.approx(33.35, abs=1e-3)
    assert h["TELRA"].startswith("+03:40:14") and h["TELDEC"].startswith("+33:21:0")
    assert h["EXPID"] == 136243177 and h["AIRMASS"] == 1.018
    dome = raw_header(ccdid=2, obsjd=2459116.5, imgtype="dome", exptime=10.0, filtercode="zg",
                      ilum_led=3, ilumwave=470.0, ilumpowr=12.5)
    assert (dome["IMGTYPE"], dome["ILUM_LED"], dome["ILUMWAVE"], dome["ILUMPOWR"]) == ("dome", 3, 470.0, 12.5)
    assert dome["FILENAME"].endswith("_zg_c02_f.fits") and "RAD" not in dome
    bias = raw_header(ccdid=2, obsjd=2459116.5, imgtype="bias", exptime=0.0, filtercode="OO")
    assert bias["FILTERID"] == 0 and bias["FILENAME"].endswith("_OO_c02_b.fits")
    with pytest.raises(ConfigError):
        raw_header(ccdid=2, obsjd=2459116.5, imgtype="flat")


@pytest.mark.slow
def test_full_size_ccd():
    """One full-size CCD (4 x 3080 x 3072) through the chain; prints the time (not asserted)."""
    cam = make_camera(2020, ccdids=[13])
    shape = zcam.QUADRANT_SHAPE
    e = {q: np.full(shape, 950.0, dtype=np.float32) for q in QIDS}
    e[3] += _star(shape, 1500, 700, 1e9, sigma=2.0)
    t0 = time.perf_counter()
    for q in QIDS:
        cam.flat(13, q, "zr")
    t1 = time.perf_counter()
    quads, ovs, truth = electrons_to_raw(e, 13, cam, "zr", rng=1)
    t2 = time.perf_counter()
    quads, ovs, truth = electrons_to_raw(e, 13, cam, "zr", rng=2)
    t3 = time.perf_counter()
    print(f"\nflats {t1 - t0:.2f} s, first CCD {t2 - t1:.2f} s, second CCD {t3 - t2:.2f} s")
    for q in QIDS:
        assert quads[q].shape == shape and quads[q].dtype == np.uint16
        assert ovs[q].shape == zcam.OVERSCAN_SHAPE and ovs[q].dtype == np.uint16
    assert 50 < len(truth["cosmic_rays"]) < 1500
    assert quads[3][1500, 700] == zcam.ADC_MAX
