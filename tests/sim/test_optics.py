"""Tests of the simulated optics (ztfsds.sim.optics) and observing conditions (ztfsds.sim.conditions).

Measurements here are independent of the code under test: fluxes with photutils apertures, FWHMs
with our own pixel-integrated Moffat fits and astropy.modeling, shapes from second moments, geometry
with astropy WCS/SkyCoord, airmass with astropy AltAz.
"""

import dataclasses
import datetime
import math
import time
from collections import Counter

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.modeling import fitting, models
from astropy.time import Time
from photutils.aperture import CircularAperture, aperture_photometry
from scipy import integrate, optimize

from ztfsds import camera
from ztfsds.errors import ConfigError
from ztfsds.products import expid, filefracday, nid
from ztfsds.sim.conditions import (
    EXTINCTION,
    MAX_AIRMASS,
    NOMINAL_MAGZP,
    Exposure,
    make_schedule,
    schedule_table,
    sky_brightness,
)
from ztfsds.sim.optics import (
    focal_plane_distortion,
    mag_to_electrons,
    pixel_to_sky,
    psf_params,
    psf_stamp,
    render_sources,
    render_streak,
    sky_electrons_per_pixel,
    sky_image,
    sky_to_pixel,
    stamp_size,
    subarray_origin,
    true_pixel_to_sky,
    true_pointing,
    true_wcs,
)

FIELD = 655
CENTER = camera.field_center(FIELD)
NIGHT = datetime.date(2020, 9, 24)  # the real sample quadrant of field 655


# --------------------------------------------------------------------------------------------------
# independent measurement helpers
# --------------------------------------------------------------------------------------------------


def _moffat_pixel_model(shape, flux, x0, y0, alpha, beta, sub=8):
    """Circular Moffat integrated over pixels by sub x sub midpoint sampling (the tests' own model)."""
    ny, nx = shape
    o = (np.arange(sub) + 0.5) / sub - 0.5
    ys = (np.arange(ny)[:, None] + o[None, :]).ravel()
    xs = (np.arange(nx)[:, None] + o[None, :]).ravel()
    r2 = (xs[None, :] - x0) ** 2 + (ys[:, None] - y0) ** 2
    img = (beta - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
    return flux * img.reshape(ny, sub, nx, sub).mean(axis=(1, 3))


def _fit_moffat_fwhm(img, x0, y0):
    """FWHM of a circular Moffat with free beta fitted to a pixel-integrated stamp."""

    def resid(p):
        return (_moffat_pixel_model(img.shape, *p) - img).ravel()

    p0 = [img.sum(), x0 + 0.1, y0 - 0.1, 2.0, 2.5]
    p = optimize.least_squares(resid, p0, x_scale="jac").x
    alpha, beta = p[3], p[4]
    return 2 * alpha * math.sqrt(2 ** (1 / beta) - 1), p


def _moments(img, x0, y0, radius):
    """Centroid-free second moments about (x0, y0) inside a radius, minus the pixel's 1/12."""
    ny, nx = img.shape
    y, x = np.mgrid[:ny, :nx]
    dx, dy = x - x0, y - y0
    w = img * (dx * dx + dy * dy <= radius * radius)
    f = w.sum()
    mxx = (w * dx * dx).sum() / f - 1 / 12
    myy = (w * dy * dy).sum() / f - 1 / 12
    mxy = (w * dx * dy).sum() / f
    return mxx, myy, mxy


def _shape_from_moments(mxx, myy, mxy):
    tr, det = mxx + myy, mxx * myy - mxy**2
    lam1 = 0.5 * tr + math.sqrt(max(0.25 * tr * tr - det, 0))
    lam2 = 0.5 * tr - math.sqrt(max(0.25 * tr * tr - det, 0))
    e = 1 - math.sqrt(lam2 / lam1)
    pa = math.degrees(0.5 * math.atan2(2 * mxy, mxx - myy)) % 180
    return e, pa


def _sep_mas(ra1, dec1, ra2, dec2):
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).to_value("mas")


def _corner_quadrant():
    t = camera.focal_plane_layout()
    r = np.hypot(np.asarray(t["ew"]), np.asarray(t["ns"])).max(axis=1)
    i = int(np.argmax(r))
    return int(t["ccdid"][i]), int(t["qid"][i])


def _central_quadrant():
    t = camera.focal_plane_layout()
    r = np.hypot(np.asarray(t["ew_center"]), np.asarray(t["ns_center"]))
    i = int(np.argmin(r))
    return int(t["ccdid"][i]), int(t["qid"][i])


