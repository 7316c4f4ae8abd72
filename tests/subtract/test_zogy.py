"""ZOGY subtraction (`ztfsds.subtract.zogy`): noise properties, transients, dipoles, masks, kernels.

Scenes are 256 x 256, seeded: a Moffat PSF (FWHM 2.6 px, beta 3) in the new image and a sharper
Gaussian (FWHM 2.0 px) in the reference, sky sigmas 8 and 3 DN, Gaussian noise with Poisson-like
variance ``sigma^2 + model / gain``.
"""

import numpy as np
import pytest
from scipy.special import erf

from ztfsds._ext import _zogy, reference_zogy
from ztfsds.errors import InputError, ShapeError
from ztfsds.subtract.zogy import zogy

SHAPE = (256, 256)
SIZE = 25
SN, SR = 8.0, 3.0
GAIN_N, GAIN_R = 5.0, 40.0


def gauss(fwhm, size=SIZE, x0=0.0, y0=0.0):
    """Pixel-integrated Gaussian of unit total flux, centred at (x0, y0) from the stamp's centre."""
    sig = fwhm / 2.3548
    e = np.arange(size + 1) - size / 2
    fx = np.diff(erf((e - x0) / (np.sqrt(2) * sig))) / 2
    fy = np.diff(erf((e - y0) / (np.sqrt(2) * sig))) / 2
    return np.outer(fy, fx)


def moffat(fwhm, beta=3.0, size=SIZE, x0=0.0, y0=0.0, ss=5):
    """Moffat profile integrated over pixels (5 x 5 subpixels), normalised to the centred stamp's sum."""
    a = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    c = (np.arange(size * ss) + 0.5) / ss - size / 2

    def render(x, y):
        r2 = (c[:, None] - y) ** 2 + (c[None, :] - x) ** 2
        return ((1 + r2 / a**2) ** (-beta)).reshape(size, ss, size, ss).mean(axis=(1, 3))

    return render(x0, y0) / render(0.0, 0.0).sum()


P_N = moffat(2.6)
P_R = gauss(2.0)


def add(img, stamp, x, y, flux):
    """Add ``flux * stamp`` centred on the integer pixel (x, y), wrapping at the edges (FFT-periodic)."""
    h = stamp.shape[0] // 2
    ys = (np.arange(-h, h + 1) + y) % img.shape[0]
    xs = (np.arange(-h, h + 1) + x) % img.shape[1]
    img[np.ix_(ys, xs)] += flux * stamp


def observe(model, sigma, gain, rng):
    var = (sigma**2 + np.maximum(model, 0) / gain).astype(np.float32)
    return (model + rng.standard_normal(model.shape) * np.sqrt(var)).astype(np.float32), var


def star_field(rng, n=25, fmin=1e3, fmax=3e5):
    """A 5 x 5 grid of stars (integer positions), log-uniform fluxes [DN]."""
    g = np.arange(5) * 48 + 28
    xs, ys = np.meshgrid(g, g)
    return xs.ravel(), ys.ravel(), np.exp(rng.uniform(np.log(fmin), np.log(fmax), n))


def empty(shape, xs, ys, radius=14):
    yy, xx = np.indices(shape)
    ok = np.ones(shape, bool)
    for x, y in zip(xs, ys):
        ok &= (xx - x) ** 2 + (yy - y) ** 2 > radius**2
    return ok


def fit_flux(d, p_d, x, y, sigma_d):
    """Linear PSF fit of P_D at the integer pixel (x, y) of D (white noise: uniform weights)."""
    h = p_d.shape[0] // 2
    cut = d[y - h:y + h + 1, x - h:x + h + 1].astype(np.float64)
    p = p_d.astype(np.float64)
    return (cut * p).sum() / (p * p).sum(), sigma_d / np.sqrt((p * p).sum())


# --- noise -----------------------------------------------------------------------------------------


