"""The simulated optics: true WCS with focal-plane distortion, the PSF, and rendering of sources.

This module is the truth that the astrometry and PSF stages must recover. Nothing in it is fitted to
data; it is a plausible model of the P48 + ZTF camera, documented exactly so that tests can check the
pipeline against it.

Conventions
-----------
* **Pixels.** Every pixel coordinate taken or returned here is **0-based numpy** ``(x, y)``:
  ``x`` is the column, ``y`` the row, and pixel ``(0, 0)`` is the centre of array element
  ``[0, 0]``, which covers ``-0.5 <= x, y < 0.5``. (FITS / `ztfsds.camera` coordinates are these
  plus 1.)
* **Sub-arrays.** Functions that take ``shape`` (``(ny, nx)``) accept arrays smaller than a full
  quadrant (3080, 3072) for fast tests. Such an array is the **centred sub-array** of the quadrant:
  its pixel ``(x, y)`` is the full quadrant's pixel ``(x + x0, y + y0)`` with
  ``x0 = (3072 - nx) // 2`` and ``y0 = (3080 - ny) // 2`` (`subarray_origin`). Its WCS keeps the
  quadrant's reference point: ``CRPIX = (1536.5 - x0, 1540.5 - y0)`` (FITS), the quadrant centre,
  which is the sub-array centre when ``nx``, ``ny`` are even.
* **Angles.** Position angles of PSFs and galaxies (``pa``, ``gal_pa``) are degrees of the major
  axis from the +x axis towards +y in pixel coordinates.
* **Pointing offset and rotation.** ``pointing_offset = (dx, dy)`` [arcsec] moves the true pointing
  centre from the field centre by ``dx = dRA cos(Dec)`` east and ``dy = dDec`` north (in the tangent
  plane of the field centre); ``rotation_deg`` turns the whole focal plane about the true pointing
  centre, as a position angle (north through east), like `ztfsds.camera.nominal_wcs`'s ``rotation``.

The geometry (`true_wcs`, `true_pixel_to_sky`)
----------------------------------------------
Each CCD is flat and, in a Schmidt camera, nearly tangent to the curved focal surface at its own
centre, so each quadrant is undistorted TAN about its centre to first order: exactly the frame of
`ztfsds.camera.nominal_wcs` at the *true* pointing (CRVAL the layout centre deprojected about the
true pointing centre, 1.012"/px, +x west, +y south, rotated with the focal plane). On top of it the
optics add a smooth distortion of the whole focal plane, a displacement in the focal-plane frame
``(EW, NS)`` [deg] (tangent plane of the pointing centre, un-rotated):

* radial: ``(K3 r**2 + K5 r**4) (EW, NS)`` with ``K3 = 3.9e-6 deg**-2`` and
  ``K5 = 2.2e-7 deg**-4``: 2.0" + 3.0" = 5.0" outwards at the mosaic corner (r = 5.21 deg);
* decentring (non-radial; Brown-Conrady form):
  ``(P1 (r**2 + 2 EW**2) + 2 P2 EW NS, P2 (r**2 + 2 NS**2) + 2 P1 EW NS)`` with
  ``P1 = 2.0e-6``, ``P2 = -1.0e-6 deg**-1`` (0.3" at the mosaic corner).

The focal-plane layout (`ztfsds.camera.quadrant_corners`) gives where the quadrant centres are
*seen* on the sky, so the distortion moves no quadrant centre: a pixel at undistorted focal-plane
position ``p`` in a quadrant with centre ``c`` is displaced by ``D(p) - D(c)``. The displacement
therefore vanishes at every quadrant centre (where `true_wcs` equals
``nominal_wcs(true pointing centre, rotation)``) and grows to 1.9" at the outer corner of a
mosaic-corner quadrant (0.2-0.3" in the central CCDs); it also changes a corner quadrant's pixel
scale by ~0.1 %. `true_wcs` expresses the exact mapping as a TAN-SIP WCS fitted to it (order 4 by
default; worst error over a full quadrant 0.01 mas).

The PSF (`psf_params`, `psf_stamp`)
-----------------------------------
An elliptical Moffat profile with ``beta = 3`` (`PSF_BETA`):
``I(x', y') = (beta - 1) / (pi a b) * (1 + x'**2 / a**2 + y'**2 / b**2) ** -beta`` (unit flux), with
``x'``, ``y'`` along the major and minor axes. ``fwhm`` is the geometric mean of the major- and
minor-axis FWHMs (``fwhm / sqrt(1 - e)`` and ``fwhm * sqrt(1 - e)``, so the half-maximum isophote
encloses ``pi fwhm**2 / 4``), the ellipticity is ``e = 1 - b / a``, and each axis has
``alpha = FWHM_axis / (2 sqrt(2**(1 / beta) - 1))``. Across the focal plane (radius ``r``, mosaic
corner radius ``R = 5.21 deg``): ``fwhm = seeing * airmass**0.6 * (1 + 0.08 (r/R)**2 + 0.02 EW/R)
/ 1.012"`` (up to +9.4 % at the mosaic corner); the ellipticity is a spin-2 sum of tangential
astigmatism ``0.07 (r/R)**2`` and a constant ``0.02`` at 25 deg (at most ~0.09).

Rendering (`render_sources`, `render_streak`)
---------------------------------------------
Point sources are pixel-integrated by Gauss-Legendre quadrature (4 x 4 nodes per pixel in the
central 5 x 5 pixels, 2 x 2 elsewhere; error < 1.3e-4 of the peak for ``fwhm >= 1.3 px``) in square
stamps whose size (`STAMP_SIZES`, 15 to 511 px) grows with the flux until the PSF surface brightness
at the stamp edge is below ``edge_e`` (0.2 e-/px by default, ~1 % of the sky noise): light beyond the
stamp is lost, so a stamp holds ``flux * (fraction of the PSF inside it)``. What is lost is at most
about ``edge_e * pi / 2 * (alpha**2 + h**2)`` e- for a stamp of half-size ``h`` (17 e- for a 15 px
stamp at FWHM 2.2 px, ~0.5 % of the light of the faintest stars; ~1e-3 at r = 19).

Galaxies are Sersic profiles (semi-major half-light radius ``r_eff``, axis ratio ``q``) tapered
smoothly to zero between ``(T - 1) r_eff`` and ``T r_eff``, ``T = clip(4 + 4 (n - 1) / 3, 4, 8)``
(the Hogg & Lang 2013 "lux/luv" truncation), and represented as mixtures of 28 Gaussians fitted to that profile on a grid of ``n`` (0.5-8, step 0.1;
the mixture is interpolated linearly in ``n`` and *is* the truth; its enclosed light follows the
tapered Sersic profile to ~1 %). They are convolved with the local PSF and the pixel exactly in
Fourier space (analytic transforms of the Gaussians, the Moffat and the pixel box; the first alias
replicas are added for compact galaxies, so pixel values are exact to ~1e-4 of the peak), and
inverse-FFT'd in periodic stamps sized like the stars' (surface brightness below ``edge_e`` at the
edge): the little light beyond the stamp folds back in, so a galaxy stamp holds all of its flux.
All sources of one stamp size are rendered in one vectorised pass and accumulated with
``np.add.at``; a full quadrant of 15,000 stars and 1,500 galaxies takes ~0.35 s on one core.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import NamedTuple

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS, Sip

from ..camera import _center_radec as _field_center_radec
from ..camera import (
    PIXEL_SCALE,
    QUADRANT_CENTER,
    QUADRANT_SHAPE,
    focal_plane_layout,
    nominal_wcs,
    rcid,
    rotate_focal_plane,
    tangent_deproject,
    tangent_project,
)
from ..errors import ConfigError
from .._ext import _simrender

__all__ = [
    "PSF_BETA",
    "DISTORTION_K3",
    "DISTORTION_K5",
    "DISTORTION_P1",
    "DISTORTION_P2",
    "STAMP_SIZES",
    "PSFParams",
    "subarray_origin",
    "focal_plane_position",
    "focal_plane_distortion",
    "true_pointing",
    "true_pixel_to_sky",
    "true_wcs",
    "sky_to_pixel",
    "pixel_to_sky",
    "moffat_alpha",
    "psf_params",
    "psf_stamp",
    "stamp_size",
    "render_sources",
    "render_streak",
    "sky_image",
    "mag_to_electrons",
    "sky_electrons_per_pixel",
]

logger = logging.getLogger(__name__)

#: Moffat index of the PSF.
PSF_BETA = 3.0
#: Radial distortion coefficients: ``(K3 r**2 + K5 r**4)`` times the focal-plane position, r in deg;
#: 2.0" + 3.0" outwards at the mosaic corner (5.21 deg).
DISTORTION_K3 = 3.9e-6
DISTORTION_K5 = 2.2e-7
#: Decentring distortion coefficients [deg**-1] (Brown-Conrady P1, P2).
DISTORTION_P1 = 2.0e-6
DISTORTION_P2 = -1.0e-6
#: Stamp sizes [px] for point sources, smallest first.
STAMP_SIZES = (15, 23, 31, 47, 63, 95, 127, 191, 255, 383, 511)

_SCALE_DEG = PIXEL_SCALE.to_value(u.deg / u.pix)
_SCALE_ARCSEC = PIXEL_SCALE.to_value(u.arcsec / u.pix)
_NX_FULL, _NY_FULL = QUADRANT_SHAPE[1], QUADRANT_SHAPE[0]

# PSF pattern over the focal plane (see the module docstring)
_FWHM_RADIAL = 0.08
_FWHM_TILT = 0.02
_E_ASTIG = 0.07
_E_CONST = 0.02
_E_CONST_PA = 25.0
_AIRMASS_POWER = 0.6
_MAX_ELLIPTICITY = 0.9

# Galaxy stamps: FFT sizes, and the spectrum level at the Nyquist frequency above which the first
# alias replicas are added
_FFT_SIZES = (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512,
              640, 768, 1024)
_ALIAS_TOL = 1e-4
_ALIAS_BAND = np.float32(0.25)
_ALIAS_FULL = 3e-3
_SERSIC_N_RANGE = (0.5, 8.0)
_CHUNK_ELEMENTS = 1_000_000
_STAR_CHUNK_ELEMENTS = 150_000
# half-width of the central block of pixels integrated with _CORE_NODES**2 nodes (2 x 2 elsewhere)
_CORE_HALF = 2
_CORE_NODES = 4


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ConfigError(f"shape must be positive, got {shape!r}")
    return ny, nx


def _check_quadrant_shape(shape) -> tuple[int, int]:
    ny, nx = _check_shape(shape)
    if ny > _NY_FULL or nx > _NX_FULL:
        raise ConfigError(f"shape {shape!r} is larger than a quadrant {QUADRANT_SHAPE}")
    return ny, nx


def subarray_origin(shape=QUADRANT_SHAPE) -> tuple[int, int]:
    """Offset of a centred sub-array in its quadrant.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(ny, nx)`` of the (sub-)array, at most (3080, 3072).

    Returns
    -------
    x0, y0 : int
        Sub-array pixel ``(x, y)`` is quadrant pixel ``(x + x0, y + y0)``:
        ``x0 = (3072 - nx) // 2``, ``y0 = (3080 - ny) // 2``.

    Examples
    --------
    >>> subarray_origin((256, 256))
    (1408, 1412)
    """
    ny, nx = _check_quadrant_shape(shape)
    return (_NX_FULL - nx) // 2, (_NY_FULL - ny) // 2


def _layout_centres() -> tuple[np.ndarray, np.ndarray, float]:
    """Layout centres (EW, NS) [deg] of the 64 quadrants and the mosaic corner radius [deg]."""
    t = focal_plane_layout()
    ew, ns = np.asarray(t["ew_center"], float), np.asarray(t["ns_center"], float)
    r_max = float(np.hypot(np.asarray(t["ew"]), np.asarray(t["ns"])).max())
    return ew, ns, r_max


def _center_radec(obj) -> tuple[float, float]:
    """(RA, Dec) [deg] of an Exposure's field, a field id or a scalar SkyCoord."""
    if not isinstance(obj, SkyCoord) and hasattr(obj, "field"):
        obj = obj.field
    return _field_center_radec(obj)


