"""PSF-fit and forced photometry (`ztfsds.photom.psffit`) on synthetic images with an exact truth.

The images are rendered from the same `PSFModel` the fit uses (a pixel-integrated Gaussian or a
position-dependent one, on a 2x oversampled grid, interpolated with `psf.cubic_weights` independently of
the kernels), with Poisson noise in electrons and Gaussian read noise, all seeded.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf

from ztfsds._ext import _psffit
from ztfsds._ext import reference_psffit as ref
from ztfsds.errors import ConfigError, ShapeError
from ztfsds.photom.psf import PSFModel, cubic_weights
from ztfsds.photom.psffit import (
    ForcedPhotFlags,
    PSFFitFlags,
    forced_photometry,
    psf_photometry,
)
from ztfsds.products import MaskBits

GAIN = 6.0
SKY = 100.0          # [DN]
READ_NOISE = 8.0     # [e-]
RMS = math.sqrt(SKY / GAIN + (READ_NOISE / GAIN) ** 2)


def gauss_grid(fwhm, ovs=2, size=25):
    m = (size + 4) * ovs + 1
    t = (np.arange(m) - m // 2) / ovs
    s = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) * math.sqrt(2.0)
    g = 0.5 * (erf((t + 0.5) / s) - erf((t - 0.5) / s))       # pixel-integrated
    grid = g[:, None] * g[None, :]
    return grid / (grid.sum() / ovs**2)


def make_psf(fwhm=2.0, vary=0.0, ovs=2):
    """Constant Gaussian PSF, or (vary != 0) one whose FWHM goes linearly from fwhm to fwhm * (1 + vary)
    as x goes from 0 to 500 px (degree 1)."""
    g0 = gauss_grid(fwhm, ovs)
    if vary == 0.0:
        return PSFModel(basis=g0[None], oversample=ovs, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)
    g1 = gauss_grid(fwhm * (1 + vary), ovs)
    return PSFModel(basis=np.stack([g0, g1 - g0, np.zeros_like(g0)]), oversample=ovs, degree=1, x0=0.0,
                    y0=0.0, scale=500.0, nstar=0)


def _weights(off, m, ovs):
    i0, w = cubic_weights(off * ovs + m // 2)
    out = np.zeros((len(off), m))
    for k in range(4):
        idx = i0 + k
        ok = (idx >= 0) & (idx < m)
        out[np.nonzero(ok)[0], idx[ok]] += w[ok, k]
    return out


def render(psf, shape, x, y, flux, half=10):
    """Noise-free image [DN] of point sources, the PSF grid interpolated at every pixel (no renormalising)."""
    img = np.zeros(shape)
    m = psf.grid_size
    for xi, yi, fi in zip(x, y, flux):
        ix, iy = round(xi), round(yi)
        px, py = np.arange(ix - half, ix + half + 1), np.arange(iy - half, iy + half + 1)
        st = fi * (_weights(py - yi, m, psf.oversample) @ psf.oversampled(xi, yi)
                   @ _weights(px - xi, m, psf.oversample).T)
        ys = slice(max(py[0], 0), min(py[-1] + 1, shape[0]))
        xs = slice(max(px[0], 0), min(px[-1] + 1, shape[1]))
        img[ys, xs] += st[ys.start - py[0]:ys.stop - py[0], xs.start - px[0]:xs.stop - px[0]]
    return img


def noisy(model, rng):
    """Background-subtracted DN image: Poisson electrons of model + sky, plus read noise."""
    e = rng.poisson((np.maximum(model, 0) + SKY) * GAIN).astype(float) + rng.normal(0, READ_NOISE, model.shape)
    return (e / GAIN - SKY).astype(np.float32)


def star_grid(n, step, rng, margin=15):
    gx, gy = np.meshgrid(np.arange(n) * step + margin, np.arange(n) * step + margin)
    x = gx.ravel() + rng.uniform(-0.5, 0.5, n * n)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, n * n)
    return x, y, (n - 1) * step + 2 * margin + 1


def fisher_sigma(psf, x, y, flux, half=10):
    """Cramer-Rao bound of the flux error [DN] (flux, x, y free) with the true PSF and pixel variance."""
    S = psf.grid_size
    H = S // 2
    ovs = psf.oversample
    ix, iy = round(x), round(y)
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    g = psf.oversampled(x, y).astype(np.float32)
    v, vx, vy = ref.interp(g, H + (xx.ravel() - x) * ovs, H + (yy.ravel() - y) * ovs)
    J = np.column_stack([v, -flux * vx * ovs, -flux * vy * ovs])
    w = 1.0 / (RMS**2 + np.maximum(flux * v, 0) / GAIN)
    return math.sqrt(np.linalg.inv(J.T @ (w[:, None] * J))[0, 0])


# --------------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------------


def test_bright_isolated_unbiased_with_honest_errors():
    rng = np.random.default_rng(11)
    psf = make_psf(2.0)
    x, y, side = star_grid(15, 22, rng)
    flux = np.full(len(x), 1.0e5)            # S/N ~ 700, peak ~ 2e4 DN: source-noise dominated
    model = render(psf, (side, side), x, y, flux)
    fl, fe, xe, dx = [], [], [], []
    for _ in range(4):
        img = noisy(model, rng)
        cat = psf_photometry(img, psf, x + rng.normal(0, 0.2, len(x)), y + rng.normal(0, 0.2, len(x)),
                             bkg_rms=RMS, gain=GAIN)
        assert np.all(cat["flags"] == 0)
        fl.append(cat["flux"])
        fe.append(cat["flux_err"])
        dx.append(cat["x"] - x)
        xe.append(cat["x_err"])
    fl, fe, dx, xe = map(np.concatenate, (fl, fe, dx, xe))
    assert abs(np.median(fl / 1.0e5) - 1) < 0.001        # spec: < 0.5 %
    pull = (fl - 1.0e5) / fe
    assert 0.9 < np.std(pull) < 1.1
    assert abs(np.mean(pull)) < 0.15
    xpull = dx / xe
    assert 0.9 < np.std(xpull) < 1.1
    assert abs(np.mean(xpull)) < 0.15
    assert cat.meta["NGROUP"] == len(x)
    assert np.all(cat["group_size"] == 1)
    assert np.median(cat["chi2"]) == pytest.approx(1.0, abs=0.1)
    assert abs(np.median(cat["sharp"])) < 0.005
    assert cat["flux"].unit == "adu" and cat["x"].unit == "pix"


def test_precision_reaches_cramer_rao_bound():
    rng = np.random.default_rng(12)
    psf = make_psf(2.0)
    x, y, side = star_grid(16, 20, rng)
    levels = np.array([320.0, 850.0, 2000.0, 6500.0])         # S/N ~ 20, 50, 100, 200
    flux = np.repeat(levels, len(x) // len(levels))
    model = render(psf, (side, side), x, y, flux)
    cr = np.array([fisher_sigma(psf, xi, yi, fi) for xi, yi, fi in zip(x, y, flux)])
    fits = []
    for _ in range(8):
        img = noisy(model, rng)
        cat = psf_photometry(img, psf, x + rng.normal(0, 0.2, len(x)), y + rng.normal(0, 0.2, len(x)),
                             bkg_rms=RMS, gain=GAIN)
        fits.append(np.asarray(cat["flux"]))
    fits = np.array(fits)
    ratios = {}
    for f in levels:
        sel = flux == f
        err = (fits[:, sel] - f).ravel()
        ratios[round(f / np.sqrt(np.mean(cr[sel] ** 2)))] = np.std(err) / np.sqrt(np.mean(cr[sel] ** 2))
        assert abs(np.mean(err)) < 4 * np.std(err) / math.sqrt(err.size)
    # 512 fluxes per level: the ratio's own scatter is ~3 %
    print("S/N: std / Cramer-Rao", ratios)
    assert all(0.92 < r < 1.10 for r in ratios.values()), ratios
    snrs = sorted(ratios)
    assert snrs[0] < 25 and snrs[-1] > 150


def test_blended_pairs_fitted_together():
    rng = np.random.default_rng(13)
    psf = make_psf(2.0)
    xc, yc, side = star_grid(10, 26, rng)
    sep = rng.uniform(2.0, 3.0, len(xc))                 # 1 - 1.5 FWHM
    ang = rng.uniform(0, np.pi, len(xc))
    x = np.concatenate([xc - 0.5 * sep * np.cos(ang), xc + 0.5 * sep * np.cos(ang)])
    y = np.concatenate([yc - 0.5 * sep * np.sin(ang), yc + 0.5 * sep * np.sin(ang)])
    f = np.concatenate([np.full(len(xc), 4000.0), np.full(len(xc), 2000.0)])
    model = render(psf, (side, side), x, y, f)
    group, single = [], []
    for _ in range(3):
        img = noisy(model, rng)
        x1, y1 = x + rng.normal(0, 0.2, len(x)), y + rng.normal(0, 0.2, len(x))
        g = psf_photometry(img, psf, x1, y1, bkg_rms=RMS, gain=GAIN)
        s = psf_photometry(img, psf, x1, y1, bkg_rms=RMS, gain=GAIN, group_radius=0.0, npass=1)
        assert np.all(g["group_size"] == 2)
        assert np.all(s["group_size"] == 1)
        group.append(g)
        single.append(s)
    gf = np.concatenate([c["flux"] for c in group])
    ge = np.concatenate([c["flux_err"] for c in group])
    sf = np.concatenate([c["flux"] for c in single])
    ft = np.tile(f, 3)
    for cut in (ft == 4000.0, ft == 2000.0):
        assert abs(np.median(gf[cut] / ft[cut]) - 1) < 0.01
        assert 0.85 < np.std((gf[cut] - ft[cut]) / ge[cut]) < 1.2
        # fitting one at a time (neighbour subtracted as it stood) is biased and noisier
        assert np.std(gf[cut] - ft[cut]) < 0.8 * np.sqrt(np.mean((sf[cut] - ft[cut]) ** 2))


def test_position_dependent_psf():
    rng = np.random.default_rng(14)
    psf = make_psf(1.8, vary=0.4)
    x, y, side = star_grid(12, 40, rng)
    flux = np.full(len(x), 2.0e4)
    img = noisy(render(psf, (side, side), x, y, flux), rng)
    cat = psf_photometry(img, psf, x, y, bkg_rms=RMS, gain=GAIN)
    assert abs(np.median(cat["flux"] / flux) - 1) < 0.002
    assert np.std((cat["flux"] - flux) / cat["flux_err"]) < 1.2
    # the constant model at the centre is wrong at the sides: sharp and chi2 see it
    flat = PSFModel(basis=psf.basis[:1].copy(), oversample=2, degree=0, x0=0, y0=0, scale=1, nstar=0)
    bad = psf_photometry(img, flat, x, y, bkg_rms=RMS, gain=GAIN)
    assert np.median(bad["chi2"]) > 1.5 * np.median(cat["chi2"])
    right = x > 0.8 * side
    assert np.median(bad["sharp"][right]) < -0.03 < np.median(cat["sharp"][right]) + 0.05


def test_forced_photometry_empty_and_star_positions():
    rng = np.random.default_rng(15)
    psf = make_psf(2.0)
    x, y, side = star_grid(12, 30, rng)
    flux = np.full(len(x), 3000.0)
    model = render(psf, (side, side), x, y, flux)
    img = noisy(model, rng)
    ex, ey = x + 15.0, y + 15.0
    keep = (ex < side - 5) & (ey < side - 5)
    ex, ey = ex[keep], ey[keep]
    empty = forced_photometry(img, psf, ex, ey, bkg_rms=RMS, gain=GAIN)
    n = len(empty)
    assert np.all(empty["flags"] & ~ForcedPhotFlags.NONPOSITIVE == 0)
    assert abs(np.mean(empty["flux"])) < 3 * np.std(empty["flux"]) / math.sqrt(n)
    assert 0.85 < np.std(empty["flux"] / empty["flux_err"]) < 1.15
    stars = forced_photometry(img, psf, x, y, bkg_rms=RMS, gain=GAIN)
    assert abs(np.median(stars["flux"] / 3000.0) - 1) < 0.005
    assert 0.8 < np.std((stars["flux"] - 3000.0) / stars["flux_err"]) < 1.2
    assert np.median(stars["chi2"]) == pytest.approx(1.0, abs=0.15)
    # with a variance image (the "difference image" case): the same answer
    var = (RMS**2 + np.maximum(model, 0) / GAIN).astype(np.float32)
    withvar = forced_photometry(img, psf, x, y, varimg=var)
    assert np.allclose(withvar["flux"], stars["flux"], rtol=0.01)
    assert np.allclose(withvar["flux_err"], stars["flux_err"], rtol=0.02)


def test_forced_photometry_flags():
    psf = make_psf(2.0)
    img = np.zeros((40, 40), np.float32)
    msk = np.zeros((40, 40), np.int16)
    msk[18:23, 18:23] = int(MaskBits.DEAD)
    msk[5, 30] = int(MaskBits.SOURCE)                    # informational: not bad
    cat = forced_photometry(img, psf, [20.0, 19.0, 0.2, -3.0, 30.0, np.nan], [20.0, 22.0, 10.0, 5.0, 5.0, 1.0],
                            mskimg=msk, bkg_rms=1.0)
    F = ForcedPhotFlags
    assert list(cat["flags"]) == [F.TOO_MANY_BAD | F.SOME_BAD, F.SOME_BAD | F.NONPOSITIVE,
                                  F.EDGE | F.NONPOSITIVE, F.OFF_IMAGE, F.NONPOSITIVE, F.OFF_IMAGE]
    assert np.isnan(cat["flux"][0]) and np.isnan(cat["flux"][3])
    assert cat["bad_frac"][0] > 0.5 and cat["nbad"][4] == 0 and cat["npix"][4] == 29
    assert cat["flux"][2] == 0.0 and cat["bad_frac"][2] == pytest.approx(10 / 28)


def test_thousands_of_forced_positions_fast():
    import time

    psf = make_psf(2.0, vary=0.2)
    img = np.random.default_rng(16).normal(0, 5, (1000, 1000)).astype(np.float32)
    xy = np.random.default_rng(17).uniform(5, 995, (2, 5000))
    forced_photometry(img, psf, xy[0][:10], xy[1][:10], bkg_rms=5.0)
    t = time.perf_counter()
    cat = forced_photometry(img, psf, xy[0], xy[1], bkg_rms=5.0, gain=GAIN)
    assert time.perf_counter() - t < 0.5
    assert 0.9 < np.std(cat["flux"] / cat["flux_err"]) < 1.1


# --------------------------------------------------------------------------------------------------
# flags and quality measures
# --------------------------------------------------------------------------------------------------


def test_flags_sharp_and_masks():
    rng = np.random.default_rng(18)
    psf = make_psf(2.0)
    x = np.array([20.0, 50.3, 80.0, 1.2, 110.0, 140.0])
    y = np.array([20.0, 20.0, 20.0, 20.0, 20.0, 20.0])
    flux = np.array([5e4, 5e4, 5e4, 5e4, 0.0, 5e4])
    model = render(psf, (40, 160), x, y, flux)
    model[20, 110] += 3000.0                                  # a cosmic ray
    wide = make_psf(3.5)
    model += render(wide, (40, 160), [140.0], [20.0], [5e4]) - render(psf, (40, 160), [140.0], [20.0], [5e4])
    img = noisy(model, rng)
    msk = np.zeros(img.shape, np.int16)
    msk[19, 50] = int(MaskBits.SATURATED)
    msk[21, 79:81] = int(MaskBits.SPIKE)
    msk[30, 20] = int(MaskBits.SOURCE)
    img[22, 80] = np.nan
    cat = psf_photometry(img, psf, x, y, mskimg=msk, bkg_rms=RMS, gain=GAIN)
    F = PSFFitFlags
    fl = [F(int(v)) for v in cat["flags"]]
    assert fl[0] == 0
    assert fl[1] == F.MASKED | F.SATURATED and cat["nbad"][1] == 1
    assert fl[2] == F.MASKED and cat["nbad"][2] == 3 and cat["npix"][2] == 29 - 3
    assert fl[3] & F.EDGE and cat["npix"][3] < 29
    assert cat["sharp"][4] > 0.3                              # cosmic ray
    assert cat["sharp"][5] < -0.2                             # extended
    assert abs(cat["sharp"][0]) < 0.05
    for i in (0, 1, 2, 3):
        assert cat["flux"][i] == pytest.approx(5e4, rel=0.02)


def test_moved_group_split_and_fixed_positions():
    rng = np.random.default_rng(19)
    psf = make_psf(2.0)
    # a chain of 7 stars 2.5 px apart, and an isolated star given 2 px off
    x = np.concatenate([30.0 + 2.5 * np.arange(7), [80.0]])
    y = np.concatenate([np.full(7, 30.0), [30.0]])
    flux = np.full(8, 1e4)
    img = noisy(render(psf, (60, 110), x, y, flux), rng)
    xin = x.copy()
    xin[7] += 1.6
    cat = psf_photometry(img, psf, xin, y, bkg_rms=RMS, gain=GAIN, max_group=3, max_shift=1.0)
    assert np.all(cat["flags"][:7] & PSFFitFlags.GROUP_SPLIT)
    assert np.all(cat["group_size"][:7] <= 3) and cat.meta["NSPLIT"] == 7
    assert np.all(np.abs(cat["flux"][:7] / 1e4 - 1) < 0.1)
    assert cat["flags"][7] & PSFFitFlags.MOVED
    assert cat["x"][7] == xin[7] and np.isnan(cat["x_err"][7])
    fixed = psf_photometry(img, psf, x, y, bkg_rms=RMS, gain=GAIN, recentre=False)
    assert np.all(fixed["x"] == x) and np.all(np.isnan(fixed["x_err"]))
    assert np.all(np.abs(fixed["flux"] / 1e4 - 1) < 0.05)


def test_nans_masked_and_bad_inputs():
    psf = make_psf(2.0)
    img = noisy(render(psf, (40, 40), [20.0], [20.0], [1e4]), np.random.default_rng(20))
    img[20, 21] = np.nan
    img[0:3, :] = np.inf
    cat = psf_photometry(img, psf, [20.0, 1.0, np.nan, 100.0], [20.0, 1.0, 5.0, 5.0], bkg_rms=RMS, gain=GAIN)
    assert cat["flags"][0] == PSFFitFlags.MASKED and cat["nbad"][0] == 1
    assert cat["flux"][0] == pytest.approx(1e4, rel=0.03)
    assert np.all(cat["flags"][2:] == PSFFitFlags.FAILED | PSFFitFlags.EDGE) and np.all(np.isnan(cat["flux"][2:]))
    assert len(psf_photometry(img, psf, [], [], bkg_rms=RMS)) == 0
    with pytest.raises(ShapeError):
        psf_photometry(img, psf, [20.0], [20.0], mskimg=np.zeros((40, 41), np.int16))
    with pytest.raises(ShapeError):
        psf_photometry(img, psf, [20.0], [20.0], background=np.zeros((41, 40)))
    with pytest.raises(ShapeError):
        forced_photometry(img, psf, [20.0], [20.0], varimg=np.ones((40, 41)))
    with pytest.raises(ShapeError):
        psf_photometry(img[0], psf, [20.0], [20.0])
    with pytest.raises(ConfigError):
        psf_photometry(img, psf, [20.0, 21.0], [20.0])
    with pytest.raises(ConfigError):
        psf_photometry(img, psf, [20.0], [20.0], flux=[1.0, 2.0])
    with pytest.raises(ConfigError):
        psf_photometry(img, psf, [20.0], [20.0], fit_radius=0.2)
    with pytest.raises(ConfigError):
        psf_photometry(img, psf, [20.0], [20.0], gain=-1.0)
    with pytest.raises(ConfigError):
        psf_photometry(img, psf.basis, [20.0], [20.0])


def test_maps_of_background_and_noise():
    rng = np.random.default_rng(21)
    psf = make_psf(2.0)
    x, y, side = star_grid(6, 25, rng)
    flux = np.full(len(x), 5e3)
    bkg = (200.0 + 0.5 * np.arange(side)[None, :] + np.zeros((side, 1))).astype(np.float32)
    img = noisy(render(psf, (side, side), x, y, flux), rng) + bkg
    cat = psf_photometry(img, psf, x, y, background=bkg, bkg_rms=np.full((side, side), RMS), gain=GAIN)
    scal = psf_photometry(img - bkg, psf, x, y, bkg_rms=RMS, gain=GAIN)
    assert np.allclose(cat["flux"], scal["flux"], rtol=1e-4)
    est = psf_photometry(img - bkg, psf, x, y, gain=GAIN)          # rms estimated from the image
    assert est.meta["BKGRMS"] == pytest.approx(RMS, rel=0.1)


# --------------------------------------------------------------------------------------------------
# kernels against the numpy reference
# --------------------------------------------------------------------------------------------------


def _random_problem(seed):
    rng = np.random.default_rng(seed)
    psf = make_psf(2.0, vary=0.3)
    ny, nx = 60, 70
    n = 14
    x = rng.uniform(-1, nx, n)
    y = rng.uniform(-1, ny, n)
    x[1], y[1] = x[0] + 2.2, y[0] + 0.7                         # a blend
    x[2], y[2] = x[0] - 0.8, y[0] + 2.5                         # a triple
    flux = rng.uniform(300, 3e4, n)
    img = noisy(render(psf, (ny, nx), x, y, flux), rng)
    code = (rng.random((ny, nx)) < 0.03).astype(np.uint8)
    code[rng.random((ny, nx)) < 0.01] |= 3
    data = np.where(code != 0, 0, img).astype(np.float32)
    rms2 = rng.uniform(0.5, 1.5, (ny, nx)).astype(np.float32) * RMS**2
    return rng, psf, data, code, rms2, x + rng.normal(0, 0.3, n), y + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("seed", [1, 2])
def test_fit_kernel_matches_reference(seed):
    from ztfsds.photom.psffit import _grids, _groups

    rng, psf, data, code, rms2, x0, y0 = _random_problem(seed)
    inside = (x0 > -0.5) & (x0 < data.shape[1] - 0.5) & (y0 > -0.5) & (y0 < data.shape[0] - 0.5)
    x0, y0 = np.ascontiguousarray(x0[inside]), np.ascontiguousarray(y0[inside])
    n = len(x0)
    grids = _grids(psf, x0, y0, 15)
    assert grids.shape == (n, 31, 31)
    gref = np.empty_like(grids)
    m = psf.grid_size // 2
    block = np.ascontiguousarray(psf.basis[:, m - 15:m + 16, m - 15:m + 16])
    terms = np.ascontiguousarray(np.column_stack([np.ones(n), x0 / 500.0, y0 / 500.0]))
    ref.psf_grids(block, terms, 0, 31, gref)
    assert np.allclose(grids, gref, rtol=1e-6, atol=1e-7)
    start, members, _, _ = _groups(x0, y0, 4.0, 2)
    f0 = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(100, 1e4, n))
    state = {}
    for name, mod in (("kernel", _psffit), ("reference", ref)):
        xs, ys, fs = x0.copy(), y0.copy(), f0.copy()
        stamps = np.zeros((n, 13 * 13), np.float32)
        resid = data.copy()
        out = np.zeros((n, _psffit.N_OUT))
        flags = np.zeros(n, np.int32)
        mod.render_subtract(grids, 2, x0, y0, xs, ys, fs, 6, stamps, resid)
        for _ in range(2):
            mod.fit_groups(data, resid, code, rms2, 1.0 / GAIN, 0.01 * seed, grids, 2, x0, y0, xs, ys, fs, stamps, 6, start,
                           members, 3.0, 1.0, 10, True, 1e-3, out, flags)
        state[name] = (xs, ys, fs, resid, out, flags)
    k, r = state["kernel"], state["reference"]
    assert np.array_equal(k[5], r[5])
    ok = np.isfinite(k[2])
    assert np.array_equal(ok, np.isfinite(r[2])) and ok.sum() >= n - 3
    assert np.allclose(k[0], r[0], atol=1e-6) and np.allclose(k[1], r[1], atol=1e-6)
    assert np.allclose(k[2][ok], r[2][ok], rtol=1e-6, atol=1e-5)
    assert np.allclose(k[3], r[3], atol=1e-3)
    assert np.allclose(k[4], r[4], rtol=1e-6, atol=1e-8, equal_nan=True)


def test_forced_kernel_matches_reference():
    from ztfsds.photom.psffit import _grids

    _, psf, data, code, rms2, x0, y0 = _random_problem(3)
    x0 = np.concatenate([x0, [np.nan, -5.0, 0.0]])
    y0 = np.concatenate([y0, [3.0, 4.0, 0.0]])
    grids = _grids(psf, np.nan_to_num(x0), np.nan_to_num(y0), 9)
    for total, inv_gain in ((False, 1.0 / GAIN), (True, 0.0), (False, 0.0)):
        res = []
        for mod in (_psffit, ref):
            fl = np.zeros(len(x0))
            out = np.zeros((len(x0), _psffit.N_OUT))
            flags = np.zeros(len(x0), np.int32)
            mod.forced_fit(data, code, rms2, total, inv_gain, grids, 2, x0, y0, 3.0, 0.4, fl, out, flags)
            res.append((fl, out, flags))
        assert np.array_equal(res[0][2], res[1][2])
        assert np.allclose(res[0][0], res[1][0], rtol=1e-9, atol=1e-9, equal_nan=True)
        assert np.allclose(res[0][1], res[1][1], rtol=1e-9, atol=1e-12, equal_nan=True)


def test_interpolation_derivatives():
    psf = make_psf(2.0)
    g = psf.basis[0].astype(np.float32)
    H = g.shape[0] // 2
    t = np.random.default_rng(4).uniform(H - 10, H + 10, (2, 50))
    _, vx, vy = ref.interp(g, t[0], t[1])
    e = 1e-5
    assert np.allclose(vx, (ref.interp(g, t[0] + e, t[1])[0] - ref.interp(g, t[0] - e, t[1])[0]) / (2 * e),
                       atol=1e-6)
    assert np.allclose(vy, (ref.interp(g, t[0], t[1] + e)[0] - ref.interp(g, t[0], t[1] - e)[0]) / (2 * e),
                       atol=1e-6)
    # the same values as PSFModel's own interpolation (psf.stamp before its renormalisation)
    st = psf.stamp(50.0, 50.0, size=9, dx=0.3, dy=-0.2)
    off = np.arange(9) - 4
    yy, xx = np.meshgrid(off, off, indexing="ij")
    mine = ref.interp(g, H + (xx.ravel() - 0.3) * 2, H + (yy.ravel() + 0.2) * 2)[0].reshape(9, 9)
    assert np.allclose(mine / mine.sum(), st, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# the real quadrant (slow)
# --------------------------------------------------------------------------------------------------

REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
STEM = "ztf_20200924431759_000655_zr_c13_o_q3"


@pytest.mark.slow
def test_real_quadrant():
    from astropy.io import fits

    from ztfsds.astrom.extraction import background, extract
    from ztfsds.photom.psf import build_psf

    sci_path = REAL_DIR / f"{STEM}_sciimg.fits"
    if not sci_path.exists():
        pytest.skip("real quadrant not present")
    sci = np.ascontiguousarray(fits.getdata(sci_path), dtype=np.float32)
    msk = np.asarray(fits.getdata(REAL_DIR / f"{STEM}_mskimg.fits")).astype(np.int16)
    src = extract(sci, msk, gain=6.0, saturate=58647.0)
    bkg = background(sci, msk)
    psf = build_psf(sci, msk, src, gain=6.0)
    cat = psf_photometry(sci, psf, src["x"], src["y"], mskimg=msk, background=bkg.level, bkg_rms=bkg.rms,
                         gain=6.0, saturate=58647.0)
    assert len(cat) == len(src)
    assert np.mean(cat["flags"] == 0) > 0.9
    clean = (cat["flags"] == 0) & (src["flags"] == 0) & (src["snr"] > 20)
    assert np.median(cat["flux"][clean] / src["flux"][clean]) == pytest.approx(1.0, abs=0.06)
    assert np.median(cat["chi2"][clean]) < 3.0
    assert abs(np.median(cat["sharp"][clean])) < 0.05
    # the windowed centroid of extraction is itself noisy and biased by a few hundredths of a pixel
    assert np.median(np.hypot(cat["x"] - src["x"], cat["y"] - src["y"])[clean]) < 0.2
