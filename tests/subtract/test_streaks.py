"""Streak detection: synthetic difference images (noise, transients, dipoles, cosmic rays, injected
streaks), the masks, the compiled kernels, a full-size timing and a simulated night's satellite trail."""

import math
import time

import numpy as np
import pytest
from astropy.table import Table
from scipy.special import erf

from ztfsds._ext import _streaks, reference_streaks
from ztfsds.errors import ConfigError, InputError
from ztfsds.products import MaskBits
from ztfsds.subtract.streaks import detect_streaks, on_streak, streak_mask

SIGMA = 10.0


# --------------------------------------------------------------------------------------------------
# synthetic scenes


def _add_streak(img, x0, y0, x1, y1, peak, fwhm):
    """A Gaussian-profile segment of peak surface brightness ``peak`` [DN] (exact line convolved with a
    Gaussian PSF, sampled at pixel centres)."""
    ny, nx = img.shape
    sg = fwhm / 2.3548
    r = 5 * sg + 2
    xlo, xhi = max(0, int(min(x0, x1) - r)), min(nx - 1, int(max(x0, x1) + r) + 1)
    ylo, yhi = max(0, int(min(y0, y1) - r)), min(ny - 1, int(max(y0, y1) + r) + 1)
    if xhi < xlo or yhi < ylo:
        return
    yy, xx = np.mgrid[ylo:yhi + 1, xlo:xhi + 1].astype(float)
    length = math.hypot(x1 - x0, y1 - y0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    t = (xx - x0) * ux + (yy - y0) * uy
    d = -(xx - x0) * uy + (yy - y0) * ux
    along = 0.5 * (erf(t / (math.sqrt(2) * sg)) - erf((t - length) / (math.sqrt(2) * sg)))
    img[ylo:yhi + 1, xlo:xhi + 1] += (peak * np.exp(-0.5 * (d / sg) ** 2) * along).astype(np.float32)


def _add_star(img, x, y, peak, fwhm):
    ny, nx = img.shape
    sg = fwhm / 2.3548
    r = int(6 * sg + 3)
    ix, iy = round(x), round(y)
    xlo, xhi, ylo, yhi = max(0, ix - r), min(nx - 1, ix + r), max(0, iy - r), min(ny - 1, iy + r)
    if xhi < xlo or yhi < ylo:
        return
    yy, xx = np.mgrid[ylo:yhi + 1, xlo:xhi + 1].astype(float)
    img[ylo:yhi + 1, xlo:xhi + 1] += (peak * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sg**2)).astype(np.float32)


def _scene(rng, size=512, fwhm=2.5, streaks=(), nstar=60, ndipole=8, ncr=40):
    """Difference-image-like scene: white noise (SIGMA), point transients of 3-1000 sigma peak,
    dipoles of badly subtracted bright stars (10^3.5-10^5 sigma, 3 % flux and width mismatch), 1-4 px
    cosmic rays of 30-1000 sigma, and the streaks ``(x0, y0, x1, y1, peak [sigma])``."""
    img = rng.normal(0.0, SIGMA, (size, size)).astype(np.float32)
    for _ in range(nstar):
        _add_star(img, *rng.uniform(0, size, 2), SIGMA * 10 ** rng.uniform(0.5, 3.0), fwhm)
    for _ in range(ndipole):
        x, y = rng.uniform(0, size, 2)
        peak = SIGMA * 10 ** rng.uniform(3.5, 5.0)
        dx, dy = rng.normal(0, 0.05, 2)
        f = fwhm * rng.uniform(0.97, 1.03)
        _add_star(img, x + dx, y + dy, peak, fwhm)
        _add_star(img, x, y, -peak * rng.uniform(0.97, 1.03) * (fwhm / f) ** 2, f)
    for _ in range(ncr):
        x, y = rng.integers(0, size, 2)
        th = rng.uniform(0, math.pi)
        v = SIGMA * 10 ** rng.uniform(1.5, 3.0)
        for k in range(int(rng.integers(1, 5))):
            xi, yi = int(x + k * math.cos(th)), int(y + k * math.sin(th))
            if 0 <= xi < size and 0 <= yi < size:
                img[yi, xi] += v
    for x0, y0, x1, y1, peak in streaks:
        _add_streak(img, x0, y0, x1, y1, peak * SIGMA, fwhm)
    return img


