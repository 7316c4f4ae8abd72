"""Source extraction (`ztfsds.astrom.extraction`): the compiled kernels against their numpy references,
the background, detection, deblending and measurements on synthetic images, a real IPAC cutout against
sep, and a simulated night against its truth. The measured figures are printed (``pytest -s``).

The full-size real quadrant (``ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits``, 38 MB) is not in the
repository: the slow test that compares it with sep reads it from ``/work/shared/data/ztfimg-pypi-0.19.0``
(or ``$ZTFSDS_REAL_QUADRANT_DIR``) and is skipped when it is absent. The fast tests use a 400 x 400
cutout of it in ``tests/data`` (made by ``tests/data/make_extract_cutout.py``).
"""

import os
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree
from scipy.special import erf

from ztfsds._ext import _extract, reference
from ztfsds.astrom.extraction import (
    BACKGROUND_EXCLUDE,
    DETECT_EXCLUDE,
    SOURCE_COLUMNS,
    WIN_MAXITER,
    WIN_MINSTEP,
    WIN_SIGMA_RANGE,
    Background,
    SourceFlags,
    background,
    extract,
    gaussian_kernel,
)
from ztfsds.config import AstromParams
from ztfsds.errors import ConfigError, InputError, NonFiniteError, ShapeError
from ztfsds.products import MaskBits

CUTOUT = "ztf_20200924431759_000655_zr_c13_o_q3_cutout.fits.gz"
REAL_DIR = Path(os.environ.get("ZTFSDS_REAL_QUADRANT_DIR", "/work/shared/data/ztfimg-pypi-0.19.0"))
REAL_SCI = "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
#: sep's default 3 x 3 filter, and the threshold of ours that equals sep's ``thresh=5`` with a scalar
#: ``err``: sep applies it to the unit-sum filtered image in units of the unfiltered rms, i.e. to our
#: matched filter at 5 * sum(k) / sqrt(sum(k**2)) sigma
SEP_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
SEP_EQUIVALENT_THRESHOLD = float(5.0 * SEP_KERNEL.sum() / np.sqrt((SEP_KERNEL**2).sum()))


def render(shape, xs, ys, fluxes, fwhm):
    """Pixel-integrated circular Gaussians [flux units per pixel]."""
    ny, nx = shape
    s = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0))) * np.sqrt(2.0)
    img = np.zeros(shape)
    for x0, y0, f in zip(xs, ys, fluxes):
        ex = 0.5 * (erf((np.arange(nx) - x0 + 0.5) / s) - erf((np.arange(nx) - x0 - 0.5) / s))
        ey = 0.5 * (erf((np.arange(ny) - y0 + 0.5) / s) - erf((np.arange(ny) - y0 - 0.5) / s))
        img += f * np.outer(ey, ex)
    return img


def star_field(rng, shape=(160, 180), n=30, fwhm=2.2, sky=150.0, gain=6.0, read_noise=8.0, edge=8):
    """Stars on a grid with jitter, shot + read noise [DN]; returns (sci, var, truth Table)."""
    ny, nx = shape
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.linspace(edge, nx - 1 - edge, side), np.linspace(edge, ny - 1 - edge, side))
    xs = gx.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    ys = gy.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    flux = 10 ** rng.uniform(3.0, 5.0, n)
    model = sky + render(shape, xs, ys, flux, fwhm)
    var = model / gain + (read_noise / gain) ** 2
    sci = rng.poisson(model * gain) / gain + rng.normal(0.0, read_noise / gain, shape)
    return sci.astype(np.float32), var.astype(np.float32), Table({"x": xs, "y": ys, "flux": flux})


def match(cat, xs, ys, radius=1.0):
    """Index into ``cat`` of the detection nearest each (x, y) and whether it is within ``radius``."""
    if len(cat) == 0:
        return np.zeros(len(xs), int), np.zeros(len(xs), bool)
    d, i = cKDTree(np.c_[cat["x"], cat["y"]]).query(np.c_[xs, ys])
    return i, d < radius


@pytest.fixture(scope="module")
def cutout(test_data_dir):
    with fits.open(test_data_dir / CUTOUT) as hdul:
        return hdul[0].data.astype(np.float32), hdul["MSKIMG"].data.astype(np.int16), hdul[0].header


# --------------------------------------------------------------------------------------------------
# Kernels against their numpy references
# --------------------------------------------------------------------------------------------------


def _kernel_inputs(rng, shape=(150, 170)):
    """A noisy star field with NaN, masked and saturated pixels, its codes, background and detection."""
    sci, var, truth = star_field(rng, shape=shape, n=25)
    # two close pairs, a source on the edge
    sci += render(shape, [60.0, 63.2, 120.0, 124.0, 0.7], [70.0, 71.0, 40.0, 40.5, 90.0],
                  [20000, 15000, 8000, 3000, 6000], 2.0).astype(np.float32)
    mask = np.zeros(shape, np.int16)
    mask[10:14, 30] = MaskBits.DEAD
    mask[100, 100:103] = MaskBits.SPIKE
    mask[int(truth["y"][3]), int(truth["x"][3])] |= MaskBits.SATURATED
    mask[5, 5] = MaskBits.SOURCE                # informational: ignored
    sci[40, 150] = np.nan
    mask[40, 150] = MaskBits.NAN
    sci[80, 20] = np.inf                        # non-finite without a mask bit
    code = reference.classify_pixels(sci, mask, DETECT_EXCLUDE, BACKGROUND_EXCLUDE, int(MaskBits.SATURATED),
                                     3000.0)
    return sci, var, mask, code


