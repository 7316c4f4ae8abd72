"""Tests of ztfsds.refimg.resample: the spline pixel mapping, Lanczos3 resampling, flux, variance, masks."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ztfsds import camera
from ztfsds._ext import reference_resample as ref
from ztfsds.errors import ConfigError, InputError, ShapeError
from ztfsds.products import MaskBits
from ztfsds.refimg.resample import (
    MAPPING_TOLERANCE,
    PixelMap,
    Resampled,
    _cubic_basis,
    _lanczos3_table,
    remap,
    resample,
)

SCALE = 1.0 / 3600.0        # 1 arcsec pixels [deg]
NAN_BIT = int(MaskBits.NAN)


def tan_wcs(crpix=(128.0, 128.0), crval=(150.0, 2.0), rot_deg=0.0, scale=SCALE):
    """A TAN WCS with square pixels of ``scale`` [deg], rotated by ``rot_deg``, CRPIX 1-based."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = crpix
    t = np.radians(rot_deg)
    w.wcs.cd = scale * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    return w


def gaussians(shape, xs, ys, fwhm, amp=1.0):
    """Point-sampled circular Gaussians (float64) of peak ``amp`` at (xs, ys)."""
    s = fwhm / 2.3548
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    img = np.zeros(shape)
    for x, y in zip(xs, ys):
        img += amp * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / s**2)
    return img


def real_header():
    from pathlib import Path
    return fits.Header.fromtextfile(Path(__file__).parents[1] / "data" / "real_sciimg_header.txt")


def moved_header(h, dra_arcsec=20.0, ddec_arcsec=-7.0, rot_deg=0.05):
    """The header shifted on the sky and its CD matrix rotated: a second epoch of the same field."""
    h2 = h.copy()
    h2["CRVAL1"] += dra_arcsec / 3600.0 / np.cos(np.radians(h["CRVAL2"]))
    h2["CRVAL2"] += ddec_arcsec / 3600.0
    t = np.radians(rot_deg)
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ cd
    for i in range(2):
        for j in range(2):
            h2[f"CD{i + 1}_{j + 1}"] = cd[i, j]
    return h2


def exact_map(w_in, w_out, x, y):
    return w_in.world_to_pixel(w_out.pixel_to_world(x, y))


# --------------------------------------------------------------------------------------------------
# Pixel mapping
# --------------------------------------------------------------------------------------------------


def test_cubic_basis_matches_scipy():
    """Our B-spline basis (used by the kernel) reproduces scipy's spline and both derivatives."""
    f = lambda x, y: (1.01 * x + 3e-4 * y**2 + 2.0, 0.99 * y + 2e-4 * x * y - 1.0)  # noqa: E731
    pm = PixelMap.from_function(f, (70, 90), grid_step=8)
    cx, cy, (iy, by, dby), (ix, bx, dbx) = pm._kernel_inputs()
    y, x = np.mgrid[:70, :90]
    idx_y = iy[:, None, None] + np.arange(4)[None, :, None]     # (70, 4, 1)
    idx_x = ix[:, None] + np.arange(4)                            # (90, 4)
    for c, spline in ((cx, pm.spline_x), (cy, pm.spline_y)):
        rows = np.einsum("ra,rak->rk", by, c[idx_y[:, :, 0]])
        rows_dy = np.einsum("ra,rak->rk", dby, c[idx_y[:, :, 0]])
        val = np.einsum("xb,rxb->rx", bx, rows[:, idx_x])
        dval_dx = np.einsum("xb,rxb->rx", dbx, rows[:, idx_x])
        dval_dy = np.einsum("xb,rxb->rx", bx, rows_dy[:, idx_x])
        np.testing.assert_allclose(val, spline.ev(y, x), atol=1e-10)
        np.testing.assert_allclose(dval_dx, spline.ev(y, x, dy=1), atol=1e-12)
        np.testing.assert_allclose(dval_dy, spline.ev(y, x, dx=1), atol=1e-12)
    assert _cubic_basis(np.r_[[0.0] * 4, [1.0] * 4], np.array([0.0, 0.5, 1.0]))[1].sum(axis=1) == pytest.approx(1)


