"""Photometric calibration against PS1-like stars: zero point, colour term and limiting magnitude.

IPAC calibrates the PSF-fit photometry of every quadrant against Pan-STARRS1 PSF magnitudes with a linear
colour term (ZTF_REFERENCE section 2.4)::

    m_PS1 - m_inst = MAGZP + CLRCOEFF * colour,      m_inst = -2.5 log10(flux [DN])

with ``colour = g - r`` for zg and zr and ``r - i`` for zi (``PCOLOR``). `photometric_calibration`
matches the PSF catalog to the PS1-like catalog, keeps clean unsaturated stars of good S/N within the
colour range of the stellar locus, and fits the line by weighted least squares with iterative
``zp_clip_sigma`` rejection. It records what the real header records:

=========  =====================================================================================
MAGZP      intercept [mag] (the zero point of a source of colour 0)
MAGZPUNC   its 1-sigma uncertainty [mag]: the fit's covariance scaled by the reduced chi2 when
           that exceeds 1 (IPAC's formal value, ~4e-6 mag on a real quadrant, is not scaled)
MAGZPRMS   robust RMS of the residuals of the fitted line [mag]
CLRCOEFF   colour coefficient; CLRCOUNC its uncertainty; ZPCLRCOV the covariance [mag^2]
PCOLOR     the colour used ('g - R' for zg and zr, 'R - i' for zi, as IPAC writes it)
NMATCHES   calibrators used in the final fit
ZPMED      median of ``m_PS1 - m_inst`` (no colour term); ZPAVG the clipped mean; ZPRMSALL their RMS
CLRMED     median calibrator colour; CLRAVG mean; CLRRMS RMS [mag]
=========  =====================================================================================

and INFOBITS 8 (calibration not possible), 9 (fewer than ``min_calibrators`` calibrators in the final
fit), 10 (fewer than 5 calibrators matched) and 11 (MAGZPRMS > 0.2 mag).

A calibrated magnitude of a source of known PS1 colour ``c`` is ``MAGZP - 2.5 log10(flux) + CLRCOEFF c``;
the catalogs' ``mag`` columns are ``MAGZP - 2.5 log10(flux)`` (colour 0), as IPAC's.

`limiting_magnitude` is MAGLIM as IPAC defines it, from the PSF catalog's uncertainties: the magnitude
of a source measured at S/N 5, from a robust fit of the flux variance against flux; `empirical_limiting_magnitude` is the 5-sigma limit of a point
source from the background noise and the PSF's noise-equivalent area (INFOBITS bit 5).

Examples
--------
>>> import numpy as np
>>> from ztfsds.photom.photcal import limiting_magnitude
>>> flux = np.geomspace(20, 2000, 200)                      # [DN]
>>> flux_err = np.sqrt(30.0**2 + flux / 6.0)                  # background + shot noise
>>> f5 = (25 / 6 + np.sqrt((25 / 6) ** 2 + 100 * 30.0**2)) / 2   # f5 = 5 sqrt(900 + f5 / 6)
>>> print(f"{limiting_magnitude(flux, flux_err, 26.3):.3f}", f"{26.3 - 2.5 * np.log10(f5):.3f}")
20.845 20.845
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from ..camera import get_filter
from ..config import PhotomParams
from ..products import InfoBits

__all__ = ["PhotCalResult", "photometric_calibration", "limiting_magnitude",
           "empirical_limiting_magnitude", "PHOTCAL_INFOBITS", "COLOURS"]

log = logging.getLogger(__name__)

#: INFOBITS the calibration sets (8-11).
PHOTCAL_INFOBITS = int(InfoBits.PHOTCAL_FAILED | InfoBits.FEW_PHOTCAL_CALIBRATORS
                       | InfoBits.FEW_PHOTCAL_MATCHES | InfoBits.HIGH_PHOTCAL_RMS)

#: PS1 colour of each filter's colour term: (blue column, red column, PCOLOR as IPAC writes it).
COLOURS = {"zg": ("gmag", "rmag", "g - R"), "zr": ("gmag", "rmag", "g - R"), "zi": ("rmag", "imag", "R - i")}

#: PS1 band each filter is calibrated against.
_BAND = {"zg": "gmag", "zr": "rmag", "zi": "imag"}

_SN5_MAGERR = 2.5 / math.log(10.0) / 5.0


@dataclass
class PhotCalResult:
    """The outcome of `photometric_calibration` (header values; NaN where not measured).

    ``matches`` is the table of calibrators (``ps1_mag``, ``inst_mag``, ``inst_magerr``, ``colour``,
    ``resid``, ``used``) for QA plots.
    """

    ok: bool
    infobits: int = 0
    message: str = ""
    magzp: float = float("nan")
    magzpunc: float = float("nan")
    magzprms: float = float("nan")
    clrcoeff: float = float("nan")
    clrcounc: float = float("nan")
    zpclrcov: float = float("nan")
    pcolor: str = ""
    nmatches: int = 0
    ncalibrators: int = 0
    zpmed: float = float("nan")
    zpavg: float = float("nan")
    zprmsall: float = float("nan")
    clrmed: float = float("nan")
    clravg: float = float("nan")
    clrrms: float = float("nan")
    matches: Table = field(default_factory=Table, repr=False)

    def cards(self) -> list[tuple[str, object, str]]:
        """The header cards, as IPAC names and comments them."""
        def num(v, nd=6):
            return round(float(v), nd) if math.isfinite(v) else -999.0

        return [
            ("CALNOTE1", "*** photometric-calibration keywords below are from PSF-fitting:", ""),
            ("NMATCHES", int(self.nmatches), "Number of photometric calibrators used"),
            ("MAGZP", num(self.magzp), "Magnitude zero point for PSF-photometry [mag]"),
            ("MAGZPUNC", num(self.magzpunc, 8), "Magnitude zero point uncertainty [mag]"),
            ("MAGZPRMS", num(self.magzprms), "Magnitude zero point RMS deviation [mag]"),
            ("CLRCOEFF", num(self.clrcoeff), "Color coefficient from linear fit"),
            ("CLRCOUNC", num(self.clrcounc, 8), "Color coefficient uncertainty from linear fit"),
            ("ZPCLRCOV", num(self.zpclrcov, 10), "Covariance in MAGZP and CLRCOEFF [mag^2]"),
            ("PCOLOR", self.pcolor, "Calibrator color used for PSF-fit calibration"),
            ("ZPMED", num(self.zpmed), "Mag zero point from median of mag diffs [mag]"),
            ("ZPAVG", num(self.zpavg), "Mag zero point from average of mag diffs [mag]"),
            ("ZPRMSALL", num(self.zprmsall), "Mag zero point RMS from all mag diffs [mag]"),
            ("CLRMED", num(self.clrmed, 3), "Median calibrator color [mag]"),
            ("CLRAVG", num(self.clravg, 3), "Average calibrator color [mag]"),
            ("CLRRMS", num(self.clrrms), "RMS in calibrator color [mag]"),
        ]

    def update_header(self, header: fits.Header) -> None:
        """Write the calibration cards into ``header`` (and OR the INFOBITS in)."""
        for key, value, comment in self.cards():
            header[key] = (value, comment) if comment else value
        header["INFOBITS"] = (int(header.get("INFOBITS", 0)) & ~PHOTCAL_INFOBITS) | int(self.infobits)


def photometric_calibration(psfcat: Table, ps1: Table, filtercode: str, *, params: PhotomParams | None = None,
                            match_radius: u.Quantity = 1.5 * u.arcsec, mag_range=(13.0, 19.5),
                            colour_range=(0.0, 1.8), max_magerr: float = 0.05,
                            bad_flags: int = 0xFFFF) -> PhotCalResult:
    """Fit the zero point and colour term of a PSF catalog against PS1-like stars.

    Parameters
    ----------
    psfcat : `~astropy.table.Table`
        PSF-fit catalog with ``ra``, ``dec`` [deg], ``flux``, ``sigflux`` [DN] (or ``flux_err``) and
        ``flags`` (sources with any of ``bad_flags`` are not used).
    ps1 : `~astropy.table.Table`
        PS1-like catalog (`ztfsds.catalogs` schema ``'ps1'``: ``ra``, ``dec``, ``gmag``, ``rmag``,
        ``imag`` and their errors ``e_gmag`` ...).
    filtercode : str
        'zg', 'zr' or 'zi'.
    params : `~ztfsds.config.PhotomParams`, optional
        ``zp_clip_sigma`` (outlier rejection) and ``min_calibrators`` (INFOBITS bit 9).
    match_radius : `~astropy.units.Quantity`, optional
        Largest separation of a match.
    mag_range : tuple of float, optional
        PS1 magnitudes of usable calibrators (bright: near saturation in 30 s; faint: noisy).
    colour_range : tuple of float, optional
        Calibrator colours used [mag] (the stellar locus; the extreme M dwarfs bend the colour term).
    max_magerr : float, optional
        Largest PS1 and instrumental magnitude error of a calibrator [mag].
    bad_flags : int, optional
        PSF-catalog flags that exclude a source. Sources fitted in a group (``group_size`` > 1) and PS1
        stars with a neighbour less than 3 mag fainter within ``4 match_radius`` are not used either.

    Returns
    -------
    PhotCalResult
        ``ok`` False (with INFOBITS bit 8) when fewer than 5 calibrators survive or the fit fails.
    """
    params = params or PhotomParams()
    code = get_filter(filtercode).code
    blue, red, pcolor = COLOURS[code]
    band = _BAND[code]
    result = PhotCalResult(ok=False, pcolor=pcolor)
    flux = np.asarray(psfcat["flux"], dtype=float)
    ferr = np.asarray(psfcat["sigflux"] if "sigflux" in psfcat.colnames else psfcat["flux_err"], dtype=float)
    good = (np.isfinite(flux) & (flux > 0) & np.isfinite(ferr) & (ferr > 0)
            & ((np.asarray(psfcat["flags"]).astype(np.int64) & int(bad_flags)) == 0)
            & np.isfinite(np.asarray(psfcat["ra"], dtype=float)))
    if "group_size" in psfcat.colnames:
        # blended sources carry some of their neighbours' light: not calibrators
        good &= np.asarray(psfcat["group_size"]) == 1
    ref_mag = np.asarray(ps1[band], dtype=float)
    colour_all = np.asarray(ps1[blue], dtype=float) - np.asarray(ps1[red], dtype=float)
    ref_err = np.asarray(ps1["e_" + band], dtype=float)
    usable = (np.isfinite(ref_mag) & np.isfinite(colour_all) & (ref_mag >= mag_range[0])
              & (ref_mag <= mag_range[1]) & (colour_all >= colour_range[0]) & (colour_all <= colour_range[1])
              & (ref_err <= max_magerr))
    if "sgscore" in ps1.colnames:
        sg = np.asarray(ps1["sgscore"], dtype=float)
        usable &= ~(np.isfinite(sg) & (sg < 0.5))
    if usable.any():
        # a calibrator with a PS1 neighbour less than 3 mag fainter within 2 match radii is a blend
        c_all = SkyCoord(np.asarray(ps1["ra"]) * u.deg, np.asarray(ps1["dec"]) * u.deg)
        rows = np.nonzero(usable)[0]
        i1, i2, _, _ = c_all[rows].search_around_sky(c_all, 4 * match_radius)
        other = (i1 != rows[i2]) & np.isfinite(ref_mag[i1]) & (ref_mag[i1] < ref_mag[rows[i2]] + 3.0)
        usable[rows[np.unique(i2[other])]] = False
    result.ncalibrators = int(usable.sum())
    idx_cat = np.nonzero(good)[0]
    idx_ref = np.nonzero(usable)[0]
    if len(idx_cat) and len(idx_ref):
        cat_c = SkyCoord(np.asarray(psfcat["ra"])[idx_cat] * u.deg, np.asarray(psfcat["dec"])[idx_cat] * u.deg)
        ref_c = SkyCoord(np.asarray(ps1["ra"])[idx_ref] * u.deg, np.asarray(ps1["dec"])[idx_ref] * u.deg)
        j, sep, _ = ref_c.match_to_catalog_sky(cat_c)
        ok = sep < match_radius
        # one calibrator per source: a catalog source matched twice is ambiguous (a blend)
        jj = j[ok]
        uniq, counts = np.unique(jj, return_counts=True)
        ok[np.nonzero(ok)[0][np.isin(jj, uniq[counts > 1])]] = False
        rows_ref = idx_ref[ok]
        rows_cat = idx_cat[j[ok]]
    else:
        rows_ref = rows_cat = np.zeros(0, dtype=int)
    inst = -2.5 * np.log10(flux[rows_cat])
    inst_err = 2.5 / math.log(10.0) * ferr[rows_cat] / flux[rows_cat]
    keep = inst_err <= max_magerr
    rows_ref, rows_cat, inst, inst_err = rows_ref[keep], rows_cat[keep], inst[keep], inst_err[keep]
    dmag = ref_mag[rows_ref] - inst
    colour = colour_all[rows_ref]
    sigma = np.hypot(inst_err, ref_err[rows_ref])
    matches = Table({"ps1_row": rows_ref, "cat_row": rows_cat, "ps1_mag": ref_mag[rows_ref], "inst_mag": inst,
                     "inst_magerr": inst_err, "colour": colour, "resid": np.full(len(inst), np.nan),
                     "used": np.zeros(len(inst), bool)})
    result.matches = matches
    if len(dmag) < 5:
        result.infobits |= int(InfoBits.FEW_PHOTCAL_MATCHES | InfoBits.PHOTCAL_FAILED
                               | InfoBits.FEW_PHOTCAL_CALIBRATORS)
        result.message = f"photometric calibration not possible: {len(dmag)} PS1 matches"
        result.nmatches = len(dmag)
        return result

    result.zpmed = float(np.median(dmag))
    result.clrmed = float(np.median(colour))
    result.clravg = float(np.mean(colour))
    result.clrrms = float(np.std(colour))
    use = np.ones(len(dmag), bool)
    # a floor on the weights: the scatter of bright stars is set by flat-field and PSF errors, not
    # by their photon noise, and without it a few of them would fix the line alone
    w = 1.0 / (sigma**2 + 0.01**2)
    coef, cov = np.array([result.zpmed, 0.0]), np.eye(2)
    for _ in range(10):
        if use.sum() < 5:
            break
        A = np.stack([np.ones(use.sum()), colour[use]], axis=1)
        N = A.T @ (A * w[use, None])
        try:
            cov = np.linalg.inv(N)
        except np.linalg.LinAlgError:
            break
        coef = cov @ (A.T @ (w[use] * dmag[use]))
        resid = dmag - coef[0] - coef[1] * colour
        rms = 1.4826 * np.median(np.abs(resid[use] - np.median(resid[use])))
        new = np.abs(resid) <= params.zp_clip_sigma * max(rms, 1e-4)
        if np.array_equal(new, use):
            break
        use = new
    nuse = int(use.sum())
    if nuse < 5:
        result.infobits |= int(InfoBits.FEW_PHOTCAL_MATCHES | InfoBits.PHOTCAL_FAILED
                               | InfoBits.FEW_PHOTCAL_CALIBRATORS)
        result.message = f"photometric calibration not possible: {nuse} calibrators after clipping"
        result.nmatches = nuse
        return result
    resid = dmag - coef[0] - coef[1] * colour
    chi2 = float(np.sum(w[use] * resid[use] ** 2) / max(nuse - 2, 1))
    cov = cov * max(chi2, 1.0)
    matches["resid"] = resid
    matches["used"] = use
    result.ok = True
    result.magzp, result.clrcoeff = float(coef[0]), float(coef[1])
    result.magzpunc, result.clrcounc = float(math.sqrt(cov[0, 0])), float(math.sqrt(cov[1, 1]))
    result.zpclrcov = float(cov[0, 1])
    result.magzprms = float(1.4826 * np.median(np.abs(resid[use] - np.median(resid[use]))))
    result.nmatches = nuse
    result.zpavg = float(np.mean(dmag[use]))
    result.zprmsall = float(np.std(dmag))
    if nuse < params.min_calibrators:
        result.infobits |= int(InfoBits.FEW_PHOTCAL_CALIBRATORS)
    if result.magzprms > 0.2:
        result.infobits |= int(InfoBits.HIGH_PHOTCAL_RMS)
    result.message = (f"MAGZP {result.magzp:.4f} +- {result.magzpunc:.4f}, CLRCOEFF {result.clrcoeff:.4f}, "
                      f"rms {result.magzprms:.3f} mag, {nuse} calibrators")
    log.debug("photcal: %s", result.message)
    return result


def limiting_magnitude(flux, flux_err, magzp: float, *, snr: float = 5.0, snr_range=(3.0, 50.0)) -> float:
    """MAGLIM: the magnitude of a point source measured at S/N ``snr`` in a PSF-fit catalog.

    The catalog's flux uncertainties follow ``sigma_F**2 = a + b F`` (background and read noise ``a``,
    the source's own shot noise ``b F``); the line is fitted (robustly) to the sources of S/N in
    ``snr_range`` and solved for ``F = snr * sigma_F``. Unlike a fit of the magnitude errors against
    magnitude, this is not biased by the faintest detections, whose fluxes scatter up (Eddington bias)
    while their uncertainties do not.

    Parameters
    ----------
    flux, flux_err : array-like
        PSF-fit fluxes and their 1-sigma uncertainties [DN].
    magzp : float
        Zero point [mag].
    snr : float, optional
        S/N of the limit.
    snr_range : tuple of float, optional
        S/N of the sources used.

    Returns
    -------
    float
        The limit [mag]; NaN with fewer than 10 usable sources or a non-finite zero point.
    """
    f = np.asarray(flux, dtype=float)
    e = np.asarray(flux_err, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = f / e
    sel = np.isfinite(f) & np.isfinite(e) & (e > 0) & (s >= snr_range[0]) & (s <= snr_range[1])
    if sel.sum() < 10 or not math.isfinite(magzp):
        return float("nan")
    x, y = f[sel], e[sel] ** 2
    use = np.ones(len(x), bool)
    b, a = 0.0, float(np.median(y))
    for _ in range(5):
        b, a = np.polyfit(x[use], y[use], 1) if np.ptp(x[use]) > 0 else (0.0, float(np.median(y[use])))
        r = y - (a + b * x)
        sig = 1.4826 * np.median(np.abs(r[use]))
        new = np.abs(r) <= 3.0 * max(sig, 1e-12 * abs(a))
        if np.array_equal(new, use) or new.sum() < 10:
            break
        use = new
    b = max(float(b), 0.0)
    a = float(a)
    if not a > 0:
        a = float(np.median(y[use]))
    f5 = 0.5 * (snr**2 * b + math.sqrt(snr**4 * b * b + 4.0 * snr**2 * a))
    return float(magzp - 2.5 * math.log10(f5))


def empirical_limiting_magnitude(magzp: float, bkg_rms: float, nea: float, *, snr: float = 5.0) -> float:
    """The ``snr``-sigma limit of a point source on a background-limited image.

    ``MAGZP - 2.5 log10(snr * bkg_rms * sqrt(nea))``, ``nea = 1 / sum(psf**2)`` the PSF's noise-equivalent
    area [px] (the PSF-fit flux error of a faint source is ``bkg_rms sqrt(nea)``).

    Parameters
    ----------
    magzp : float
        Zero point [mag].
    bkg_rms : float
        Background noise per pixel [DN].
    nea : float
        Noise-equivalent area [px].
    snr : float, optional

    Returns
    -------
    float
        [mag]

    Examples
    --------
    >>> print(f"{empirical_limiting_magnitude(26.3, 6.0, 12.0):.3f}")
    21.258
    """
    return float(magzp - 2.5 * math.log10(snr * bkg_rms * math.sqrt(nea)))