def _clip_segment(x0, y0, x1, y1, n):
    """The part of a segment inside [0, n-1]^2 (Liang-Barsky), or None."""
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, n - 1 - x0), (-dy, y0), (dy, n - 1 - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        t0, t1 = (max(t0, r), t1) if p < 0 else (t0, min(t1, r))
    if t1 <= t0:
        return None
    return x0 + t0 * dx, y0 + t0 * dy, x0 + t1 * dx, y0 + t1 * dy


def _endpoint_error(row, seg):
    a = max(math.hypot(row["x0"] - seg[0], row["y0"] - seg[1]), math.hypot(row["x1"] - seg[2], row["y1"] - seg[3]))
    b = max(math.hypot(row["x0"] - seg[2], row["y0"] - seg[3]), math.hypot(row["x1"] - seg[0], row["y1"] - seg[1]))
    return min(a, b)


def _random_streak(rng, size, lmin=20.0, lmax=512.0):
    while True:
        length = math.exp(rng.uniform(math.log(lmin), math.log(lmax)))
        th = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, size, 2)
        x0, y0 = cx - 0.5 * length * math.cos(th), cy - 0.5 * length * math.sin(th)
        x1, y1 = cx + 0.5 * length * math.cos(th), cy + 0.5 * length * math.sin(th)
        seg = _clip_segment(x0, y0, x1, y1, size)
        if seg is not None and math.hypot(seg[2] - seg[0], seg[3] - seg[1]) >= lmin:
            return (x0, y0, x1, y1), seg


# --------------------------------------------------------------------------------------------------
# detection


def test_three_streaks_measured():
    rng = np.random.default_rng(1)
    streaks = [(50, 60, 400, 300, 3.0), (100, 450, 160, 420, 5.0), (300, 30, 500, 30, 1.5)]
    img = _scene(rng, streaks=streaks)
    tab = detect_streaks(img, sigma=SIGMA)
    assert len(tab) == 3
    assert tab.colnames == ["x0", "y0", "x1", "y1", "length", "width", "angle", "flux", "snr"]
    assert tab["x0"].unit == "pix" and tab["angle"].unit == "deg"
    sg = 2.5 / 2.3548
    for x0, y0, x1, y1, peak in streaks:
        err = [_endpoint_error(r, (x0, y0, x1, y1)) for r in tab]
        k = int(np.argmin(err))
        assert err[k] < 3.0
        row = tab[k]
        assert row["length"] == pytest.approx(math.hypot(x1 - x0, y1 - y0), abs=3.0)
        ang = math.degrees(math.atan2(y1 - y0, x1 - x0)) % 180.0
        assert min(abs(row["angle"] - ang), 180 - abs(row["angle"] - ang)) < 1.5
        assert row["width"] == pytest.approx(2.5, abs=0.5)
        # flux per pixel of length [DN px]: peak x sqrt(2 pi) sigma
        assert row["flux"] == pytest.approx(peak * SIGMA * math.sqrt(2 * math.pi) * sg, rel=0.1)
        assert 0.0 <= row["angle"] < 180.0


def test_completeness_and_endpoints():
    """60 images with one streak each (1-10 sigma per pixel at the peak, 20-512 px, FWHM 2-4 px)."""
    rng = np.random.default_rng(1)
    size = 512
    rows = []
    nfalse = 0
    for _ in range(60):
        (x0, y0, x1, y1), seg = _random_streak(rng, size)
        peak = math.exp(rng.uniform(0, math.log(10)))
        fwhm = rng.uniform(2.0, 4.0)
        img = _scene(rng, size=size, fwhm=fwhm, streaks=[(x0, y0, x1, y1, peak)])
        tab = detect_streaks(img)
        err = [_endpoint_error(r, seg) for r in tab]
        best = min(err) if err else np.inf
        rows.append((math.hypot(seg[2] - seg[0], seg[3] - seg[1]), peak, best))
        # anything else that is not a piece of the streak is false
        on = on_streak(np.r_[tab["x0"], tab["x1"]], np.r_[tab["y0"], tab["y1"]],
                       Table({"x0": [seg[0]], "y0": [seg[1]], "x1": [seg[2]], "y1": [seg[3]], "width": [fwhm]}),
                       tol=4.0).reshape(2, -1).all(axis=0)
        nfalse += int((~on).sum())
    length, peak, err = np.array(rows).T
    bright = (peak >= 2.0) & (length >= 50.0)
    found = err <= 5.0
    completeness = found[bright].mean()
    print(f"\ncompleteness (>= 2 sigma/px, >= 50 px): {completeness:.3f} of {bright.sum()}; "
          f"all: {found.mean():.3f} of {found.size}; median end-point error {np.median(err[found]):.2f} px; "
          f"false {nfalse}")
    assert bright.sum() >= 25
    # measured: 0.90 of 30, 0.85 of 60, 0.70 px, 5 false (stars pairs beside a streak, one overlong end)
    assert completeness >= 0.85
    assert found.mean() >= 0.8
    assert np.median(err[found]) < 1.0
    assert nfalse <= 6


def test_no_false_streaks():
    """20 streak-free scenes (transients, dipoles, cosmic rays): nothing."""
    rng = np.random.default_rng(5)
    n = 0
    for _ in range(20):
        img = _scene(rng, fwhm=rng.uniform(2.0, 4.0))
        n += len(detect_streaks(img))
    assert n == 0


