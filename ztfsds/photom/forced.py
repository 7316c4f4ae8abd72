"""The forced-photometry service: PSF-fit fluxes at fixed sky positions on every image of the data root.

`forced_photometry_service` does what IPAC's ZTF forced-photometry service (ZFPS) does for a list of
positions and a time range, on the products of a `~ztfsds.products.ProductStore`: it finds every image
covering each position, measures the PSF-fit flux at the fixed position
(`ztfsds.photom.psffit.forced_photometry`) and an aperture flux in a 9-px diameter with its
curve-of-growth correction, and returns one row per position and epoch with the real service's columns
(`ZFPS_COLUMNS`, ZTF_REFERENCE section 7) and ``procstatus`` codes (`ProcStatus`). It reads:

* ``image='diff'`` (the service's own input): ``scimrefdiffimg`` difference images with their
  ``diffimgpsf`` (a `~ztfsds.photom.psf.PSFModel` product, or a plain PSF stamp as IRSA serves it),
  the variance ``diffimgvar`` when present, and the reference's header (RFID, JD range);
* ``image='sci'``: the calibrated ``sciimg`` with its ``sciimgpsf`` model and ``varimg`` -- the flux of
  whatever is at the position (a star's total flux; zero on blank sky).

The flux is in DN at the image's zero point ``zpdiff``; ``nearestref*`` describe the nearest source of
the reference (diff) or of the image's own PSF catalog (sci) within 5 arcsec.

Users of the real service then correct the baseline and rescale the uncertainties by hand; the helpers
are here: `baseline_correct`, `rescale_uncertainties`, `to_magnitudes` (fluxes in uJy, magnitudes and
upper limits). `read_forced_photometry` reads the real service's text files as well as ours
(`write_forced_photometry`).
"""

from __future__ import annotations

import enum
import logging
import math
import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..errors import InputError, ZTFSDSError
from ..products import ProductKey, ProductStore, fcqfid, read_header, read_image
from .psf import PSFModel

__all__ = ["ZFPS_COLUMNS", "ProcStatus", "SURVEY_START_JD", "forced_photometry_service",
           "baseline_correct", "rescale_uncertainties", "to_magnitudes", "read_forced_photometry",
           "write_forced_photometry", "forced_photometry_text", "psf_from_hdulist", "usable", "USABLE_STATUS"]

log = logging.getLogger(__name__)

#: Start of ZTF survey operations (2018-03-17) [JD]: earlier start dates are reset (procstatus 62).
SURVEY_START_JD = 2458194.5

#: Diameter of the service's fixed aperture [px].
APERTURE_DIAMETER = 9.0

#: Radius for the nearest reference source [arcsec].
NEAREST_RADIUS = 5.0

#: Null of numeric columns, as the real service writes it.
NULL = -99999

#: The real service's columns, in its order, with their dtype and unit.
ZFPS_COLUMNS = (
    ("index", "i8", None), ("field", "i4", None), ("ccdid", "i4", None), ("qid", "i4", None),
    ("filter", "U5", None), ("pid", "i8", None), ("infobitssci", "i8", None), ("sciinpseeing", "f8", "pix"),
    ("scibckgnd", "f8", "adu"), ("scisigpix", "f8", "adu"), ("zpmaginpsci", "f8", "mag"),
    ("zpmaginpsciunc", "f8", "mag"), ("zpmaginpscirms", "f8", "mag"), ("clrcoeff", "f8", None),
    ("clrcoeffunc", "f8", None), ("ncalmatches", "i4", None), ("exptime", "f8", "s"), ("adpctdif1", "f8", "arcsec"),
    ("adpctdif2", "f8", "arcsec"), ("diffmaglim", "f8", "mag"), ("zpdiff", "f8", "mag"), ("programid", "i4", None),
    ("jd", "f8", "d"), ("rfid", "i8", None), ("forcediffimflux", "f8", "adu"), ("forcediffimfluxunc", "f8", "adu"),
    ("forcediffimsnr", "f8", None), ("forcediffimchisq", "f8", None), ("forcediffimfluxap", "f8", "adu"),
    ("forcediffimfluxuncap", "f8", "adu"), ("forcediffimsnrap", "f8", None), ("aperturecorr", "f8", None),
    ("dnearestrefsrc", "f8", "arcsec"), ("nearestrefmag", "f8", "mag"), ("nearestrefmagunc", "f8", "mag"),
    ("nearestrefchi", "f8", None), ("nearestrefsharp", "f8", None), ("refjdstart", "f8", "d"),
    ("refjdend", "f8", "d"), ("procstatus", "U16", None),
)