def test_mapping_accuracy_tpv_subset():
    """Full-size real TPV quadrant, 16 px grid: the spline is within 0.005 px of astropy (every 5th row)."""
    h = real_header()
    w_in, w_out = WCS(h), WCS(moved_header(h))
    shape = camera.QUADRANT_SHAPE
    pm = PixelMap.from_wcs(w_in, w_out, shape, grid_step=16)
    assert pm.error < 1e-4
    ys = np.r_[np.arange(0, shape[0], 5), shape[0] - 1]
    y, x = np.meshgrid(ys, np.arange(shape[1]), indexing="ij")
    x, y = x.ravel().astype(float), y.ravel().astype(float)
    ex, ey = exact_map(w_in, w_out, x, y)
    sx, sy = pm.evaluate(x, y)
    err = np.hypot(sx - ex, sy - ey)
    assert err.max() < MAPPING_TOLERANCE / 10
    assert 20.0 < np.median(np.hypot(ex - x, ey - y)) < 40.0     # the epochs really differ by ~20"
    # the Jacobian (pixel-area ratio) against central differences of the exact mapping
    pts = np.random.default_rng(3).uniform([1, 1], [shape[1] - 2, shape[0] - 2], (500, 2))
    d = 0.5
    xp, yp = exact_map(w_in, w_out, pts[:, 0] + d, pts[:, 1])
    xm, ym = exact_map(w_in, w_out, pts[:, 0] - d, pts[:, 1])
    xq, yq = exact_map(w_in, w_out, pts[:, 0], pts[:, 1] + d)
    xr, yr = exact_map(w_in, w_out, pts[:, 0], pts[:, 1] - d)
    jac = np.abs((xp - xm) * (yq - yr) - (xq - xr) * (yp - ym)) / (2 * d) ** 2
    np.testing.assert_allclose(pm.jacobian(pts[:, 0], pts[:, 1]), jac, rtol=1e-6)


@pytest.mark.slow
def test_mapping_accuracy_tpv_every_pixel():
    """Every pixel of a full-size TPV quadrant: the interpolated mapping is within 0.005 px of astropy."""
    h = real_header()
    w_in, w_out = WCS(h), WCS(moved_header(h, rot_deg=0.2))
    shape = camera.QUADRANT_SHAPE
    pm = PixelMap.from_wcs(w_in, w_out, shape, grid_step=16)
    worst = 0.0
    for y0 in range(0, shape[0], 440):
        y, x = np.mgrid[y0:min(y0 + 440, shape[0]), 0:shape[1]].astype(float)
        ex, ey = exact_map(w_in, w_out, x.ravel(), y.ravel())
        sx, sy = pm.evaluate(x.ravel(), y.ravel())
        worst = max(worst, float(np.hypot(sx - ex, sy - ey).max()))
    assert worst < MAPPING_TOLERANCE
    assert worst < 1e-4                                  # in practice: ~1e-7 px
    assert pm.error <= worst + 1e-9                      # the check points see the same error


def test_mapping_error_reported_for_coarse_grid():
    """A mapping the grid cannot follow (a sharp wiggle) is measured as such."""
    f = lambda x, y: (x + 0.5 * np.sin(x / 3.0), y)   # noqa: E731
    pm = PixelMap.from_function(f, (64, 256), grid_step=16)
    assert pm.error > 0.1
    fine = PixelMap.from_function(f, (64, 256), grid_step=1)
    assert fine.error < 1e-3


def test_undefined_nodes_are_off_image():
    """A WCS pair without any overlap (mapping undefined everywhere) gives an empty footprint, not an error."""
    w_in = tan_wcs()
    w_out = tan_wcs(crval=(330.0, -2.0))      # the other side of the sky
    out = resample(np.ones((32, 32), np.float32), w_in, w_out, (32, 32), mask=np.zeros((32, 32), np.int16))
    assert not out.footprint.any() and np.isnan(out.image).all()
    assert (out.mask == NAN_BIT).all()


# --------------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------------


def test_identity_reproduces_image():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, (256, 256)).astype(np.float32)
    var = rng.uniform(50, 150, (256, 256)).astype(np.float32)
    msk = np.zeros((256, 256), np.int16)
    msk[rng.random((256, 256)) < 0.02] = int(MaskBits.SOURCE)
    w = tan_wcs()
    out = resample(img, w, w, img.shape, variance=var, mask=msk)
    assert isinstance(out, Resampled)
    assert out.image.dtype == np.float32 and out.variance.dtype == np.float32 and out.mask.dtype == np.int16
    assert out.footprint.all()
    assert out.mapping_error < 1e-6
    np.testing.assert_allclose(out.image, img, rtol=2e-7, atol=0)
    np.testing.assert_allclose(out.variance, var, rtol=2e-7, atol=0)
    np.testing.assert_array_equal(out.mask, msk)


