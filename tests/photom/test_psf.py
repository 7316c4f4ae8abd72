"""The spatially varying pixel-basis PSF model (`ztfsds.photom.psf`)."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
from astropy.io import fits
from astropy.table import Table

from ztfsds.astrom import extract
from ztfsds.errors import ConfigError, PhotometryError
from ztfsds.photom.psf import PSFModel, build_psf, cubic_weights, poly_terms
from ztfsds.products import InfoBits, MaskBits

SHAPE = (768, 768)
Q, PA, BETA = 0.85, 0.5, 3.0          # axis ratio, position angle [rad], Moffat beta of the synthetic PSF
STEM = "ztf_20200924431759_000655_zr_c13_o_q3"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))


def true_fwhm(x):
    """Moffat FWHM [px] (geometric mean of the axes) of the synthetic PSF: linear in x."""
    return 1.6 + 0.4 * np.asarray(x, float) / SHAPE[1]


def moffat_pixels(fwhm, dx, dy, size, nsub=7):
    """``(n, size, size)`` unit-flux elliptical Moffats integrated over the pixels (nsub**2 sub-samples),
    centred ``(dx, dy)`` px from the central pixel."""
    fwhm, dx, dy = (np.atleast_1d(np.asarray(v, float)) for v in (fwhm, dx, dy))
    t = ((np.arange(size) - size // 2)[:, None] + (np.arange(nsub) + 0.5) / nsub - 0.5).ravel()
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / BETA) - 1))
    a, b = alpha / np.sqrt(Q), alpha * np.sqrt(Q)
    X = t[None, None, :] - dx[:, None, None]
    Y = t[None, :, None] - dy[:, None, None]
    xr = X * np.cos(PA) + Y * np.sin(PA)
    yr = -X * np.sin(PA) + Y * np.cos(PA)
    v = (BETA - 1) / (np.pi * a * b)[:, None, None] * (
        1 + (xr / a[:, None, None]) ** 2 + (yr / b[:, None, None]) ** 2) ** -BETA
    return v.reshape(len(dx), size, nsub, size, nsub).mean(axis=(2, 4))


@pytest.fixture(scope="module")
def synthetic():
    """A 768 x 768 image of 250 stars of the known PSF at random positions, its sources and its model."""
    img, sources = synthetic_image()
    return img, sources, build_psf(img, None, sources, gain=6.0)


def synthetic_image():
    """A 768 x 768 image of 250 stars of the known PSF at random positions, Poisson and read noise."""
    rng = np.random.default_rng(11)
    n, gain, sky, rn, S = 250, 6.0, 150.0, 8.0, 41
    ny, nx = SHAPE
    x, y = rng.uniform(15, nx - 16, n), rng.uniform(15, ny - 16, n)
    flux = 10 ** rng.uniform(3.6, 5.0, n)
    img = np.full(SHAPE, sky)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    h = S // 2
    stamps = moffat_pixels(true_fwhm(x), x - ix, y - iy, S)
    for i in range(n):
        y0, y1, x0, x1 = max(iy[i] - h, 0), min(iy[i] + h + 1, ny), max(ix[i] - h, 0), min(ix[i] + h + 1, nx)
        img[y0:y1, x0:x1] += flux[i] * stamps[i, y0 - iy[i] + h:y1 - iy[i] + h, x0 - ix[i] + h:x1 - ix[i] + h]
    img = ((rng.poisson(img * gain) + rng.normal(0.0, rn, SHAPE)) / gain).astype(np.float32)
    return img, extract(img, gain=gain)


def test_poly_and_weights():
    assert poly_terms([1.0, 2.0], [3.0, 5.0], 2).tolist() == [[1, 1, 3, 1, 3, 9], [1, 2, 5, 4, 10, 25]]
    i0, w = cubic_weights(np.linspace(0, 5, 23))
    assert np.allclose(w.sum(axis=1), 1.0)
    # Keys' kernel reproduces quadratics exactly
    t = np.linspace(3, 6, 31)
    i0, w = cubic_weights(t)
    nodes = np.arange(12.0) ** 2
    assert np.allclose(np.sum(w * nodes[i0[:, None] + np.arange(4)], axis=1), t**2)


def test_synthetic_model_matches_truth(synthetic):
    img, sources, model = synthetic
    assert model.degree == 2 and model.oversample == 3 and model.size == 25
    assert model.basis.shape == (6, 88, 88)
    assert model.nstar > 150
    assert model.poly([10.0, 20.0], [30.0, 40.0]).shape == (2, 6)
    err = []
    for x, y in [(384.0, 384.0), (100.0, 100.0), (650.0, 150.0), (150.0, 650.0), (650.0, 650.0)]:
        for dx, dy in [(0.0, 0.0), (0.3, -0.4), (0.5, 0.5), (-0.17, 0.25)]:
            s = model.stamp(x, y, dx=dx, dy=dy)
            t = moffat_pixels(true_fwhm(x), dx, dy, 25)[0]
            t /= t.sum()
            assert s.shape == (25, 25) and abs(s.sum() - 1.0) < 1e-12
            err.append(np.abs(s - t).max() / t.max())
    err = np.array(err)
    # largest pixel error in units of the peak: ~0.6 % at the centre of the image, up to ~2.4 % in the
    # corners, where the quadratic terms rest on fewer of the ~170 stars
    assert err[:4].max() < 0.01
    assert np.median(err) < 0.012
    assert err.max() < 0.03


def test_synthetic_fwhm_variation(synthetic):
    img, sources, model = synthetic
    truth = []
    for x in (80.0, 384.0, 690.0):
        # the truth measured the same way: a model made of the true oversampled grid
        ovs, m = 3, 88
        c = m // 2
        g = np.zeros((m, m))
        for i in range(ovs):
            for j in range(ovs):
                st = moffat_pixels(true_fwhm(x), -j / ovs, -i / ovs, 27)[0]
                g[c + i - 13 * ovs:c + i + 14 * ovs:ovs, c + j - 13 * ovs:c + j + 14 * ovs:ovs] = st
        tm = PSFModel(basis=g[None], oversample=3, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)
        truth.append((tm.fwhm(0, 0), model.fwhm(x, 384.0)))
    truth = np.array(truth)
    assert np.all(np.abs(truth[:, 1] / truth[:, 0] - 1) < 0.02)
    # the variation across the image (about 20 %) is recovered
    assert abs((truth[2, 1] - truth[0, 1]) / (truth[2, 0] - truth[0, 0]) - 1) < 0.1
    # the pixel-deconvolved Moffat FWHM is near the true profile's
    assert model.fwhm(384.0, 384.0, method="moffat") == pytest.approx(true_fwhm(384.0), rel=0.05)
    with pytest.raises(ConfigError):
        model.fwhm(1.0, 1.0, method="nope")


def test_fits_round_trip(synthetic, tmp_path):
    model = synthetic[2]
    path = tmp_path / "psf.fits"
    model.to_hdulist().writeto(path)
    with fits.open(path) as hdul:
        assert hdul[0].header["PSFDEG"] == 2 and hdul[0].header["PSFOVS"] == 3
        back = PSFModel.from_hdulist(hdul)
    assert back.degree == model.degree and back.oversample == model.oversample and back.nstar == model.nstar
    assert (back.x0, back.y0, back.scale) == (model.x0, model.y0, model.scale)
    assert back.fwhm0 == pytest.approx(model.fwhm0, rel=1e-6)
    for x, y in [(50.0, 700.0), (400.0, 300.0)]:
        assert np.abs(back.stamp(x, y, dx=0.2) - model.stamp(x, y, dx=0.2)).max() < 1e-6 * model.stamp(x, y).max()


def test_too_few_stars(synthetic):
    img, sources, _ = synthetic
    with pytest.raises(PhotometryError) as err:
        build_psf(img, None, sources[:5], product="q1_sciimg.fits")
    assert err.value.infobits & int(InfoBits.PSF_FAILED)
    assert "q1_sciimg.fits" in str(err.value)
    with pytest.raises(ConfigError):
        build_psf(img, None, sources, size=24)


def test_masked_pixels_and_bright_stars_left_out(synthetic):
    img, sources, model = synthetic
    msk = np.zeros(img.shape, np.int16)
    msk[:, :] = int(MaskBits.SOURCE)                    # informational bits do not remove pixels
    m2 = build_psf(img, msk, sources, gain=6.0, degree=0)
    assert m2.nstar > 150
    # a saturation level below most stars' peaks leaves too few
    with pytest.raises(PhotometryError):
        build_psf(img, None, sources, gain=6.0, saturate=100.0)


# --------------------------------------------------------------------------------------------------
# A simulated night quadrant
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_quadrant(tmp_path_factory):
    """Quadrant 1 of one simulated exposure (512 x 512), calibrated by the pipeline, with its sources."""
    from ztfsds.calib import build_library, run_calib
    from ztfsds.products import ProductKey, ProductStore, read_image
    from ztfsds.sim import simulate_night

    root = tmp_path_factory.mktemp("psfnight")
    night = simulate_night(root, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=512, seed=4, nbias=2,
                           nflat=2)
    store = ProductStore(root)
    build_library(store, "20200924")
    raw = night.science[0]
    assert all(s.ok for s in run_calib(raw, store))
    key = ProductKey.parse(raw.name).quadrant(1, "sciimg")
    sci, hdr = read_image(store.path(key))
    msk, _ = read_image(store.path(key.with_suffix("mskimg")))
    var, _ = read_image(store.path(key.with_suffix("varimg")))
    cat = extract(sci, msk, var, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    return sci, msk, var, hdr, cat


def test_simulated_quadrant(sim_quadrant):
    from photutils.psf import fit_fwhm

    sci, msk, var, hdr, cat = sim_quadrant
    model = build_psf(sci, msk, cat, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    assert model.nstar >= 20
    good = ((np.asarray(cat["flags"]) == 0) & (np.asarray(cat["snr"]) > 50)
            & (np.asarray(cat["peak"]) < 0.25 * hdr["SATURATE"]))
    ny, nx = sci.shape
    fw_star, fw_model, chi2 = [], [], []
    h = 8
    for r in cat[good]:
        ix, iy = int(round(r["x"])), int(round(r["y"]))
        if not (h <= ix < nx - h and h <= iy < ny - h):
            continue
        box = (slice(iy - h, iy + h + 1), slice(ix - h, ix + h + 1))
        if (msk[box] & int(MaskBits.BAD)).any():
            continue
        cut = sci[box] - r["background"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fw_star.append(fit_fwhm(cut, xypos=[(r["x"] - ix + h, r["y"] - iy + h)], fit_shape=7)[0])
        fw_model.append(model.fwhm(r["x"], r["y"]))
        # residuals: flux * model + sky fitted on the central 9 x 9 pixels, the position too
        c = slice(h - 4, h + 5)
        wt = 1.0 / np.sqrt(var[box][c, c].ravel())
        d = cut[c, c].ravel()

        def resid(p):
            st = model.stamp(r["x"], r["y"], size=2 * h + 1, dx=r["x"] - ix + p[0], dy=r["y"] - iy + p[1])
            A = np.c_[st[c, c].ravel(), np.ones(81)] * wt[:, None]
            coef, *_ = np.linalg.lstsq(A, d * wt, rcond=None)
            return A @ coef - d * wt

        fit = scipy.optimize.least_squares(resid, [0.0, 0.0], diff_step=1e-3)
        chi2.append(np.sum(fit.fun**2) / (81 - 4))
    assert len(fw_star) >= 10
    assert np.median(fw_model) == pytest.approx(np.median(fw_star), rel=0.05)
    assert np.median(chi2) < 1.5


# --------------------------------------------------------------------------------------------------
# The real quadrant (slow)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_quadrant_fwhm():
    from photutils.psf import fit_fwhm

    sci_path = REAL_DIR / f"{STEM}_sciimg.fits"
    if not sci_path.exists():
        pytest.skip(f"{sci_path} not available")
    sci = np.asarray(fits.getdata(sci_path), dtype=np.float32)
    hdr = fits.getheader(sci_path)
    msk = np.asarray(fits.getdata(REAL_DIR / f"{STEM}_mskimg.fits")).astype(np.int16)
    cat = extract(sci, msk, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    model = build_psf(sci, msk, cat, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    assert model.nstar > 150
    sel = Table(cat)[(cat["flags"] == 0) & (cat["snr"] > 50) & (cat["snr"] < 500)
                     & (cat["peak"] < 0.25 * hdr["SATURATE"])][:300]
    fw = []
    for r in sel:
        ix, iy = int(round(r["x"])), int(round(r["y"]))
        cut = sci[iy - 8:iy + 9, ix - 8:ix + 9] - r["background"]
        if cut.shape != (17, 17) or (msk[iy - 8:iy + 9, ix - 8:ix + 9] & int(MaskBits.BAD)).any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fw.append(fit_fwhm(cut, xypos=[(r["x"] - ix + 8, r["y"] - iy + 8)], fit_shape=7)[0])
    assert model.fwhm0 == pytest.approx(np.median(fw), rel=0.05)
    assert model.fwhm0 == pytest.approx(hdr["SEEING"], rel=0.05)