class ProcStatus(enum.IntEnum):
    """``procstatus`` codes of the forced-photometry service (ZTF_REFERENCE section 7)."""

    OK = 0
    FILE_LIMIT = 52
    FEW_BACKGROUND_PIXELS = 54
    TOO_MANY_BAD_PIXELS = 55
    SOME_BAD_PIXELS = 56
    NO_REFERENCE_SOURCE = 57
    NO_REFERENCE_CATALOG = 58
    PSF_NOT_ODD = 60
    OFF_IMAGE = 61
    START_BEFORE_SURVEY = 62
    NO_EPOCHS = 63
    CATASTROPHIC = 64
    END_BEFORE_SURVEY = 65
    DB_ERROR = 255


_IMAGES = {"diff": ("scimrefdiffimg", "diffimgpsf", "diffimgvar", "diffimgmsk"),
           "sci": ("sciimg", "sciimgpsf", "varimg", "mskimg")}


def psf_from_hdulist(hdul: fits.HDUList) -> PSFModel:
    """A PSF model from a product: our `~ztfsds.photom.psf.PSFModel` file, or a plain PSF stamp.

    A plain stamp (IPAC's ``diffimgpsf.fits``, an odd square image) becomes a constant model sampled at
    the image's pixels (``oversample=1``), normalised to unit sum.

    Raises
    ------
    ztfsds.errors.InputError
        When the stamp is not an odd square (the service's procstatus 60).
    """
    if "PSFOVS" in hdul[0].header:
        return PSFModel.from_hdulist(hdul)
    stamp = np.asarray(hdul[0].data, dtype=np.float64)
    if stamp.ndim != 2 or stamp.shape[0] != stamp.shape[1] or stamp.shape[0] % 2 == 0:
        raise InputError(None, f"PSF stamp of shape {stamp.shape}: must be an odd square")
    stamp = np.clip(stamp, 0.0, None)
    # 3 empty nodes a side: the model's default stamp is then the whole n x n stamp (PSFModel.size)
    grid = np.pad(stamp / stamp.sum(), 3)
    return PSFModel(basis=grid[None], oversample=1, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=0)


def _empty_table(n: int = 0) -> Table:
    t = Table()
    for name, dtype, unit in ZFPS_COLUMNS:
        t[name] = np.zeros(n, dtype=dtype)
        if unit:
            t[name].unit = unit
    return t


def _hdr(h, key, default=NULL):
    v = h.get(key, default)
    return default if v is None else v