def _pointing_args(exposure_or_center, pointing_offset, rotation_deg):
    """Field centre, offset and rotation from an Exposure-like object or explicit values."""
    is_exposure = hasattr(exposure_or_center, "pointing_offset") and hasattr(exposure_or_center, "field")
    if pointing_offset is None:
        pointing_offset = exposure_or_center.pointing_offset if is_exposure else (0.0, 0.0)
    if rotation_deg is None:
        rotation_deg = exposure_or_center.rotation if is_exposure else 0.0
    try:
        dx, dy = (float(v) for v in pointing_offset)
        rot = float(rotation_deg)
    except (TypeError, ValueError):
        raise ConfigError(
            f"pointing_offset must be (dx, dy) in arcsec and rotation_deg a number, got "
            f"{pointing_offset!r}, {rotation_deg!r}"
        ) from None
    if not all(map(math.isfinite, (dx, dy, rot))):
        raise ConfigError("pointing_offset and rotation_deg must be finite")
    ra0, dec0 = _center_radec(exposure_or_center)
    return ra0, dec0, dx, dy, rot


def true_pointing(exposure_or_center, pointing_offset=None) -> SkyCoord:
    """The true pointing centre: the field centre moved by the pointing offset.

    Parameters
    ----------
    exposure_or_center : `~ztfsds.sim.conditions.Exposure` or `~astropy.coordinates.SkyCoord` or int
        An exposure (its field centre and ``pointing_offset``), a field centre or a field id.
    pointing_offset : (float, float), optional
        ``(dRA cos Dec, dDec)`` [arcsec] in the tangent plane of the field centre; default the
        exposure's, or (0, 0).

    Returns
    -------
    `~astropy.coordinates.SkyCoord`
    """
    ra0, dec0, dx, dy, _ = _pointing_args(exposure_or_center, pointing_offset, 0.0)
    ra, dec = tangent_deproject(dx / 3600.0, dy / 3600.0, ra0, dec0)
    return SkyCoord(float(ra) * u.deg, float(dec) * u.deg, frame="icrs")


# --------------------------------------------------------------------------------------------------
# Focal plane and distortion
# --------------------------------------------------------------------------------------------------


def focal_plane_position(ccdid, qid, x, y, *, shape=QUADRANT_SHAPE):
    """Undistorted focal-plane position of pixels (camera frame, not rotated).

    Parameters
    ----------
    ccdid, qid : int
        CCD id (1-16) and quadrant id (1-4).
    x, y : float or array-like
        0-based pixel coordinates in the (sub-)array of ``shape``.
    shape : tuple of int, optional
        ``(ny, nx)`` of the array (a centred sub-array of the quadrant when smaller).

    Returns
    -------
    ew, ns : `numpy.ndarray`
        Focal-plane coordinates [deg], EW positive east, NS positive north, from the layout centre of
        the quadrant and the nominal pixel axes (+x west, +y south, 1.012"/px).
    """
    x0, y0 = subarray_origin(shape)
    ewc, nsc, _ = _layout_centres()
    r = rcid(ccdid, qid)
    xf = np.asarray(x, dtype=float) + x0 + 1.0 - QUADRANT_CENTER[0]
    yf = np.asarray(y, dtype=float) + y0 + 1.0 - QUADRANT_CENTER[1]
    return ewc[r] - xf * _SCALE_DEG, nsc[r] - yf * _SCALE_DEG


def focal_plane_distortion(ew, ns):
    """Displacement of the optical distortion at focal-plane positions.

    Parameters
    ----------
    ew, ns : float or array-like
        Undistorted focal-plane coordinates [deg] (camera frame).

    Returns
    -------
    dew, dns : `numpy.ndarray`
        Displacement on the sky [deg]: radial ``(K3 r**2 + K5 r**4) (EW, NS)`` plus Brown-Conrady
        decentring with ``P1``, ``P2`` (see the module docstring).

    Examples
    --------
    >>> dew, dns = focal_plane_distortion(3.65, 3.73)
    >>> print(f"{3600 * float(np.hypot(dew, dns)):.1f} arcsec")
    5.3 arcsec
    """
    x, y = np.asarray(ew, dtype=float), np.asarray(ns, dtype=float)
    r2 = x * x + y * y
    radial = DISTORTION_K3 * r2 + DISTORTION_K5 * r2 * r2
    dx = radial * x + DISTORTION_P1 * (r2 + 2 * x * x) + 2 * DISTORTION_P2 * x * y
    dy = radial * y + DISTORTION_P2 * (r2 + 2 * y * y) + 2 * DISTORTION_P1 * x * y
    return dx, dy