def test_classify_matches_reference():
    rng = np.random.default_rng(11)
    sci, _, mask, code = _kernel_inputs(rng)
    out = np.empty(sci.shape, np.uint8)
    _extract.classify_rows(sci, mask, True, DETECT_EXCLUDE, BACKGROUND_EXCLUDE, int(MaskBits.SATURATED), 3000.0,
                           0, sci.shape[0], out)
    np.testing.assert_array_equal(out, code)
    assert code[40, 150] == 3 and code[80, 20] == 7 and code[5, 5] == 0 and code[12, 30] == 3
    nomask = np.empty(sci.shape, np.uint8)
    _extract.classify_rows(sci, np.zeros((1, 1), np.int16), False, 0, 0, 0, np.inf, 0, sci.shape[0], nomask)
    np.testing.assert_array_equal(nomask, reference.classify_pixels(sci, None, 0, 0, 0, None))


def test_cell_stats_match_reference():
    rng = np.random.default_rng(12)
    sci, _, _, code = _kernel_inputs(rng, shape=(150, 170))
    code[:40, :30] |= 2                         # a cell with too few good pixels
    mesh = 32
    nby, nbx = 5, 5             # 150 = 4 x 32 + 22 (a cell of its own), 170 = 5 x 32 + 10 (joins the last)
    level, rms = np.empty((nby, nbx)), np.empty((nby, nbx))
    ngood = np.empty((nby, nbx), np.int32)
    _extract.cell_stats(sci, code, mesh, 0.5, level, rms, ngood)
    ref_level, ref_rms, ref_ngood = reference.background_cells(sci, code, mesh, 0.5)
    np.testing.assert_array_equal(ngood, ref_ngood)
    np.testing.assert_allclose(level, ref_level, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(rms, ref_rms, rtol=1e-9, equal_nan=True)
    assert np.isnan(level[0, 0]) and np.isfinite(level[1:, 1:]).all()
    # the mode of pure noise cells is the sky, the rms the noise (read + shot: sqrt(150 / 6 + 1.78))
    assert np.nanmedian(level) == pytest.approx(150.0, abs=0.5)
    assert np.nanmedian(rms) == pytest.approx(np.sqrt(150 / 6 + (8 / 6) ** 2), rel=0.05)


def test_spline_rows_match_reference():
    rng = np.random.default_rng(13)
    val, d2 = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    seg = np.sort(rng.integers(0, 4, 40)).astype(np.intp)
    w = rng.normal(size=(4, 40))
    out = np.empty((7, 40), np.float32)
    _extract.spline_rows(val, d2, seg, w, 0, 7, out)
    np.testing.assert_allclose(out, reference.spline_rows(val, d2, seg, w), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("separable", [True, False])
def test_detection_rows_match_reference(separable):
    rng = np.random.default_rng(14)
    sub = rng.normal(size=(60, 75)).astype(np.float32)
    rms = rng.uniform(0.5, 2.0, (60, 75)).astype(np.float32)
    rms[3, 4] = 0.0
    code = np.zeros((60, 75), np.uint8)
    code[10, 10:20] = 1
    if separable:
        g = gaussian_kernel(2.0)[3]
        taps, k2 = np.vstack([g, g]), gaussian_kernel(2.0)
    else:
        taps = k2 = rng.uniform(0, 1, (3, 5)).astype(np.float32)
    out = np.empty_like(sub)
    _extract.detection_rows(sub, np.ascontiguousarray(taps), separable, rms, code, 0.7, 0, 60, out)
    ref = reference.detection_image(sub, k2, rms, code, 0.7)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert out[3, 4] == 0 and not out[10, 10:20].any()


def _detection(sci, code, mesh=32):
    """The kernel pipeline up to the detection image: (sub, rms, det)."""
    bkg = background(np.where(code & 2, np.nan, sci).astype(np.float32), mesh=mesh)
    sub = np.empty_like(sci)
    _extract.subtract_rows(sci, bkg.level, code, 0, sci.shape[0], sub)
    g = gaussian_kernel(2.0)[3]
    det = np.empty_like(sci)
    _extract.detection_rows(sub, np.vstack([g, g]), True, bkg.rms, code, 1.0 / float(np.sum(g.astype(float) ** 2)),
                            0, sci.shape[0], det)
    return sub, bkg.rms, det


def test_label_matches_reference():
    rng = np.random.default_rng(15)
    sci, _, _, code = _kernel_inputs(rng)
    _, _, det = _detection(sci, code)
    segm = np.empty(det.shape, np.int32)
    start, py, px = _extract.label(det, np.float32(5.0), 5, segm)
    ref = reference.label_components(det, 5.0, 5)
    np.testing.assert_array_equal(segm, ref)
    assert len(start) - 1 == ref.max() > 20
    for c in range(len(start) - 1):
        ys, xs = np.nonzero(ref == c + 1)
        np.testing.assert_array_equal(py[start[c]:start[c + 1]], ys)
        np.testing.assert_array_equal(px[start[c]:start[c + 1]], xs)
    # nothing above the threshold
    empty = np.empty(det.shape, np.int32)
    start, py, px = _extract.label(np.zeros_like(det), np.float32(5.0), 5, empty)
    assert len(start) == 1 and len(py) == 0 and not empty.any()


def _deblended(det, sub, rms, minrise=4.0):
    segm = np.empty(det.shape, np.int32)
    start, py, px = _extract.label(det, np.float32(5.0), 5, segm)
    ref_segm = segm.copy()
    n = len(py)
    obj_start, obj_comp, blended = np.zeros(n + 1, np.int64), np.zeros(n, np.int32), np.zeros(n, np.uint8)
    s2 = (2.0 / 2.3548) ** 2
    nobj = _extract.deblend(det, sub, rms, segm, start, py, px, 5.0, 32, 0.005, minrise, s2, obj_start,
                            obj_comp, blended)
    return ref_segm, segm, nobj, obj_start[:nobj + 1], py, px, blended[:nobj], s2


def test_deblend_matches_reference():
    rng = np.random.default_rng(16)
    sci, _, _, code = _kernel_inputs(rng)
    sub, rms, det = _detection(sci, code)
    comps, segm, nobj, obj_start, py, px, blended, s2 = _deblended(det, sub, rms)
    objects, ref_blended = reference.deblend(det, sub, rms, comps, 5.0, 32, 0.005, 4.0, s2)
    assert nobj == len(objects) > int(comps.max())
    ours = {}
    for j in range(nobj):
        flat = py[obj_start[j]:obj_start[j + 1]].astype(np.int64) * sci.shape[1] + px[obj_start[j]:obj_start[j + 1]]
        assert np.all(np.diff(flat) > 0)            # raster order within an object
        assert np.all(segm.ravel()[flat] == j + 1)
        ours[tuple(flat)] = bool(blended[j])
    ref = {tuple(o): bool(b) for o, b in zip(objects, ref_blended)}
    assert ours == ref
    assert (segm > 0).sum() == (comps > 0).sum()


def _measure(sub, var, rms, code, segm, obj_start, py, px, blended, gain=6.0):
    nobj = len(obj_start) - 1
    out = np.empty((nobj, _extract.N_MEASURE))
    flags = np.zeros(nobj, np.int32)
    have_var = var is not None
    _extract.measure(sub, var if have_var else rms, have_var, rms, 1.0 / gain, code, segm, obj_start, py, px,
                     blended, 5.0, 4.0, 2.0 / 2.3548, WIN_SIGMA_RANGE[0], WIN_SIGMA_RANGE[1], WIN_MAXITER,
                     WIN_MINSTEP, 0, nobj, out, flags)
    return out, flags


@pytest.mark.parametrize("with_var", [True, False])
def test_measure_matches_reference(with_var):
    rng = np.random.default_rng(17)
    sci, var, _, code = _kernel_inputs(rng)
    sub, rms, det = _detection(sci, code)
    _, segm, _, obj_start, py, px, blended, _ = _deblended(det, sub, rms)
    v = var if with_var else None
    out, flags = _measure(sub, v, rms, code, segm, obj_start, py, px, blended)
    ref, ref_flags = reference.measure_sources(sub, v, rms, 1.0 / 6.0, code, segm, blended, 5.0, 4.0, 2.0 / 2.3548,
                                               WIN_SIGMA_RANGE[0], WIN_SIGMA_RANGE[1], WIN_MAXITER, WIN_MINSTEP)
    np.testing.assert_array_equal(flags, ref_flags)
    exact = [_extract.M_X_ISO, _extract.M_Y_ISO, _extract.M_X2, _extract.M_Y2, _extract.M_XY,
             _extract.M_FLUX_ISO, _extract.M_VAR_ISO, _extract.M_PEAK, _extract.M_NPIX, _extract.M_X_PEAK,
             _extract.M_Y_PEAK, _extract.M_FLUX_APER, _extract.M_VAR_APER, _extract.M_FLUX_RADIUS,
             _extract.M_SIGMA_WIN, _extract.M_FWHM]
    np.testing.assert_allclose(out[:, exact], ref[:, exact], rtol=1e-9, atol=1e-9, equal_nan=True)
    # the windowed centroid agrees to rounding, or within one convergence step where the two stop one
    # round apart
    win = [_extract.M_X_WIN, _extract.M_Y_WIN]
    np.testing.assert_allclose(out[:, win], ref[:, win], rtol=0, atol=2 * WIN_MINSTEP)
    same = out[:, _extract.M_NITER] == ref[:, _extract.M_NITER]
    assert same.mean() > 0.9
    err = [_extract.M_ERRX2, _extract.M_ERRY2, _extract.M_ERRXY]
    np.testing.assert_allclose(out[same][:, err], ref[same][:, err], rtol=1e-6, atol=1e-12)
    # the test image exercises every flag
    for bit in (1, 2, 4, 8, 16):
        assert np.any(flags & bit), bit


# --------------------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------------------


def test_background_flat_noise_and_gradient():
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[0:300, 0:260]
    plane = 200.0 + 0.05 * xx - 0.03 * yy
    sci = (plane + rng.normal(0.0, 10.0, plane.shape)).astype(np.float32)
    bkg = background(sci, mesh=64)
    assert bkg.level.shape == bkg.rms.shape == sci.shape
    assert bkg.level.dtype == bkg.rms.dtype == np.float32
    assert bkg.mesh_level.shape == (5, 4) and bkg.mesh == 64     # 260 = 4 x 64 + 4: joins the last
    # a plane is recovered to about the noise of a cell's mode (2 x 10 / 64) between the outer cell
    # centres and a few times that beyond (extrapolated), with or without the median filter (which
    # does not bend a gradient at the grid's edges)
    for grid in (bkg, background(sci, mesh=64, filter_size=1)):
        err = np.abs(grid.level - plane)
        assert err[32:-32, 32:-32].max() < 1.2 and err.max() < 2.5 and np.median(err) < 0.4
    assert bkg.global_rms == pytest.approx(10.0, rel=0.03)
    assert np.abs(bkg.rms / 10.0 - 1).max() < 0.06
    # stars hardly move it (the mode estimate)
    stars = sci + render(sci.shape, rng.uniform(0, 260, 80), rng.uniform(0, 300, 80), 10 ** rng.uniform(3, 5, 80),
                         2.0).astype(np.float32)
    with_stars = background(stars, mesh=64)
    assert np.median(with_stars.level - plane) == pytest.approx(0.0, abs=1.0)
    # filter_size=1: no median filtering; a single cell: a constant
    assert background(sci, mesh=64, filter_size=1).level.shape == sci.shape
    one = background(sci[:50, :50], mesh=64)
    assert np.ptp(one.level) == 0 and one.mesh_level.shape == (1, 1)


def test_background_ignores_masked_pixels():
    rng = np.random.default_rng(22)
    sci = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    sci[64:192, 64:192] += 500.0
    mask = np.zeros(sci.shape, np.int16)
    mask[64:192, 64:192] = MaskBits.DEAD
    masked = background(sci, mask, mesh=64)
    assert np.abs(masked.level - 100.0).max() < 1.5
    # the same pixels unmasked do raise it (without the median filter, which takes the 4 cells out);
    # SOURCE bits are not masks
    assert background(sci, mesh=64, filter_size=1).level[128, 128] > 300
    assert background(sci, np.full(sci.shape, int(MaskBits.SOURCE), np.int16), mesh=64,
                      filter_size=1).level[128, 128] > 300


def test_background_errors():
    sci = np.zeros((64, 64), np.float32)
    with pytest.raises(NonFiniteError, match="background cell"):
        background(np.full((64, 64), np.nan, np.float32))
    with pytest.raises(NonFiniteError):
        background(sci, np.full((64, 64), int(MaskBits.DEAD), np.int16))
    with pytest.raises(ShapeError, match="sciimg"):
        background(np.zeros((2, 64, 64)))
    with pytest.raises(ShapeError, match=r"mskimg.*\(32, 64\)"):
        background(sci, np.zeros((32, 64), np.int16), filename="q.fits")
    with pytest.raises(InputError, match="integer"):
        background(sci, np.zeros((64, 64), np.float32))
    with pytest.raises(InputError, match="real numbers"):
        background(np.zeros((64, 64), complex))
    with pytest.raises(ConfigError, match="mesh"):
        background(sci, mesh=1)
    with pytest.raises(ConfigError, match="filter_size"):
        background(sci, filter_size=2)


# --------------------------------------------------------------------------------------------------
# Extraction on synthetic images
# --------------------------------------------------------------------------------------------------


def test_extract_positions_fluxes_and_columns():
    rng = np.random.default_rng(31)
    sci, var, truth = star_field(rng, n=30, fwhm=2.2)
    cat = extract(sci, None, var)
    assert cat.colnames == [c[0] for c in SOURCE_COLUMNS]
    for name, dtype, unit, _ in SOURCE_COLUMNS:
        assert cat[name].dtype == dtype, name
        assert cat[name].unit == unit, name
    assert cat["x"].unit == u.pix and cat["flux"].unit == u.adu and cat["theta"].unit == u.deg
    idx, found = match(cat, truth["x"], truth["y"])
    assert found.all() and len(cat) == len(truth)
    np.testing.assert_array_equal(cat["id"], np.arange(1, len(cat) + 1))
    assert np.all(np.diff(cat["flux"]) <= 0)
    assert np.isnan(cat["ra"]).all() and np.isnan(cat["dec"]).all()
    assert not np.any(cat["flags"])
    dx = np.asarray(cat["x"])[idx] - truth["x"]
    dy = np.asarray(cat["y"])[idx] - truth["y"]
    ex, ey = np.asarray(cat["x_err"])[idx], np.asarray(cat["y_err"])[idx]
    pulls = np.concatenate([dx / ex, dy / ey])
    print(f"\ncentroid rms {np.sqrt(np.mean(dx**2)):.4f} px (predicted {np.sqrt(np.mean(ex**2)):.4f}), "
          f"pull std {np.std(pulls):.2f}")
    assert np.sqrt(np.mean(dx**2 + dy**2) / 2) < 0.05
    assert 0.6 < np.std(pulls) < 1.5
    # a 4 px aperture holds 99.99 % of a FWHM 2.2 px Gaussian; isophotal fluxes lose the wings
    ratio = np.asarray(cat["flux"])[idx] / truth["flux"]
    pull = (np.asarray(cat["flux"])[idx] - truth["flux"]) / np.asarray(cat["flux_err"])[idx]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    assert 0.6 < np.std(pull) < 1.5
    assert np.all(np.asarray(cat["flux_iso"]) < np.asarray(cat["flux"]) * 1.05)
    # shapes: round stars, FWHM (SExtractor's, pixelised) and half-flux radius near the truth
    bright = np.asarray(cat["snr"]) > 100
    assert np.median(cat["elongation"][bright]) < 1.1
    assert np.median(cat["fwhm"][bright]) == pytest.approx(2.2, rel=0.15)
    assert np.median(cat["flux_radius"][bright]) == pytest.approx(2.2 / 2, rel=0.15)
    assert np.all(np.asarray(cat["background"]) == pytest.approx(150.0, abs=2.0))
    assert cat.meta["THRESH"] == 5.0 and cat.meta["BKGRMS"] > 0


def test_extract_empty_and_nan_images():
    rng = np.random.default_rng(32)
    noise = rng.normal(100.0, 5.0, (128, 128)).astype(np.float32)
    empty = extract(noise)
    assert len(empty) == 0 and empty.colnames == [c[0] for c in SOURCE_COLUMNS]
    assert empty["flux"].unit == u.adu and empty["flags"].dtype == np.int16
    with pytest.raises(NonFiniteError):
        extract(np.full((64, 64), np.nan, np.float32))
    # a constant image: no noise, no source
    assert len(extract(np.full((64, 64), 7.0, np.float32))) == 0
    # NaN pixels are excluded, the rest is measured
    sci, _, _ = star_field(rng, shape=(96, 96), n=9)
    sci[:, 40:44] = np.nan
    cat = extract(sci)
    assert not np.any((np.asarray(cat["x"]) > 39.5) & (np.asarray(cat["x"]) < 43.5))
    assert len(cat) >= 6


def test_extract_input_errors():
    sci = np.zeros((64, 64), np.float32)
    with pytest.raises(ShapeError, match="varimg"):
        extract(sci, varimg=np.zeros((64, 63), np.float32))
    with pytest.raises(ShapeError, match="mskimg"):
        extract(sci, np.zeros((63, 64), np.int16))
    with pytest.raises(ShapeError, match="background level"):
        extract(sci, background=Background(np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32), 0.0, 1.0))
    with pytest.raises(ConfigError, match="Background"):
        extract(sci, background=np.zeros((64, 64)))
    for kwargs, message in [({"fwhm_guess": 0}, "fwhm_guess"), ({"aper_radius": -1.0}, "aper_radius"),
                            ({"deblend_nthresh": 0}, "deblend_nthresh"), ({"deblend_mincont": 2.0}, "mincont"),
                            ({"deblend_minrise": -1.0}, "minrise"), ({"gain": 0.0}, "gain"),
                            ({"kernel": np.ones((2, 2))}, "kernel"), ({"kernel": np.zeros((3, 3))}, "kernel")]:
        with pytest.raises(ConfigError, match=message):
            extract(sci, **kwargs)


@pytest.mark.parametrize("separation, ratio", [(3.0, 1.0), (3.5, 0.5), (4.0, 0.5), (4.0, 0.2)])
def test_close_pairs_are_split(separation, ratio):
    """Two FWHM 2 px stars 3-4 px apart are deblended (sep splits none of the pairs 3 px apart, 7 in 10 of
    the equal pairs 3.5 px apart, half the 1:2 pairs 4 px apart). At 3 px and 1:2 pixelisation often
    leaves no saddle between them: no split."""
    rng = np.random.default_rng(int(separation * 10 + ratio * 100))
    split = 0
    for trial in range(5):
        x0, y0, angle = 40.3 + rng.uniform(-0.5, 0.5), 38.7 + rng.uniform(-0.5, 0.5), rng.uniform(0, np.pi)
        xs = np.array([x0, x0 + separation * np.cos(angle)])
        ys = np.array([y0, y0 + separation * np.sin(angle)])
        fluxes = np.array([20000.0, 20000.0 * ratio])
        sci = (render((80, 80), xs, ys, fluxes, 2.0) + 100.0 + rng.normal(0.0, 5.0, (80, 80))).astype(np.float32)
        cat = extract(sci, gain=6.0)
        if len(cat) != 2:
            continue
        split += 1
        idx, found = match(cat, xs, ys, radius=0.5)
        assert found.all() and len(set(idx)) == 2
        assert np.all(np.asarray(cat["flags"]) & SourceFlags.BLENDED)
        assert np.all(np.asarray(cat["flags"]) & SourceFlags.NEIGHBOURS)
        # no pass on the unfiltered image: the filter merges them
        assert len(extract(sci, gain=6.0, deblend_minrise=np.inf)) <= 2
    assert split >= 4
    # without deblending: one object
    assert len(extract(sci, gain=6.0, deblend_nthresh=1)) == 1


def test_single_stars_are_not_split():
    rng = np.random.default_rng(33)
    for flux in (300.0, 3000.0, 30000.0, 300000.0):
        for fwhm in (1.6, 2.0, 3.0):
            model = 100.0 + render((48, 48), [24 + rng.uniform(-.5, .5)], [23 + rng.uniform(-.5, .5)], [flux], fwhm)
            sci = (rng.poisson(model * 6.0) / 6.0 + rng.normal(0, 1.5, model.shape)).astype(np.float32)
            cat = extract(sci, gain=6.0)
            assert len(cat) == 1 and cat["flags"][0] == 0, (flux, fwhm)


def test_flags_saturated_truncated_masked():
    rng = np.random.default_rng(34)
    shape = (100, 100)
    xs, ys = [30.2, 1.0, 70.4], [30.7, 60.3, 70.1]
    sci = (render(shape, xs, ys, [400000.0, 20000.0, 20000.0], 2.0) + 100 + rng.normal(0, 5, shape)).astype(np.float32)
    mask = np.zeros(shape, np.int16)
    mask[72, 71] = MaskBits.DEAD                 # a bad pixel 2 px from the third star's centre
    sci[72, 71] = 0.0
    cat = extract(sci, mask, gain=6.0, saturate=30000.0)
    idx, found = match(cat, xs, ys)
    assert found.all() and len(cat) == 3
    flags = np.asarray(cat["flags"])[idx]
    assert flags[0] & SourceFlags.SATURATED and not flags[1] & SourceFlags.SATURATED
    assert flags[1] & SourceFlags.TRUNCATED and flags[1] & SourceFlags.INCOMPLETE
    assert flags[2] == SourceFlags.INCOMPLETE
    # the bad pixel is replaced by its mirror: flux and position still right
    assert cat["flux"][idx[2]] == pytest.approx(20000.0, rel=0.02)
    assert abs(cat["x"][idx[2]] - 70.4) < 0.1 and abs(cat["y"][idx[2]] - 70.1) < 0.1
    # in the core the mirror (about the pixel nearest the barycentre, as SExtractor) is a poorer guess
    mask[70, 71] = MaskBits.DEAD
    core = extract(np.where(mask != 0, 0, sci).astype(np.float32), mask, gain=6.0, saturate=30000.0)
    j = match(core, xs, ys)[0][2]
    assert core["flags"][j] & SourceFlags.INCOMPLETE and core["flux"][j] == pytest.approx(20000.0, rel=0.15)
    mask[70, 71] = 0
    # SATURATED in the mask flags too
    mask[30, 30] |= MaskBits.SATURATED
    cat = extract(sci, mask, gain=6.0)
    assert cat["flags"][match(cat, xs, ys)[0][0]] & SourceFlags.SATURATED
    # an unmasked hot column is detected; masked it is not
    hot = sci.copy()
    hot[:, 50] += 200.0
    assert np.any(np.abs(np.asarray(extract(hot)["x"]) - 50) < 1)
    cmask = np.zeros(shape, np.int16)
    cmask[:, 50] = MaskBits.NOISY
    assert not np.any(np.abs(np.asarray(extract(hot, cmask)["x"]) - 50) < 1)


def test_options_change_what_they_should():
    rng = np.random.default_rng(35)
    sci, _, _ = star_field(rng, n=30)
    base = extract(sci)
    assert len(extract(sci, params=AstromParams(detect_threshold=50.0))) < len(base)
    big = extract(sci, aper_radius=6.0)
    assert np.all(np.asarray(big["flux"]) > 0)
    # a background given is used as is
    bkg = background(sci, mesh=32)
    again = extract(sci, background=bkg)
    np.testing.assert_allclose(again["flux"], extract(sci, params=AstromParams(background_mesh=32))["flux"])
    # gain adds shot noise to the errors when there is no varimg
    assert np.all(np.asarray(extract(sci, gain=6.0)["flux_err"]) > np.asarray(base["flux_err"]))
    # the explicit sep kernel equals the Gaussian of FWHM 2 cut at 3 x 3
    k = gaussian_kernel(2.0)[2:5, 2:5]
    np.testing.assert_allclose(k / k.max(), SEP_KERNEL / 4.0, atol=1e-6)
    assert len(extract(sci, kernel=SEP_KERNEL)) > 0


# --------------------------------------------------------------------------------------------------
# A real IPAC quadrant: the 400 x 400 cutout against sep
# --------------------------------------------------------------------------------------------------


def _sep_setup(sci):
    """sep's default run and ours with the same background cells, filter and threshold."""
    sep = pytest.importorskip("sep")
    sb = sep.Background(sci)
    objs = sep.extract(sci - sb, 5.0, err=sb.globalrms, clean=False)
    b = background(sci, mesh=64)
    flat = Background(level=b.level, rms=np.full(sci.shape, b.global_rms, np.float32),
                      global_level=b.global_level, global_rms=b.global_rms)
    cat = extract(sci, background=flat, kernel=SEP_KERNEL,
                  params=AstromParams(detect_threshold=SEP_EQUIVALENT_THRESHOLD))
    return sep, sb, objs, cat


def _compare_with_sep(sci):
    sep, sb, objs, cat = _sep_setup(sci)
    d, i = cKDTree(np.c_[cat["x_iso"], cat["y_iso"]]).query(np.c_[objs["x"], objs["y"]])
    found = d < 1.0
    j = i[found]
    dpos = np.hypot(np.asarray(cat["x_iso"])[j] - objs["x"][found], np.asarray(cat["y_iso"])[j] - objs["y"][found])
    flux_ratio = np.asarray(cat["flux_iso"])[j] / objs["flux"][found]
    # windowed centroids against sep.winpos with sep's flux radius
    r50, _ = sep.flux_radius(sci - sb, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, normflux=objs["flux"], subpix=5)
    xw, yw, _ = sep.winpos(sci - sb, objs["x"], objs["y"], 2.0 / 2.3548 * r50)
    dwin = np.hypot(np.asarray(cat["x"])[j] - xw[found], np.asarray(cat["y"])[j] - yw[found])
    aper, _, _ = sep.sum_circle(sci - sb, np.asarray(cat["x_iso"])[j], np.asarray(cat["y_iso"])[j], 4.0,
                                subpix=5)
    clean = np.asarray(cat["flags"])[j] == 0
    aper_ratio = np.asarray(cat["flux"])[j][clean] / aper[clean]
    return {"ours": len(cat), "sep": len(objs), "sep_clean": len(sep.extract(sci - sb, 5.0, err=sb.globalrms)),
            "matched": found.mean(), "dpos": np.median(dpos), "dwin": np.median(dwin),
            "flux": np.median(np.abs(flux_ratio - 1)), "aper": np.median(np.abs(aper_ratio - 1))}


def _report(r):
    print(f"\nours {r['ours']}, sep {r['sep']} (clean=False; {r['sep_clean']} with clean=True); "
          f"{r['matched']:.2%} of sep's matched; median |d iso| {r['dpos']:.4f} px, |d win| {r['dwin']:.4f} px, "
          f"|flux_iso / sep - 1| {r['flux']:.2e}, |flux / sum_circle - 1| {r['aper']:.2e}")


def test_real_cutout_against_sep(cutout):
    sci, _, _ = cutout
    r = _compare_with_sep(sci)
    _report(r)
    assert abs(r["ours"] / r["sep"] - 1) < 0.05
    assert r["matched"] > 0.98
    assert r["dpos"] < 0.05 and r["dwin"] < 0.05
    assert r["flux"] < 0.01 and r["aper"] < 0.01


def test_real_cutout_with_its_mask(cutout):
    sci, msk, hdr = cutout
    cat = extract(sci, msk, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
    flags = np.asarray(cat["flags"])
    sat = flags & SourceFlags.SATURATED != 0
    print(f"\n{len(cat)} sources, {sat.sum()} saturated, {np.sum(flags == 0)} clean; "
          f"median FWHM of S/N > 50: {np.nanmedian(cat['fwhm'][cat['snr'] > 50]):.2f} px (header SEEING "
          f"{hdr['SEEING']} px)")
    assert 150 < len(cat) < 300 and sat.sum() >= 3
    # the saturated stars are the brightest
    assert np.all(sat[:3])
    # no source centred on an excluded pixel
    excluded = (msk & DETECT_EXCLUDE) != 0
    iy = np.clip(np.round(cat["y_peak"]).astype(int), 0, 399)
    ix = np.clip(np.round(cat["x_peak"]).astype(int), 0, 399)
    assert not excluded[iy, ix].any()
    clean = cat[(flags == 0) & (np.asarray(cat["snr"]) > 50)]
    assert np.nanmedian(clean["fwhm"]) == pytest.approx(hdr["SEEING"], rel=0.35)


@pytest.mark.slow
def test_full_real_quadrant_against_sep():
    """The full IPAC quadrant (not in the repository: skipped unless /work/shared/data has it)."""
    path = REAL_DIR / REAL_SCI
    if not path.exists():
        pytest.skip(f"{path} is absent (set ZTFSDS_REAL_QUADRANT_DIR to its folder)")
    sci = fits.getdata(path).astype(np.float32)
    r = _compare_with_sep(sci)
    _report(r)
    assert abs(r["ours"] / r["sep"] - 1) < 0.05
    assert r["matched"] > 0.98
    assert r["dpos"] < 0.05 and r["dwin"] < 0.05
    assert r["flux"] < 0.01 and r["aper"] < 0.01


# --------------------------------------------------------------------------------------------------
# A simulated night against its truth
# --------------------------------------------------------------------------------------------------

NIGHT = "20200924"


@pytest.fixture(scope="module")
def sim_quadrants(tmp_path_factory):
    """One exposure of field 655, CCD 13, 512 x 512 quadrants, calibrated by the pipeline."""
    from ztfsds.calib import build_library, run_calib
    from ztfsds.products import ProductKey, ProductStore, read_image
    from ztfsds.sim import simulate_night, truth_path

    root = tmp_path_factory.mktemp("extractnight")
    night = simulate_night(root, fields=[655], ccds=[13], nexp=1, filters=["zr"], size=512, seed=1, nbias=3,
                           nflat=3)
    store = ProductStore(root)
    build_library(store, NIGHT)
    raw = night.science[0]
    assert all(s.ok for s in run_calib(raw, store))
    rkey = ProductKey.parse(raw.name)
    quadrants = []
    with fits.open(truth_path(store, rkey)) as hdul:
        for qid in (1, 2, 3, 4):
            key = rkey.quadrant(qid, "sciimg")
            sci, hdr = read_image(store.path(key))
            msk, _ = read_image(store.path(key.with_suffix("mskimg")))
            var, _ = read_image(store.path(key.with_suffix("varimg")))
            quadrants.append((sci, msk, var, hdr, Table(hdul[f"Q{qid}"].data), hdul[f"MASK{qid}"].data))
    return quadrants


def test_simulated_night_against_truth(sim_quadrants):
    from scipy.ndimage import maximum_filter

    found, dxs, dys, exs, eys, false, ndet, fwhm_ratio = [], [], [], [], [], 0, 0, []
    for sci, msk, var, hdr, truth, tmask in sim_quadrants:
        cat = extract(sci, msk, var, gain=hdr["GAIN"], saturate=hdr["SATURATE"])
        ny, nx = sci.shape
        tx, ty = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
        fdn = np.asarray(truth["flux_e"], float) / hdr["GAIN"]
        snr = fdn / np.sqrt(fdn / hdr["GAIN"] + np.pi * 16 * np.median(var))
        # isolated stars: no other source above 5 % of the flux within 10 px, none 20 times brighter within
        # 30 px, no masked pixel within 4 px, 6 px from the edges
        tree = cKDTree(np.c_[tx, ty])
        iso = np.ones(len(truth), bool)
        for i, near in enumerate(tree.query_ball_point(np.c_[tx, ty], 30.0)):
            for j in near:
                if j != i:
                    d = np.hypot(tx[j] - tx[i], ty[j] - ty[i])
                    iso[i] &= not ((d < 10 and fdn[j] > 0.05 * fdn[i]) or fdn[j] > 20 * fdn[i])
        bad = maximum_filter((msk != 0) | (tmask != 0), 9)
        iy, ix = np.clip(np.round(ty).astype(int), 0, ny - 1), np.clip(np.round(tx).astype(int), 0, nx - 1)
        sel = ((np.asarray(truth["kind"]) == "star") & ~np.asarray(truth["streak"]) & iso & (snr > 20)
               & (tx > 6) & (tx < nx - 7) & (ty > 6) & (ty < ny - 7) & ~bad[iy, ix])
        idx, hit = match(cat, tx, ty, radius=1.5)
        found.append(hit[sel])
        good = sel & hit & (np.asarray(cat["flags"])[idx] == 0)
        dxs.append(np.asarray(cat["x"])[idx[good]] - tx[good])
        dys.append(np.asarray(cat["y"])[idx[good]] - ty[good])
        exs.append(np.asarray(cat["x_err"])[idx[good]])
        eys.append(np.asarray(cat["y_err"])[idx[good]])
        fwhm_ratio.append(np.asarray(cat["fwhm"])[idx[good]] / np.asarray(truth["fwhm"])[good])
        # false detections: no truth source of any kind (streaks, off the image) within 2 px, away from masks
        d, _ = tree.query(np.c_[cat["x"], cat["y"]])
        cy = np.clip(np.round(np.asarray(cat["y"])).astype(int), 0, ny - 1)
        cx = np.clip(np.round(np.asarray(cat["x"])).astype(int), 0, nx - 1)
        false += int(np.sum((d > 2) & ~maximum_filter((msk != 0) | (tmask != 0), 3)[cy, cx]))
        ndet += len(cat)
    found = np.concatenate(found)
    dx, dy, ex, ey = map(np.concatenate, (dxs, dys, exs, eys))
    rms = np.sqrt(np.mean(np.concatenate([dx, dy]) ** 2))
    pull = np.std(np.concatenate([dx / ex, dy / ey]))
    fwhm = np.median(np.concatenate(fwhm_ratio))
    print(f"\ncompleteness {found.mean():.4f} of {found.size} isolated S/N > 20 stars; centroid rms {rms:.4f} px "
          f"(predicted {np.sqrt(np.mean(np.concatenate([ex, ey]) ** 2)):.4f}), pull std {pull:.2f}, "
          f"false {false} of {ndet} ({false / ndet:.2%}); FWHM / true {fwhm:.3f}")
    assert found.mean() >= 0.97
    assert rms < 0.05
    assert 0.7 < pull < 1.5
    assert false / ndet < 0.01
    assert 0.9 < fwhm < 1.25