def _image_rows(store: ProductStore, key: ProductKey, image: str, ra, dec, index, *, fit_radius: float | None,
                max_bad_frac: float):
    """Rows of one image for the positions it covers (or [] when it covers none)."""
    from .aperture import aperture_photometry
    from .psffit import ForcedPhotFlags, forced_photometry

    suffix, psf_suffix, var_suffix, msk_suffix = _IMAGES[image]
    header = read_header(store.path(key))
    if "CTYPE1" not in header:
        return []
    wcs = WCS(header)
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    x, y = wcs.all_world2pix(ra, dec, 0)
    inside = np.isfinite(x) & (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    if not inside.any():
        return []
    sel = np.nonzero(inside)[0]
    data, _ = read_image(store.path(key))
    var = msk = None
    if store.exists(key.with_suffix(var_suffix)):
        var = read_image(store.path(key.with_suffix(var_suffix)))[0]
    if store.exists(key.with_suffix(msk_suffix)):
        msk = read_image(store.path(key.with_suffix(msk_suffix)))[0]
    psf_key = key.with_suffix(psf_suffix)
    try:
        with fits.open(store.path(psf_key)) as hdul:
            psf = psf_from_hdulist(hdul)
    except (OSError, InputError, KeyError) as exc:
        log.warning("forced photometry %s: no usable PSF (%s)", key.filename, exc)
        return [_row_null(header, image, ra[i], dec[i], index[i], ProcStatus.PSF_NOT_ODD) for i in sel]
    background, bkg_rms = 0.0, None
    if image == "sci":
        from ..astrom.extraction import background as _background

        bkg = _background(data, msk)
        background, bkg_rms = bkg.level, bkg.rms
    gain = float(header["GAIN"]) if "GAIN" in header else None
    if fit_radius is None:
        seeing = float(_hdr(header, "SEEING", 0.0))
        fit_radius = max(3.0, 1.1 * seeing)
    res = forced_photometry(data, psf, x[sel], y[sel], varimg=var, mskimg=msk, background=background,
                            bkg_rms=bkg_rms, gain=gain, fit_radius=fit_radius, max_bad_frac=max_bad_frac)
    ap = aperture_photometry(data, x[sel], y[sel], (APERTURE_DIAMETER,), mskimg=msk, varimg=var,
                             background=background, bkg_rms=bkg_rms, gain=gain)
    frac = _psf_fraction_in_aperture(psf, float(np.mean(x[sel])), float(np.mean(y[sel])), APERTURE_DIAMETER)
    nearest, have_catalog = _nearest_reference(store, key, image, ra[sel], dec[sel])
    rows = []
    for j, i in enumerate(sel):
        row = _row_null(header, image, ra[i], dec[i], index[i], ProcStatus.OK)
        flags = int(res["flags"][j])
        bad_frac = float(res["bad_frac"][j])
        if flags & int(ForcedPhotFlags.OFF_IMAGE) or (flags & int(ForcedPhotFlags.EDGE)
                                                       and not np.isfinite(res["flux"][j])):
            row["procstatus"] = str(int(ProcStatus.OFF_IMAGE))
            rows.append(row)
            continue
        if bad_frac > max_bad_frac or not np.isfinite(res["flux"][j]):
            row["procstatus"] = str(int(ProcStatus.TOO_MANY_BAD_PIXELS))
            rows.append(row)
            continue
        codes = []
        if bad_frac > 0:
            codes.append(int(ProcStatus.SOME_BAD_PIXELS))
        row["forcediffimflux"] = float(res["flux"][j])
        row["forcediffimfluxunc"] = float(res["flux_err"][j])
        row["forcediffimsnr"] = float(res["flux"][j] / res["flux_err"][j]) if res["flux_err"][j] > 0 else NULL
        row["forcediffimchisq"] = float(res["chi2"][j])
        apf = float(np.ravel(ap["flux_aper"][j])[0]) / frac
        ape = float(np.ravel(ap["fluxerr_aper"][j])[0]) / frac
        row["forcediffimfluxap"], row["forcediffimfluxuncap"] = apf, ape
        row["forcediffimsnrap"] = apf / ape if ape > 0 else NULL
        row["aperturecorr"] = 1.0 / frac
        d, mag, magunc, chi, sharp = nearest[j]
        if d is None:
            codes.append(int(ProcStatus.NO_REFERENCE_SOURCE if have_catalog else ProcStatus.NO_REFERENCE_CATALOG))
        else:
            row.update(dnearestrefsrc=d, nearestrefmag=mag, nearestrefmagunc=magunc, nearestrefchi=chi,
                       nearestrefsharp=sharp)
        row["procstatus"] = ",".join(str(c) for c in codes) if codes else "0"
        rows.append(row)
    return rows


def _psf_fraction_in_aperture(psf: PSFModel, x: float, y: float, diameter: float) -> float:
    """Fraction of the PSF's flux inside a centred circular aperture (the curve-of-growth correction)."""
    size = psf.size
    stamp = psf.stamp(x, y, size=size)
    n = 8
    off = (np.arange(size * n) + 0.5) / n - size / 2.0
    inside = (off[:, None] ** 2 + off[None, :] ** 2) <= (diameter / 2.0) ** 2
    frac = inside.reshape(size, n, size, n).mean(axis=(1, 3))
    return float(np.sum(stamp * frac) / np.sum(stamp))


def _nearest_reference(store, key, image, ra, dec):
    """((distance [arcsec], mag, magunc, chi, sharp) of the nearest catalog source within 5" per position,
    whether the catalog exists)."""
    out = [(None,) * 5] * len(ra)
    cat_key = key.with_suffix("psfcat") if image == "sci" else key.reference("refpsfcat")
    if not store.exists(cat_key):
        return out, False
    cat = Table.read(store.path(cat_key), hdu=1)
    good = np.isfinite(np.asarray(cat["ra"], float))
    cat = cat[good]
    if not len(cat):
        return out, True
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    c = SkyCoord(np.asarray(cat["ra"]) * u.deg, np.asarray(cat["dec"]) * u.deg)
    p = SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    j, d, _ = p.match_to_catalog_sky(c)
    for k in range(len(ra)):
        if d[k].arcsec <= NEAREST_RADIUS:
            r = cat[j[k]]
            out[k] = (float(d[k].arcsec), float(r["mag"]), float(r["sigmag"]), float(r["chi"]),
                      float(r["sharp"]))
    return out, True


def _row_null(header, image, ra, dec, index, status) -> dict:
    row = {name: (NULL if dtype[0] in "if" else "null") for name, dtype, _ in ZFPS_COLUMNS}
    code = str(header.get("FILTER", "")).lower()
    filt = {"zg": "ZTF_g", "zr": "ZTF_r", "zi": "ZTF_i", "ztf_g": "ZTF_g", "ztf_r": "ZTF_r",
            "ztf_i": "ZTF_i"}.get(code, str(header.get("FILTER", "null")))
    rms1, rms2 = header.get("ASTRRMS1"), header.get("ASTRRMS2")
    row.update(
        field=int(_hdr(header, "FIELDID")), ccdid=int(_hdr(header, "CCDID", _hdr(header, "CCD_ID"))),
        qid=int(_hdr(header, "QID")), filter=filt, pid=int(_hdr(header, "DBPID")),
        infobitssci=int(_hdr(header, "INFOBITS", 0)), sciinpseeing=float(_hdr(header, "SEEING")),
        scibckgnd=float(_hdr(header, "MEDSKY")), scisigpix=float(_hdr(header, "SKYSIG")),
        zpmaginpsci=float(_hdr(header, "MAGZP")), zpmaginpsciunc=float(_hdr(header, "MAGZPUNC")),
        zpmaginpscirms=float(_hdr(header, "MAGZPRMS")), clrcoeff=float(_hdr(header, "CLRCOEFF")),
        clrcoeffunc=float(_hdr(header, "CLRCOUNC")), ncalmatches=int(_hdr(header, "NMATCHES")),
        exptime=float(_hdr(header, "EXPTIME")),
        adpctdif1=float(rms1) * 3600.0 if rms1 is not None and rms1 > 0 else NULL,
        adpctdif2=float(rms2) * 3600.0 if rms2 is not None and rms2 > 0 else NULL,
        diffmaglim=float(_hdr(header, "DIFFMLIM" if image == "diff" else "MAGLIM")),
        zpdiff=float(_hdr(header, "MAGZP")), programid=int(_hdr(header, "PROGRMID", 1)),
        jd=float(_hdr(header, "OBSJD")), rfid=int(_hdr(header, "RFID")),
        refjdstart=float(_hdr(header, "RFJDSTRT")), refjdend=float(_hdr(header, "RFJDEND")),
        procstatus=str(int(status)), index=int(index),
    )
    row["_ra"], row["_dec"] = float(ra), float(dec)
    return row


def forced_photometry_service(store, ra, dec, *, jd_start: float | None = None, jd_end: float | None = None,
                              image: str = "diff", fit_radius: float | None = None, max_bad_frac: float = 0.5,
                              max_files: int = 10000) -> Table:
    """Forced PSF photometry at fixed positions on every covering image of a data root.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore` or path-like
        The data root.
    ra, dec : float or array-like
        Positions [deg, ICRS]; one or many (thousands are fine: every image is read once).
    jd_start, jd_end : float, optional
        Time range of the exposures [JD]; a start before the survey is reset to `SURVEY_START_JD`
        (``meta['procstatus']`` 62).
    image : {'diff', 'sci'}, optional
        Measure difference images (the service's input) or science images.
    fit_radius : float, optional
        Radius of the PSF fit [px]; default ``max(3, 1.1 SEEING)`` of each image.
    max_bad_frac : float, optional
        Epochs whose fit pixels are more than this fraction masked get procstatus 55 and no flux.
    max_files : int, optional
        Most images in one request (the real service's 10K-file limit, procstatus 52).

    Returns
    -------
    `~astropy.table.Table`
        One row per position and covering image, sorted by position then JD, with `ZFPS_COLUMNS`
        plus ``ra``, ``dec`` (the requested position) and ``posid`` (its index in the request).
        ``meta['procstatus']`` holds request-level codes (62, 63, 65, 52).

    Raises
    ------
    ztfsds.errors.InputError
        For positions out of range, a bad ``image`` or an end before the survey start (65).
    """
    store = store if isinstance(store, ProductStore) else ProductStore(store)
    if image not in _IMAGES:
        raise InputError(None, f"image must be 'diff' or 'sci', got {image!r}")
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    if ra.shape != dec.shape or ra.ndim != 1:
        raise InputError(None, f"ra and dec must be the same length, got {ra.shape} and {dec.shape}")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)) and np.all(np.abs(dec) <= 90)):
        raise InputError(None, "ra/dec must be finite with |dec| <= 90 deg")
    request = []
    if jd_end is not None and jd_end < SURVEY_START_JD:
        raise InputError(None, f"end JD {jd_end} is before the survey start {SURVEY_START_JD} (procstatus 65)")
    if jd_start is not None and jd_start < SURVEY_START_JD:
        jd_start = SURVEY_START_JD
        request.append(int(ProcStatus.START_BEFORE_SURVEY))
    keys = []
    for key in store.keys("sci", suffix=_IMAGES[image][0]):
        try:
            hdr = read_header(store.path(key))
        except ZTFSDSError as exc:
            log.warning("forced photometry: skipping %s (%s)", key.filename, exc)
            continue
        jd = float(hdr.get("OBSJD", np.nan))
        if (jd_start is not None and not jd >= jd_start) or (jd_end is not None and not jd <= jd_end):
            continue
        keys.append(key)
    if len(keys) > max_files:
        request.append(int(ProcStatus.FILE_LIMIT))
        keys = keys[:max_files]
    rows = []
    index = np.arange(len(ra))
    for key in keys:
        try:
            rows.extend(_image_rows(store, key, image, ra, dec, index, fit_radius=fit_radius,
                                    max_bad_frac=max_bad_frac))
        except ZTFSDSError as exc:
            log.error("forced photometry %s: %s", key.filename, exc)
    table = _empty_table(len(rows))
    table.add_column(np.array([r["_ra"] for r in rows], dtype=float), name="ra", index=0)
    table.add_column(np.array([r["_dec"] for r in rows], dtype=float), name="dec", index=1)
    table.add_column(np.array([r["index"] for r in rows], dtype=np.int64), name="posid", index=0)
    for name, dtype, _ in ZFPS_COLUMNS:
        if rows:
            table[name] = np.array([r[name] for r in rows]).astype(dtype)
    if rows:
        order = np.lexsort((table["jd"], table["posid"]))
        table = table[order]
        table["index"] = np.concatenate([np.arange(n) for n in np.bincount(table["posid"])])
    else:
        request.append(int(ProcStatus.NO_EPOCHS))
    table.meta["procstatus"] = request
    table.meta["image"] = image
    return table