def test_difference_noise_is_white():
    rng = np.random.default_rng(1)
    new = (rng.standard_normal(SHAPE) * SN).astype(np.float32)
    ref = (rng.standard_normal(SHAPE) * SR).astype(np.float32)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    assert res.sigma_D == pytest.approx(np.hypot(SN, SR))
    assert res.F_D == pytest.approx(1 / np.hypot(SN, SR))
    z = res.D / res.sigma_D
    assert 0.97 < z.std() < 1.03
    assert abs(z.mean()) < 0.02
    # white: no correlation between neighbours, flat power spectrum
    assert abs(np.corrcoef(z[:, 1:].ravel(), z[:, :-1].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(z[1:].ravel(), z[:-1].ravel())[0, 1]) < 0.03
    power = np.abs(np.fft.fft2(z)) ** 2 / z.size
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(SHAPE[0]), np.fft.fftfreq(SHAPE[1]), indexing="ij"))
    for lo, hi in ((0.02, 0.15), (0.15, 0.3), (0.3, 0.5), (0.5, 0.71)):
        assert 0.93 < power[(k >= lo) & (k < hi)].mean() < 1.07, (lo, hi)
    # S_corr without the astrometric term: unit normal; with it (noise gradients add variance): a bit less
    sc0 = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, dx=0, dy=0).Scorr
    assert abs(sc0.mean()) < 0.05 and 0.97 < sc0.std() < 1.03
    assert 0.95 < res.Scorr.std() < sc0.std()


@pytest.fixture(scope="module")
def static_scene():
    rng = np.random.default_rng(2)
    xs, ys, fl = star_field(rng)
    mn = np.zeros(SHAPE)
    mr = np.zeros(SHAPE)
    for x, y, f in zip(xs, ys, fl):
        add(mn, P_N, x, y, f)
        add(mr, P_R, x, y, f)
    new, vn = observe(mn, SN, GAIN_N, rng)
    ref, vr = observe(mr, SR, GAIN_R, rng)
    return dict(xs=xs, ys=ys, fl=fl, new=new, ref=ref, vn=vn, vr=vr, rng=rng)


def test_static_scene_scorr_is_normal(static_scene):
    sc = static_scene
    res = zogy(sc["new"], sc["ref"], P_N, P_R, sigma_new=SN, sigma_ref=SR, var_new=sc["vn"], var_ref=sc["vr"])
    sky = empty(SHAPE, sc["xs"], sc["ys"])
    assert abs(res.Scorr[sky].mean()) < 0.05
    assert 0.94 < res.Scorr[sky].std() < 1.03
    assert 0.97 < res.D[sky].std() / res.sigma_D < 1.03
    # the stars subtract to noise: no 5-sigma pixel anywhere, S_corr still ~normal on the stars
    assert np.abs(res.Scorr).max() < 5
    assert 0.8 < res.Scorr[~sky].std() < 1.1


# --- transients ------------------------------------------------------------------------------------


def _transient_images(sign, fluxes, positions, seed):
    rng = np.random.default_rng(seed)
    mn = np.zeros(SHAPE)
    mr = np.zeros(SHAPE)
    for f, (x, y) in zip(fluxes, positions):
        add(mn if sign > 0 else mr, P_N if sign > 0 else P_R, x, y, f)
    new = (mn + rng.standard_normal(SHAPE) * SN).astype(np.float32)
    ref = (mr + rng.standard_normal(SHAPE) * SR).astype(np.float32)
    return new, ref


POSITIONS = [(40, 50), (200, 60), (128, 128), (70, 210), (190, 190)]


def _snr(flux, res):
    """Matched-filter S/N of a point source of ``flux`` in D (white noise sigma_D, PSF P_D)."""
    return flux * np.sqrt((res.P_D.astype(np.float64) ** 2).sum()) / res.sigma_D


