"""The astrometric solution of a quadrant: pointing prior, asterism match, distortion fit, QA.

`solve_wcs` turns a detection list, a Gaia-like reference catalogue (positions at the epoch of the
exposure) and a pointing prior into a WCS with ZTF's distortion model and quality keywords:

1. **Prior.** `prior_wcs` builds the prior from a science-image header: the telescope pointing
   (TELRAD/TELDECD, TELRA/TELDEC, RAD/DECD, OBJRAD/OBJDECD, OBJRA/OBJDEC or the FIELDID's grid centre,
   in that order), the CCD and quadrant, `ztfsds.camera.nominal_wcs`, shifted to a sub-array by
   LTV1/LTV2 (IRAF: full-quadrant pixel = pixel - LTV). Only the prior's linear part (CRVAL, CRPIX, CD)
   is used.
2. **Asterism match** (`ztfsds.astrom.match`). The reference stars near the image (the footprint
   grown by the search radius ``prior_offset`` and the rotation ``prior_rotation``) are projected with
   the prior; the brightest 60 clean detections are matched by triangle shapes against the brightest
   reference stars on the image, 1.5 times as many (plus as many as there are flagged, saturated,
   detections that bright), allowing a shift up to ``prior_offset``, a rotation up to
   ``prior_rotation`` and a 3 % scale error. The match must pair far more stars than chance does. If
   it fails, 120 detections are tried, then 120 against a reference list 5 times as deep (bright
   stars missing from the detections without a flag).
3. **Fit.** The model is a polynomial per axis from pixels to the standard coordinates of the tangent
   plane at CRVAL (`ztfsds.astrom.distortion`), fitted by weighted linear least squares; CRVAL moves to
   absorb the constant terms (CRPIX stays the prior's, the quadrant centre, unless it lies more than
   an image size away from the image centre: then the image centre). Starting from a linear fit
   to the asterism pairs, four rounds cross-match every clean detection with its nearest reference
   star in the tangent plane (one to one, within ``max(3 match_radius, 4 rms)`` capped at 10" in the
   first round, ``match_radius`` after) and refit with iterative ``clip_sigma`` clipping of the
   normalised residuals (scale from their median, at least 1: a residual the star's own error explains
   is never clipped). Weights are ``1 / sigma**2`` per axis with
   ``sigma**2 = (x_err * pixel scale)**2 + ref_error**2 + (20 mas)**2`` (x_err 0.1 px when the
   detections have no errors; the 20 mas floor keeps the brightest stars from dominating).
4. **Degree.** ``distortion_degree`` is lowered automatically until there are at least five matches
   per coefficient of each axis: degree ``d`` needs ``5 (d + 1)(d + 2) / 2`` matches (15 linear, 30
   quadratic, 50 cubic, 75 quartic). The header written is TPV (``RA---TPV``, CD + PV1_k/PV2_k) or SIP
   (``RA---TAN-SIP``; plain TAN at degree 1), and the returned WCS is read back from it.
5. **Verification and QA.** The residuals are recomputed through that WCS. The solution fails
   (``ok=False``, INFOBITS bit 12, no WCS) when there are fewer than 10 usable detections or reference
   stars, when no asterism match is found within the prior's bounds, when fewer than 10 stars (or not
   clearly more than chance) match in the end, when the per-axis RMS exceeds 0.5", or when the pixel
   scale differs from the prior's by more than 5 %. A solved WCS gets the quality bits of
   `~ztfsds.products.InfoBits` that apply: 14 (fewer than ``min_matches`` matches), 15 (a cell of a 4 x
   4 grid over the image holds fewer than 5 matches), 16 (pixel scale outside -0.2 %..+2.0 % of the
   prior's), 18 (ASTCHI2 > 55), 19 (largest cell median residual > 0.7"), 21 (fewer than 50 % of the
   smaller list, clean detections or reference stars on the image, matched).

Header cards (`AstromResult.header`): the WCS (WCSAXES, CTYPEi, CUNITi, RADESYS, CRPIXi, CRVALi,
CDi_j, PVi_k or A/B/AP/BP) and SCAMP's QA keywords as IPAC writes them: ASTROMN (matches used),
ASTRRMS1/ASTRRMS2 (RMS of the residuals against the reference in RA cos(Dec) and Dec of the brightest
third of the used matches, SCAMP's "high S/N" sample, deg),
ASTIRMS1/ASTIRMS2 (internal RMS between overlapping exposures: 0, one exposure, as in IPAC's
headers), ASTCHI2 (reduced chi-square of the fit); plus ztfsds's ASTMODEL, ASTDEG, ASTNDET, ASTNREF,
ASTMFRAC, ASTPXSCL, ASTOFFS, ASTROT. On failure the header holds the QA cards only (ASTROMN = 0).

Failure never raises on the runner path: the result says ``ok=False`` with a message, and
`AstromResult.raise_if_failed` raises `~ztfsds.errors.AstrometryError` (with the INFOBITS) for callers
that prefer an exception. Bad inputs (missing columns, a non-celestial prior) do raise.

Examples
--------
>>> import numpy as np
>>> from astropy.table import Table
>>> from ztfsds.camera import nominal_wcs
>>> from ztfsds.astrom.solve import solve_wcs
>>> truth = nominal_wcs(655, 13, 3)
>>> rng = np.random.default_rng(0)
>>> x, y = rng.uniform(0, 3071, 400), rng.uniform(0, 3079, 400)
>>> ra, dec = truth.all_pix2world(x, y, 0)
>>> reference = Table({"ra": ra, "dec": dec, "phot_g_mean_mag": rng.uniform(14, 20, 400)})
>>> detections = Table({"x": x, "y": y, "flux": 10 ** (-0.4 * (reference["phot_g_mean_mag"] - 25))})
>>> prior = truth.deepcopy()
>>> prior.wcs.crval = [prior.wcs.crval[0] + 0.02, prior.wcs.crval[1] - 0.01]
>>> result = solve_wcs(detections, reference, prior)
>>> result.ok, result.nmatches, result.degree
(True, 400, 3)
>>> result.rms_arcsec < 0.001
True
>>> result.header["CTYPE1"]
'RA---TPV'
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS

from .. import camera
from ..config import AstromParams
from ..errors import AstrometryError, InputError, MissingKeywordError
from ..products import InfoBits
from . import distortion as _dist
from .match import AsterismMatch, match_asterisms, pair_points

__all__ = [
    "AstromResult",
    "prior_wcs",
    "solve_wcs",
    "degree_for_matches",
    "QA_KEYWORDS",
    "MIN_STARS",
]

log = logging.getLogger(__name__)

#: Fewest usable detections / reference stars / final matches of a solution.
MIN_STARS = 10
#: Matches needed per polynomial coefficient (per axis) before a degree is used.
MATCHES_PER_COEFFICIENT = 5
#: Systematic error added in quadrature to every star's position error [arcsec].
SYSTEMATIC_FLOOR = 0.02
#: Assumed detection position error when the detections carry none [pix].
DEFAULT_DETECTION_ERROR = 0.1
#: A solution with a larger RMS per axis is rejected [arcsec].
MAX_RMS = 0.5
#: A solution whose pixel scale differs more from the prior's is rejected (fraction).
MAX_SCALE_ERROR = 0.05
#: Brightest clean detections used by the asterism match (then twice as many if that fails).
N_PATTERN = 60
#: Most reference stars offered to the asterism match.
MAX_PATTERN_REFERENCE = 3000
#: Grid of cells over the image for INFOBITS 15 and 19, and their thresholds.
QA_GRID = 4
MIN_CELL_MATCHES = 5
MAX_CELL_RESIDUAL = 0.7  # arcsec
#: INFOBITS 16: relative pixel scale (vs the prior's) allowed; 18: largest ASTCHI2; 21: least matched fraction.
PIXSCALE_RANGE = (-0.002, 0.020)
MAX_CHI2 = 55.0
MIN_MATCHED_FRACTION = 0.5

#: Header keywords `AstromResult.header` writes besides the WCS.
QA_KEYWORDS = ("ASTROMN", "ASTRRMS1", "ASTRRMS2", "ASTIRMS1", "ASTIRMS2", "ASTCHI2", "ASTMODEL", "ASTDEG",
               "ASTNDET", "ASTNREF", "ASTMFRAC", "ASTPXSCL", "ASTOFFS", "ASTROT")

_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|"
                      r"RADESYS|LONPOLE|LATPOLE|(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|A_DMAX|B_DMAX)$")
_ARCSEC = 3600.0


@dataclasses.dataclass
class AstromResult:
    """An astrometric solution (or the reason there is none).

    Attributes
    ----------
    ok : bool
        A verified solution was found.
    wcs : `~astropy.wcs.WCS` or None
        The solution, read back from ``header``; None when ``ok`` is False (never a wrong WCS).
    header : `~astropy.io.fits.Header`
        WCS cards (when ok) and QA cards (always).
    matches : `~astropy.table.QTable`
        One row per cross-matched pair of the last round: ``det_row``, ``ref_row`` (rows of the inputs),
        ``x``, ``y`` [pix], ``ra``, ``dec`` (reference) [deg], ``ra_fit``, ``dec_fit`` (the WCS at x, y)
        [deg], ``dra`` (on RA cos Dec), ``ddec`` (fit - reference) [arcsec], ``sigma`` (the position
        error of the pair per axis) [arcsec], ``mag`` (reference) [mag], ``used`` (False if clipped).
    rms_arcsec : float
        RMS residual per axis of the brightest third of the used matches (all of them when fewer
        than 30), ``sqrt((ASTRRMS1**2 + ASTRRMS2**2) / 2)`` [arcsec]; NaN on failure.
    rms_axes_arcsec : tuple of float
        RMS in RA cos(Dec) and in Dec [arcsec].
    nmatches : int
        Matches used in the final fit (ASTROMN).
    degree : int
        Polynomial degree fitted (after the automatic reduction).
    chi2 : float
        Reduced chi-square (ASTCHI2).
    infobits : int
        `~ztfsds.products.InfoBits` of the astrometry (to OR into the image's INFOBITS).
    message : str
        What happened, in words.
    transform : AsterismMatch or None
        The asterism match from the prior (None when matching was not attempted).
    """

    ok: bool
    wcs: WCS | None = dataclasses.field(repr=False)
    header: fits.Header = dataclasses.field(repr=False)
    matches: QTable = dataclasses.field(repr=False)
    rms_arcsec: float
    rms_axes_arcsec: tuple[float, float]
    nmatches: int
    degree: int
    chi2: float
    infobits: int
    message: str
    transform: AsterismMatch | None = dataclasses.field(default=None, repr=False)

    def raise_if_failed(self, product: str | None = None) -> AstromResult:
        """Raise `~ztfsds.errors.AstrometryError` (carrying ``infobits``) unless ok; return self.

        Parameters
        ----------
        product : str, optional
            The product the solution is for, named in the error.
        """
        if not self.ok:
            raise AstrometryError(self.message, infobits=self.infobits, product=product)
        return self

    def update_header(self, header: fits.Header) -> fits.Header:
        """Write the solution into an image header, in place.

        Every existing WCS keyword (the prior's CTYPE/CRPIX/CRVAL/CD/PC/CDELT/PV/SIP cards) and any
        earlier astrometric QA card is removed first, then ``self.header`` is appended and
        ``INFOBITS`` is OR-ed with ``self.infobits`` (created if absent). A failed solution leaves no
        WCS at all in the header, rather than a wrong one.

        Returns
        -------
        `~astropy.io.fits.Header`
            ``header`` itself.
        """
        for key in [k for k in header if _WCS_KEY.match(k) or k in QA_KEYWORDS]:
            del header[key]
        for card in self.header.cards:
            header.append(card)
        old = int(header.get("INFOBITS", 0))
        header["INFOBITS"] = (old | int(self.infobits), header.comments["INFOBITS"] if "INFOBITS" in header
                              else "image quality bits (BITnn legend)")
        return header


# --------------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------------

_POINTING_KEYS = (("TELRAD", "TELDECD"), ("TELRA", "TELDEC"), ("RAD", "DECD"), ("OBJRAD", "OBJDECD"),
                  ("OBJRA", "OBJDEC"))


def _angle(value, unit) -> float:
    if isinstance(value, str):
        return float(Angle(value.strip(), unit=unit).deg)
    return float(value) * (15.0 if unit is u.hourangle else 1.0)


def _header_pointing(header: fits.Header) -> SkyCoord:
    for ra_key, dec_key in _POINTING_KEYS:
        if ra_key in header and dec_key in header:
            ra_val, dec_val = header[ra_key], header[dec_key]
            try:
                if ra_key.endswith("D"):  # decimal degrees
                    ra, dec = float(ra_val), float(dec_val)
                else:  # sexagesimal hours / degrees, as the raw camera writes them
                    ra, dec = _angle(ra_val, u.hourangle), _angle(dec_val, u.deg)
            except (ValueError, TypeError):
                continue
            if np.isfinite(ra) and np.isfinite(dec) and abs(dec) <= 90.0:
                return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    if int(header.get("FIELDID", 0) or 0) > 0:
        return camera.field_center(int(header["FIELDID"]))
    raise MissingKeywordError(header.get("FILENAME"), "TELRA/TELDEC (or RAD/DECD, OBJRA/OBJDEC, FIELDID)")


def prior_wcs(header: fits.Header, *, rotation=0 * u.deg) -> WCS:
    """The pointing prior of a science quadrant (or sub-array) from its header.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        A sciimg header, or a raw primary header updated with the raw quadrant HDU's header: the
        pointing (TELRAD/TELDECD, TELRA/TELDEC, RAD/DECD, OBJRAD/OBJDECD, OBJRA/OBJDEC, else FIELDID's
        grid centre), CCDID or CCD_ID, QID (or RCID, or AMP_ID), optionally LTV1/LTV2 (a sub-array:
        full-quadrant pixel = pixel - LTV) and NAXIS1/NAXIS2.
    rotation : `~astropy.units.Quantity`, optional
        Focal-plane rotation of the prior (position angle) [angle].

    Returns
    -------
    `~astropy.wcs.WCS`
        `ztfsds.camera.nominal_wcs` at the pointing, with ``CRPIX += (LTV1, LTV2)`` and
        ``pixel_shape = (NAXIS1, NAXIS2)`` when the header has them.

    Raises
    ------
    ztfsds.errors.MissingKeywordError
        No pointing, CCD or quadrant in the header.

    Examples
    --------
    >>> from astropy.io import fits
    >>> h = fits.Header({"NAXIS": 2, "NAXIS1": 512, "NAXIS2": 512, "TELRA": "+03:40:14.59",
    ...                  "TELDEC": "+33:21:00.0", "CCD_ID": 13, "QID": 3, "LTV1": -1280.0, "LTV2": -1284.0})
    >>> w = prior_wcs(h)
    >>> w.wcs.crpix.tolist(), w.pixel_shape
    ([256.5, 256.5], (512, 512))
    """
    where = header.get("FILENAME")
    ccdid = header.get("CCDID", header.get("CCD_ID"))
    if ccdid is None:
        if "RCID" in header:
            ccdid = camera.ccd_quadrant(int(header["RCID"]))[0]
        else:
            raise MissingKeywordError(where, "CCDID")
    qid = header.get("QID")
    if qid is None:
        if "RCID" in header:
            qid = camera.ccd_quadrant(int(header["RCID"]))[1]
        elif "AMP_ID" in header:
            qid = camera.qid_from_amp(int(header["AMP_ID"]))
        else:
            raise MissingKeywordError(where, "QID")
    wcs = camera.nominal_wcs(_header_pointing(header), int(ccdid), int(qid), rotation=rotation)
    wcs.wcs.crpix = wcs.wcs.crpix + np.array([float(header.get("LTV1", 0.0)), float(header.get("LTV2", 0.0))])
    if int(header.get("NAXIS", 2)) >= 2 and "NAXIS1" in header and "NAXIS2" in header:
        wcs.pixel_shape = (int(header["NAXIS1"]), int(header["NAXIS2"]))
    wcs.wcs.set()
    return wcs


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _column(table: Table, name: str, unit=None, *, required: bool = True, what: str = "table"):
    if name not in table.colnames:
        if required:
            raise InputError(None, f"the {what} has no {name!r} column (columns: {', '.join(table.colnames)})")
        return None
    col = table[name]
    if unit is not None and getattr(col, "unit", None) is not None:
        try:
            return np.asarray(u.Quantity(col).to_value(unit), dtype=float)
        except u.UnitConversionError:
            raise InputError(None, f"{what} column {name!r} has unit {col.unit}, expected {unit}") from None
    return np.asarray(col, dtype=float)


def degree_for_matches(n: int, degree: int) -> int:
    """The polynomial degree used for ``n`` matches when ``degree`` is asked for.

    The largest ``d <= degree`` with ``n >= 5 (d + 1)(d + 2) / 2`` (five matches per coefficient of
    each axis), and at least 1.

    Examples
    --------
    >>> [degree_for_matches(n, 3) for n in (10, 30, 49, 50, 3000)]
    [1, 2, 2, 3, 3]
    """
    d = int(degree)
    while d > 1 and n < MATCHES_PER_COEFFICIENT * _dist.n_terms(d):
        d -= 1
    return max(d, 1)


@dataclasses.dataclass
class _Model:
    """Tangent-plane polynomial: (xi, eta) [deg] about crval = P((X - crpix) / scale)."""

    crval: np.ndarray
    crpix: np.ndarray
    scale: float
    degree: int
    cxi: np.ndarray
    ceta: np.ndarray

    def tangent(self, x0: np.ndarray, y0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xi, eta) [deg] of 0-based pixels."""
        a = _dist.design_matrix((x0 + 1.0 - self.crpix[0]) / self.scale, (y0 + 1.0 - self.crpix[1]) / self.scale,
                                self.degree)
        return np.einsum("ij,j->i", a, self.cxi), np.einsum("ij,j->i", a, self.ceta)

    def recentre(self) -> None:
        """Move CRVAL to the constant terms (the caller refits in the new tangent plane)."""
        ra, dec = camera.tangent_deproject(self.cxi[0], self.ceta[0], *self.crval)
        self.crval = np.array([float(ra), float(dec)])
        self.cxi = self.cxi.copy()
        self.ceta = self.ceta.copy()
        self.cxi[0] = self.ceta[0] = 0.0


def _wlstsq(a_all: np.ndarray, b: np.ndarray, w: np.ndarray, use: np.ndarray):
    """Weighted least squares on the rows ``use``; coefficients and every row's leverage.

    Normal equations with einsum: the problem is tall and thin (thousands x 10 at most, the powers of
    coordinates scaled to about [-1, 1], so well conditioned), and einsum keeps multi-threaded BLAS,
    whose thread start-up dominates such small products and stalls under load, out of the loop.
    """
    aw = a_all * w[:, None]
    au = aw[use]
    ninv = np.linalg.inv(np.einsum("ij,ik->jk", au, au))
    coeffs = ninv @ np.einsum("ij,i->j", au, b[use] * w[use])
    lev = np.einsum("ij,ij->i", np.einsum("ij,jk->ik", aw, ninv), aw)
    return coeffs, lev


def _fit(model: _Model, x0, y0, ra, dec, sx, sy, degree: int, clip_sigma: float, use=None):
    """Weighted least-squares fit of the polynomial with iterative clipping; returns (model, used mask).

    Clipping uses studentized residuals (a used star's residual over ``sqrt(1 - leverage)``, a clipped
    one's over ``sqrt(1 + leverage)``), so that one wrong pair at the edge of a small set cannot hide
    by pulling the fit towards itself. Without ``use``, the first selection is made on the residuals
    of the incoming ``model``, which none of these pairs has pulled.
    """
    xi, eta = camera.tangent_project(ra, dec, *model.crval)
    a_all = _dist.design_matrix((x0 + 1.0 - model.crpix[0]) / model.scale,
                                (y0 + 1.0 - model.crpix[1]) / model.scale, degree)
    wx, wy = 1.0 / sx, 1.0 / sy  # sqrt of the weights [1/deg]
    need = _dist.n_terms(degree) + 2
    if use is None:
        pxi, peta = model.tangent(x0, y0)
        chi = np.hypot((pxi - xi) * wx, (peta - eta) * wy)
        use = chi <= clip_sigma * max(np.median(chi) / 1.1774, 1.0)
        if use.sum() < need:
            use = np.ones(len(x0), dtype=bool)
    use = use.copy()
    if use.sum() < need:
        return model, use
    cxi = ceta = None
    for _ in range(10):
        try:
            cxi_new, hx = _wlstsq(a_all, xi, wx, use)
            ceta_new, hy = _wlstsq(a_all, eta, wy, use)
        except np.linalg.LinAlgError:  # degenerate star positions (all on a line...): keep the last fit
            break
        cxi, ceta = cxi_new, ceta_new
        sign = np.where(use, -1.0, 1.0)
        tx = (np.einsum("ij,j->i", a_all, cxi) - xi) * wx / np.sqrt(np.maximum(1.0 + sign * hx, 1e-3))
        ty = (np.einsum("ij,j->i", a_all, ceta) - eta) * wy / np.sqrt(np.maximum(1.0 + sign * hy, 1e-3))
        chi = np.hypot(tx, ty)
        # Rayleigh median -> sigma; never below the stated errors, so that no star is clipped for
        # a residual its own error explains (and noise-free data keep every star)
        spread = max(np.median(chi[use]) / 1.1774, 1.0)
        new = chi <= clip_sigma * spread
        if np.array_equal(new, use) or new.sum() < need:
            break
        use = new
    if cxi is None:
        return model, use
    fitted = _Model(model.crval.copy(), model.crpix, model.scale, degree, cxi, ceta)
    return fitted, use


def _pixel_scale(cd: np.ndarray) -> float:
    return float(math.sqrt(abs(np.linalg.det(cd)))) * _ARCSEC


def _empty_matches() -> QTable:
    t = QTable()
    for name, dtype, unit in (("det_row", np.int64, None), ("ref_row", np.int64, None), ("x", float, u.pix),
                              ("y", float, u.pix), ("ra", float, u.deg), ("dec", float, u.deg),
                              ("ra_fit", float, u.deg), ("dec_fit", float, u.deg), ("dra", float, u.arcsec),
                              ("ddec", float, u.arcsec), ("sigma", float, u.arcsec), ("mag", float, u.mag),
                              ("used", bool, None)):
        data = np.zeros(0, dtype=dtype)
        t[name] = data * unit if unit is not None else data
    return t


def _qa_cards(n: int, rms1: float, rms2: float, chi2: float, model: str, degree: int, ndet: int, nref: int,
              frac: float, pixscale: float, offset: float, rotation: float) -> list[fits.Card]:
    def num(v, digits=6):
        return float(round(v, digits)) if np.isfinite(v) else -9999.0

    return [
        fits.Card("ASTROMN", int(n), "Number of astrometric matches used"),
        fits.Card("ASTRRMS1", num(rms1 / _ARCSEC, 12), "Astrom. dispersion RMS (ref., high S/N) [deg]"),
        fits.Card("ASTRRMS2", num(rms2 / _ARCSEC, 12), "Astrom. dispersion RMS (ref., high S/N) [deg]"),
        fits.Card("ASTIRMS1", 0.0, "Astrom. dispersion RMS (intern.; one exposure)"),
        fits.Card("ASTIRMS2", 0.0, "Astrom. dispersion RMS (intern.; one exposure)"),
        fits.Card("ASTCHI2", num(chi2, 4), "Reduced chi-square of the astrometric fit"),
        fits.Card("ASTMODEL", model, "ztfsds distortion model"),
        fits.Card("ASTDEG", int(degree), "Distortion polynomial degree fitted"),
        fits.Card("ASTNDET", int(ndet), "Clean detections offered to the astrometry"),
        fits.Card("ASTNREF", int(nref), "Reference stars on the image"),
        fits.Card("ASTMFRAC", num(frac, 4), "Matched fraction of the smaller list"),
        fits.Card("ASTPXSCL", num(pixscale, 6), "Pixel scale at CRPIX [arcsec/pix]"),
        fits.Card("ASTOFFS", num(offset, 3), "Solution - prior, at image centre [arcsec]"),
        fits.Card("ASTROT", num(rotation, 4), "Solution - prior rotation [deg]"),
    ]


def _wcs_cards(model: _Model, kind: str, shape) -> tuple[list[fits.Card], np.ndarray]:
    if kind == "tpv":
        cd, pv1, pv2 = _dist.poly_to_tpv(model.cxi, model.ceta, model.degree, model.scale)
        return _dist.tpv_cards(model.crval, model.crpix, cd, pv1, pv2), cd
    cd, a, b, ap, bp = _dist.poly_to_sip(model.cxi, model.ceta, model.degree, model.scale, shape=shape,
                                          crpix=model.crpix)
    if model.degree < 2:
        cards = _dist.tpv_cards(model.crval, model.crpix, cd, {}, {})
        cards[1] = fits.Card("CTYPE1", "RA---TAN", cards[1].comment)
        cards[2] = fits.Card("CTYPE2", "DEC--TAN", cards[2].comment)
        return cards, cd
    return _dist.sip_cards(model.crval, model.crpix, cd, a, b, ap, bp), cd


def _grid_stats(x0, y0, resid, shape) -> tuple[int, float]:
    """Fewest matches in a cell of the QA grid, and the largest cell median residual [arcsec]."""
    nx, ny = shape
    cx = np.clip((x0 + 0.5) * QA_GRID // nx, 0, QA_GRID - 1).astype(int)
    cy = np.clip((y0 + 0.5) * QA_GRID // ny, 0, QA_GRID - 1).astype(int)
    cell = cy * QA_GRID + cx
    counts = np.bincount(cell, minlength=QA_GRID * QA_GRID)
    worst = 0.0
    for c in np.flatnonzero(counts):
        worst = max(worst, float(np.median(resid[cell == c])))
    return int(counts.min()), worst


# --------------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------------


def solve_wcs(detections: Table, reference: Table, prior: WCS, *, params: AstromParams | None = None,
              mag_column: str = "phot_g_mean_mag") -> AstromResult:
    """Astrometric solution of a quadrant from its detections, a reference catalogue and a prior.

    Parameters
    ----------
    detections : `~astropy.table.Table`
        ``x``, ``y`` (0-based pixels: the centre of array element [0, 0] is (0, 0)), ``flux`` (any
        positive brightness), optionally ``x_err``, ``y_err`` [pix] and ``flags`` (0 = clean; others are
        not used). Any order.
    reference : `~astropy.table.Table`
        ``ra``, ``dec`` [deg] at the epoch of the exposure, optionally ``ra_error`` (on RA cos Dec),
        ``dec_error`` [mas], and the magnitude column ``mag_column``. It may cover more sky than the
        image: only stars near the prior's footprint are used.
    prior : `~astropy.wcs.WCS`
        The pointing prior (`prior_wcs`); its linear part is used, and its ``pixel_shape`` (else the
        extent of the detections) is the image size.
    params : `~ztfsds.config.AstromParams`, optional
        ``prior_offset``, ``prior_rotation``, ``match_radius``, ``distortion``, ``distortion_degree``,
        ``clip_sigma``, ``min_matches``.
    mag_column : str, optional
        Magnitude column of ``reference`` (brightest stars are matched first).

    Returns
    -------
    AstromResult
        ``ok=False`` with INFOBITS bit 12 and a message (and no WCS) when no trustworthy solution
        exists; see the module documentation for the tests.

    Raises
    ------
    ztfsds.errors.InputError
        A required column is missing or has the wrong unit; the prior is not a celestial WCS.
    """
    params = AstromParams() if params is None else params
    # --- inputs -----------------------------------------------------------------------------------
    dx = _column(detections, "x", u.pix, what="detection table")
    dy = _column(detections, "y", u.pix, what="detection table")
    flux = _column(detections, "flux", what="detection table")
    dxe = _column(detections, "x_err", u.pix, required=False)
    dye = _column(detections, "y_err", u.pix, required=False)
    flags = detections["flags"] if "flags" in detections.colnames else None
    clean = np.isfinite(dx) & np.isfinite(dy) & np.isfinite(flux) & (flux > 0)
    if flags is not None:
        clean &= np.asarray(flags) == 0
    det_rows = np.flatnonzero(clean)
    det_rows = det_rows[np.argsort(-flux[det_rows], kind="stable")]
    x0, y0 = dx[det_rows], dy[det_rows]
    if dxe is not None and dye is not None:
        ex, ey = dxe[det_rows], dye[det_rows]
        bad = ~(np.isfinite(ex) & np.isfinite(ey) & (ex > 0) & (ey > 0))
        ex, ey = np.where(bad, DEFAULT_DETECTION_ERROR, ex), np.where(bad, DEFAULT_DETECTION_ERROR, ey)
    else:
        ex = ey = np.full(len(det_rows), DEFAULT_DETECTION_ERROR)

    ra_all = _column(reference, "ra", u.deg, what="reference catalog")
    dec_all = _column(reference, "dec", u.deg, what="reference catalog")
    mag_all = _column(reference, mag_column, u.mag, what="reference catalog")
    rae = _column(reference, "ra_error", u.mas, required=False)
    dece = _column(reference, "dec_error", u.mas, required=False)

    if not prior.has_celestial or prior.wcs.lng != 0 or prior.wcs.lat != 1:
        raise InputError(None, f"the prior must be a celestial WCS with RA on axis 1, got {list(prior.wcs.ctype)}")
    crval = np.array(prior.wcs.crval, float)
    crpix = np.array(prior.wcs.crpix, float)
    cd = np.array(prior.pixel_scale_matrix, float)
    if prior.pixel_shape is not None:
        shape = tuple(int(v) for v in prior.pixel_shape)
    elif len(x0):
        shape = (int(np.ceil(x0.max())) + 1, int(np.ceil(y0.max())) + 1)
    else:
        shape = (1, 1)
    nx, ny = shape
    prior_scale = _pixel_scale(cd)  # arcsec/pix
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])

    # reference stars projected with the prior; keep those that can fall on the image
    good_ref = np.isfinite(ra_all) & np.isfinite(dec_all)
    xi, eta = camera.tangent_project(ra_all, dec_all, *crval)
    if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0.0:
        raise InputError(None, f"the prior's CD matrix is singular: {cd.tolist()}")
    cd_inv = np.linalg.inv(cd)
    px = cd_inv[0, 0] * xi + cd_inv[0, 1] * eta + crpix[0] - 1.0
    py = cd_inv[1, 0] * xi + cd_inv[1, 1] * eta + crpix[1] - 1.0
    max_shift = params.prior_offset / prior_scale
    margin = max_shift + 0.5 * math.hypot(nx, ny) * math.radians(params.prior_rotation) + 10.0
    d0, r0 = np.radians(crval[1]), np.radians(crval[0])
    dr = np.radians(dec_all)
    cos_sep = np.sin(d0) * np.sin(dr) + np.cos(d0) * np.cos(dr) * np.cos(np.radians(ra_all) - r0)
    near = (good_ref & (cos_sep > 0.5)  # the gnomonic projection folds the far hemisphere onto the image
            & (px > -margin) & (px < nx - 1 + margin) & (py > -margin) & (py < ny - 1 + margin))
    ref_rows = np.flatnonzero(near)
    mag_sort = np.where(np.isfinite(mag_all[ref_rows]), mag_all[ref_rows], np.inf)
    ref_rows = ref_rows[np.argsort(mag_sort, kind="stable")]
    rpx, rpy = px[ref_rows], py[ref_rows]
    on_image = (rpx >= -0.5) & (rpx <= nx - 0.5) & (rpy >= -0.5) & (rpy <= ny - 0.5)
    n_ref_on = int(on_image.sum())
    ndet = len(det_rows)

    def failure(message: str, bits: int, transform=None) -> AstromResult:
        bits |= int(InfoBits.ASTROM_FAILED)
        header = fits.Header(_qa_cards(0, math.nan, math.nan, math.nan, params.distortion.upper(), 0, ndet,
                                       n_ref_on, 0.0, math.nan, math.nan, math.nan))
        log.warning("astrometry failed: %s", message)
        return AstromResult(False, None, header, _empty_matches(), math.nan, (math.nan, math.nan), 0, 0, math.nan,
                            bits, message, transform)

    few = int(InfoBits.FEW_ASTROM_MATCHES)
    if ndet < MIN_STARS:
        return failure(f"too few clean detections: {ndet} < {MIN_STARS}", few)
    if n_ref_on < MIN_STARS:
        return failure(f"too few reference stars on the image: {n_ref_on} < {MIN_STARS} "
                       f"({len(ref_rows)} within the search margin)", few)

    # --- asterism match ----------------------------------------------------------------------------
    match_px = params.match_radius / prior_scale
    radius_px = max(3.0, 2.0 * match_px)
    transform = None
    on_rows = np.flatnonzero(on_image)  # positions in the magnitude-sorted list
    all_flux = np.where(np.isfinite(flux), flux, -np.inf)
    for n_det_pat, depth in ((N_PATTERN, 1.5), (2 * N_PATTERN, 1.5), (2 * N_PATTERN, 5.0)):
        # the brightest clean detections against the brightest reference stars, about 1.5 times as
        # many (colours, variability and missing counterparts shuffle the order) plus the flagged
        # (saturated) detections as bright; the last try goes deeper in the reference list, for
        # bright stars missing from the detections without a flag
        n_det_pat = min(n_det_pat, ndet)
        n_flagged = int(np.sum(all_flux >= flux[det_rows[n_det_pat - 1]])) - n_det_pat
        n_ref_target = min(round(depth * (n_det_pat + n_flagged)), n_ref_on)
        pat_ref = np.arange(min(on_rows[n_ref_target - 1] + 1, MAX_PATTERN_REFERENCE))
        det_xy = np.column_stack([x0[:n_det_pat], y0[:n_det_pat]])
        ref_xy = np.column_stack([rpx[pat_ref], rpy[pat_ref]])
        transform = match_asterisms(det_xy, ref_xy, center=centre, max_shift=max_shift,
                                    max_rotation=params.prior_rotation, radius=radius_px)
        if transform.ok:
            break
    if not transform.ok:
        return failure(f"no asterism match with the reference stars within {params.prior_offset:.0f}\" and "
                       f"{params.prior_rotation:.2f} deg of the prior: {transform.message}", 0, transform)

    # --- initial linear solution from the asterism pairs ----------------------------------------------
    scale = float(max(nx, ny)) / 2.0
    # the polynomial is about CRPIX: keep the prior's (the quadrant centre) unless it is far off the
    # image (a corner cut-out), where powers of (X - CRPIX) / scale would be ill-conditioned
    fit_crpix = crpix.copy()
    if np.any(np.abs(crpix - 1.0 - centre) > np.array([nx, ny])):
        fit_crpix = centre + 1.0
    model = _Model(crval.copy(), fit_crpix, scale, 1, np.zeros(3), np.zeros(3))
    pi, pr = transform.det_index, ref_rows[pat_ref[transform.ref_index]]
    t_res = transform.rms * prior_scale  # arcsec
    sig = np.full(len(pi), max(t_res, 0.1) / _ARCSEC)
    everything = np.ones(len(pi), dtype=bool)
    for _ in range(2):
        model, _kept = _fit(model, x0[pi], y0[pi], ra_all[pr], dec_all[pr], sig, sig, 1, 5.0, use=everything)
        model.recentre()

    # --- cross-match and fit -----------------------------------------------------------------------
    ref_ra, ref_dec = ra_all[ref_rows], dec_all[ref_rows]
    ref_sx = rae[ref_rows] / 1000.0 if rae is not None else np.zeros(len(ref_rows))  # arcsec
    ref_sy = dece[ref_rows] / 1000.0 if dece is not None else np.zeros(len(ref_rows))
    ref_sx = np.where(np.isfinite(ref_sx), ref_sx, 0.0)
    ref_sy = np.where(np.isfinite(ref_sy), ref_sy, 0.0)
    first_radius = min(max(3.0 * params.match_radius, 4.0 * t_res), 10.0)
    radii = (first_radius, params.match_radius, params.match_radius, params.match_radius)
    degree = 1
    npairs = 0
    for k, radius in enumerate(radii):
        rxi, reta = camera.tangent_project(ref_ra, ref_dec, *model.crval)
        txi, teta = model.tangent(x0, y0)
        di, rj, _ = pair_points(np.column_stack([txi, teta]) * _ARCSEC, np.column_stack([rxi, reta]) * _ARCSEC,
                                radius)
        npairs = len(di)
        degree = degree_for_matches(len(di), params.distortion_degree)
        if k == 0:
            degree = min(degree, 2)
        if len(di) < MIN_STARS:
            break
        sx = np.sqrt((ex[di] * prior_scale) ** 2 + ref_sx[rj] ** 2 + SYSTEMATIC_FLOOR**2) / _ARCSEC
        sy = np.sqrt((ey[di] * prior_scale) ** 2 + ref_sy[rj] ** 2 + SYSTEMATIC_FLOOR**2) / _ARCSEC
        model, used = _fit(model, x0[di], y0[di], ref_ra[rj], ref_dec[rj], sx, sy, degree, params.clip_sigma)
        for _ in range(3):  # CRVAL takes the constant terms; refit in the new tangent plane
            if max(abs(model.cxi[0]), abs(model.ceta[0])) < 1e-10:
                break
            model.recentre()
            model, used = _fit(model, x0[di], y0[di], ref_ra[rj], ref_dec[rj], sx, sy, degree, params.clip_sigma,
                               use=used)
    nused = int(used.sum()) if len(di) >= MIN_STARS else 0
    degree = model.degree  # lower than asked if the last fit had too few stars to run
    # pairs expected by chance: every detection meets the reference density within the radius
    lam = ndet * n_ref_on / float(nx * ny) * math.pi * (params.match_radius / prior_scale) ** 2
    if nused < MIN_STARS or nused < lam + 5.0 * math.sqrt(lam) + 3.0:
        kept = f"{nused} kept by the fit, " if npairs >= MIN_STARS else ""
        return failure(f"only {npairs} stars matched within {params.match_radius}\" ({kept}{lam:.1f} expected by "
                       f"chance; {len(transform.det_index)} paired by the asterism match)", few, transform)
    model.cxi[0] = model.ceta[0] = 0.0

    # --- the WCS, read back from its header, and the verification --------------------------------------
    kind = params.distortion
    try:
        wcs_cards, cd_fit = _wcs_cards(model, kind, shape)
    except np.linalg.LinAlgError:
        return failure("the fitted linear transformation is singular", 0, transform)
    with np.errstate(all="ignore"):
        wcs = WCS(fits.Header(wcs_cards))
    wcs.pixel_shape = shape
    mx, my = x0[di], y0[di]
    fra, fdec = wcs.all_pix2world(mx, my, 0)
    mra, mdec = ref_ra[rj], ref_dec[rj]
    dra = ((fra - mra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(mdec)) * _ARCSEC
    ddec = (fdec - mdec) * _ARCSEC
    # SCAMP's ASTRRMS is measured on high-S/N sources: the brightest third of the used matches here
    # (detections are sorted by flux, so the lowest detection indices are the brightest)
    bright = np.flatnonzero(used)
    if len(bright) >= 3 * MIN_STARS:
        bright = bright[np.argsort(di[bright], kind="stable")[: len(bright) // 3]]
    rms1 = float(np.sqrt(np.mean(dra[bright] ** 2)))
    rms2 = float(np.sqrt(np.mean(ddec[bright] ** 2)))
    rms = math.sqrt(0.5 * (rms1**2 + rms2**2))
    rms_all = float(np.sqrt(0.5 * np.mean(dra[used] ** 2 + ddec[used] ** 2)))
    sx_as, sy_as = sx * _ARCSEC, sy * _ARCSEC
    dof = max(2 * nused - 2 * _dist.n_terms(degree), 1)
    chi2 = float(np.sum((dra[used] / sx_as[used]) ** 2 + (ddec[used] / sy_as[used]) ** 2) / dof)
    pixscale = _pixel_scale(cd_fit)
    rel_scale = pixscale / prior_scale - 1.0
    # offset and rotation of the solution against the prior, at the image centre
    cra, cdec = wcs.all_pix2world([centre[0]], [centre[1]], 0)
    pxi, peta = camera.tangent_project(cra, cdec, *crval)
    pcen = cd @ (centre + 1.0 - crpix)
    offset = float(np.hypot(pxi[0] - pcen[0], peta[0] - pcen[1])) * _ARCSEC
    turn = cd_fit @ np.linalg.inv(cd)  # rotation in (xi east, eta north); a position angle turns the other way
    rot = -float(np.degrees(np.arctan2(turn[1, 0] - turn[0, 1], turn[0, 0] + turn[1, 1])))
    frac = nused / max(min(ndet, n_ref_on), 1)

    if max(rms, rms_all) > MAX_RMS:
        return failure(f"the fit's RMS {max(rms, rms_all):.3f}\" per axis exceeds {MAX_RMS}\" ({nused} matches)",
                       0, transform)
    if abs(rel_scale) > MAX_SCALE_ERROR:
        return failure(f"the fitted pixel scale {pixscale:.4f}\"/px is {rel_scale:+.1%} off the prior's",
                       int(InfoBits.PIXSCALE_OUT_OF_RANGE), transform)

    bits = 0
    # ZTF's 100 matches are a full quadrant's; a sub-array (the tests', the demo's) needs its share
    # of them (at least 10)
    area = float(shape[0]) * float(shape[1]) / (camera.QUADRANT_SHAPE[0] * camera.QUADRANT_SHAPE[1])
    if nused < max(min(params.min_matches, math.ceil(params.min_matches * area)), min(10, params.min_matches)):
        bits |= int(InfoBits.FEW_ASTROM_MATCHES)
    min_cell, worst_cell = _grid_stats(mx[used], my[used], np.hypot(dra[used], ddec[used]), shape)
    if min_cell < MIN_CELL_MATCHES:
        bits |= int(InfoBits.FEW_INGRID_ASTROM_MATCHES)
    if not PIXSCALE_RANGE[0] <= rel_scale <= PIXSCALE_RANGE[1]:
        bits |= int(InfoBits.PIXSCALE_OUT_OF_RANGE)
    if chi2 > MAX_CHI2:
        bits |= int(InfoBits.HIGH_ASTROM_CHI2)
    if worst_cell > MAX_CELL_RESIDUAL:
        bits |= int(InfoBits.HIGH_INGRID_ASTROM_RESID)
    if frac < MIN_MATCHED_FRACTION:
        bits |= int(InfoBits.LOW_ASTROM_DETECTED_PCT)

    header = fits.Header(wcs_cards)
    model_name = "TPV" if kind == "tpv" else ("SIP" if degree >= 2 else "TAN")
    for card in _qa_cards(nused, rms1, rms2, chi2, model_name, degree, ndet, n_ref_on, frac, pixscale, offset, rot):
        header.append(card)

    matches = QTable()
    matches["det_row"] = det_rows[di]
    matches["ref_row"] = ref_rows[rj]
    matches["x"] = mx * u.pix
    matches["y"] = my * u.pix
    matches["ra"] = mra * u.deg
    matches["dec"] = mdec * u.deg
    matches["ra_fit"] = fra * u.deg
    matches["dec_fit"] = fdec * u.deg
    matches["dra"] = dra * u.arcsec
    matches["ddec"] = ddec * u.arcsec
    matches["sigma"] = np.hypot(sx_as, sy_as) / math.sqrt(2.0) * u.arcsec
    matches["mag"] = mag_all[ref_rows[rj]] * u.mag
    matches["used"] = used
    message = (f"{model_name} degree {degree}: {nused} matches ({len(di) - nused} clipped), RMS "
               f"{rms1 * 1000:.0f}/{rms2 * 1000:.0f} mas (brightest third; all {rms_all * 1000:.0f} mas), "
               f"chi2 {chi2:.2f}, prior off by {offset:.1f}\" and {rot:+.3f} deg")
    if bits:
        message += "; INFOBITS " + ", ".join(InfoBits.describe(bits))
    log.info("astrometry: %s", message)
    return AstromResult(True, wcs, header, matches, rms, (rms1, rms2), nused, degree, chi2, bits, message, transform)