@pytest.mark.parametrize("fwhm, tol", [(2.5, 2.0e-2), (3.5, 1.0e-2), (5.0, 7e-3)])
def test_subpixel_shift_of_band_limited_image(fwhm, tol):
    """Smooth Gaussians shifted by a fraction of a pixel: exactly Lanczos3, and close to the true shift.

    Lanczos3 itself limits the accuracy: normalised, it reproduces a constant exactly but a linear ramp
    only to ~0.02 px, so the error is 1.6 % of the peak at FWHM 2.5 px, 0.8 % at 3.5 px, 0.5 % at 5 px
    (1-D: 1.1 %, 0.5 %, 0.4 %); 1e-3 of the peak is out of its reach (even the ideal sinc interpolator
    is at ~1e-3 at FWHM 2.5 px, the Gaussian not being band-limited to that level).
    """
    rng = np.random.default_rng(1)
    shape = (256, 256)
    xs, ys = rng.uniform(20, 236, (2, 40))
    img = gaussians(shape, xs, ys, fwhm, amp=1000.0).astype(np.float32)
    dx, dy = 0.37, -0.61
    w_in = tan_wcs()
    w_out = tan_wcs(crpix=(128.0 - dx, 128.0 - dy))       # output pixel p is input pixel p + (dx, dy)
    out = resample(img, w_in, w_out, shape)
    truth = gaussians(shape, xs - dx, ys - dy, fwhm, amp=1000.0)
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(out.image[inner] - truth[inner]).max() / 1000.0
    assert tol / 2.5 < err < tol                         # the kernel's own (known) error, no worse
    # against the exact Lanczos3 (numpy reference) the implementation is exact to float32 rounding
    pm = PixelMap.from_function(lambda x, y: (x + dx, y + dy), (96, 96))
    r_img = ref.remap(img, pm.spline_x, pm.spline_y, (96, 96))[0]
    np.testing.assert_allclose(out.image[:96, :96], r_img, atol=1e-5 * 1000.0)


def test_flux_conserved_under_shift_rotation_and_scale():
    """Star fluxes under a shift + 7 deg rotation + 1 % scale change: < 0.1 % on average, < 0.5 % each.

    A pure sub-pixel shift keeps every star's flux to 1e-7. Under a scale change Lanczos3's ramp error
    (see the shift test) no longer averages out over a star: single stars scatter by 0.13 % rms
    (0.3 % at most), unbiased; the Jacobian factor is what keeps the mean right (without it: -2 %).
    """
    shape = (256, 256)
    rng = np.random.default_rng(6)
    g = np.arange(40, 220, 36.0)
    xs, ys = (a.ravel() + rng.uniform(0, 1, a.size) for a in np.meshgrid(g, g))
    img = gaussians(shape, xs, ys, 3.0, amp=500.0).astype(np.float32)
    w_in = tan_wcs()
    w_out = tan_wcs(crpix=(126.3, 131.8), rot_deg=7.0, scale=1.01 * SCALE)
    out = resample(img, w_in, w_out, shape, grid_step=16)
    assert np.isfinite(out.image[out.footprint]).all() and out.footprint.mean() > 0.85
    px, py = w_out.world_to_pixel(w_in.pixel_to_world(xs, ys))
    yy, xx = np.mgrid[:shape[0], :shape[1]]

    def fluxes(image, x, y, r):
        return np.array([np.nansum(np.where((xx - a) ** 2 + (yy - b) ** 2 < r**2, image, 0.0)) for a, b in zip(x, y)])

    f_in = fluxes(img.astype(float), xs, ys, 15.0 * 1.01)
    ratio = fluxes(out.image.astype(float), px, py, 15.0) / f_in - 1
    assert abs(ratio.mean()) < 1e-3
    assert np.abs(ratio).max() < 5e-3 and ratio.std() < 2.5e-3
    plain = resample(img, w_in, w_out, shape, conserve_flux=False)
    ratio_plain = fluxes(plain.image.astype(float), px, py, 15.0) / f_in
    assert ratio_plain.mean() == pytest.approx(1.01**-2, rel=1e-3)
    # a pure sub-pixel shift: exact
    shifted = resample(img, w_in, tan_wcs(crpix=(127.63, 128.29)), shape)
    np.testing.assert_allclose(fluxes(shifted.image.astype(float), xs + 0.37, ys - 0.29, 15.0),
                               fluxes(img.astype(float), xs, ys, 15.0), rtol=1e-6)