def test_positive_transient_recovered():
    fluxes = [20000.0, 20000.0, 20000.0, 3000.0, 450.0]
    new, ref = _transient_images(+1, fluxes, POSITIONS, seed=3)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    res0 = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, dx=0, dy=0)
    assert res.P_D.shape == (SIZE, SIZE) and res.P_D.dtype == np.float32
    assert float(res.P_D.sum()) == pytest.approx(1, abs=1e-6)
    assert res.psf_fraction == pytest.approx(1, abs=1e-3)
    assert np.unravel_index(np.argmax(res.P_D), res.P_D.shape) == (SIZE // 2, SIZE // 2)
    for f, (x, y) in zip(fluxes, POSITIONS):
        flux, err = fit_flux(res.D, res.P_D, x, y, res.sigma_D)
        assert abs(flux - f) < 3 * err
        if f >= 20000:
            assert flux == pytest.approx(f, rel=0.02)
        snr = _snr(f, res)
        assert err == pytest.approx(f / snr, rel=1e-6)
        # without the astrometric term S_corr peaks at the source with its matched-filter S/N
        win0 = res0.Scorr[y - 2:y + 3, x - 2:x + 3]
        assert abs(win0.max() - snr) < 2.5, (f, win0.max(), snr)
        assert np.unravel_index(np.argmax(win0), win0.shape) == (2, 2)
        # the astrometric term (dx = dy = 0.25 px, as IPAC) lowers it; faint sources barely
        win = res.Scorr[y - 2:y + 3, x - 2:x + 3]
        assert 5 < win.max() <= win0.max() + 0.1
        if snr < 20:
            assert win.max() > 0.7 * snr
    # the background away from the transients is unaffected
    sky = empty(SHAPE, *zip(*POSITIONS))
    assert 0.97 < res.D[sky].std() / res.sigma_D < 1.03


def test_negative_transient():
    fluxes = [20000.0, 4000.0]
    new, ref = _transient_images(-1, fluxes, POSITIONS[:2], seed=4)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    for f, (x, y) in zip(fluxes, POSITIONS[:2]):
        flux, err = fit_flux(res.D, res.P_D, x, y, res.sigma_D)
        assert abs(flux + f) < 3 * err
        win = res.Scorr[y - 2:y + 3, x - 2:x + 3]
        assert win.min() < -5 and win.max() < 3
        assert res.S[y, x] < 0
    assert np.nanmax(res.Scorr) < 5


# --- misregistration (dipoles) ---------------------------------------------------------------------


def test_astrometric_term_suppresses_dipoles():
    rng = np.random.default_rng(5)
    xs, ys, fl = star_field(rng, fmin=3e3, fmax=1e6)
    mn = np.zeros(SHAPE)
    mr = np.zeros(SHAPE)
    for x, y, f in zip(xs, ys, fl):
        add(mn, P_N, x, y, f)
        add(mr, gauss(2.0, x0=0.2, y0=-0.1), x, y, f)   # reference misregistered by (0.2, -0.1) px
    new, vn = observe(mn, SN, GAIN_N, rng)
    ref, vr = observe(mr, SR, GAIN_R, rng)
    kw = dict(sigma_new=SN, sigma_ref=SR, var_new=vn, var_ref=vr)
    res = zogy(new, ref, P_N, P_R, **kw)
    res0 = zogy(new, ref, P_N, P_R, dx=0, dy=0, **kw)
    peak = np.array([np.abs(res.Scorr[y - 3:y + 4, x - 3:x + 4]).max() for x, y in zip(xs, ys)])
    peak0 = np.array([np.abs(res0.Scorr[y - 3:y + 4, x - 3:x + 4]).max() for x, y in zip(xs, ys)])
    bright = fl > 1e5
    assert bright.sum() >= 5
    assert (peak0[bright] > 5).all()          # the dipoles are many sigma without the term...
    assert peak0.max() > 30
    assert peak.max() < 5                     # ...and below the detection threshold with it
    assert np.abs(res.Scorr).max() < 5


# --- masks, flux matching, inputs ------------------------------------------------------------------


def test_mask(static_scene):
    sc = static_scene
    new = sc["new"].copy()
    ref = sc["ref"].copy()
    mask = np.zeros(SHAPE, bool)
    mask[100:103, 10:14] = True
    mask[0, :] = True
    new[mask] = np.nan
    ref[100:103, 10:14] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, mask=mask)
    for a in (res.D, res.S, res.Scorr):
        assert np.isnan(a[mask]).all() and np.isfinite(a[~mask]).all()
    # the same as the caller's 0-filled images without a mask, except on the masked pixels
    new0 = np.where(mask, 0, sc["new"]).astype(np.float32)
    ref0 = np.where(mask, 0, sc["ref"]).astype(np.float32)
    res0 = zogy(new0, ref0, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    np.testing.assert_array_equal(res.D[~mask], res0.D[~mask])
    np.testing.assert_array_equal(res.Scorr[~mask], res0.Scorr[~mask])
    # with variance maps, masked pixels carry no variance (0-filled): the maps are zeroed there
    resv = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, var_new=sc["vn"], var_ref=sc["vr"], mask=mask)
    assert np.isnan(resv.Scorr[mask]).all() and np.isfinite(resv.Scorr[~mask]).all()