# --------------------------------------------------------------------------------------------------
# flux scale and sky
# --------------------------------------------------------------------------------------------------


def test_flux_scale():
    assert mag_to_electrons(26.3, 26.3) == pytest.approx(6.0)
    assert mag_to_electrons(21.3, 26.3, gain=5.0) == pytest.approx(500.0)
    assert mag_to_electrons(np.array([20.0, 22.5]), 26.3).shape == (2,)
    # 21.15 mag/arcsec^2 at zp 26.3: 114.8 DN/arcsec^2 * 1.012**2 arcsec^2 * 6 e-/DN
    assert sky_electrons_per_pixel(21.15, 26.3) == pytest.approx(10 ** (0.4 * 5.15) * 1.012**2 * 6, rel=1e-9)
    assert sky_electrons_per_pixel(21.15, 26.3, gain=1.0, pixscale=1.0) == pytest.approx(10 ** (0.4 * 5.15))


def test_sky_image_plane_and_curvature():
    sky = sky_image((120, 200), 800.0, (0.03, -0.02), curvature=0.01)
    assert sky.dtype == np.float32 and sky.shape == (120, 200)
    assert sky.mean() == pytest.approx(800.0, rel=1e-5)
    flat = sky_image((120, 200), 800.0, (0.03, -0.02))
    row = flat[60]
    assert (row[-1] - row[0]) / 800.0 == pytest.approx(0.03 * 199 / 200, rel=1e-4)
    col = flat[:, 100]
    assert (col[-1] - col[0]) / 800.0 == pytest.approx(-0.02 * 119 / 120, rel=1e-4)
    bowl = sky - flat
    assert bowl[0, 0] > bowl[60, 100] and bowl[-1, -1] > bowl[60, 100]


# --------------------------------------------------------------------------------------------------
# PSF and point sources
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm,e,pa", [(1.8, 0.0, 0.0), (2.5, 0.06, 30.0), (4.0, 0.1, 120.0)])
def test_star_total_flux(fwhm, e, pa):
    flux = 2e6
    img = render_sources((201, 201), [100.3], [99.8], [flux], fwhm=fwhm, ellipticity=e, pa=pa)
    assert img.dtype == np.float32
    phot = aperture_photometry(img, CircularAperture((100.3, 99.8), r=95.0))
    assert phot["aperture_sum"][0] == pytest.approx(flux, rel=0.005)


def test_faint_star_holds_the_light_inside_its_stamp():
    """A small stamp holds flux * (fraction of the Moffat inside it), by independent integration."""
    fwhm, flux, x0, y0 = 2.2, 800.0, 30.2, 29.7
    assert stamp_size(flux, fwhm) == 15
    img = render_sources((61, 61), [x0], [y0], [flux], fwhm=fwhm)
    beta = 3.0
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))

    def moffat(yy, xx):
        return (beta - 1) / (math.pi * alpha**2) * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta

    # the 15 x 15 stamp is centred on the nearest pixel (30, 30)
    inside, _ = integrate.dblquad(moffat, 30 - 7.5, 30 + 7.5, 30 - 7.5, 30 + 7.5, epsabs=1e-10)
    assert img.sum() == pytest.approx(flux * inside, rel=1e-4)
    assert 0.99 < inside < 1.0


@pytest.mark.parametrize("fwhm,dx,dy", [(1.6, 0.0, 0.0), (2.2, 0.37, -0.21), (3.0, -0.5, 0.45), (4.5, 0.1, 0.3)])
def test_star_fwhm_moffat_fit(fwhm, dx, dy):
    x0, y0 = 20 + dx, 20 + dy
    img = render_sources((41, 41), [x0], [y0], [1e5], fwhm=fwhm).astype(float)
    measured, p = _fit_moffat_fwhm(img, x0, y0)
    assert measured == pytest.approx(fwhm, rel=0.02)
    assert p[4] == pytest.approx(3.0, rel=0.02)  # the documented beta
    assert p[1] == pytest.approx(x0, abs=0.01) and p[2] == pytest.approx(y0, abs=0.01)