def test_variance_matches_scatter_of_resampled_noise():
    """Propagated variance per pixel agrees with the scatter of many resampled pure-noise images."""
    rng = np.random.default_rng(2)
    shape = (48, 48)
    var = np.outer(np.linspace(1, 4, shape[0]), np.linspace(1, 2, shape[1])).astype(np.float32)
    th = np.radians(20.0)
    f = lambda x, y: (np.cos(th) * x - np.sin(th) * y + 12.3, np.sin(th) * x + np.cos(th) * y - 6.6)  # noqa: E731
    pm = PixelMap.from_function(f, shape, grid_step=8)
    n = 600
    stack = np.empty((n,) + shape, np.float32)
    for k in range(n):
        noise = (rng.normal(size=shape) * np.sqrt(var)).astype(np.float32)
        stack[k] = remap(noise, pm, variance=var).image
    out = remap(np.zeros(shape, np.float32), pm, variance=var)
    good = out.footprint & np.isfinite(out.variance)
    good[:3] = good[-3:] = False                          # keep away from the renormalised edge
    good[:, :3] = good[:, -3:] = False
    ratio = stack.var(axis=0, ddof=1)[good] / out.variance[good]
    assert good.sum() > 500
    assert abs(ratio.mean() - 1) < 0.02
    # each pixel: sample variance of n Gaussians scatters by sqrt(2 / (n - 1))
    assert ratio.std() == pytest.approx(np.sqrt(2 / (n - 1)), rel=0.25)
    # the resampling smooths: the per-pixel variance really is below the input's (w^2 sum < 1)
    f_in = np.array(f(np.where(good)[1], np.where(good)[0]))
    var_in = var[np.round(f_in[1]).astype(int), np.round(f_in[0]).astype(int)]
    assert np.median(out.variance[good] / var_in) < 0.9


def test_bad_pixel_masks_grow_and_are_left_out():
    """A bad pixel is left out (weights renormalised) and its bits reach the output pixels near it."""
    shape = (64, 64)
    img = np.full(shape, 10.0, np.float32)
    img[30, 30] = 1e6                      # a hot (saturated) pixel, flagged
    msk = np.zeros(shape, np.int16)
    msk[30, 30] = int(MaskBits.SATURATED)
    msk[40, 20] = int(MaskBits.SOURCE)     # informational: propagated, not left out
    img[40, 20] = 30.0
    w_in = tan_wcs()
    w_out = tan_wcs(crpix=(127.5, 127.5))  # output pixel p = input pixel p + (0.5, 0.5)
    out = resample(img, w_in, w_out, shape, mask=msk)
    sat = (out.mask & int(MaskBits.SATURATED)) != 0
    yy, xx = np.nonzero(sat)
    assert 4 <= sat.sum() <= 16            # grows by about one pixel (12 at a half-pixel offset)
    assert np.all(np.abs(xx + 0.5 - 30) <= 2) and np.all(np.abs(yy + 0.5 - 30) <= 2)
    # the hot value never leaks: the constant is reproduced exactly around it
    near = (slice(26, 33), slice(26, 33))
    np.testing.assert_allclose(out.image[near], 10.0, rtol=1e-6)
    src = (out.mask & int(MaskBits.SOURCE)) != 0
    assert 4 <= src.sum() <= 16
    assert out.image[39, 19] > 10.0        # the SOURCE pixel's value is used
    assert not (out.mask & NAN_BIT)[10:50, 10:50].any()