def test_noiseless_flux_matched_copies_subtract_to_zero():
    rng = np.random.default_rng(6)
    xs, ys, fl = star_field(rng, fmin=1e3, fmax=1e6)
    mn = np.zeros(SHAPE)
    mr = np.zeros(SHAPE)
    for x, y, f in zip(xs, ys, fl):
        add(mn, P_N, x, y, f)
        add(mr, P_R, x, y, f)
    new = mn.astype(np.float32)
    ref = mr.astype(np.float32)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, dx=0, dy=0)
    assert np.abs(res.D).max() < 2e-5 * new.max()
    assert np.abs(res.Scorr).max() < 0.01
    # a 3 % flux mismatch leaves -3 % of each star's flux in D, with the PSF P_D
    res = zogy(new, 1.03 * ref, P_N, P_R, sigma_new=SN, sigma_ref=SR)
    for x, y, f in zip(xs[:5], ys[:5], fl[:5]):
        flux, _ = fit_flux(res.D, res.P_D, x, y, res.sigma_D)
        assert flux == pytest.approx(-0.03 * f, rel=2e-3)


def test_input_errors():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ShapeError):
        zogy(img, np.zeros((64, 63), np.float32), P_N, P_R, sigma_new=SN, sigma_ref=SR)
    with pytest.raises(InputError, match="odd"):
        zogy(img, img, P_N[:-1], P_R, sigma_new=SN, sigma_ref=SR)
    with pytest.raises(InputError, match="sigma_ref"):
        zogy(img, img, P_N, P_R, sigma_new=SN, sigma_ref=0.0)
    with pytest.raises(InputError, match="positive sum"):
        zogy(img, img, -P_N, P_R, sigma_new=SN, sigma_ref=SR)
    with pytest.raises(ShapeError):
        zogy(img[:20, :20], img[:20, :20], P_N, P_R, sigma_new=SN, sigma_ref=SR)
    with pytest.raises(InputError, match="negative"):
        zogy(img, img, P_N, P_R, sigma_new=SN, sigma_ref=SR, var_new=img - 1)
    with pytest.raises(InputError, match="dx"):
        zogy(img, img, P_N, P_R, sigma_new=SN, sigma_ref=SR, dx=-1)


# --- agreement with IPAC's equations, kernels against their numpy reference -------------------------