def test_star_fwhm_astropy_moffat2d():
    """astropy's Moffat2D (point-sampled) on a broad star, where pixelisation does not matter."""
    fwhm = 9.0
    img = render_sources((81, 81), [40.2], [39.6], [1e6], fwhm=fwhm)
    y, x = np.mgrid[:81, :81]
    fit = fitting.TRFLSQFitter()(models.Moffat2D(amplitude=img.max(), x_0=40, y_0=40, gamma=8, alpha=2.5), x, y, img)
    assert fit.fwhm == pytest.approx(fwhm, rel=0.02)
    assert fit.x_0.value == pytest.approx(40.2, abs=0.01)
    assert fit.y_0.value == pytest.approx(39.6, abs=0.01)


@pytest.mark.parametrize("e,pa", [(0.08, 30.0), (0.05, 100.0), (0.1, 165.0)])
def test_star_ellipticity_from_moments(e, pa):
    x0, y0 = 150.2, 149.7
    img = render_sources((301, 301), [x0], [y0], [1e6], fwhm=3.0, ellipticity=e, pa=pa, edge_e=1e-6).astype(float)
    me, mpa = _shape_from_moments(*_moments(img, x0, y0, 145))
    assert me == pytest.approx(e, abs=0.005)
    assert (mpa - pa + 90) % 180 - 90 == pytest.approx(0, abs=2.0)


def test_psf_stamp_normalised_and_centred():
    s = psf_stamp(2.4, 0.05, 40.0, 0.3, -0.2, size=63)
    assert s.shape == (63, 63) and s.dtype == np.float32
    assert s.sum() == pytest.approx(1.0, abs=2e-4)
    y, x = np.mgrid[:63, :63]
    assert (s * x).sum() / s.sum() == pytest.approx(31.3, abs=0.02)
    assert (s * y).sum() / s.sum() == pytest.approx(30.8, abs=0.02)
    with pytest.raises(ConfigError):
        psf_stamp(2.0, size=32)


def test_psf_params_pattern():
    ccd, q = _corner_quadrant()
    cc, cq = _central_quadrant()
    seeing, am = 2.0, 1.3
    # the outer corner of the corner quadrant: the pixel farthest from the optical axis
    xs = np.array([0, 3071, 0, 3071])
    ys = np.array([0, 0, 3079, 3079])
    p_corner = psf_params(ccd, q, xs, ys, seeing, am)
    p_centre = psf_params(cc, cq, 1535.5, 1539.5, seeing, am)
    base = seeing * am**0.6 / 1.012
    assert float(p_centre.fwhm) == pytest.approx(base, rel=0.01)
    assert 1.05 < p_corner.fwhm.max() / base < 1.11
    assert 0.04 < p_corner.ellipticity.max() < 0.1
    # over the whole mosaic the ellipticity reaches 0.06-0.1
    emax = max(psf_params(c, qq, xs, ys, seeing, am).ellipticity.max() for c in camera.CCDIDS for qq in camera.QIDS)
    assert 0.06 < emax < 0.1
    assert float(p_centre.ellipticity) < 0.03
    assert np.all((p_corner.pa >= 0) & (p_corner.pa < 180))
    # airmass scaling and smoothness
    p2 = psf_params(ccd, q, xs, ys, seeing, 2.0)
    assert np.allclose(p2.fwhm / p_corner.fwhm, (2.0 / 1.3) ** 0.6)
    a = psf_params(ccd, q, 1000.0, 1000.0, seeing, am)
    b = psf_params(ccd, q, 1001.0, 1000.0, seeing, am)
    assert abs(float(a.fwhm) - float(b.fwhm)) < 1e-4
    # sub-arrays see the same focal plane
    small = psf_params(ccd, q, 10.0, 20.0, seeing, am, shape=(256, 256))
    x0, y0 = subarray_origin((256, 256))
    full = psf_params(ccd, q, 10.0 + x0, 20.0 + y0, seeing, am)
    assert float(small.fwhm) == pytest.approx(float(full.fwhm), rel=1e-12)