def test_nan_inputs_and_bad_blocks():
    """Non-finite inputs are left out and flagged NAN; where bad pixels dominate the output is NaN."""
    shape = (64, 64)
    img = np.full(shape, 5.0, np.float32)
    var = np.full(shape, 2.0, np.float32)
    img[20, 20] = np.nan
    var[20, 40] = np.inf
    msk = np.zeros(shape, np.int16)
    msk[40:44, 40:44] = int(MaskBits.DEAD)
    w = tan_wcs()
    w_out = tan_wcs(crpix=(127.6, 128.0))          # output pixel x is input pixel x + 0.4
    out = resample(img, w, w_out, shape, variance=var, mask=msk)
    # a single non-finite pixel: NaN only where it carries more than half of the weight (the output
    # pixel 0.4 px from it: weight 0.76), elsewhere left out (weights renormalised) and flagged NAN
    for (y, x) in ((20, 20), (20, 40)):
        row = out.image[y, x - 5:x + 5]
        assert np.isnan(row[5]) and np.isnan(out.variance[y, x])
        assert np.isfinite(np.delete(row, 5)).all() and np.allclose(np.delete(row, 5), 5.0, rtol=1e-6)
        flagged = (out.mask[y, x - 5:x + 5] & NAN_BIT) != 0
        assert flagged[5] and 2 <= flagged.sum() <= 4 and not (out.mask[[y - 1, y + 1]] & NAN_BIT)[:, :30].any()
    # renormalised weights: the variance next to a missing pixel is that of the remaining weights
    lw = ref.lanczos3_weights(0.4)                  # output 21 -> input 21.4: taps 19 .. 24
    np.testing.assert_allclose(out.variance[20, 10], 2.0 * (lw**2).sum(), rtol=1e-5)
    keep = np.arange(6) != 1                         # input 20 (the NaN) left out
    np.testing.assert_allclose(out.variance[20, 21], 2.0 * (lw[keep] ** 2).sum() / lw[keep].sum() ** 2,
                               rtol=1e-5)
    # the dead block: its inner outputs have (almost) only bad inputs -> NaN, NAN | DEAD
    inner = out.image[41:43, 40:43]
    assert np.isnan(inner).all() and np.isnan(out.variance[41:43, 40:43]).all()
    assert np.all(out.mask[41:43, 40:43] & NAN_BIT) and np.all(out.mask[41:43, 40:43] & int(MaskBits.DEAD))
    assert out.footprint[41:43, 40:43].all()       # inside the input, though without data
    # same without a mask: the NaN is still left out and the output has no mask
    out2 = resample(img, w, w_out, shape)
    assert out2.mask is None and out2.variance is None
    assert np.isnan(out2.image[20, 20]) and np.isfinite(out2.image[20, 21:25]).all()


def test_off_image_pixels_are_nan_and_flagged():
    shape = (64, 64)
    img = np.ones(shape, np.float32)
    w_in = tan_wcs(crpix=(32.0, 32.0))
    w_out = tan_wcs(crpix=(52.0, 32.0))            # output x = input x - 20
    out = resample(img, w_in, w_out, shape, variance=img, mask=np.zeros(shape, np.int16))
    x_in = np.arange(64) - 20.0
    inside = (x_in >= -0.5) & (x_in <= 63.5)
    np.testing.assert_array_equal(out.footprint, np.broadcast_to(inside, shape))
    assert np.isnan(out.image[:, ~inside]).all() and np.isnan(out.variance[:, ~inside]).all()
    assert (out.mask[:, ~inside] == NAN_BIT).all()
    np.testing.assert_allclose(out.image[:, inside], 1.0, rtol=1e-6)   # the edge is renormalised


def test_workers_give_identical_results():
    rng = np.random.default_rng(4)
    img = rng.normal(size=(200, 180)).astype(np.float32)
    msk = (rng.random((200, 180)) < 0.01).astype(np.int16) * int(MaskBits.SPIKE)
    w_in, w_out = tan_wcs(), tan_wcs(crpix=(125.2, 131.7), rot_deg=3.0)
    a = resample(img, w_in, w_out, (190, 210), variance=np.abs(img), mask=msk, workers=1)
    b = resample(img, w_in, w_out, (190, 210), variance=np.abs(img), mask=msk, workers=3)
    for u, v in ((a.image, b.image), (a.variance, b.variance), (a.mask, b.mask), (a.footprint, b.footprint)):
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------------------------------
# Kernel against the numpy reference
# --------------------------------------------------------------------------------------------------


