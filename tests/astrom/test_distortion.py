"""The tangent-plane polynomial and its TPV / SIP headers, checked against astropy (wcslib)."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ztfsds.astrom.distortion import (
    coefficient_grid,
    compose_linear,
    design_matrix,
    monomial_powers,
    n_terms,
    poly_to_sip,
    poly_to_tpv,
    sip_cards,
    tpv_cards,
    tpv_index,
)
from ztfsds.camera import tangent_deproject
from ztfsds.errors import ConfigError

CRVAL = (57.99, 35.75)
CRPIX = (1536.5, 1540.5)
SCALE = 1536.0


def _random_poly(degree, rng):
    """xi, eta coefficients [deg] of a ZTF-like quadrant: 1.012"/px, a small rotation, arcsec-level distortion."""
    cd = np.array([[-2.8117e-4, -7.7e-6], [7.7e-6, -2.8117e-4]])
    cxi, ceta = np.zeros(n_terms(degree)), np.zeros(n_terms(degree))
    cxi[1:3], ceta[1:3] = cd[0] * SCALE, cd[1] * SCALE
    for k, (i, j) in enumerate(monomial_powers(degree)):
        if i + j >= 2:
            cxi[k], ceta[k] = rng.normal(0, 5e-5, 2)  # up to ~0.2" at the corners
    return cxi, ceta


def _poly_sky(cxi, ceta, degree, x, y):
    a = design_matrix((x + 1 - CRPIX[0]) / SCALE, (y + 1 - CRPIX[1]) / SCALE, degree)
    return tangent_deproject(a @ cxi, a @ ceta, *CRVAL)


def _sep_mas(ra1, dec1, ra2, dec2):
    return np.hypot((ra1 - ra2) * np.cos(np.radians(dec1)), dec1 - dec2) * 3.6e6


def test_monomials_and_tpv_order():
    assert n_terms(3) == len(monomial_powers(3)) == 10
    # cubic: PVi_0..PVi_10 without the radial PVi_3; quartic adds 12..16 (no PVi_11)
    assert sorted(tpv_index(i, j) for i, j in monomial_powers(3)) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert sorted(tpv_index(i, j) for i, j in monomial_powers(4))[-5:] == [12, 13, 14, 15, 16]
    with pytest.raises(ConfigError):
        tpv_index(8, 0)


def test_compose_linear_matches_direct_evaluation():
    rng = np.random.default_rng(3)
    grid = coefficient_grid(rng.normal(size=n_terms(4)), 4)
    m = rng.normal(size=(2, 2))
    q = compose_linear(grid, m)
    x, y = rng.normal(size=(2, 50))
    u, v = m @ np.vstack([x, y])
    p_uv = sum(grid[i, j] * u**i * v**j for i in range(5) for j in range(5))
    q_xy = sum(q[i, j] * x**i * y**j for i in range(5) for j in range(5))
    np.testing.assert_allclose(q_xy, p_uv, rtol=1e-10, atol=1e-10)


def test_real_header_tpv_convention(test_data_dir):
    """Our reading of the PV terms (swapped arguments on axis 2) is wcslib's, on IPAC's own header."""
    h = fits.Header.fromtextfile(test_data_dir / "real_sciimg_header.txt")
    cd = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    rng = np.random.default_rng(0)
    px, py = rng.uniform(1, 3072, 500), rng.uniform(1, 3080, 500)
    x, y = cd @ np.vstack([px - h["CRPIX1"], py - h["CRPIX2"]])
    a, at = design_matrix(x, y, 4), design_matrix(y, x, 4)
    xi = sum(h.get(f"PV1_{tpv_index(i, j)}", 0.0) * a[:, k] for k, (i, j) in enumerate(monomial_powers(4)))
    eta = sum(h.get(f"PV2_{tpv_index(i, j)}", 0.0) * at[:, k] for k, (i, j) in enumerate(monomial_powers(4)))
    ra, dec = tangent_deproject(xi, eta, h["CRVAL1"], h["CRVAL2"])
    ra2, dec2 = WCS(h).all_pix2world(px, py, 1)
    assert _sep_mas(ra, dec, ra2, dec2).max() < 1e-3


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5])
def test_tpv_header_reproduces_polynomial(degree):
    rng = np.random.default_rng(degree)
    cxi, ceta = _random_poly(degree, rng)
    cd, pv1, pv2 = poly_to_tpv(cxi, ceta, degree, SCALE)
    assert pv1[1] == pv2[1] == 1.0 and pv1[2] == pv2[2] == 0.0 and 3 not in pv1 and 11 not in pv2
    wcs = WCS(fits.Header(tpv_cards(CRVAL, CRPIX, cd, pv1, pv2)))
    x, y = rng.uniform(-0.5, 3071.5, 1000), rng.uniform(-0.5, 3079.5, 1000)
    ra, dec = _poly_sky(cxi, ceta, degree, x, y)
    ra2, dec2 = wcs.all_pix2world(x, y, 0)
    assert _sep_mas(ra, dec, ra2, dec2).max() < 1e-3
    xx, yy = wcs.all_world2pix(ra, dec, 0)
    assert max(np.abs(xx - x).max(), np.abs(yy - y).max()) < 1e-6


@pytest.mark.parametrize("degree", [2, 3, 4])
def test_sip_header_reproduces_polynomial_and_inverse(degree):
    rng = np.random.default_rng(10 + degree)
    cxi, ceta = _random_poly(degree, rng)
    cd, a, b, ap, bp = poly_to_sip(cxi, ceta, degree, SCALE, shape=(3072, 3080), crpix=CRPIX)
    wcs = WCS(fits.Header(sip_cards(CRVAL, CRPIX, cd, a, b, ap, bp)))
    assert wcs.sip is not None and wcs.sip.a_order == degree and wcs.sip.ap_order == degree + 1
    x, y = rng.uniform(-0.5, 3071.5, 1000), rng.uniform(-0.5, 3079.5, 1000)
    ra, dec = _poly_sky(cxi, ceta, degree, x, y)
    ra2, dec2 = wcs.all_pix2world(x, y, 0)
    assert _sep_mas(ra, dec, ra2, dec2).max() < 1e-3
    # the fitted inverse polynomials alone (no iteration) are exact to 1e-4 px
    pix = np.column_stack([x, y])
    back = wcs.sip_foc2pix(wcs.sip_pix2foc(pix, 0), 0)
    assert np.abs(back - pix).max() < 1e-4