def test_render_many_sources_equals_sum_of_single_renders():
    rng = np.random.default_rng(5)
    n = 40
    x, y = rng.uniform(-5, 105, n), rng.uniform(-5, 85, n)
    flux = 10 ** rng.uniform(2, 6, n)
    fwhm, e, pa = rng.uniform(1.6, 3, n), rng.uniform(0, 0.1, n), rng.uniform(0, 180, n)
    sn = np.where(rng.random(n) < 0.3, rng.uniform(0.5, 4, n), np.nan)
    re = np.where(np.isfinite(sn), rng.uniform(0.5, 4, n), 0.0)
    q, gpa = rng.uniform(0.3, 1, n), rng.uniform(0, 180, n)
    kw = dict(fwhm=fwhm, ellipticity=e, pa=pa, sersic_n=sn, r_eff_px=re, axis_ratio=q, gal_pa=gpa)
    together = render_sources((90, 110), x, y, flux, **kw)
    single = np.zeros((90, 110), np.float32)
    for i in range(n):
        render_sources((90, 110), x[i:i + 1], y[i:i + 1], flux[i:i + 1], fwhm=fwhm[i], ellipticity=e[i], pa=pa[i],
                       sersic_n=sn[i:i + 1], r_eff_px=re[i:i + 1], axis_ratio=q[i:i + 1], gal_pa=gpa[i:i + 1],
                       out=single)
    assert np.allclose(together, single, rtol=1e-5, atol=1e-6 * together.max())


def test_edge_sources_and_bad_input():
    img = render_sources((50, 50), [-2.0, 60.0], [25.0, 25.0], [1e4, 1e4], fwhm=2.5)
    assert 0 < img.sum() < 0.5e4  # the light of the first star that falls on the image; none of the second
    assert img[25, 0] > img[25, 2] > 0
    with pytest.raises(ConfigError):
        render_sources((50, 50), [1.0], [1.0], [-1.0], fwhm=2.0)
    with pytest.raises(ConfigError):
        render_sources((50, 50), [np.nan], [1.0], [1.0], fwhm=2.0)
    with pytest.raises(ConfigError):
        render_sources((50, 50), [1.0], [1.0], [1.0], fwhm=2.0, out=np.zeros((50, 50)))


# --------------------------------------------------------------------------------------------------
# galaxies and streaks
# --------------------------------------------------------------------------------------------------


def test_galaxy_flux_centroid_and_moments():
    """A Sersic n = 0.5 galaxy is a Gaussian: its moments add to the PSF's (alpha**2 / 2 per axis)."""
    n, r_eff, q, gpa, fwhm = 0.5, 4.0, 0.5, 30.0, 3.0
    x0, y0, flux = 150.3, 149.6, 1e6
    img = render_sources((301, 301), [x0], [y0], [flux], fwhm=fwhm, sersic_n=[n], r_eff_px=[r_eff],
                         axis_ratio=[q], gal_pa=[gpa], edge_e=1e-5).astype(float)
    assert img.sum() == pytest.approx(flux, rel=1e-4)
    y, x = np.mgrid[:301, :301]
    assert (img * x).sum() / img.sum() == pytest.approx(x0, abs=0.01)
    assert (img * y).sum() / img.sum() == pytest.approx(y0, abs=0.01)
    sigma2 = r_eff**2 / (2 * math.log(2))  # exp(-ln2 (r/r_eff)**2)
    t = math.radians(gpa)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cov = rot @ np.diag([sigma2, q * q * sigma2]) @ rot.T
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / 3) - 1))
    mxx, myy, mxy = _moments(img, x0, y0, 148)
    assert mxx == pytest.approx(cov[0, 0] + alpha**2 / 2, rel=0.02)
    assert myy == pytest.approx(cov[1, 1] + alpha**2 / 2, rel=0.02)
    assert mxy == pytest.approx(cov[0, 1], rel=0.03)


def test_tiny_galaxy_is_a_star():
    """The Fourier galaxy renderer and the real-space star renderer agree in the point-source limit."""
    kw = dict(fwhm=2.3, ellipticity=0.07, pa=50.0)
    star = render_sources((41, 41), [20.3], [19.8], [1e5], **kw, edge_e=1e-3)
    gal = render_sources((41, 41), [20.3], [19.8], [1e5], **kw, sersic_n=[1.0], r_eff_px=[0.01], edge_e=1e-3)
    assert np.abs(gal - star).max() < 2e-3 * star.max()


def test_galaxies_larger_than_stars():
    star = render_sources((81, 81), [40.0], [40.0], [1e5], fwhm=2.5)
    small = render_sources((81, 81), [40.0], [40.0], [1e5], fwhm=2.5, sersic_n=[4.0], r_eff_px=[1.5])
    big = render_sources((81, 81), [40.0], [40.0], [1e5], fwhm=2.5, sersic_n=[1.0], r_eff_px=[5.0])
    assert star.max() > small.max() > big.max()
    assert big.sum() == pytest.approx(1e5, rel=1e-3)