def test_weight_table_matches_exact_lanczos3():
    w, dw = _lanczos3_table()
    t = np.random.default_rng(5).uniform(0, 1, 2000)
    s = t * (len(w) - 1)
    q = np.minimum(s.astype(int), len(w) - 2)
    interp = w[q] + (s - q)[:, None] * dw[q]
    np.testing.assert_allclose(interp, ref.lanczos3_weights(t), atol=2e-6)
    np.testing.assert_allclose(w[0], [0, 0, 1, 0, 0, 0], atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference(seed):
    """Random image, variance, mask bits, NaNs and a rotating, shearing, non-linear mapping."""
    rng = np.random.default_rng(seed)
    ny, nx = 50, 61
    img = rng.normal(size=(ny, nx)).astype(np.float32)
    var = rng.uniform(0.5, 2, size=(ny, nx)).astype(np.float32)
    msk = np.zeros((ny, nx), np.int16)
    sel = rng.random((ny, nx)) < 0.06
    msk[sel] = rng.choice([1, 2, 256, 2048, 1024, 512 | 2], sel.sum())
    img[rng.random((ny, nx)) < 0.01] = np.nan
    var[rng.random((ny, nx)) < 0.01] = np.inf
    th = rng.uniform(0, 2 * np.pi)
    a, b = rng.uniform(-5, 5, 2)

    shape_out = (55, 66)

    def f(x, y):         # rotation about the centres, a shift of a few pixels, curvature
        u, v = x - shape_out[1] / 2, y - shape_out[0] / 2
        return (np.cos(th) * u - np.sin(th) * v + a + 1e-3 * u * v + nx / 2,
                np.sin(th) * u + np.cos(th) * v + b + 2e-3 * u**2 + ny / 2)

    pm = PixelMap.from_function(f, shape_out, grid_step=8)
    for conserve in (True, False):
        out = remap(img, pm, variance=var, mask=msk, conserve_flux=conserve)
        r_img, r_var, r_msk, r_fp = ref.remap(img, pm.spline_x, pm.spline_y, shape_out, variance=var, mask=msk,
                                              conserve_flux=conserve, bad_bits=int(MaskBits.BAD),
                                              nodata_bit=NAN_BIT)
        assert 0.3 < r_fp.mean() < 0.95                    # a real mix of on and off pixels
        np.testing.assert_array_equal(out.footprint, r_fp)
        np.testing.assert_array_equal(np.isnan(out.image), np.isnan(r_img))
        np.testing.assert_allclose(out.image, r_img, atol=2e-5, equal_nan=True)
        np.testing.assert_allclose(out.variance, r_var, rtol=2e-5, equal_nan=True)
        np.testing.assert_array_equal(out.mask, r_msk)
    img_only = remap(img, pm)
    r_img = ref.remap(img, pm.spline_x, pm.spline_y, shape_out, bad_bits=int(MaskBits.BAD), nodata_bit=NAN_BIT)[0]
    np.testing.assert_allclose(img_only.image, r_img, atol=2e-5, equal_nan=True)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_input_errors_name_the_product():
    w = tan_wcs()
    img = np.zeros((16, 16), np.float32)
    with pytest.raises(InputError, match="sci_q3.*2-D"):
        resample(np.zeros((2, 16, 16)), w, w, (16, 16), product="sci_q3")
    with pytest.raises(ShapeError, match="sci_q3.*variance"):
        resample(img, w, w, (16, 16), variance=np.zeros((16, 15)), product="sci_q3")
    with pytest.raises(ShapeError, match="sci_q3.*mask"):
        resample(img, w, w, (16, 16), mask=np.zeros((15, 16), np.int16), product="sci_q3")
    with pytest.raises(InputError, match="integer"):
        resample(img, w, w, (16, 16), mask=np.zeros((16, 16)), product="sci_q3")
    with pytest.raises(InputError, match="sci_q3.*wcs_in has no celestial"):
        resample(img, WCS(naxis=2), w, (16, 16), product="sci_q3")
    with pytest.raises(InputError, match="wcs_out has no celestial"):
        resample(img, w, None, (16, 16), product="sci_q3")
    with pytest.raises(InputError, match="shape_out"):
        resample(img, w, w, (16, 0), product="sci_q3")
    with pytest.raises(ConfigError, match="kernel"):
        resample(img, w, w, (16, 16), kernel="bilinear")
    with pytest.raises(ConfigError, match="grid_step"):
        resample(img, w, w, (16, 16), grid_step=0)
    with pytest.raises(ConfigError, match="workers"):
        resample(img, w, w, (16, 16), workers=0)