def baseline_correct(table: Table, *, jd_peak: float | None = None, before: float = 100.0,
                     after: float = 500.0, min_epochs: int = 25, good=None) -> Table:
    """Subtract the median baseline flux per field/ccd/quadrant/filter/reference (``fcqfid``, ``rfid``).

    The reference may contain some of the transient's light, or the flux scaling leaves an offset: the
    usual fix (Bright Transient Survey) is to subtract the median flux of the epochs without the
    transient -- more than ``before`` days before ``jd_peak`` or more than ``after`` days after it
    (every epoch when ``jd_peak`` is None: a non-varying source).

    Parameters
    ----------
    table : `~astropy.table.Table`
        Output of `forced_photometry_service` or `read_forced_photometry` (one position).
    jd_peak : float, optional
        JD of the transient's peak.
    before, after : float, optional
        Baseline windows [day].
    min_epochs : int, optional
        Groups with fewer baseline epochs are left uncorrected (``baseline_n`` tells).
    good : array of bool, optional
        Epochs usable for the baseline (default: `usable`).

    Returns
    -------
    `~astropy.table.Table`
        A copy with ``forcediffimflux`` corrected and ``baseline``, ``baseline_n``, ``fcqfid`` added.
    """
    out = table.copy()
    flux = np.asarray(out["forcediffimflux"], dtype=float)
    ok = usable(out) if good is None else np.asarray(good, bool)
    fcqfid = _fcqfid(out)
    out["fcqfid"] = fcqfid
    jd = np.asarray(out["jd"], dtype=float)
    base_epoch = np.ones(len(out), bool) if jd_peak is None else (jd < jd_peak - before) | (jd > jd_peak + after)
    baseline = np.zeros(len(out))
    nbase = np.zeros(len(out), dtype=int)
    groups = np.stack([fcqfid, np.asarray(out["rfid"], dtype=np.int64)], axis=1)
    for g in np.unique(groups, axis=0):
        rows = np.all(groups == g, axis=1)
        use = rows & ok & base_epoch
        nbase[rows] = use.sum()
        if use.sum() >= min_epochs:
            baseline[rows] = np.median(flux[use])
    corrected = np.where(ok, flux - baseline, flux)
    out["forcediffimflux"] = corrected
    out["baseline"] = baseline
    out["baseline_n"] = nbase
    return out