class _QuadrantOptics:
    """Exact pixel -> sky mapping of one quadrant (or centred sub-array) for one pointing."""

    def __init__(self, ra0, dec0, dx, dy, rot, ccdid, qid, shape):
        self.shape = _check_quadrant_shape(shape)
        self.x0, self.y0 = subarray_origin(self.shape)
        self.rot = rot
        pra, pdec = tangent_deproject(dx / 3600.0, dy / 3600.0, ra0, dec0)
        self.pra, self.pdec = float(pra), float(pdec)
        w = nominal_wcs(SkyCoord(self.pra * u.deg, self.pdec * u.deg), ccdid, qid, rotation=rot * u.deg)
        self.crval = np.array(w.wcs.crval, dtype=float)
        self.cd = np.array(w.wcs.cd, dtype=float)
        # the quadrant centre in the (un-rotated) focal frame of the true pointing
        xi, eta = tangent_project(self.crval[0], self.crval[1], self.pra, self.pdec)
        self.ewc, self.nsc = rotate_focal_plane(xi, eta, -rot)
        self.dc = focal_plane_distortion(self.ewc, self.nsc)

    def pixel_to_sky(self, x, y):
        """(ra, dec) [deg] of 0-based sub-array pixel coordinates, exactly."""
        u_ = np.asarray(x, dtype=float) + self.x0 + 1.0 - QUADRANT_CENTER[0]
        v_ = np.asarray(y, dtype=float) + self.y0 + 1.0 - QUADRANT_CENTER[1]
        xq = self.cd[0, 0] * u_ + self.cd[0, 1] * v_
        yq = self.cd[1, 0] * u_ + self.cd[1, 1] * v_
        ra, dec = tangent_deproject(xq, yq, self.crval[0], self.crval[1])
        xi, eta = tangent_project(ra, dec, self.pra, self.pdec)
        ew, ns = rotate_focal_plane(xi, eta, -self.rot)
        dew, dns = focal_plane_distortion(ew, ns)
        ew = ew + (dew - self.dc[0])
        ns = ns + (dns - self.dc[1])
        xi, eta = rotate_focal_plane(ew, ns, self.rot)
        return tangent_deproject(xi, eta, self.pra, self.pdec)


def _optics(exposure_or_center, pointing_offset, rotation_deg, ccdid, qid, shape) -> _QuadrantOptics:
    if ccdid is None or qid is None:
        raise ConfigError("ccdid and qid are required")
    rcid(ccdid, qid)  # validates
    ra0, dec0, dx, dy, rot = _pointing_args(exposure_or_center, pointing_offset, rotation_deg)
    return _QuadrantOptics(ra0, dec0, dx, dy, rot, int(ccdid), int(qid), shape)


def true_pixel_to_sky(exposure_or_center, pointing_offset=None, rotation_deg=None, ccdid=None, qid=None,
                      x=None, y=None, *, shape=QUADRANT_SHAPE):
    """The exact true mapping pixel -> sky of a quadrant (what `true_wcs` approximates with SIP).

    Parameters
    ----------
    exposure_or_center : `~ztfsds.sim.conditions.Exposure` or `~astropy.coordinates.SkyCoord` or int
        An exposure (field, ``pointing_offset`` and ``rotation`` are taken from it unless given), or
        the field centre / field id.
    pointing_offset : (float, float), optional
        ``(dRA cos Dec, dDec)`` [arcsec]; default the exposure's or (0, 0).
    rotation_deg : float, optional
        Focal-plane rotation (position angle) [deg]; default the exposure's or 0.
    ccdid, qid : int
        CCD id (1-16) and quadrant id (1-4).
    x, y : float or array-like
        0-based pixel coordinates in the (sub-)array.
    shape : tuple of int, optional
        ``(ny, nx)``; a centred sub-array of the quadrant when smaller than (3080, 3072).

    Returns
    -------
    ra, dec : `numpy.ndarray`
        ICRS coordinates [deg].
    """
    if x is None or y is None:
        raise ConfigError("x and y are required")
    return _optics(exposure_or_center, pointing_offset, rotation_deg, ccdid, qid, shape).pixel_to_sky(x, y)


def _poly_terms(order: int, lo: int):
    return [(p, t - p) for t in range(lo, order + 1) for p in range(t, -1, -1)]


def _design(u_, v_, terms, scale):
    us, vs = u_ / scale, v_ / scale
    return np.stack([us**p * vs**q for p, q in terms], axis=-1)


def true_wcs(exposure_or_center, pointing_offset=None, rotation_deg=None, ccdid=None, qid=None, *,
             shape=QUADRANT_SHAPE, sip_order=4) -> WCS:
    """The true WCS of a quadrant for one exposure: TAN-SIP fitted to the exact mapping.

    Parameters
    ----------
    exposure_or_center : `~ztfsds.sim.conditions.Exposure` or `~astropy.coordinates.SkyCoord` or int
        An exposure (field, ``pointing_offset`` and ``rotation`` are taken from it unless given), or
        the field centre / field id.
    pointing_offset : (float, float), optional
        ``(dRA cos Dec, dDec)`` [arcsec]; default the exposure's or (0, 0).
    rotation_deg : float, optional
        Focal-plane rotation (position angle) [deg]; default the exposure's or 0.
    ccdid, qid : int
        CCD id (1-16) and quadrant id (1-4).
    shape : tuple of int, optional
        ``(ny, nx)`` of the array; smaller than (3080, 3072) means the centred sub-array (see
        `subarray_origin`), with ``CRPIX = (1536.5 - x0, 1540.5 - y0)``.
    sip_order : int, optional
        Order of the SIP polynomials (2-6; 4 fits the exact mapping to well under 1 mas).

    Returns
    -------
    `~astropy.wcs.WCS`
        ``RA---TAN-SIP``/``DEC--TAN-SIP``, ICRS; CRPIX the quadrant centre (FITS, in the sub-array);
        CRVAL the exact sky position of CRPIX; CD and forward SIP (A, B) from a least-squares fit to
        the exact mapping on a 31 x 31 grid spanning the array's outer pixel edges; inverse SIP (AP,
        BP) of the same order. ``pixel_shape`` is ``(nx, ny)``. Use ``all_pix2world`` /
        `pixel_to_sky` (SIP applied), not ``wcs_pix2world``.
    """
    if not isinstance(sip_order, (int, np.integer)) or not 2 <= sip_order <= 6:
        raise ConfigError(f"sip_order must be an integer in 2..6, got {sip_order!r}")
    opt = _optics(exposure_or_center, pointing_offset, rotation_deg, ccdid, qid, shape)
    ny, nx = opt.shape
    crpix = np.array([QUADRANT_CENTER[0] - opt.x0, QUADRANT_CENTER[1] - opt.y0])
    crval = np.array([float(v) for v in opt.pixel_to_sky(crpix[0] - 1.0, crpix[1] - 1.0)])

    # exact mapping on a grid spanning the outer pixel edges, as intermediate world coordinates
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, 31), np.linspace(-0.5, ny - 0.5, 31))
    ra, dec = opt.pixel_to_sky(gx.ravel(), gy.ravel())
    xi, eta = tangent_project(ra, dec, crval[0], crval[1])
    u_ = gx.ravel() + 1.0 - crpix[0]
    v_ = gy.ravel() + 1.0 - crpix[1]
    scale = max(nx, ny) / 2.0

    terms = _poly_terms(sip_order, 1)
    m = _design(u_, v_, terms, scale)
    cx = np.linalg.lstsq(m, xi, rcond=None)[0]
    cy = np.linalg.lstsq(m, eta, rcond=None)[0]
    cd = np.array([[cx[0], cx[1]], [cy[0], cy[1]]]) / scale  # terms[0] = (1, 0), terms[1] = (0, 1)
    # forward SIP: (u + f, v + g) = CD^-1 (xi, eta)
    cdinv = np.linalg.inv(cd)
    fu = cdinv[0, 0] * xi + cdinv[0, 1] * eta
    fv = cdinv[1, 0] * xi + cdinv[1, 1] * eta
    nl_terms = _poly_terms(sip_order, 2)
    mn = _design(u_, v_, nl_terms, scale)
    ca = np.linalg.lstsq(mn, fu - u_, rcond=None)[0]
    cb = np.linalg.lstsq(mn, fv - v_, rcond=None)[0]
    a = np.zeros((sip_order + 1, sip_order + 1))
    b = np.zeros_like(a)
    for (p, q), va, vb in zip(nl_terms, ca, cb):
        a[p, q] = va / scale ** (p + q)
        b[p, q] = vb / scale ** (p + q)
    # inverse SIP on the focal-plane coordinates U, V of a denser grid
    hx, hy = np.meshgrid(np.linspace(-0.5, nx - 0.5, 41), np.linspace(-0.5, ny - 0.5, 41))
    hu, hv = hx.ravel() + 1.0 - crpix[0], hy.ravel() + 1.0 - crpix[1]
    mh = _design(hu, hv, nl_terms, scale)
    fu_h, fv_h = hu + mh @ ca, hv + mh @ cb
    inv_terms = _poly_terms(sip_order, 1)
    mi = _design(fu_h, fv_h, inv_terms, scale)
    cap = np.linalg.lstsq(mi, hu - fu_h, rcond=None)[0]
    cbp = np.linalg.lstsq(mi, hv - fv_h, rcond=None)[0]
    ap = np.zeros((sip_order + 1, sip_order + 1))
    bp = np.zeros_like(ap)
    for (p, q), va, vb in zip(inv_terms, cap, cbp):
        ap[p, q] = va / scale ** (p + q)
        bp[p, q] = vb / scale ** (p + q)

    resid = np.hypot(m @ cx - xi, m @ cy - eta).max() * 3.6e6
    logger.debug("true_wcs ccd %s q %s: SIP order %d fits the exact mapping to %.3g mas", ccdid, qid, sip_order,
                 resid)

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.crpix = crpix
    w.wcs.crval = crval
    w.wcs.cd = cd
    w.sip = Sip(a, b, ap, bp, crpix)
    w.pixel_shape = (nx, ny)
    w.wcs.set()
    return w