def test_streak_flux_centroid_and_width():
    fwhm = 6.0
    img = render_streak((120, 200), 40.2, 50.3, 160.7, 70.1, 5e5, fwhm).astype(float)
    assert img.sum() == pytest.approx(5e5, rel=0.005)
    y, x = np.mgrid[:120, :200]
    assert (img * x).sum() / img.sum() == pytest.approx(0.5 * (40.2 + 160.7), abs=0.05)
    assert (img * y).sum() / img.sum() == pytest.approx(0.5 * (50.3 + 70.1), abs=0.05)
    # a horizontal streak: the column profile has the FWHM of the Moffat line-spread function
    img = render_streak((101, 301), 50.0, 50.3, 250.0, 50.3, 5e5, fwhm).astype(float)
    prof = img[:, 150]
    half = prof.max() / 2
    above = np.flatnonzero(prof >= half)
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - prof[lo - 1]) / (prof[lo] - prof[lo - 1])
    right = hi + (prof[hi] - half) / (prof[hi] - prof[hi + 1])
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / 3) - 1))
    lsf_fwhm = 2 * alpha * math.sqrt(2 ** (1 / 2.5) - 1)
    assert right - left == pytest.approx(lsf_fwhm, rel=0.03)


def test_streak_off_image_is_clipped():
    img = render_streak((50, 50), -1000.0, 25.0, 1050.0, 25.0, 2050.0, 2.0)
    # ~1 e- per px of length; 50 px of it on the image (minus the truncated wings)
    assert img.sum() == pytest.approx(50.0, rel=0.02)


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------


def test_true_wcs_sip_fit_error_full_quadrant():
    ccd, q = _corner_quadrant()
    offset, rot = (18.0, -11.0), 0.06
    w = true_wcs(CENTER, offset, rot, ccd, q)
    assert w.pixel_shape == (3072, 3080)
    assert list(w.wcs.crpix) == [1536.5, 1540.5]
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.5, 3071.5, 4000), rng.uniform(-0.5, 3079.5, 4000)
    x[:4], y[:4] = [-0.5, 3071.5, -0.5, 3071.5], [-0.5, -0.5, 3079.5, 3079.5]
    ra, dec = pixel_to_sky(w, x, y)
    ra_t, dec_t = true_pixel_to_sky(CENTER, offset, rot, ccd, q, x, y)
    assert _sep_mas(ra, dec, ra_t, dec_t).max() < 2.0
    # 0-based convention
    ra1, dec1 = w.all_pix2world(x[:10] + 1, y[:10] + 1, 1)
    assert np.allclose(ra[:10], ra1, rtol=0, atol=1e-12) and np.allclose(dec[:10], dec1, rtol=0, atol=1e-12)
    # inverse
    xb, yb = sky_to_pixel(w, ra_t, dec_t)
    assert np.abs(xb - x).max() < 1e-3 and np.abs(yb - y).max() < 1e-3
    xc, yc = sky_to_pixel(w, SkyCoord(ra_t[:5], dec_t[:5], unit="deg"))
    assert np.allclose(xc, xb[:5])
    # the header round-trips through FITS with its SIP terms
    from astropy.wcs import WCS

    w2 = WCS(w.to_header(relax=True))
    ra2, dec2 = w2.all_pix2world(x, y, 0)
    assert _sep_mas(ra, dec, ra2, dec2).max() < 0.1


def test_true_wcs_subarray_convention():
    ccd, q = 13, 3
    shape = (200, 300)
    x0, y0 = subarray_origin(shape)
    assert (x0, y0) == ((3072 - 300) // 2, (3080 - 200) // 2)
    ws = true_wcs(CENTER, (5.0, 7.0), -0.02, ccd, q, shape=shape)
    assert ws.pixel_shape == (300, 200)
    assert list(ws.wcs.crpix) == [1536.5 - x0, 1540.5 - y0]
    wf = true_wcs(CENTER, (5.0, 7.0), -0.02, ccd, q)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-0.5, 299.5, 500), rng.uniform(-0.5, 199.5, 500)
    ra_s, dec_s = pixel_to_sky(ws, x, y)
    ra_f, dec_f = pixel_to_sky(wf, x + x0, y + y0)
    assert _sep_mas(ra_s, dec_s, ra_f, dec_f).max() < 2.0
    with pytest.raises(ConfigError):
        true_wcs(CENTER, (0, 0), 0, ccd, q, shape=(4000, 100))


