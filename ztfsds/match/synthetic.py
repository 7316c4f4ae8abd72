"""Epoch catalogs drawn from the simulated sky's truth: the yardstick of matching and relative photometry.

Running the full pipeline (raw -> psfcat) on a hundred epochs takes minutes; matching and relative
photometry only need what a PSF catalog says. `synthetic_epochs` draws, for each epoch, the catalog a
PSF-fitting pipeline would produce from the truth of `ztfsds.sim.sky`: positions with astrometric
noise, fluxes with photon noise from the source and the sky plus read noise over the PSF's effective
area (``4 pi sigma_psf^2``), a 5-sigma detection cut and saturation, magnitudes at a header zero point
that is off from the true one by a per-epoch error (the PS1 calibration's few 0.01 mag), and a fraction
of outliers (fluxes off by 0.3-1 mag, as cosmic rays or bad pixels give). It uses nothing of the
pipeline's measurement code, so the recovered zero points and lightcurves can be graded against the
truth it returns.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.table import Table

from .. import camera
from ..products.ids import expid as expid_of
from ..sim.sky import mags_at

__all__ = ["SyntheticEpochs", "synthetic_epochs", "GAIN", "READ_NOISE", "PIXSCALE"]

#: Detector gain [e-/DN], read noise [e-] and pixel scale [arcsec/px] of the synthetic catalogs.
GAIN = 6.0
READ_NOISE = 9.0
PIXSCALE = 1.012
_NOMINAL_ZP = {"zg": 26.35, "zr": 26.25, "zi": 25.75}   # per 30 s in DN, as real MAGZP


@dataclasses.dataclass
class SyntheticEpochs:
    """Epoch catalogs with their truth.

    Attributes
    ----------
    reference : `~astropy.table.Table`
        The ``refpsfcat``-like reference catalog (magnitudes at zero point 27).
    epochs : list of (`~astropy.table.Table`, dict)
        Each epoch's ``psfcat``-like catalog and header (``EXPID``, ``OBSJD``, ``MAGZP``, ``MAGLIM``...).
    zp_error : numpy.ndarray
        Per epoch, header ``MAGZP`` minus the true zero point [mag].
    source_id : list of numpy.ndarray
        Per epoch, the sky ``source_id`` of each catalog row.
    true_mag : list of numpy.ndarray
        Per epoch, the true magnitude of each catalog row [mag].
    outlier : list of numpy.ndarray
        Per epoch, whether each row's flux was corrupted.
    jd : numpy.ndarray
        Exposure start times [JD].
    reference_source_id : numpy.ndarray
        The sky ``source_id`` of each reference row.
    """

    reference: Table
    epochs: list
    zp_error: np.ndarray
    source_id: list
    true_mag: list
    outlier: list
    jd: np.ndarray
    reference_source_id: np.ndarray


def _tangent(ra, dec, ra0, dec0):
    ra, dec = np.radians(ra), np.radians(dec)
    ra0, dec0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(dec0) * np.sin(dec) + math.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (math.cos(dec0) * np.sin(dec) - math.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def _flux_sigma(flux, sky_dn, neff):
    return np.sqrt(np.maximum(flux, 0.0) / GAIN + neff * (sky_dn / GAIN + (READ_NOISE / GAIN) ** 2))


def _blend_hosts(ra, dec, mag, radius):
    """Index of the source each source's light ends up in: the brightest within ``radius`` [arcsec]."""
    from scipy.spatial import cKDTree

    from .matching import unit_vectors

    host = np.arange(len(ra))
    if radius <= 0 or len(ra) < 2:
        return host
    xyz = unit_vectors(ra, dec)
    pairs = cKDTree(xyz).query_pairs(2 * math.sin(math.radians(radius / 3600) / 2), output_type="ndarray")
    mag = np.where(np.isfinite(mag), mag, 99.0)
    for a, b in pairs[np.argsort(-np.maximum(mag[pairs[:, 0]], mag[pairs[:, 1]]))] if len(pairs) else []:
        faint, bright = (a, b) if mag[a] > mag[b] else (b, a)
        host[faint] = host[bright]
    for _ in range(3):                 # chains: follow to the final host
        host = host[host]
    return host


def _blend(flux, host):
    return np.bincount(host, weights=flux, minlength=len(flux))