def _as_float_arrays(*values):
    arrs = [np.asarray(v, dtype=float) for v in values]
    return np.broadcast_arrays(*arrs)


def sky_to_pixel(wcs: WCS, ra, dec=None):
    """Sky -> 0-based pixel coordinates through a (SIP) WCS.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        For example from `true_wcs`.
    ra : float or array-like or `~astropy.coordinates.SkyCoord`
        Right ascension [deg], or a SkyCoord (then ``dec`` is omitted).
    dec : float or array-like, optional
        Declination [deg].

    Returns
    -------
    x, y : `numpy.ndarray`
        0-based pixel coordinates (pixel (0, 0) is the centre of array element [0, 0]), float64;
        the SIP distortion is inverted iteratively (``all_world2pix``, to ~1e-5 px).
    """
    if isinstance(ra, SkyCoord):
        if dec is not None:
            raise ConfigError("give either a SkyCoord or ra and dec, not both")
        c = ra.icrs
        ra, dec = c.ra.deg, c.dec.deg
    elif dec is None:
        raise ConfigError("dec is required when ra is not a SkyCoord")
    ra, dec = _as_float_arrays(ra, dec)
    x, y = wcs.all_world2pix(ra.ravel(), dec.ravel(), 0, tolerance=1e-8, maxiter=50)
    return x.reshape(ra.shape), y.reshape(ra.shape)


def pixel_to_sky(wcs: WCS, x, y):
    """0-based pixel coordinates -> sky through a (SIP) WCS.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        For example from `true_wcs`.
    x, y : float or array-like
        0-based pixel coordinates.

    Returns
    -------
    ra, dec : `numpy.ndarray`
        ICRS coordinates [deg] (``all_pix2world``: SIP applied).
    """
    x, y = _as_float_arrays(x, y)
    ra, dec = wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    return ra.reshape(x.shape), dec.reshape(x.shape)


# --------------------------------------------------------------------------------------------------
# PSF
# --------------------------------------------------------------------------------------------------


class PSFParams(NamedTuple):
    """PSF shape at given positions (arrays of the positions' shape)."""

    #: Geometric-mean FWHM [px].
    fwhm: np.ndarray
    #: Ellipticity ``1 - b/a``.
    ellipticity: np.ndarray
    #: Position angle of the major axis from +x towards +y [deg], in [0, 180).
    pa: np.ndarray


def moffat_alpha(fwhm, beta: float = PSF_BETA):
    """Moffat core width ``alpha`` of a FWHM: ``fwhm / (2 sqrt(2**(1/beta) - 1))``.

    Examples
    --------
    >>> print(f"{moffat_alpha(2.0):.4f}")
    1.9615
    """
    return np.asarray(fwhm, dtype=float) / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def psf_params(ccdid, qid, x, y, seeing_arcsec, airmass, *, shape=QUADRANT_SHAPE) -> PSFParams:
    """The true PSF shape at pixel positions of a quadrant.

    Parameters
    ----------
    ccdid, qid : int
        CCD id (1-16) and quadrant id (1-4).
    x, y : float or array-like
        0-based pixel coordinates in the (sub-)array of ``shape``.
    seeing_arcsec : float
        Seeing FWHM at zenith [arcsec] (`~ztfsds.sim.conditions.Exposure.seeing`).
    airmass : float
        Airmass; the FWHM scales as ``airmass**0.6``.
    shape : tuple of int, optional
        ``(ny, nx)`` of the array (centred sub-array of the quadrant when smaller).

    Returns
    -------
    PSFParams
        ``fwhm`` [px], ``ellipticity`` (``1 - b/a``) and ``pa`` [deg, from +x towards +y], arrays
        broadcast from ``x`` and ``y``. The pattern over the focal plane is given in the module
        docstring: FWHM up to +9.4 % and ellipticity up to ~0.09 at the mosaic corners.
    """
    seeing = float(seeing_arcsec)
    am = float(airmass)
    if not (seeing > 0 and math.isfinite(seeing)) or not (am >= 1.0 and math.isfinite(am)):
        raise ConfigError(f"seeing must be > 0 and airmass >= 1, got {seeing_arcsec!r}, {airmass!r}")
    ew, ns = focal_plane_position(ccdid, qid, x, y, shape=shape)
    ew, ns = np.broadcast_arrays(ew, ns)
    _, _, r_max = _layout_centres()
    rho2 = (ew * ew + ns * ns) / r_max**2
    fwhm = seeing * am**_AIRMASS_POWER * (1.0 + _FWHM_RADIAL * rho2 + _FWHM_TILT * ew / r_max) / _SCALE_ARCSEC
    # spin-2 sum: tangential astigmatism + a constant term. Both pixel axes are flipped with respect
    # to (EW, NS) -- a 180 deg rotation -- so orientations measured from EW towards NS equal
    # orientations measured from +x towards +y.
    phi_t = np.arctan2(ns, ew) + 0.5 * np.pi
    e_t = _E_ASTIG * rho2
    e1 = e_t * np.cos(2 * phi_t) + _E_CONST * math.cos(2 * math.radians(_E_CONST_PA))
    e2 = e_t * np.sin(2 * phi_t) + _E_CONST * math.sin(2 * math.radians(_E_CONST_PA))
    ell = np.hypot(e1, e2)
    pa = np.degrees(0.5 * np.arctan2(e2, e1)) % 180.0
    return PSFParams(fwhm, ell, pa)


def _moffat_coeffs(fwhm, e, pa):
    """Quadratic-form coefficients A, B, C and normalisation of unit-flux elliptical Moffats."""
    fwhm = np.asarray(fwhm, dtype=float)
    e = np.clip(np.asarray(e, dtype=float), 0.0, _MAX_ELLIPTICITY)
    sq = np.sqrt(1.0 - e)
    a = moffat_alpha(fwhm / sq)
    b = moffat_alpha(fwhm * sq)
    t = np.radians(pa)
    c, s = np.cos(t), np.sin(t)
    ia2, ib2 = 1.0 / (a * a), 1.0 / (b * b)
    A = c * c * ia2 + s * s * ib2
    C = s * s * ia2 + c * c * ib2
    B = 2.0 * c * s * (ia2 - ib2)
    norm = (PSF_BETA - 1.0) / (np.pi * a * b)
    return A, B, C, norm, a, b