@pytest.mark.parametrize("which", ["corner", "central"])
def test_true_wcs_is_nominal_plus_pointing_offset(which):
    ccd, q = _corner_quadrant() if which == "corner" else _central_quadrant()
    offset, rot = (20.0, -10.0), 0.05
    w = true_wcs(FIELD, offset, rot, ccd, q)
    tp = true_pointing(FIELD, offset)
    assert _sep_mas(tp.ra.deg, tp.dec.deg, *_offset(CENTER, offset)) < 1e-3
    # at the quadrant centre the distortion vanishes: the nominal WCS of the true pointing
    wn = camera.nominal_wcs(tp, ccd, q, rotation=rot * u.deg)
    c_true = pixel_to_sky(w, 1535.5, 1539.5)
    c_nom = wn.all_pix2world(1536.5, 1540.5, 1)
    assert _sep_mas(*c_true, *c_nom) < 1.0
    # ... so it is displaced from the field-centre prior by about the pointing offset
    wf = camera.nominal_wcs(FIELD, ccd, q, rotation=rot * u.deg)
    c_prior = wf.all_pix2world(1536.5, 1540.5, 1)
    shift = _sep_mas(*c_true, *c_prior) / 1000
    tol = 0.3 if which == "central" else 1.5
    assert shift == pytest.approx(math.hypot(*offset), abs=tol)
    # the distortion: deviation from the nominal frame across the quadrant
    gx, gy = np.meshgrid(np.linspace(-0.5, 3071.5, 25), np.linspace(-0.5, 3079.5, 25))
    ra, dec = pixel_to_sky(w, gx.ravel(), gy.ravel())
    ra_n, dec_n = wn.all_pix2world(gx.ravel(), gy.ravel(), 0)
    dev = _sep_mas(ra, dec, ra_n, dec_n).max() / 1000
    if which == "corner":
        assert 1.0 < dev < 5.0
    else:
        assert dev < 0.5


def _offset(center, offset):
    """Field centre moved by (east, north) arcsec in its tangent plane, via astropy's offset frame."""
    frame = center.skyoffset_frame()
    c = SkyCoord(lon=offset[0] * u.arcsec, lat=offset[1] * u.arcsec, frame=frame).icrs
    # skyoffset lon/lat are angles on the sphere, the tangent-plane offsets differ by < 1e-9 deg here
    return c.ra.deg, c.dec.deg


def test_distortion_amplitude_at_mosaic_corner():
    t = camera.focal_plane_layout()
    ew, ns = np.asarray(t["ew"]).ravel(), np.asarray(t["ns"]).ravel()
    i = np.argmax(np.hypot(ew, ns))
    dew, dns = focal_plane_distortion(ew[i], ns[i])
    assert 2.0 < 3600 * float(np.hypot(dew, dns)) < 6.0
    d0 = focal_plane_distortion(0.0, 0.0)
    assert np.hypot(*d0) == 0


def test_true_wcs_accepts_an_exposure():
    exps = make_schedule([FIELD], night=NIGHT, seed=7, weather="clear")
    e = exps[0]
    w1 = true_wcs(e, ccdid=13, qid=3, shape=(64, 64))
    w2 = true_wcs(CENTER, e.pointing_offset, e.rotation, 13, 3, shape=(64, 64))
    assert np.allclose(pixel_to_sky(w1, 10.0, 20.0), pixel_to_sky(w2, 10.0, 20.0), rtol=0, atol=1e-12)
    p = e.pointing
    tp = true_pointing(e)
    assert _sep_mas(p.ra.deg, p.dec.deg, tp.ra.deg, tp.dec.deg) < 1e-3
    with pytest.raises(ConfigError):
        true_wcs(CENTER, (0, 0), 0.0)


# --------------------------------------------------------------------------------------------------
# conditions and schedule
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schedule():
    return make_schedule([655, 600, 700], night=NIGHT, nexp_per_field=2, filters=("zr", "zg"), seed=11,
                         history_nights=24)


def test_schedule_is_deterministic(schedule):
    again = make_schedule([655, 600, 700], night=NIGHT, nexp_per_field=2, filters=("zr", "zg"), seed=11,
                          history_nights=24)
    assert again == schedule
    other = make_schedule([655, 600, 700], night=NIGHT, nexp_per_field=2, filters=("zr", "zg"), seed=12,
                          history_nights=24)
    assert [e.jd for e in other] != [e.jd for e in schedule]
    # the main night does not depend on how many history nights are asked for
    main = [e for e in schedule if e.night == NIGHT]
    alone = make_schedule([655, 600, 700], night=NIGHT, nexp_per_field=2, filters=("zr", "zg"), seed=11)
    assert alone == main