def test_correlated_noise_scorr_like():
    """A Scorr-like map (PSF-smoothed noise renormalised to unit variance): the pieces' scatter is
    measured, so the correlated noise makes no streaks while a 3-sigma trail is found."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(3)
    noise = ndi.gaussian_filter(rng.normal(size=(512, 512)), 1.0)
    scorr = (noise / noise.std()).astype(np.float32)
    assert len(detect_streaks(scorr, sigma=1.0)) == 0
    trail = np.zeros_like(scorr)
    _add_streak(trail, 30, 400, 480, 100, 3.0, 3.0)
    tab = detect_streaks(scorr + trail, sigma=1.0)
    assert len(tab) == 1
    assert _endpoint_error(tab[0], (30, 400, 480, 100)) < 3.0


def test_mask_and_sigma_map():
    rng = np.random.default_rng(7)
    img = rng.normal(0.0, SIGMA, (256, 256)).astype(np.float32)
    img[:, 100] += 40 * SIGMA            # a hot column
    img[200:210, 30:40] = np.nan
    mask = np.zeros(img.shape, np.int16)
    mask[:, 100] = MaskBits.NOISY
    mask[5, 5] = MaskBits.SATELLITE_TRACK      # an earlier flag does not hide anything
    assert len(detect_streaks(img, sigma=SIGMA, mask=mask)) == 0
    assert len(detect_streaks(img, sigma=SIGMA, mask=mask != 0)) == 0
    # the sigma map: a streak through a noisier half keeps its flux
    sig = np.full(img.shape, SIGMA, np.float32)
    sig[:, 128:] = 2 * SIGMA
    img2 = rng.normal(0.0, 1.0, img.shape).astype(np.float32) * sig
    _add_streak(img2, 20, 60, 236, 200, 8 * SIGMA, 2.5)
    tab = detect_streaks(img2, sigma=sig)
    assert len(tab) == 1 and _endpoint_error(tab[0], (20, 60, 236, 200)) < 3.0


def test_errors():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(InputError, match="mask shape"):
        detect_streaks(img, sigma=1.0, mask=np.zeros((10, 10), bool), product="x.fits")
    with pytest.raises(InputError, match="sigma"):
        detect_streaks(img, sigma=-1.0)
    with pytest.raises(InputError, match="noise"):
        detect_streaks(np.full((64, 64), np.nan, np.float32))
    with pytest.raises(ConfigError):
        detect_streaks(img, sigma=1.0, threshold=0)
    assert len(detect_streaks(img + np.random.default_rng(0).normal(size=img.shape), sigma=1.0)) == 0


# --------------------------------------------------------------------------------------------------
# masks


def test_streak_mask_and_on_streak():
    t = Table({"x0": [10.0, 50.0], "y0": [20.0, 5.0], "x1": [90.0, 50.0], "y1": [20.0, 45.0],
               "width": [3.0, 2.0]})
    m = streak_mask((60, 100), t, grow=1.0)
    assert m.dtype == bool and m.shape == (60, 100)
    # horizontal: rows 16-24 (|dy| <= 4) between x = 6 and 94 (round caps)
    assert m[16:25, 10:91].all() and not m[15, 30] and not m[25, 30]
    assert m[20, 6] and not m[20, 5] and m[20, 94] and not m[20, 95]
    # vertical: columns 47-53 from y = 2 to 48
    assert m[5:46, 47:54].all() and m[2, 50] and not m[1, 50] and not m[30, 46]
    # a brute-force check of the rasteriser on a slanted streak
    s = Table({"x0": [3.3], "y0": [7.1], "x1": [80.2], "y1": [51.9], "width": [2.5]})
    yy, xx = np.mgrid[:60, :100]
    from ztfsds.subtract.streaks import _distance_to_segment
    d = _distance_to_segment(xx.ravel().astype(float), yy.ravel().astype(float), 3.3, 7.1, 80.2, 51.9)
    assert np.array_equal(streak_mask((60, 100), s, grow=1.5).ravel(), d <= 4.0)
    assert not streak_mask((60, 100), t[:0]).any()
    hit = on_streak([50.0, 50.0, 95.5, 50.0], [23.0, 60.0, 20.0, 30.0], t, tol=1.0)
    assert hit.tolist() == [True, False, False, True]


# --------------------------------------------------------------------------------------------------
# kernels


def test_kernels_match_reference():
    rng = np.random.default_rng(0)
    s_img = (rng.normal(size=(37, 45)) * 4).astype(np.float32)
    good = rng.random((37, 45)) > 0.1
    out = [np.zeros((10, 12), np.float32), np.zeros((10, 12), np.int32)]
    ref = [np.zeros((10, 12), np.float32), np.zeros((10, 12), np.int32)]
    _streaks.bin_clipped(s_img, good.view(np.uint8), 4, 5.0, *out)
    reference_streaks.bin_clipped(s_img, good, 4, 5.0, *ref)
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[1], ref[1])
    px, py = rng.uniform(0, 50, 300), rng.uniform(0, 40, 300)
    th = (np.arange(90) + 0.5) * np.pi / 90
    acc, acc_ref = np.zeros((2 * 65 + 3, 90), np.int32), np.zeros((2 * 65 + 3, 90), np.int32)
    _streaks.hough(px, py, np.cos(th), np.sin(th), 64.1, acc)
    reference_streaks.hough(px, py, np.cos(th), np.sin(th), 64.1, acc_ref)
    np.testing.assert_array_equal(acc, acc_ref)
    assert acc.sum() == 300 * 90


# --------------------------------------------------------------------------------------------------
# full size and a simulated night


@pytest.mark.slow
def test_full_quadrant_speed():
    rng = np.random.default_rng(3)
    ny, nx = 3080, 3072
    img = rng.normal(0, SIGMA, (ny, nx)).astype(np.float32)
    for _ in range(800):
        _add_star(img, rng.uniform(0, nx), rng.uniform(0, ny), SIGMA * 10 ** rng.uniform(0.5, 3), 2.5)
    for _ in range(3000):
        x, y = rng.integers(0, [nx, ny])
        img[y, x] += SIGMA * 10 ** rng.uniform(1.5, 3)
    truth = [(-100, 200, 3200, 2900, 2.0), (1500, 1500, 1700, 1600, 4.0), (500, 2500, 560, 2480, 6.0)]
    for x0, y0, x1, y1, peak in truth:
        _add_streak(img, x0, y0, x1, y1, peak * SIGMA, 2.5)
    detect_streaks(img)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        tab = detect_streaks(img)
        times.append(time.perf_counter() - t)
    print(f"\nfull quadrant: {min(times):.3f} s (best of 3)")
    assert len(tab) == 3
    for x0, y0, x1, y1, _ in truth:
        seg = _clip_segment(x0, y0, x1, y1, 3072)
        assert min(_endpoint_error(r, seg) for r in tab) < 4.0
    assert min(times) < 0.5


@pytest.fixture(scope="module")
def trail_night(tmp_path_factory):
    """One simulated exposure whose four quadrants all have a satellite trail (end points recorded),
    calibrated."""
    from ztfsds.calib import build_library, run_calib
    from ztfsds.products import ProductKey, ProductStore
    from ztfsds.sim import night, simulate_night

    root = tmp_path_factory.mktemp("streaks")
    trails = []
    original = night._satellite_trail

    def recording(shape, exposure, rng, image):
        out = original(shape, exposure, rng, image)
        trails.append(out)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(night, "_TRAIL_PROBABILITY", 1.0)
    mp.setattr(night, "_satellite_trail", recording)
    try:
        result = simulate_night(root, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=512, seed=11,
                                nbias=3, nflat=3)
    finally:
        mp.undo()
    store = ProductStore(root)
    build_library(store, "20200924")
    raw = result.science[0]
    assert all(s.ok for s in run_calib(raw, store))
    keys = [ProductKey.parse(raw.name).quadrant(q, "sciimg") for q in (1, 2, 3, 4)]
    return store, keys, trails


def test_simulated_satellite_trail(trail_night):
    from ztfsds.astrom.extraction import background
    from ztfsds.products import read_image

    store, keys, trails = trail_night
    assert len(trails) == 4 and all(t is not None for t in trails)
    for key, (x0, y0, x1, y1) in zip(keys, trails):
        sci, _ = read_image(store.path(key))
        msk, _ = read_image(store.path(key.with_suffix("mskimg")))
        bkg = background(sci, msk)
        tab = detect_streaks(np.asarray(sci, np.float32) - bkg.level, sigma=bkg.rms, mask=msk)
        nx = sci.shape[1]
        seg = _clip_segment(x0, y0, x1, y1, nx)
        assert len(tab) >= 1, key.filename
        # the brightest detection is the trail, end to end (the simulator's trail crosses the quadrant)
        assert _endpoint_error(tab[0], seg) < 5.0, (key.filename, tab[0], seg)
        # anything else is much fainter (here: the crosstalk ghost of a neighbouring quadrant's trail)
        assert np.all(tab["snr"][1:] < 0.3 * tab["snr"][0]), tab
        # the mask covers the trail's pixels
        m = streak_mask(sci.shape, tab)
        t = np.linspace(0.05, 0.95, 50)
        xs = np.rint(seg[0] + t * (seg[2] - seg[0])).astype(int)
        ys = np.rint(seg[1] + t * (seg[3] - seg[1])).astype(int)
        assert m[ys, xs].all()
        assert m.mean() < 0.05