def rescale_uncertainties(table: Table, *, jd_peak: float | None = None, before: float = 100.0,
                          after: float = 500.0, method: str = "baseline", min_epochs: int = 10) -> Table:
    """Scale the flux uncertainties by sqrt(reduced chi2), per ``fcqfid``.

    ``method='baseline'``: the factor is the square root of the reduced chi2 of the baseline epochs'
    fluxes about their weighted mean (the Bright Transient Survey's recipe); ``'chisq'``: the square
    root of each epoch's own ``forcediffimchisq``. Factors below 1 are not applied.

    Returns
    -------
    `~astropy.table.Table`
        A copy with ``forcediffimfluxunc`` scaled and the factor in ``unc_scale``.
    """
    out = table.copy()
    unc = np.asarray(out["forcediffimfluxunc"], dtype=float)
    if method == "chisq":
        chi = np.asarray(out["forcediffimchisq"], dtype=float)
        scale = np.sqrt(np.where(np.isfinite(chi) & (chi > 1.0), chi, 1.0))
    elif method == "baseline":
        flux = np.asarray(out["forcediffimflux"], dtype=float)
        ok = usable(out)
        jd = np.asarray(out["jd"], dtype=float)
        base = np.ones(len(out), bool) if jd_peak is None else (jd < jd_peak - before) | (jd > jd_peak + after)
        fcqfid = _fcqfid(out)
        scale = np.ones(len(out))
        for g in np.unique(fcqfid):
            rows = fcqfid == g
            use = rows & ok & base
            if use.sum() < min_epochs:
                continue
            w = 1.0 / unc[use] ** 2
            mean = np.sum(w * flux[use]) / np.sum(w)
            chi2 = np.sum(w * (flux[use] - mean) ** 2) / (use.sum() - 1)
            scale[rows] = math.sqrt(max(chi2, 1.0))
    else:
        raise InputError(None, f"method must be 'baseline' or 'chisq', got {method!r}")
    out["forcediffimfluxunc"] = np.where(np.isfinite(unc) & (unc > 0), unc * scale, unc)
    out["unc_scale"] = scale
    return out


