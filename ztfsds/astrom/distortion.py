"""Polynomial distortion of a quadrant's WCS: the tangent-plane polynomial, TPV and SIP headers.

The astrometric fit (`ztfsds.astrom.solve`) works with one plain polynomial per axis: the standard
coordinates ``(xi, eta)`` [deg] of a pixel in the tangent plane of ``CRVAL`` are

    xi  = sum_k a_k u**i_k v**j_k,    eta = sum_k b_k u**i_k v**j_k,
    u = (X - CRPIX1) / S,  v = (Y - CRPIX2) / S

with ``X``, ``Y`` FITS (1-based) pixel coordinates, ``S`` a scale [pix] that keeps the powers near 1
(the design matrix well conditioned), and monomials of total degree 0..d in the order of
`monomial_powers` (degree by degree, and within a degree by increasing power of ``v``). That model is
*exactly* what both FITS distortion conventions can express, so converting it to a header loses nothing:

* **TPV** (SCAMP's, ZTF's ``RA---TPV``): the CD matrix maps pixels to intermediate coordinates
  ``(x, y)`` [deg], then ``xi = sum PV1_k T_k(x, y)``, ``eta = sum PV2_k T_k(y, x)`` (note the swapped
  arguments of the second axis). The terms ``T_k`` are, degree by degree, ``x**n, x**(n-1) y, ...,
  y**n``, followed for odd ``n`` by a radial term ``r**n`` (k = 3, 11, 23, 39) that ztfsds never uses, so
  ``PVi_3`` and ``PVi_11`` are absent exactly as in IPAC's headers. The linear part of the polynomial is
  folded into CD, so ``PV1_1 = PV2_1 = 1`` and ``PV1_2 = PV2_2 = 0``; the higher terms are the
  polynomial re-expressed in ``(x, y)`` (an exact substitution of the linear map, `compose_linear`).
  A cubic writes PVi_0..PVi_10, a quartic (what the real IPAC header holds) PVi_0..PVi_16.
* **SIP** (``RA---TAN-SIP``): ``(xi, eta) = CD (U + f(U, V), V + g(U, V))`` with ``U = X - CRPIX1``;
  ``A_p_q``, ``B_p_q`` (``2 <= p + q <= d``) are the coefficients of ``f``, ``g``, and the inverse
  polynomials ``AP_p_q``, ``BP_p_q`` (order ``d + 1``) are fitted on a grid over the image, so that
  ``world_to_pixel`` is fast and exact to ~1e-4 px.

The header built here is the product: the `~astropy.wcs.WCS` of an astrometric solution is read back
from these cards, so the written header and the WCS object agree by construction.

Examples
--------
>>> import numpy as np
>>> from ztfsds.astrom.distortion import monomial_powers, tpv_index
>>> monomial_powers(2)
[(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
>>> [tpv_index(i, j) for i, j in monomial_powers(3)]
[0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..errors import ConfigError

__all__ = [
    "TPV_MAX_DEGREE",
    "n_terms",
    "monomial_powers",
    "design_matrix",
    "coefficient_grid",
    "compose_linear",
    "tpv_index",
    "poly_to_tpv",
    "poly_to_sip",
    "tpv_cards",
    "sip_cards",
]

#: Highest polynomial degree TPV can hold (PVi_0..PVi_39).
TPV_MAX_DEGREE = 7

# first PV index of each degree's terms (radial terms r**n sit after the odd degrees' monomials)
_TPV_START = (0, 1, 4, 7, 12, 17, 24, 31)


def n_terms(degree: int) -> int:
    """Number of monomials of total degree 0..``degree`` in two variables: ``(d + 1)(d + 2) / 2``."""
    return (degree + 1) * (degree + 2) // 2


def monomial_powers(degree: int) -> list[tuple[int, int]]:
    """Powers ``(i, j)`` of ``u**i v**j`` in the order of the coefficient vectors.

    Parameters
    ----------
    degree : int
        Highest total degree.

    Returns
    -------
    list of (int, int)
        Degree by degree, and within a degree by increasing power ``j`` of ``v``.
    """
    return [(n - j, j) for n in range(degree + 1) for j in range(n + 1)]


def design_matrix(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """Values of every monomial at the points ``(u, v)``.

    Parameters
    ----------
    u, v : numpy.ndarray
        Coordinates (1-D, same length).
    degree : int
        Highest total degree.

    Returns
    -------
    numpy.ndarray
        float64 array ``(len(u), n_terms(degree))`` in the order of `monomial_powers`.
    """
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    upow = [np.ones_like(u)]
    vpow = [np.ones_like(v)]
    for _ in range(degree):
        upow.append(upow[-1] * u)
        vpow.append(vpow[-1] * v)
    return np.stack([upow[i] * vpow[j] for i, j in monomial_powers(degree)], axis=-1)


def coefficient_grid(coeffs: np.ndarray, degree: int) -> np.ndarray:
    """Coefficient vector as a grid ``C[i, j]`` (coefficient of ``u**i v**j``), shape ``(d + 1, d + 1)``."""
    coeffs = np.asarray(coeffs, dtype=float)
    if coeffs.shape != (n_terms(degree),):
        raise ConfigError(f"expected {n_terms(degree)} coefficients for degree {degree}, got {coeffs.shape}")
    grid = np.zeros((degree + 1, degree + 1))
    for c, (i, j) in zip(coeffs, monomial_powers(degree)):
        grid[i, j] = c
    return grid


def _pmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two bivariate polynomials given as coefficient grids."""
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for i, j in zip(*np.nonzero(a)):
        out[i:i + b.shape[0], j:j + b.shape[1]] += a[i, j] * b
    return out