def test_schedule_times_ids_and_limits(schedule):
    jd = np.array([e.jd for e in schedule])
    assert np.all(np.diff(jd) >= (30 + 15) / 86400 - 1e-9)
    for e in schedule:
        assert isinstance(e, Exposure)
        assert e.filefracday == filefracday(e.jd) and e.expid == expid(e.jd)
        assert nid(e.jd) == nid(e.night)
        assert e.exptime == 30.0
        assert 1.0 <= e.airmass < MAX_AIRMASS
        assert e.sun_alt < -12.0
        assert 1.5 <= e.seeing <= 3.5
        assert 0 < e.transparency <= 1
        assert 0 <= e.moon_illumination <= 1
        assert math.hypot(*e.pointing_offset) <= 60.0 and abs(e.rotation) <= 0.1
        assert e.extinction == EXTINCTION[e.filtercode]
    assert len({e.expid for e in schedule}) == len(schedule)
    main = [e for e in schedule if e.night == NIGHT]
    assert Counter((e.field, e.filtercode) for e in main) == {
        (f, fc): 2 for f in (655, 600, 700) for fc in ("zr", "zg")
    }
    # the night starts after evening twilight: UT ~02:40 in late September at Palomar
    start = Time(min(e.jd for e in main), format="jd").datetime
    assert datetime.time(2, 0) < start.time() < datetime.time(13, 0)
    offsets = np.array([math.hypot(*e.pointing_offset) for e in schedule])
    assert 5 < np.median(offsets) < 30


def test_schedule_airmass_against_astropy(schedule):
    loc = EarthLocation(lat=33.3573 * u.deg, lon=-116.8598 * u.deg, height=1668 * u.m)
    sub = schedule[::7]
    t = Time([e.jd for e in sub], format="jd", scale="utc")
    pts = SkyCoord([e.pointing.ra.deg for e in sub], [e.pointing.dec.deg for e in sub], unit="deg")
    secz = pts.transform_to(AltAz(obstime=t, location=loc)).secz.value
    ours = np.array([e.airmass for e in sub])
    assert np.allclose(ours, secz, rtol=0.01)  # Kasten-Young vs sec z differ by < 0.5 % below X = 2.5


def test_history_epochs_for_references(schedule):
    good = Counter((e.field, e.filtercode) for e in schedule if e.night != NIGHT and e.transparency >= 0.8)
    assert set(good) == {(f, fc) for f in (655, 600, 700) for fc in ("zr", "zg")}
    assert all(15 <= n <= 40 for n in good.values())
    nights = sorted({e.night for e in schedule})
    gaps = np.diff([d.toordinal() for d in nights])
    assert len(nights) == 25 and set(gaps) <= {2, 3}


def test_zero_point_definition_and_clouds(schedule):
    for e in schedule:
        expected = NOMINAL_MAGZP[e.filtercode] - EXTINCTION[e.filtercode] * (e.airmass - 1) + 2.5 * math.log10(
            e.transparency)
        assert e.zp == pytest.approx(expected, abs=1e-9)
    cloudy = [e for e in schedule if e.transparency < 0.9]
    assert cloudy, "24 variable nights should include some clouds"
    for e in cloudy:
        clear = NOMINAL_MAGZP[e.filtercode] - EXTINCTION[e.filtercode] * (e.airmass - 1)
        assert e.zp < clear - 0.1
    assert all(e.transparency == 1.0 for e in make_schedule([655], night=NIGHT, seed=1, history_nights=5,
                                                            weather="clear"))


def test_sky_brightness_moon_and_filters(schedule):
    for e in schedule:
        dark = camera.FILTERS[e.filtercode].sky_brightness
        x, k = e.airmass, EXTINCTION[e.filtercode]
        dark_here = dark - 2.5 * math.log10(x) + k * (x - 1)  # Krisciunas & Schaefer airmass brightening
        if e.moon_alt < 0 and e.sun_alt < -18:
            assert e.sky_mag == pytest.approx(dark_here, abs=0.01)
        else:
            assert e.sky_mag < dark_here + 1e-9
        assert abs(e.sky_gradient[0]) < 0.2 and abs(e.sky_gradient[1]) < 0.2
    # full moon (2020-10-01), the field 30 vs 90 deg from the Moon, moon high
    jd = 2459124.85
    near = sky_brightness("zr", 40.0, 5.0, jd)
    assert float(near) < 19.5
    darkg = sky_brightness("zg", 55.06, 33.35, 2459116.9317708)  # the real sample: moon down
    assert float(darkg) == pytest.approx(22.01, abs=0.15)