def to_magnitudes(table: Table, *, snr_detect: float = 3.0, snr_limit: float = 5.0) -> Table:
    """Fluxes in uJy, magnitudes for detections and upper limits for the rest.

    ``f_nu [uJy] = flux * 10**(29 - 48.6 / 2.5 - 0.4 zpdiff)``; a detection has S/N >= ``snr_detect``
    (``mag = zpdiff - 2.5 log10(flux)``, ``magerr = 1.0857 / S/N``); otherwise ``mag`` is NaN and
    ``lim = zpdiff - 2.5 log10(snr_limit * fluxunc)``.
    """
    out = table.copy()
    flux = np.asarray(out["forcediffimflux"], dtype=float)
    unc = np.asarray(out["forcediffimfluxunc"], dtype=float)
    zp = np.asarray(out["zpdiff"], dtype=float)
    ok = usable(out) & (unc > 0) & np.isfinite(zp) & (zp > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10 ** (29.0 - 48.6 / 2.5 - 0.4 * zp)
        snr = flux / unc
        det = ok & (snr >= snr_detect)
        out["flux_ujy"] = np.where(ok, flux * scale, np.nan)
        out["flux_ujy_unc"] = np.where(ok, unc * scale, np.nan)
        out["mag"] = np.where(det, zp - 2.5 * np.log10(np.where(det, flux, 1.0)), np.nan)
        out["magerr"] = np.where(det, 2.5 / math.log(10.0) / snr, np.nan)
        out["lim"] = np.where(ok, zp - 2.5 * np.log10(snr_limit * np.where(ok, unc, 1.0)), np.nan)
    out["detected"] = det
    return out


#: procstatus codes that still leave a usable flux (57: no reference source nearby, a remark).
USABLE_STATUS = frozenset({int(ProcStatus.OK), int(ProcStatus.NO_REFERENCE_SOURCE)})


def usable(table) -> np.ndarray:
    """Epochs with a usable flux: finite, and every procstatus code in `USABLE_STATUS` (56, bad pixels
    that may affect the photometry, is excluded, as users of the real service do)."""
    flux = np.asarray(table["forcediffimflux"], dtype=float)
    ok = [all(c.strip().isdigit() and int(c) in USABLE_STATUS for c in str(s).split(","))
          for s in table["procstatus"]]
    return np.isfinite(flux) & (flux != NULL) & np.asarray(ok, dtype=bool)


def _fcqfid(table) -> np.ndarray:
    """`ztfsds.products.fcqfid` of every row (filter ZTF_g/r/i -> fid 1/2/3)."""
    fid = [{"ZTF_g": 1, "ZTF_r": 2, "ZTF_i": 3}.get(str(f).strip(), 0) for f in table["filter"]]
    return np.array([fcqfid(f, c, q, i) for f, c, q, i in zip(table["field"], table["ccdid"], table["qid"], fid)],
                    dtype=np.int64)


def forced_photometry_text(table: Table, *, ra=None, dec=None, jd_start=None, jd_end=None) -> str:
    """A table as the real service's text output (comment block, column list, one line per epoch)."""
    lines = ["# " + "-" * 66, "# Generated by ztfsds forced photometry", "#"]
    if ra is not None:
        lines += [f"# Requested input R.A. = {ra} degrees", f"# Requested input Dec. = {dec} degrees"]
    if jd_start is not None:
        lines.append(f"# Requested JD start = {jd_start} days")
    if jd_end is not None:
        lines.append(f"# Requested JD end = {jd_end} days")
    lines += ["#", "# " + "-" * 66, "# Order of columns below:",
              " " + ", ".join(name for name, _, _ in ZFPS_COLUMNS), "#"]
    for row in table:
        vals = []
        for name, dtype, _ in ZFPS_COLUMNS:
            v = row[name]
            if dtype[0] == "f":
                v = float(v)
                vals.append("null" if not np.isfinite(v) or v == NULL else f"{v:.10g}")
            else:
                vals.append(str(v).strip())
        lines.append(" " + " ".join(vals))
    return "\n".join(lines) + "\n"


def write_forced_photometry(table: Table, path, **request) -> Path:
    """Write `forced_photometry_text` of ``table`` to ``path`` atomically (``request``: ra, dec,
    jd_start, jd_end for the comment block)."""
    from ..products import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(forced_photometry_text(table, **request))
    return path


def read_forced_photometry(path) -> Table:
    """Read a forced-photometry text file (the real service's or ours; gzipped if ``.gz``) into a Table.

    Nulls ('null', 'NaN', -99999) become NaN in float columns; ``procstatus`` stays a string (it can
    list several codes).
    """
    path = Path(path)
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rt") as fh:
            text = fh.read().splitlines()
    else:
        text = path.read_text().splitlines()
    header_line = None
    data = []
    for i, line in enumerate(text):
        if line.startswith("#"):
            continue
        if header_line is None:
            if "," in line and re.search(r"[a-z]", line):
                header_line = [c.strip() for c in line.split(",")]
            continue
        if line.strip():
            data.append(line.split())
    if header_line is None:
        raise InputError(path, "no column list (not a forced-photometry output)")
    columns = dict((n, (d, u)) for n, d, u in ZFPS_COLUMNS)
    table = Table()
    for k, name in enumerate(header_line):
        vals = [row[k] if k < len(row) else "null" for row in data]
        dtype = columns.get(name, ("f8", None))[0]
        if name in ("filter", "procstatus"):
            table[name] = np.array(vals, dtype=str)
        elif dtype[0] == "i":
            table[name] = np.array([int(float(v)) if v not in ("null", "NaN", "nan") else NULL for v in vals],
                                   dtype=np.int64)
        else:
            arr = np.array([float(v) if v not in ("null", "NaN", "nan") else np.nan for v in vals])
            arr[arr == NULL] = np.nan
            table[name] = arr
        unit = columns.get(name, (None, None))[1]
        if unit:
            table[name].unit = unit
    return table