def synthetic_epochs(sky: Table, filtercode: str, jd, *, seed: int, field: int = 600, ccdid: int = 8,
                     qid: int = 3, zp_scatter: float = 0.03, outlier_fraction: float = 0.002,
                     seeing: tuple[float, float] = (1.6, 3.0), sat_mag: float = 12.5, ref_depth: float = 1.5,
                     astrom_sigma: float = 0.06, kinds=("star", "variable", "galaxy", "supernova", "nuclear"),
                     zp_gradient: float = 0.0, blend_radius: float = 2.5) -> SyntheticEpochs:
    """PSF-catalog-like epoch catalogs and a reference catalog from a simulated sky.

    Parameters
    ----------
    sky : `~astropy.table.Table`
        Output of `ztfsds.sim.sky.make_sky`.
    filtercode : str
        'zg', 'zr' or 'zi'.
    jd : array-like
        Exposure start times [JD].
    seed : int
        Seed of all noise.
    field, ccdid, qid : int, optional
        Recorded in the headers.
    zp_scatter : float, optional
        Standard deviation of the per-epoch zero-point error of the headers [mag].
    outlier_fraction : float, optional
        Fraction of detections whose flux is off by 0.3-1 mag (either sign), unflagged.
    seeing : tuple of float, optional
        Range of the per-epoch FWHM [px].
    sat_mag : float, optional
        Sources brighter than this are saturated and absent from the catalogs [mag].
    ref_depth : float, optional
        How much deeper the reference is than a median epoch [mag].
    astrom_sigma : float, optional
        Astrometric error floor per axis [arcsec] (plus FWHM / (2.35 S/N)).
    kinds : tuple of str, optional
        Source kinds that appear in the catalogs (asteroids are left out: they make no object).
    blend_radius : float, optional
        Sources closer than this to a brighter one are unresolved: their flux adds to it [arcsec]
        (``true_mag`` is the blend's magnitude).
    zp_gradient : float, optional
        Amplitude of a per-epoch linear zero-point gradient across the quadrant [mag from centre to edge],
        random direction, for the spatial term of the relative calibration.

    Returns
    -------
    SyntheticEpochs
    """
    rng = np.random.default_rng(seed)
    filt = camera.get_filter(filtercode)
    jd = np.sort(np.atleast_1d(np.asarray(jd, dtype=float)))
    sel = np.isin(np.asarray(sky["kind"]), kinds)
    src = sky[sel]
    ra0, dec0 = float(np.median(src["ra"])), float(np.median(src["dec"]))
    xi, eta = _tangent(np.asarray(src["ra"]), np.asarray(src["dec"]), ra0, dec0)
    xpix, ypix = xi / PIXSCALE + 1535.5, eta / PIXSCALE + 1539.5
    zp0 = _NOMINAL_ZP[filt.code]
    sky_dn = 10 ** (-0.4 * (filt.sky_brightness - zp0)) * PIXSCALE**2
    kinds_arr = np.asarray(src["kind"])
    host = _blend_hosts(np.asarray(src["ra"]), np.asarray(src["dec"]),
                        mags_at(src, filt.code, np.full(len(src), 2458000.0)), blend_radius)
    resolved = host == np.arange(len(src))

    # reference: the static sky (transients are absent), deeper, at zero point 27
    ref_fwhm = 2.0
    ref_neff = 4 * math.pi * (ref_fwhm / 2.3548) ** 2
    static = ~np.isin(kinds_arr, ("supernova", "nuclear"))
    mean_mag = mags_at(src, filt.code, np.full(len(src), 2458000.0))
    ref_scale = 10 ** (0.4 * ref_depth)      # noise lower by the depth gain
    ref_flux_true = _blend(10 ** (-0.4 * (np.where(static, mean_mag, np.inf) - zp0)), host)
    ref_sig = _flux_sigma(ref_flux_true, sky_dn, ref_neff) / ref_scale
    ref_flux = ref_flux_true + rng.normal(size=len(src)) * ref_sig
    ref_mag_true = zp0 - 2.5 * np.log10(np.maximum(ref_flux_true, 1e-30))
    det = resolved & static & (ref_flux > 5 * ref_sig) & (ref_mag_true > sat_mag) & np.isfinite(mean_mag)
    ref = Table()
    ref["sourceid"] = np.arange(1, det.sum() + 1)
    ref["x"], ref["y"] = xpix[det], ypix[det]
    ref["ra"], ref["dec"] = np.asarray(src["ra"])[det], np.asarray(src["dec"])[det]
    rf = ref_flux[det] * 10 ** (0.4 * (27.0 - zp0))
    rs = ref_sig[det] * 10 ** (0.4 * (27.0 - zp0))
    ref["flux"], ref["sigflux"] = rf, rs
    ref["mag"] = 27.0 - 2.5 * np.log10(rf)
    ref["sigmag"] = 2.5 / math.log(10) * rs / rf
    ref["snr"] = rf / rs
    ref["chi"] = np.ones(det.sum())
    ref["sharp"] = np.zeros(det.sum())
    ref["flags"] = np.zeros(det.sum(), dtype=np.int32)
    ref_ids = np.asarray(src["source_id"])[det]

    epochs, zp_err, ids, truths, outs = [], [], [], [], []
    for j, t in enumerate(jd):
        fwhm = rng.uniform(*seeing)
        neff = 4 * math.pi * (fwhm / 2.3548) ** 2
        airmass = rng.uniform(1.0, 2.0)
        zp_true = zp0 - 0.15 * (airmass - 1.0) - abs(rng.normal(0, 0.05))
        err = rng.normal(0, zp_scatter)
        true = mags_at(src, filt.code, np.full(len(src), t))
        flux_true = _blend(np.where(np.isfinite(true), 10 ** (-0.4 * (true - zp_true)), 0.0), host)
        true = zp_true - 2.5 * np.log10(np.maximum(flux_true, 1e-30))
        if zp_gradient:
            angle = rng.uniform(0, 2 * np.pi)
            grad = zp_gradient * (np.cos(angle) * (xpix - 1535.5) + np.sin(angle) * (ypix - 1539.5)) / 1536.0
            flux_true = flux_true * 10 ** (-0.4 * grad)
        sig = _flux_sigma(flux_true, sky_dn, neff)
        flux = flux_true + rng.normal(size=len(src)) * sig
        bad = rng.uniform(size=len(src)) < outlier_fraction
        flux = np.where(bad, flux * 10 ** (-0.4 * rng.choice([-1, 1], len(src)) * rng.uniform(0.3, 1.0, len(src))),
                        flux)
        inside = (xpix > 0) & (xpix < 3072) & (ypix > 0) & (ypix < 3080)
        det = resolved & inside & (flux > 5 * sig) & (flux_true > 0) & (true > sat_mag)
        snr = flux[det] / sig[det]
        pos_sig = np.hypot(astrom_sigma, fwhm * PIXSCALE / 2.3548 / snr)
        dra = rng.normal(size=det.sum()) * pos_sig / 3600.0
        ddec = rng.normal(size=det.sum()) * pos_sig / 3600.0
        dec_d = np.asarray(src["dec"])[det] + ddec
        ra_d = np.asarray(src["ra"])[det] + dra / np.cos(np.radians(dec_d))
        magzp = zp_true + err
        cat = Table()
        cat["sourceid"] = np.arange(1, det.sum() + 1)
        cat["x"], cat["y"] = xpix[det] + dra * 3600 / PIXSCALE, ypix[det] + ddec * 3600 / PIXSCALE
        cat["ra"], cat["dec"] = ra_d, dec_d
        cat["flux"], cat["sigflux"] = flux[det], sig[det]
        cat["mag"] = magzp - 2.5 * np.log10(flux[det])
        cat["sigmag"] = 2.5 / math.log(10) * sig[det] / flux[det]
        cat["snr"] = snr
        cat["chi"] = np.abs(rng.normal(1.0, 0.1, det.sum()))
        cat["sharp"] = rng.normal(0.0, 0.05, det.sum())
        cat["flags"] = np.zeros(det.sum(), dtype=np.int32)
        maglim = magzp - 2.5 * math.log10(5 * float(_flux_sigma(0.0, sky_dn, neff)))
        header = {"EXPID": expid_of_jd(t), "OBSJD": float(t), "EXPTIME": 30.0, "FIELDID": field,
                  "CCDID": ccdid, "QID": qid, "FILTERID": filt.fid, "MAGZP": magzp, "MAGZPUNC": 1e-5,
                  "MAGZPRMS": 0.03, "CLRCOEFF": 0.0, "CLRCOUNC": 1e-5, "INFOBITS": 0, "MAGLIM": maglim,
                  "AIRMASS": airmass, "PROGRMID": 1, "SEEING": fwhm, "PIXSCALE": PIXSCALE, "CRVAL1": ra0,
                  "CRVAL2": dec0, "NMATCHES": 500, "GAIN": GAIN}
        epochs.append((cat, header))
        zp_err.append(err)
        ids.append(np.asarray(src["source_id"])[det])
        truths.append(true[det])
        outs.append(bad[det])
    result = SyntheticEpochs(reference=ref, epochs=epochs, zp_error=np.array(zp_err), source_id=ids,
                             true_mag=truths, outlier=outs, jd=jd, reference_source_id=ref_ids)
    return result


def expid_of_jd(jd: float) -> int:
    """ZTF exposure id of an exposure starting at ``jd`` (`ztfsds.products.expid`)."""
    from astropy.time import Time

    return int(expid_of(Time(float(jd), format="jd", scale="utc")))