def test_schedule_table_and_errors(schedule):
    t = schedule_table(schedule)
    assert len(t) == len(schedule)
    assert t["pointing_offset"].shape == (len(schedule), 2)
    assert np.all(t["fid"] == [e.fid for e in schedule])
    with pytest.raises(ConfigError):
        make_schedule([655], night=datetime.datetime(2020, 9, 24), seed=1)
    with pytest.raises(ConfigError):
        make_schedule([655], night=NIGHT, seed=None)
    with pytest.raises(ConfigError):
        make_schedule([655], night=NIGHT, seed=1, filters=("zq",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule[0].zp = 0.0


def test_field_below_the_horizon_gets_no_exposures():
    # a far-southern field from Palomar: never above airmass 2.5
    grid = camera.field_grid()
    south = int(grid["field"][np.argmin(grid["dec"])])
    assert make_schedule([south], night=NIGHT, seed=1) == []


# --------------------------------------------------------------------------------------------------
# speed (full quadrant)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_render_full_quadrant_speed():
    """15,000 stars and 1,500 galaxies on a full quadrant (reported, not asserted)."""
    rng = np.random.default_rng(3)
    ny, nx = camera.QUADRANT_SHAPE
    ns, ng = 15000, 1500
    a = 0.28 * math.log(10)
    m = np.log(np.exp(a * 12) + rng.random(ns) * (np.exp(a * 21.5) - np.exp(a * 12))) / a
    x, y = rng.uniform(-10, nx + 10, ns), rng.uniform(-10, ny + 10, ns)
    gm = rng.uniform(17, 21, ng)
    gx, gy = rng.uniform(0, nx, ng), rng.uniform(0, ny, ng)
    X, Y = np.concatenate([x, gx]), np.concatenate([y, gy])
    F = mag_to_electrons(np.concatenate([m, gm]), 26.3)
    p = psf_params(13, 3, X, Y, 2.0, 1.2)
    sn = np.concatenate([np.full(ns, np.nan), np.where(rng.random(ng) < 0.6, 1.0, 3.5) * rng.uniform(0.8, 1.2, ng)])
    re = np.concatenate([np.zeros(ns), np.clip(10 ** (0.5 - 0.15 * (gm - 18)) * rng.lognormal(0, 0.3, ng), 0.5, 5)])
    q, gpa = rng.uniform(0.3, 1, ns + ng), rng.uniform(0, 180, ns + ng)
    kw = dict(fwhm=p.fwhm, ellipticity=p.ellipticity, pa=p.pa, sersic_n=sn, r_eff_px=re, axis_ratio=q, gal_pa=gpa)
    render_sources((64, 64), X[-1:], Y[-1:], F[-1:], **{k: v[-1:] for k, v in kw.items()})  # warm the tables
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        img = render_sources((ny, nx), X, Y, F, **kw)
        times.append(time.perf_counter() - t0)
    print(f"\nfull quadrant, {ns} stars + {ng} galaxies: best {min(times):.3f} s, runs {times}")
    assert np.isfinite(img).all() and img.sum() > 0.95 * F[(X > 20) & (X < nx - 20) & (Y > 20) & (Y < ny - 20)].sum()


def test_compiled_point_renderer_matches_numpy_reference():
    from ztfsds.sim import optics

    rng = np.random.default_rng(11)
    n, ny, nx = 3000, 120, 140
    x, y = rng.uniform(-12, nx + 12, n), rng.uniform(-12, ny + 12, n)
    flux = 10 ** rng.uniform(2, 6.5, n)
    fwhm, ell, pa = rng.uniform(1.5, 3.5, n), rng.uniform(0, 0.25, n), rng.uniform(0, 180, n)
    size = optics.stamp_size(flux, fwhm, ell)
    fast = np.zeros((ny, nx), np.float32)
    ref = np.zeros((ny, nx), np.float32)
    optics._render_points(fast.reshape(-1), ny, nx, x, y, flux, fwhm, ell, pa, size)
    optics._render_points_numpy(ref.reshape(-1), ny, nx, x, y, flux, fwhm, ell, pa, size)
    assert fast.sum() == pytest.approx(ref.sum(), rel=1e-6)
    np.testing.assert_allclose(fast, ref, rtol=2e-5, atol=1e-3)