@functools.lru_cache(maxsize=8)
def _gauss_legendre(k: int):
    t, w = np.polynomial.legendre.leggauss(k)
    return (0.5 * t).astype(np.float32), (0.5 * w).astype(np.float32)


def _moffat_quadrature(A, B, C, dx, dy, half: int, k: int):
    """Pixel integrals over offsets -half..half of Moffat(s) centred at (dx, dy); (n, m, m) float32.

    The quadratic form ``q = A X**2 + B X Y + C Y**2`` is evaluated on the k x k Gauss-Legendre nodes
    of every pixel, node-major (so that summing over the nodes adds contiguous blocks).
    """
    t, w = _gauss_legendre(k)
    m = 2 * half + 1
    off = (t[:, None] + np.arange(-half, half + 1, dtype=np.float32)[None, :]).ravel()
    X = off[None, :] - dx[:, None]
    Y = off[None, :] - dy[:, None]
    q = (1.0 + C[:, None] * (Y * Y))[:, :, None] + (A[:, None] * (X * X))[:, None, :]
    q += (B[:, None] * Y)[:, :, None] * X[:, None, :]
    np.reciprocal(q, out=q)
    v = q * q
    v *= q  # beta = 3
    n = len(A)
    v = v.reshape(n, k, m * k * m)
    acc = v[:, 0] * w[0]
    for j in range(1, k):
        acc += v[:, j] * w[j]
    acc = acc.reshape(n * m, k, m)
    out = acc[:, 0] * w[0]
    for j in range(1, k):
        out += acc[:, j] * w[j]
    return out.reshape(n, m, m)


def _moffat_stamps(fwhm, e, pa, dx, dy, size: int) -> np.ndarray:
    """Unit-flux pixel-integrated Moffat stamps, (n, size, size) float32, centre pixel size // 2."""
    A, B, C, norm, _, _ = _moffat_coeffs(fwhm, e, pa)
    A, B, C = (np.asarray(v, dtype=np.float32) for v in (A, B, C))
    dx = np.asarray(dx, dtype=np.float32)
    dy = np.asarray(dy, dtype=np.float32)
    half = size // 2
    out = _moffat_quadrature(A, B, C, dx, dy, half, 2)
    core = min(_CORE_HALF, half)
    sl = slice(half - core, half + core + 1)
    out[:, sl, sl] = _moffat_quadrature(A, B, C, dx, dy, core, _CORE_NODES)
    out *= np.asarray(norm, dtype=np.float32)[:, None, None]
    return out


def psf_stamp(fwhm_px, e=0.0, pa=0.0, dx=0.0, dy=0.0, size=31) -> np.ndarray:
    """A pixel-integrated PSF stamp.

    Parameters
    ----------
    fwhm_px : float
        Geometric-mean FWHM [px].
    e : float, optional
        Ellipticity ``1 - b/a`` (0-0.9).
    pa : float, optional
        Position angle of the major axis from +x towards +y [deg].
    dx, dy : float, optional
        Offset of the PSF centre from the centre of the stamp's central pixel ``[size//2, size//2]``
        [px].
    size : int, optional
        Odd stamp size [px].

    Returns
    -------
    `numpy.ndarray`
        ``(size, size)`` float32: the integrals over each pixel of the unit-flux PSF, so the stamp
        sums to the fraction of the light that falls inside it.

    Examples
    --------
    >>> s = psf_stamp(2.0, size=63)
    >>> print(f"{s.sum():.4f}")
    0.9999
    """
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"size must be a positive odd integer, got {size!r}")
    fwhm_px, e, pa, dx, dy = (float(v) for v in (fwhm_px, e, pa, dx, dy))
    if not fwhm_px > 0 or not 0 <= e < 1:
        raise ConfigError(f"need fwhm > 0 and 0 <= e < 1, got {fwhm_px!r}, {e!r}")
    return _moffat_stamps(np.array([fwhm_px]), np.array([e]), np.array([pa]),
                          np.array([dx]), np.array([dy]), size)[0]


def _moffat_edge_fraction(fwhm, e, half):
    """Surface brightness per unit flux at distance ``half`` along the major axis."""
    _, _, _, norm, a, _ = _moffat_coeffs(fwhm, e, 0.0)
    return norm * (1.0 + (half / a) ** 2) ** -PSF_BETA