def compose_linear(grid: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Re-express a polynomial after a linear change of variables, exactly.

    Parameters
    ----------
    grid : numpy.ndarray
        Coefficient grid ``C[i, j]`` of ``P(u, v) = sum C[i, j] u**i v**j``.
    matrix : numpy.ndarray
        2 x 2 matrix ``M`` with ``(u, v) = M (x, y)``.

    Returns
    -------
    numpy.ndarray
        Grid of the same shape with ``Q(x, y) = P(M (x, y))``.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros((3, 3)); g[2, 0] = 1.0          # P = u**2
    >>> q = compose_linear(g, np.array([[1.0, 1.0], [0.0, 1.0]]))   # u = x + y
    >>> q[2, 0].item(), q[1, 1].item(), q[0, 2].item()
    (1.0, 2.0, 1.0)
    """
    grid = np.asarray(grid, dtype=float)
    d = grid.shape[0] - 1
    m = np.asarray(matrix, dtype=float)
    ulin = np.zeros((2, 2))
    ulin[1, 0], ulin[0, 1] = m[0, 0], m[0, 1]
    vlin = np.zeros((2, 2))
    vlin[1, 0], vlin[0, 1] = m[1, 0], m[1, 1]
    upow = [np.ones((1, 1))]
    vpow = [np.ones((1, 1))]
    for _ in range(d):
        upow.append(_pmul(upow[-1], ulin))
        vpow.append(_pmul(vpow[-1], vlin))
    out = np.zeros_like(grid)
    for i, j in zip(*np.nonzero(grid)):
        term = grid[i, j] * _pmul(upow[i], vpow[j])
        out[:term.shape[0], :term.shape[1]] += term
    return out


def tpv_index(i: int, j: int) -> int:
    """PV index of the term ``x**i y**j`` of the first TPV axis.

    The second axis's polynomial has its arguments swapped: its term ``x**i y**j`` (in the same
    ``x``, ``y``) is ``PV2_{tpv_index(j, i)}``.

    Examples
    --------
    >>> tpv_index(1, 0), tpv_index(0, 1), tpv_index(3, 0), tpv_index(0, 4)
    (1, 2, 7, 16)
    """
    n = i + j
    if n > TPV_MAX_DEGREE:
        raise ConfigError(f"TPV holds polynomials up to degree {TPV_MAX_DEGREE}, got degree {n}")
    return _TPV_START[n] + j


def _linear_part(cxi: np.ndarray, ceta: np.ndarray) -> np.ndarray:
    """The 2 x 2 linear part of the (xi, eta) polynomials (coefficients of u and v)."""
    return np.array([[cxi[1], cxi[2]], [ceta[1], ceta[2]]], dtype=float)


def poly_to_tpv(cxi, ceta, degree: int, scale: float) -> tuple[np.ndarray, dict[int, float], dict[int, float]]:
    """CD matrix and PV coefficients of the tangent-plane polynomial.

    Parameters
    ----------
    cxi, ceta : numpy.ndarray
        Coefficients of ``xi`` and ``eta`` [deg] over `monomial_powers` of ``(u, v)``.
    degree : int
        Polynomial degree (1 to `TPV_MAX_DEGREE`).
    scale : float
        ``S`` [pix]: ``u = (X - CRPIX1) / S``.

    Returns
    -------
    cd : numpy.ndarray
        2 x 2 CD matrix [deg/pix].
    pv1, pv2 : dict of int to float
        ``{k: PVi_k}``; PVi_1 = 1 and PVi_2 = 0 exactly, no radial terms.
    """
    if not 1 <= degree <= TPV_MAX_DEGREE:
        raise ConfigError(f"TPV degree must be 1..{TPV_MAX_DEGREE}, got {degree}")
    cxi = np.asarray(cxi, float)
    ceta = np.asarray(ceta, float)
    lin = _linear_part(cxi, ceta)
    cd = lin / scale
    to_uv = np.linalg.inv(lin)  # (u, v) = lin^-1 (x, y)
    pxi = compose_linear(coefficient_grid(cxi, degree), to_uv)
    peta = compose_linear(coefficient_grid(ceta, degree), to_uv)
    pv1, pv2 = {}, {}
    for i, j in monomial_powers(degree):
        pv1[tpv_index(i, j)] = float(pxi[i, j])
        pv2[tpv_index(j, i)] = float(peta[i, j])
    pv1[1], pv1[2], pv2[1], pv2[2] = 1.0, 0.0, 1.0, 0.0
    return cd, pv1, pv2


def poly_to_sip(cxi, ceta, degree: int, scale: float, *, shape: tuple[int, int], crpix) -> tuple:
    """CD matrix and SIP polynomials (forward and fitted inverse) of the tangent-plane polynomial.

    Parameters
    ----------
    cxi, ceta : numpy.ndarray
        Coefficients of ``xi`` and ``eta`` [deg] over `monomial_powers` of ``(u, v)``; the constant
        terms must be ~0 (SIP has none: CRVAL takes them).
    degree : int
        Polynomial degree (>= 1; SIP terms exist from degree 2).
    scale : float
        ``S`` [pix].
    shape : tuple of int
        ``(nx, ny)`` of the image: the inverse polynomials are fitted over it (plus a 5 % margin).
    crpix : sequence of float
        CRPIX1, CRPIX2 (FITS).

    Returns
    -------
    cd : numpy.ndarray
        2 x 2 CD matrix [deg/pix].
    a, b : numpy.ndarray
        SIP ``A``, ``B`` coefficient grids (``(d + 1, d + 1)``, zero where ``p + q < 2``).
    ap, bp : numpy.ndarray
        Inverse ``AP``, ``BP`` grids of order ``d + 1`` (``p + q >= 1``).
    """
    cxi = np.asarray(cxi, float)
    ceta = np.asarray(ceta, float)
    lin = _linear_part(cxi, ceta)
    cd = lin / scale
    cd_inv = np.linalg.inv(cd)
    gxi = coefficient_grid(cxi, degree)
    geta = coefficient_grid(ceta, degree)
    powers = np.arange(degree + 1)
    norm = float(scale) ** -(powers[:, None] + powers[None, :])
    qx = (cd_inv[0, 0] * gxi + cd_inv[0, 1] * geta) * norm  # pixel-space polynomial, coefficient of U^p V^q
    qy = (cd_inv[1, 0] * gxi + cd_inv[1, 1] * geta) * norm
    low = (powers[:, None] + powers[None, :]) < 2
    a = np.where(low, 0.0, qx)
    b = np.where(low, 0.0, qy)
    # inverse: U = U' + AP(U', V') on a grid over the image (SIP inverse convention)
    nx, ny = shape
    mx, my = 0.05 * nx, 0.05 * ny
    gx, gy = np.meshgrid(np.linspace(0.5 - mx, nx + 0.5 + mx, 40), np.linspace(0.5 - my, ny + 0.5 + my, 40))
    uu = gx.ravel() - crpix[0]
    vv = gy.ravel() - crpix[1]
    fu = uu + _eval_grid(a, uu, vv)
    fv = vv + _eval_grid(b, uu, vv)
    order = degree + 1
    s = max(nx, ny)
    terms = [(p, q) for p, q in monomial_powers(order) if p + q >= 1]
    design = np.stack([(fu / s) ** p * (fv / s) ** q for p, q in terms], axis=-1)
    sol, *_ = np.linalg.lstsq(design, np.stack([uu - fu, vv - fv], axis=-1), rcond=None)
    ap = np.zeros((order + 1, order + 1))
    bp = np.zeros((order + 1, order + 1))
    for (p, q), cu, cv in zip(terms, sol[:, 0], sol[:, 1]):
        ap[p, q] = cu / s ** (p + q)
        bp[p, q] = cv / s ** (p + q)
    return cd, a, b, ap, bp


def _eval_grid(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u, dtype=float)
    for i, j in zip(*np.nonzero(grid)):
        out += grid[i, j] * u**i * v**j
    return out


def _base_cards(ctype: tuple[str, str], crval, crpix, cd) -> list[fits.Card]:
    return [
        fits.Card("WCSAXES", 2, "Number of WCS axes"),
        fits.Card("CTYPE1", ctype[0], "Name of coord X axis"),
        fits.Card("CTYPE2", ctype[1], "Name of coord Y axis"),
        fits.Card("CUNIT1", "deg", "Coordinate units for X axis"),
        fits.Card("CUNIT2", "deg", "Coordinate units for Y axis"),
        fits.Card("RADESYS", "ICRS", "Coordinate reference system"),
        fits.Card("CRPIX1", float(crpix[0]), "Coord system X ref pixel"),
        fits.Card("CRPIX2", float(crpix[1]), "Coord system Y ref pixel"),
        fits.Card("CRVAL1", float(crval[0]), "Coord system value at CRPIX1"),
        fits.Card("CRVAL2", float(crval[1]), "Coord system value at CRPIX2"),
        fits.Card("CD1_1", float(cd[0, 0]), "WCS matrix"),
        fits.Card("CD1_2", float(cd[0, 1]), "WCS matrix"),
        fits.Card("CD2_1", float(cd[1, 0]), "WCS matrix"),
        fits.Card("CD2_2", float(cd[1, 1]), "WCS matrix"),
    ]


def tpv_cards(crval, crpix, cd, pv1: dict[int, float], pv2: dict[int, float]) -> list[fits.Card]:
    """WCS header cards of a TPV solution, as IPAC writes them.

    Parameters
    ----------
    crval : sequence of float
        CRVAL1, CRVAL2 [deg].
    crpix : sequence of float
        CRPIX1, CRPIX2 (FITS).
    cd : numpy.ndarray
        CD matrix [deg/pix].
    pv1, pv2 : dict of int to float
        PV coefficients by index (`poly_to_tpv`).

    Returns
    -------
    list of `astropy.io.fits.Card`
        WCSAXES, CTYPEi = 'RA---TPV'/'DEC--TPV', CUNITi, RADESYS, CRPIXi, CRVALi, CDi_j, PV1_k, PV2_k.
    """
    cards = _base_cards(("RA---TPV", "DEC--TPV"), crval, crpix, cd)
    for axis, pv in ((1, pv1), (2, pv2)):
        for k in sorted(pv):
            cards.append(fits.Card(f"PV{axis}_{k}", float(pv[k]), "Projection distortion parameter"))
    return cards


def sip_cards(crval, crpix, cd, a, b, ap, bp) -> list[fits.Card]:
    """WCS header cards of a TAN-SIP solution (`poly_to_sip`'s output).

    Returns
    -------
    list of `astropy.io.fits.Card`
        WCSAXES, CTYPEi = 'RA---TAN-SIP'/'DEC--TAN-SIP', CUNITi, RADESYS, CRPIXi, CRVALi, CDi_j,
        A_ORDER, A_p_q, B_ORDER, B_p_q, AP_ORDER, AP_p_q, BP_ORDER, BP_p_q (nonzero terms).
    """
    cards = _base_cards(("RA---TAN-SIP", "DEC--TAN-SIP"), crval, crpix, cd)
    for name, grid, comment in (("A", a, "detector to sky"), ("B", b, "detector to sky"),
                                ("AP", ap, "sky to detector"), ("BP", bp, "sky to detector")):
        order = grid.shape[0] - 1
        cards.append(fits.Card(f"{name}_ORDER", order, f"SIP polynomial order, {comment}"))
        for p in range(order + 1):
            for q in range(order + 1 - p):
                if grid[p, q] != 0.0:
                    cards.append(fits.Card(f"{name}_{p}_{q}", float(grid[p, q]), "SIP distortion coefficient"))
    return cards