@pytest.mark.parametrize("shape, size", [((250, 300), 15), ((97, 128), 15), ((64, 64), 25)])
def test_agrees_with_ipac_equations(shape, size):
    rng = np.random.default_rng(7)
    pn = moffat(2.8, size=size)
    pr = gauss(2.2, size=size - 4 if size > 15 else size)
    new = (rng.standard_normal(shape) * SN).astype(np.float32)
    ref = (rng.standard_normal(shape) * SR).astype(np.float32)
    add(new, pn / pn.sum(), shape[1] // 3, shape[0] // 2, 5e4)
    add(ref, pr, 2 * shape[1] // 3, shape[0] // 3, 5e4)
    vn = (SN**2 * rng.uniform(0.5, 2, shape)).astype(np.float32)
    vr = (SR**2 * rng.uniform(0.5, 2, shape)).astype(np.float32)
    for var in ({}, {"var_new": vn}, {"var_new": vn, "var_ref": vr}):
        res = zogy(new, ref, pn, pr, sigma_new=SN, sigma_ref=SR, dx=0.3, dy=0.2, **var)
        d, p_d, s, scorr = reference_zogy.zogy_ipac(
            new.astype(np.float64), ref.astype(np.float64), pn / pn.sum(), pr, SN, SR, dx=0.3, dy=0.2, **var)
        assert np.abs(res.D - d).max() < 2e-4 * res.sigma_D * np.abs(d).max() / res.sigma_D + 1e-3
        assert np.abs(res.S - s).max() < 1e-5 * np.abs(s).max()
        assert np.abs(res.Scorr - scorr).max() < 1e-3
        np.testing.assert_allclose(res.P_D * res.psf_fraction, p_d, atol=2e-6)


def test_kernels_match_reference():
    rng = np.random.default_rng(8)
    shape = (37, 20)

    def cplx():
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    args = [cplx() for _ in range(4)]
    ours = [a.copy() for a in args]
    ref = [a.copy().astype(np.complex128) for a in args]
    _zogy.spectra(*ours, 2.5, 0.7, 1e-8, 1.3)
    reference_zogy.spectra(*ref, 2.5, 0.7, 1e-8, 1.3)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max())

    args = [cplx() for _ in range(4)]
    ours = args[0].copy()
    ref = args[0].astype(np.complex128)
    _zogy.variance_spectrum(ours, *args[1:])
    reference_zogy.variance_spectrum(ref, *args[1:])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)

    s_n, s_r = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    v_s = rng.uniform(0.5, 2, shape).astype(np.float32)
    v_s[3, 4] = -10.0                       # non-positive total variance: NaN
    mask = (rng.random(shape) < 0.1).astype(np.uint8)
    for vmap, vconst, use_mask in ((v_s, 0.0, True), (np.zeros((1, 1), np.float32), 1.5, False)):
        outs = [np.empty(shape, np.float32) for _ in range(4)]
        _zogy.scorr(s_n, s_r, vmap, vconst, 0.09, 0.04, outs[0], outs[1], mask, use_mask)
        reference_zogy.scorr(s_n, s_r, vmap, vconst, 0.09, 0.04, outs[2], outs[3], mask, use_mask)
        np.testing.assert_allclose(outs[0], outs[2], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(outs[1], outs[3], rtol=1e-5, atol=1e-6)
        assert np.isnan(outs[1]).sum() == np.isnan(outs[3]).sum() > 0 if use_mask else True


@pytest.mark.slow
def test_full_size_agrees_with_ipac_equations():
    """Quadrant size (3080 x 3072): the small-grid kernels and pruned transforms give IPAC's numbers."""
    shape = (3080, 3072)
    rng = np.random.default_rng(9)
    new = (rng.standard_normal(shape, dtype=np.float32) * SN)
    ref = (rng.standard_normal(shape, dtype=np.float32) * SR)
    for i in range(40):
        x, y = 40 + 75 * i, 60 + 74 * i
        add(new, P_N, x, y, 3e4 * (i + 1))
        add(ref, P_R, x, y, 3e4 * (i + 1) * (1.0 if i % 2 else 0.9))
    vn = (SN**2 + np.maximum(new, 0) / GAIN_N).astype(np.float32)
    vr = (SR**2 + np.maximum(ref, 0) / GAIN_R).astype(np.float32)
    res = zogy(new, ref, P_N, P_R, sigma_new=SN, sigma_ref=SR, var_new=vn, var_ref=vr)
    d, p_d, s, scorr = reference_zogy.zogy_ipac(new.astype(np.float64), ref.astype(np.float64), P_N, P_R, SN, SR,
                                                var_new=vn, var_ref=vr)
    assert np.abs(res.D - d).max() < 0.05 * res.sigma_D
    assert np.abs(res.S - s).max() < 1e-5 * np.abs(s).max()
    # float32: ~1e-4 on the sky; up to 3e-3 where S = S_N - S_R cancels on the brightest stars
    np.testing.assert_allclose(res.Scorr, scorr, rtol=1e-3, atol=5e-3)
    np.testing.assert_allclose(res.P_D * res.psf_fraction, p_d, atol=2e-6)
    assert 0.98 < res.D[:, 3020:].std() / res.sigma_D < 1.02