def stamp_size(flux_e, fwhm, ellipticity=0.0, *, edge_e=0.2) -> np.ndarray:
    """Stamp size [px] that `render_sources` uses for point sources.

    Parameters
    ----------
    flux_e : float or array-like
        Total flux [e-].
    fwhm, ellipticity : float or array-like
        PSF FWHM [px] and ellipticity.
    edge_e : float, optional
        Largest PSF surface brightness allowed at the stamp edge (along the major axis) [e-/px].

    Returns
    -------
    `numpy.ndarray`
        The smallest of `STAMP_SIZES` meeting ``edge_e`` (the largest, 511, if none does), int.

    Examples
    --------
    >>> stamp_size([1e3, 1e5, 1e7], 2.2).tolist()
    [15, 31, 63]
    """
    flux, fwhm, ell = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (flux_e, fwhm, ellipticity)))
    out = np.full(flux.shape, STAMP_SIZES[-1], dtype=np.int64)
    for size in STAMP_SIZES[::-1]:
        ok = flux * _moffat_edge_fraction(fwhm, ell, size // 2) <= edge_e
        out[ok] = size
    return out


# --------------------------------------------------------------------------------------------------
# Galaxies: Sersic profiles as mixtures of Gaussians, rendered in Fourier space
# --------------------------------------------------------------------------------------------------

_MOG_SIGMA = np.logspace(-3.0, math.log10(4.0), 28)  # component sigmas [r_eff]
_N_STEP = 0.1
_N_GRID = np.round(np.arange(_SERSIC_N_RANGE[0], _SERSIC_N_RANGE[1] + 0.5 * _N_STEP, _N_STEP), 10)
_TABLE_LEN = 4096
_TABLE_TMAX = math.log1p(1e7)


def _sersic_truncation(n):
    return np.clip(4.0 + (np.asarray(n, dtype=float) - 1.0) * 4.0 / 3.0, 4.0, 8.0)


@functools.lru_cache(maxsize=None)
def _sersic_mog(n: float) -> np.ndarray:
    """Amplitudes (flux fractions) of the Gaussians of `_MOG_SIGMA` fitting a tapered Sersic profile."""
    from scipy.optimize import nnls
    from scipy.special import gammaincinv

    bn = gammaincinv(2.0 * n, 0.5)
    trunc = float(_sersic_truncation(n))
    r = np.logspace(-4.0, math.log10(trunc), 400)
    s = np.clip(trunc - r, 0.0, 1.0)
    prof = np.exp(-bn * (r ** (1.0 / n) - 1.0)) * s * s * (3.0 - 2.0 * s)
    basis = np.exp(-0.5 * (r[:, None] / _MOG_SIGMA) ** 2) / (2.0 * np.pi * _MOG_SIGMA**2)
    amp, _ = nnls(basis * r[:, None], prof * r, maxiter=20 * len(_MOG_SIGMA) * 10)
    return amp / amp.sum()


@functools.lru_cache(maxsize=None)
def _sersic_ft_row(i: int) -> np.ndarray:
    """Fourier transform of the MoG of ``_N_GRID[i]`` against t = ln(1 + Q), Q = r_eff**2 k**2."""
    amp = _sersic_mog(float(_N_GRID[i]))
    q = np.expm1(np.linspace(0.0, _TABLE_TMAX, _TABLE_LEN))
    return (amp[:, None] * np.exp(-0.5 * _MOG_SIGMA[:, None] ** 2 * q[None, :])).sum(axis=0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _moffat_ft_table():
    """Fourier transform of the unit circular Moffat (beta = 3): z**2 K_2(z) / 2, on z**2."""
    from scipy.special import kv

    z2 = np.linspace(0.0, 60.0**2, 200_001)
    z = np.sqrt(z2)
    val = np.ones_like(z)
    val[1:] = 0.5 * z2[1:] * kv(2, z[1:])
    return float(z2[1]), val.astype(np.float32)


def _moffat_ft(z2):
    dz2, table = _moffat_ft_table()
    u_ = z2 / dz2
    i0 = np.minimum(u_.astype(np.int64), len(table) - 2)
    fr = np.minimum(u_ - i0, 1.0).astype(np.float32)
    out = table[i0] * (1 - fr) + table[i0 + 1] * fr
    out[u_ >= len(table) - 1] = 0.0
    return out


def _sersic_ft(rows, nfrac, q2):
    """Sersic MoG transforms at ``q2`` = Q (n, ...), interpolated in t = ln(1 + Q) and in n.

    ``rows`` (n, 2) are the two `_N_GRID` rows bracketing each galaxy's index, ``nfrac`` (n,) the
    weight of the upper one.
    """
    uniq, inv = np.unique(rows, return_inverse=True)
    table = np.stack([_sersic_ft_row(int(i)) for i in uniq]).ravel()
    inv = inv.reshape(rows.shape)
    e = (len(rows),) + (1,) * (q2.ndim - 1)
    lo = (inv[:, 0] * _TABLE_LEN).reshape(e)
    hi = (inv[:, 1] * _TABLE_LEN).reshape(e)
    nf = nfrac.astype(np.float32).reshape(e)
    u_ = np.log1p(q2) * np.float32((_TABLE_LEN - 1) / _TABLE_TMAX)
    np.minimum(u_, _TABLE_LEN - 1.0001, out=u_)
    i0 = u_.astype(np.int64)
    fr = u_ - i0
    a = lo + i0
    b = hi + i0
    glo = table[a] * (1 - fr) + table[a + 1] * fr
    ghi = table[b] * (1 - fr) + table[b + 1] * fr
    return glo + (ghi - glo) * nf


def _galaxy_spectra(fx, fy, gal, psf):
    """Spectrum (without flux, phase, pixel) of galaxies at frequencies fx, fy [cycles/px]."""
    rows, nfrac, re2, q2g, cg, sg = gal
    A2, B2, cp, sp = psf
    kx = np.float32(2 * np.pi) * fx
    ky = np.float32(2 * np.pi) * fy
    ka = kx * cg + ky * sg
    kb = ky * cg - kx * sg
    g = _sersic_ft(rows, nfrac, re2 * (ka * ka + q2g * kb * kb))
    ka = kx * cp + ky * sp
    kb = ky * cp - kx * sp
    return g * _moffat_ft(A2 * ka * ka + B2 * kb * kb)


def _galaxy_fft_size(flux, lo, hi, nfrac, r_eff, q, fwhm_major, edge_e):
    """FFT stamp size of galaxies: the smallest of `_FFT_SIZES` whose edge is fainter than ``edge_e``.

    The surface brightness at distance ``h = S/2 - 1`` from the centre along the major axis is
    estimated as the galaxy's own profile at ``h - 1.5 fwhm`` plus the PSF wing of the whole flux at
    ``h - r_eff``; what lies beyond the stamp folds back in (periodic convolution).
    """
    uniq, inv = np.unique(np.stack([lo, hi]), return_inverse=True)
    amp = np.stack([_sersic_mog(float(_N_GRID[i])) for i in uniq])[inv.reshape(2, -1)]
    a = amp[0] * (1 - nfrac)[:, None] + amp[1] * nfrac[:, None]  # (n, ncomp)
    sizes = np.array(_FFT_SIZES, dtype=float)
    h = sizes / 2.0 - 1.0  # (L,)
    sig = _MOG_SIGMA[None, None, :] * r_eff[:, None, None]  # (n, 1, ncomp)
    rg = np.maximum(h[None, :] - 1.5 * fwhm_major[:, None], 0.0)[:, :, None]
    sb_gal = (a[:, None, :] * np.exp(-0.5 * (rg / sig) ** 2) / (2 * np.pi * sig**2 * q[:, None, None])).sum(-1)
    alpha = moffat_alpha(fwhm_major)[:, None]
    rp = np.maximum(h[None, :] - r_eff[:, None], 0.0)
    sb_psf = (PSF_BETA - 1) / (np.pi * alpha**2) * (1 + (rp / alpha) ** 2) ** -PSF_BETA
    ok = flux[:, None] * (sb_gal + sb_psf) <= edge_e
    idx = np.where(ok.any(axis=1), ok.argmax(axis=1), len(sizes) - 1)
    return sizes[idx].astype(np.int64)


def _render_galaxies(flat, ny, nx, x, y, flux, fwhm, ell, pa, n, r_eff, q, gpa, edge_e):
    """Add galaxies (arrays of equal length) into the flattened image."""
    ni = (np.clip(n, *_SERSIC_N_RANGE) - _SERSIC_N_RANGE[0]) / _N_STEP
    lo = np.clip(np.floor(ni).astype(np.int64), 0, len(_N_GRID) - 2)
    nfrac = np.clip(ni - lo, 0.0, 1.0)
    fwhm_major = fwhm / np.sqrt(1.0 - np.clip(ell, 0, _MAX_ELLIPTICITY))
    size = _galaxy_fft_size(flux, lo, lo + 1, nfrac, r_eff, q, fwhm_major, edge_e)
    # drop galaxies whose stamp misses the image entirely
    h = size / 2
    keep = np.flatnonzero((x + h >= -0.5) & (x - h <= nx - 0.5) & (y + h >= -0.5) & (y - h <= ny - 0.5))
    if not len(keep):
        return
    x, y, flux, fwhm, ell, pa, r_eff, q, gpa, lo, nfrac, size = (
        v[keep] for v in (x, y, flux, fwhm, ell, pa, r_eff, q, gpa, lo, nfrac, size)
    )
    rows = np.stack([lo, lo + 1], axis=1)
    _, _, _, _, pa_a, pa_b = _moffat_coeffs(fwhm, ell, pa)
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    dx, dy = x - ix, y - iy
    tg, tp = np.radians(gpa), np.radians(pa)
    params = dict(
        rows=rows, nfrac=nfrac, re2=r_eff**2, q2g=q**2, cg=np.cos(tg), sg=np.sin(tg),
        A2=pa_a**2, B2=pa_b**2, cp=np.cos(tp), sp=np.sin(tp),
    )
    # sources whose spectrum at the Nyquist frequency is not negligible get the first alias replicas
    nyq = np.float32(0.5)
    zero = np.float32(0.0)
    probe = np.maximum(
        np.abs(_spectra_for(params, np.arange(len(x)), np.full((len(x), 1, 1), nyq), np.full((len(x), 1, 1), zero))),
        np.abs(_spectra_for(params, np.arange(len(x)), np.full((len(x), 1, 1), zero), np.full((len(x), 1, 1), nyq))),
    ).reshape(-1) * (2.0 / np.pi)
    alias = (probe > _ALIAS_TOL).astype(np.int64) + (probe > _ALIAS_FULL)
    for s in np.unique(size):
        for al in (0, 1, 2):
            sel = np.flatnonzero((size == s) & (alias == al))
            if not len(sel):
                continue
            chunk = min(512, max(1, _CHUNK_ELEMENTS // (int(s) * (int(s) // 2 + 1) * (1 + 2 * al))))
            for i in range(0, len(sel), chunk):
                idx = sel[i:i + chunk]
                stamps = _galaxy_stamps(params, idx, int(s), dx[idx], dy[idx], flux[idx], al)
                h = int(s) // 2
                _accumulate(flat, ny, nx, ix[idx] - h, iy[idx] - h, stamps)


def _spectra_for(params, idx, fx, fy):
    e = (len(idx),) + (1,) * (fx.ndim - 1)
    f32 = lambda k: np.asarray(params[k][idx], dtype=np.float32).reshape(e)  # noqa: E731
    gal = (params["rows"][idx], params["nfrac"][idx], f32("re2"), f32("q2g"), f32("cg"), f32("sg"))
    psf = (f32("A2"), f32("B2"), f32("cp"), f32("sp"))
    return _galaxy_spectra(np.asarray(fx, np.float32), np.asarray(fy, np.float32), gal, psf)


def _galaxy_stamps(params, idx, s, dx, dy, flux, alias):
    """(n, s, s) float32 stamps of galaxies ``idx``; source at (s//2 + dx, s//2 + dy)."""
    n = len(idx)
    fy1 = np.fft.fftfreq(s).astype(np.float32)
    fx1 = np.fft.rfftfreq(s).astype(np.float32)
    h = s // 2
    px = (h + dx).astype(np.float32)[:, None]
    py = (h + dy).astype(np.float32)[:, None]

    def term(fx, fy):
        # separable pixel box and phase: sinc(fx) exp(-2 pi i fx px) x the same in y
        sx = np.sinc(fx)[None, :] * np.exp(np.complex64(-2j * np.pi) * fx[None, :] * px)
        sy = np.sinc(fy)[None, :] * np.exp(np.complex64(-2j * np.pi) * fy[None, :] * py)
        spec = _spectra_for(params, idx, np.broadcast_to(fx[None, None, :], (n, 1, len(fx))),
                            np.broadcast_to(fy[None, :, None], (n, len(fy), 1)))
        return spec * sy[:, :, None] * sx[:, None, :]

    spec = term(fx1, fy1)
    if alias:
        # Fold in the nearest replicas, m_x = -1 and m_y = -sign(f_y), where they matter: for
        # alias == 1 only |f| >= _ALIAS_BAND, whose replicas lie within 1 - _ALIAS_BAND of the
        # origin; for alias == 2 (very compact sources) everywhere.
        band = _ALIAS_BAND if alias == 1 else np.float32(0.0)
        cols = np.flatnonzero(fx1 >= band)
        rows = np.flatnonzero(np.abs(fy1) >= band)
        fxa = fx1[cols] - np.float32(1.0)
        fya = fy1[rows] - np.where(fy1[rows] >= 0, np.float32(1.0), np.float32(-1.0))
        spec[:, :, cols] += term(fxa, fy1)
        spec[:, rows, :] += term(fx1, fya)
        spec[:, rows[:, None], cols[None, :]] += term(fxa, fya)
    spec *= np.asarray(flux, dtype=np.float32)[:, None, None]
    return np.fft.irfft2(spec, s=(s, s)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _accumulate(flat, ny, nx, x_lo, y_lo, stamps):
    """Add stamps (n, m, m) with lower-left pixels (x_lo, y_lo) into the flattened image."""
    m = stamps.shape[1]
    ar = np.arange(m)
    ys = y_lo[:, None] + ar
    xs = x_lo[:, None] + ar
    inside = (x_lo >= 0) & (y_lo >= 0) & (x_lo + m <= nx) & (y_lo + m <= ny)
    if np.all(inside):
        idx = (ys[:, :, None] * nx + xs[:, None, :]).ravel()
        np.add.at(flat, idx, stamps.ravel())
        return
    vy = (ys >= 0) & (ys < ny)
    vx = (xs >= 0) & (xs < nx)
    valid = vy[:, :, None] & vx[:, None, :]
    idx = ys[:, :, None] * nx + xs[:, None, :]
    np.add.at(flat, idx[valid], stamps[valid])


def _render_points(flat, ny, nx, x, y, flux, fwhm, ell, pa, size):
    """Add point sources into the flattened image with the compiled kernel (`_render_points_numpy`
    is the reference it is tested against)."""
    A, B, C, norm, _, _ = _moffat_coeffs(fwhm, ell, pa)
    t_out, w_out = (v.astype(np.float64) for v in _gauss_legendre(2))
    t_core, w_core = (v.astype(np.float64) for v in _gauss_legendre(_CORE_NODES))
    f64 = lambda v: np.ascontiguousarray(np.broadcast_to(v, x.shape), dtype=np.float64)  # noqa: E731
    _simrender.add_moffat_points(flat.reshape(ny, nx), f64(x), f64(y), f64(flux), f64(A), f64(B), f64(C),
                                 f64(norm), np.ascontiguousarray(size, dtype=np.int_), _CORE_HALF,
                                 t_out, w_out, t_core, w_core)


def _render_points_numpy(flat, ny, nx, x, y, flux, fwhm, ell, pa, size):
    ix = np.floor(x + 0.5).astype(np.int64)
    iy = np.floor(y + 0.5).astype(np.int64)
    dx, dy = x - ix, y - iy
    for s in np.unique(size):
        sel = np.flatnonzero(size == s)
        s = int(s)
        h = s // 2
        chunk = max(1, _STAR_CHUNK_ELEMENTS // (4 * s * s))
        for i in range(0, len(sel), chunk):
            idx = sel[i:i + chunk]
            st = _moffat_stamps(fwhm[idx], ell[idx], pa[idx], dx[idx], dy[idx], s)
            st *= flux[idx].astype(np.float32)[:, None, None]
            _accumulate(flat, ny, nx, ix[idx] - h, iy[idx] - h, st)


def _prepare_out(shape, out):
    ny, nx = _check_shape(shape)
    if out is None:
        out = np.zeros((ny, nx), dtype=np.float32)
    elif out.shape != (ny, nx) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ConfigError(f"out must be a C-contiguous float32 array of shape {(ny, nx)}")
    return ny, nx, out


def render_sources(shape, x, y, flux_e, *, fwhm, ellipticity=0.0, pa=0.0, sersic_n=None, r_eff_px=None,
                   axis_ratio=None, gal_pa=None, out=None, edge_e=0.2) -> np.ndarray:
    """Noiseless image [e-] of stars and galaxies seen through the PSF.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    x, y : array-like
        0-based pixel positions of the sources (they may lie off the image; their light that falls on
        it is rendered).
    flux_e : array-like
        Total fluxes [e-], >= 0.
    fwhm, ellipticity, pa : float or array-like
        Local PSF per source (`psf_params`): FWHM [px], ``1 - b/a``, position angle [deg].
    sersic_n, r_eff_px, axis_ratio, gal_pa : array-like, optional
        Galaxy shape per source: Sersic index (0.5-8, clipped), semi-major half-light radius [px],
        axis ratio ``b/a`` (0.05-1) and position angle [deg]. A source is a galaxy where ``sersic_n``
        and ``r_eff_px`` are both finite and > 0; elsewhere (NaN or 0) a point source. ``axis_ratio``
        defaults to 1 and ``gal_pa`` to 0.
    out : `numpy.ndarray`, optional
        C-contiguous float32 image to add into (returned).
    edge_e : float, optional
        Stamp criterion [e-/px]: the largest surface brightness left at a stamp's edge, for stars
        (`stamp_size`) and galaxies.

    Returns
    -------
    `numpy.ndarray`
        float32 image [e-].
    """
    ny, nx, out = _prepare_out(shape, out)
    try:
        x, y, flux = _as_float_arrays(x, y, flux_e)
        x, y, flux = x.ravel(), y.ravel(), flux.ravel()
        nsrc = len(x)
        fwhm, ell, pa = (np.broadcast_to(np.asarray(v, dtype=float).ravel() if np.ndim(v) else float(v), (nsrc,))
                         for v in (fwhm, ellipticity, pa))
    except ValueError as exc:
        raise ConfigError(f"source arrays do not match: {exc}") from None
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(flux))):
        raise ConfigError("source positions and fluxes must be finite")
    if np.any(flux < 0):
        raise ConfigError("fluxes must be >= 0")
    if not (np.all(fwhm > 0) and np.all((ell >= 0) & (ell < 1)) and np.all(np.isfinite(pa))):
        raise ConfigError("need fwhm > 0, 0 <= ellipticity < 1 and finite pa")
    galaxy = np.zeros(nsrc, dtype=bool)
    if sersic_n is not None or r_eff_px is not None:
        if sersic_n is None or r_eff_px is None:
            raise ConfigError("give both sersic_n and r_eff_px for galaxies")
        sn = np.broadcast_to(np.asarray(sersic_n, dtype=float), (nsrc,))
        re = np.broadcast_to(np.asarray(r_eff_px, dtype=float), (nsrc,))
        q = np.broadcast_to(np.asarray(1.0 if axis_ratio is None else axis_ratio, dtype=float), (nsrc,))
        gp = np.broadcast_to(np.asarray(0.0 if gal_pa is None else gal_pa, dtype=float), (nsrc,))
        galaxy = np.isfinite(sn) & np.isfinite(re) & (sn > 0) & (re > 0)
        if np.any(galaxy & ~((q > 0) & (q <= 1) & np.isfinite(gp))):
            raise ConfigError("galaxies need 0 < axis_ratio <= 1 and finite gal_pa")
    # stars whose stamp misses the image are dropped here, galaxies in _render_galaxies
    flat = out.reshape(-1)
    star = ~galaxy & (flux > 0)
    if np.any(star):
        s = np.flatnonzero(star)
        size = stamp_size(flux[s], fwhm[s], ell[s], edge_e=edge_e)
        h = size // 2
        near = (x[s] + h >= -0.5) & (x[s] - h <= nx - 0.5) & (y[s] + h >= -0.5) & (y[s] - h <= ny - 0.5)
        s, size = s[near], size[near]
        _render_points(flat, ny, nx, x[s], y[s], flux[s], fwhm[s], ell[s], pa[s], size)
    g = np.flatnonzero(galaxy & (flux > 0))
    if len(g):
        q_ = np.clip(q[g], 0.05, 1.0)
        _render_galaxies(flat, ny, nx, x[g], y[g], flux[g], fwhm[g], ell[g], pa[g], sn[g], re[g], q_, gp[g],
                         edge_e)
    return out


def _clip_segment(x0, y0, x1, y1, xmin, xmax, ymin, ymax):
    """Liang-Barsky: parameter range [t0, t1] of the segment inside the box, or None."""
    t0, t1 = 0.0, 1.0
    dx, dy = x1 - x0, y1 - y0
    for p, qv in ((-dx, x0 - xmin), (dx, xmax - x0), (-dy, y0 - ymin), (dy, ymax - y0)):
        if p == 0:
            if qv < 0:
                return None
            continue
        r = qv / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 > t1:
            return None
    return t0, t1


def render_streak(shape, x0, y0, x1, y1, flux_e, fwhm, *, ellipticity=0.0, pa=0.0, out=None,
                  edge_e=0.2) -> np.ndarray:
    """Noiseless image [e-] of a trail: a uniform line segment convolved with the PSF.

    For fast-moving asteroids and satellite trails. The segment is sampled at the midpoints of
    sub-segments no longer than ``min(0.2, 0.1 fwhm)`` px, each rendered as a point source (exact
    pixel integration), so the line profile is exact to ~1e-4.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    x0, y0, x1, y1 : float
        0-based pixel coordinates of the start and end of the trail (either may be off the image).
    flux_e : float
        Total flux of the whole segment [e-] (the part off the image is lost).
    fwhm : float
        PSF FWHM [px].
    ellipticity, pa : float, optional
        PSF ellipticity and position angle [deg].
    out : `numpy.ndarray`, optional
        C-contiguous float32 image to add into (returned).
    edge_e : float, optional
        Largest line-profile surface brightness at the stamp edge [e-/px].

    Returns
    -------
    `numpy.ndarray`
        float32 image [e-].
    """
    ny, nx, out = _prepare_out(shape, out)
    x0, y0, x1, y1, flux, fwhm, ell, pa = (float(v) for v in (x0, y0, x1, y1, flux_e, fwhm, ellipticity, pa))
    if not all(map(math.isfinite, (x0, y0, x1, y1, flux))) or flux < 0 or not fwhm > 0 or not 0 <= ell < 1:
        raise ConfigError("render_streak needs finite end points, flux >= 0, fwhm > 0, 0 <= ellipticity < 1")
    length = math.hypot(x1 - x0, y1 - y0)
    if flux == 0:
        return out
    if length < 1e-6:
        return render_sources((ny, nx), [x0], [y0], [flux], fwhm=fwhm, ellipticity=ell, pa=pa, out=out,
                              edge_e=edge_e)
    # stamp size from the line-spread function of a Moffat: lambda * sqrt(pi) Gamma(beta - 1/2) /
    # Gamma(beta) * (beta - 1) / (pi alpha) * (1 + d**2 / alpha**2) ** (1/2 - beta)
    lam = flux / length
    _, _, _, _, a, _ = _moffat_coeffs(fwhm, ell, 0.0)
    a = float(a)
    lsf0 = lam * math.sqrt(math.pi) * math.gamma(PSF_BETA - 0.5) / math.gamma(PSF_BETA) * (PSF_BETA - 1) / (math.pi * a)
    size = STAMP_SIZES[-1]
    for s in STAMP_SIZES:
        if lsf0 * (1 + (s // 2 / a) ** 2) ** (0.5 - PSF_BETA) <= edge_e:
            size = s
            break
    h = size // 2
    clip = _clip_segment(x0, y0, x1, y1, -0.5 - h, nx - 0.5 + h, -0.5 - h, ny - 0.5 + h)
    if clip is None:
        return out
    t0, t1 = clip
    step = min(0.2, 0.1 * fwhm)
    nseg = max(1, int(math.ceil(length / step)))
    k0, k1 = int(math.floor(t0 * nseg)), int(math.ceil(t1 * nseg))
    t = (np.arange(k0, k1) + 0.5) / nseg
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    n = len(t)
    flat = out.reshape(-1)
    _render_points(flat, ny, nx, xs, ys, np.full(n, flux / nseg), np.full(n, fwhm), np.full(n, ell),
                   np.full(n, pa), np.full(n, size))
    return out


def sky_image(shape, sky_e, gradient=(0.0, 0.0), *, curvature=0.0) -> np.ndarray:
    """A smooth sky background [e-/px]: a plane plus gentle curvature.

    ``sky(x, y) = sky_e * (1 + gx * u + gy * v + curvature * (u**2 + v**2 - 1/6))`` with
    ``u = (x - (nx - 1) / 2) / nx`` and ``v = (y - (ny - 1) / 2) / ny`` (each spanning about
    -0.5..0.5), so ``gx``, ``gy`` are the fractional changes of the sky across the array and the
    image mean is ``sky_e`` (the curvature term averages to zero).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    sky_e : float
        Mean sky level [e-/px] (`sky_electrons_per_pixel`).
    gradient : (float, float), optional
        ``(gx, gy)``: fractional change of the sky from one edge of the array to the other along x
        and y (moonlight gives a few %).
    curvature : float, optional
        Fractional amplitude of the quadratic bowl (positive: brighter towards the edges).

    Returns
    -------
    `numpy.ndarray`
        float32 ``(ny, nx)``.

    Examples
    --------
    >>> im = sky_image((100, 200), 900.0, (0.02, -0.01))
    >>> print(f"{im.mean():.1f} {im[50, -1] - im[50, 0]:.1f}")
    900.0 17.9
    """
    ny, nx = _check_shape(shape)
    gx, gy = (float(v) for v in gradient)
    sky, c = float(sky_e), float(curvature)
    uu = ((np.arange(nx) - 0.5 * (nx - 1)) / nx).astype(np.float32)
    vv = ((np.arange(ny) - 0.5 * (ny - 1)) / ny).astype(np.float32)
    # exact mean of u**2 over the pixel grid, so the curvature term averages to zero
    row = np.float32(sky) * (1 + np.float32(gx) * uu + np.float32(c) * (uu * uu - np.float32(np.mean(uu * uu))))
    col = np.float32(sky) * (np.float32(gy) * vv + np.float32(c) * (vv * vv - np.float32(np.mean(vv * vv))))
    return (row[None, :] + col[:, None]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Flux scale
# --------------------------------------------------------------------------------------------------


def mag_to_electrons(mag, zp_dn, gain=6.0):
    """Electrons collected in an exposure from a magnitude and its DN zero point.

    ``DN = 10**(-0.4 (mag - zp_dn))``, ``e- = DN * gain``.

    Parameters
    ----------
    mag : float or array-like
        Magnitude(s).
    zp_dn : float
        Zero point of the exposure for counts in DN (MAGZP).
    gain : float, optional
        Gain [e-/DN].

    Returns
    -------
    float or `numpy.ndarray`

    Examples
    --------
    >>> print(f"{mag_to_electrons(20.0, 26.3):.1f}")
    1986.8
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - float(zp_dn))) * float(gain)


def sky_electrons_per_pixel(sky_mag, zp_dn, gain=6.0, pixscale=_SCALE_ARCSEC):
    """Sky electrons per pixel in an exposure from a surface brightness.

    Parameters
    ----------
    sky_mag : float or array-like
        Sky surface brightness [mag/arcsec^2].
    zp_dn : float
        Zero point of the exposure for counts in DN.
    gain : float, optional
        Gain [e-/DN].
    pixscale : float, optional
        Pixel scale [arcsec/px].

    Returns
    -------
    float or `numpy.ndarray`
        ``10**(-0.4 (sky_mag - zp_dn)) * pixscale**2 * gain``.

    Examples
    --------
    >>> print(f"{sky_electrons_per_pixel(21.15, 26.3):.0f}")
    706
    """
    return mag_to_electrons(sky_mag, zp_dn, gain) * float(pixscale) ** 2
