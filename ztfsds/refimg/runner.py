"""Product runner of the reference images: `build_reference` and the coverage synopsis.

`build_reference` gathers the calibrated epochs of one field / CCD / quadrant / filter under the data
root, selects the best (`~ztfsds.refimg.coadd.select_epochs`), co-adds them on a fixed TAN grid
(`~ztfsds.refimg.coadd.coadd`) at the zero point `REFERENCE_ZP`, and measures the co-add as a science
image is measured (extraction, PSF model, PSF-fit and aperture catalogs). It writes IPAC's reference
products under ``ref/``: ``refimg`` (the co-add, header with RFID, NFRAMES, JDSTART, JDEND, MAGZP,
SEEING, MAGLIM, GAIN), ``refunc`` (1-sigma uncertainty), ``refcov`` (epochs per pixel), ``refmsk``,
``refimgpsf`` (the PSF model), ``refpsfcat`` and ``refsexcat``. `reference_synopsis` tabulates every
reference of the data root for the weekly review.
"""

from __future__ import annotations

import logging
import math
import time

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..astrom.extraction import background, extract
from ..camera import get_filter
from ..camera import rcid as rcid_of
from ..config import Config
from ..errors import PhotometryError, ZTFSDSError
from ..photom.aperture import aperture_photometry
from ..photom.photcal import limiting_magnitude
from ..photom.psf import build_psf
from ..photom.psffit import psf_photometry
from ..photom.runner import psfcat_table
from ..products import InfoBits, ProductKey, ProductStatus, ProductStore, read_header, read_image, table_hdulist
from ..products import rfid as rfid_of
from .coadd import Epoch, coadd, reference_grid, select_epochs

__all__ = ["build_reference", "reference_synopsis", "REFERENCE_ZP", "epoch_table"]

log = logging.getLogger(__name__)

#: Zero point of every reference image [mag] (IPAC's matchfiles quote a reference zero point of 27).
REFERENCE_ZP = 27.0

#: The science INFOBITS that do not disqualify an epoch: few astrometric in-grid matches (a small
#: or sparse quadrant) and the change of the astrometric chi2 (always set by a second pass).
ALLOWED_INFOBITS = int(InfoBits.FEW_INGRID_ASTROM_MATCHES | InfoBits.ASTROM_CHI2_CHANGE)


def epoch_table(store: ProductStore, field: int, ccdid: int, qid: int, filtercode: str) -> Table:
    """The calibrated epochs of a field / CCD / quadrant / filter with their quality (one row each)."""
    fc = get_filter(filtercode).code
    rows = []
    for key in store.keys("sci", suffix="sciimg"):
        if (key.field, key.ccdid, key.qid, key.filtercode) != (int(field), int(ccdid), int(qid), fc):
            continue
        try:
            h = read_header(store.path(key))
        except ZTFSDSError as exc:
            log.warning("reference: skipping %s (%s)", key.filename, exc)
            continue
        pixscale = float(h.get("PIXSCALE", 1.012))
        seeing = float(h.get("SEEING", -999.0))
        ok = ("CTYPE1" in h and float(h.get("MAGZP", -999.0)) > 0 and int(h.get("NMATCHES", 0)) > 0
              and seeing > 0)
        rows.append({"name": key.filename, "jd": float(h.get("OBSJD", np.nan)), "infobits": int(h.get("INFOBITS", 0)),
                     "seeing": seeing * pixscale if seeing > 0 else np.nan,
                     "maglim": float(h.get("MAGLIM", np.nan)), "magzp": float(h.get("MAGZP", np.nan)), "ok": ok})
    names = ["name", "jd", "infobits", "seeing", "maglim", "magzp", "ok"]
    if not rows:
        return Table(names=names, dtype=["U80", "f8", "i8", "f8", "f8", "f8", "bool"])
    return Table(rows=[[r[n] for n in names] for r in rows], names=names)


def _load_epoch(store: ProductStore, name: str) -> Epoch:
    key = ProductKey.parse(name)
    sci, h = read_image(store.path(key))
    msk, _ = read_image(store.path(key.with_suffix("mskimg")))
    var_path = store.path(key.with_suffix("varimg"))
    bkg = background(sci, msk, filename=name)
    var = read_image(var_path)[0] if var_path.exists() else np.full(sci.shape, np.median(bkg.rms) ** 2, np.float32)
    return Epoch(sciimg=(sci - bkg.level).astype(np.float32), varimg=var, mskimg=msk, wcs=WCS(h),
                 bkg_sigma=float(np.median(bkg.rms)), magzp=float(h["MAGZP"]), jd=float(h["OBSJD"]), name=name)


def build_reference(store: ProductStore, field: int, ccdid: int, qid: int, filtercode: str,
                    config: Config | None = None) -> ProductStatus:
    """Build (or rebuild) the reference image of one field / CCD / quadrant / filter.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore`
        Data root with calibrated, astrometrically and photometrically calibrated epochs.
    field, ccdid, qid : int
        The quadrant.
    filtercode : str
        'zg', 'zr' or 'zi'.
    config : `~ztfsds.config.Config`, optional
        The ``refimg`` parameters (epochs, seeing and depth limits, clipping) and ``photom`` (the PSF).

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        ``ok`` with the products written; a failed status (nothing written, an existing reference left
        as it was) when there are too few good epochs.
    """
    config = config or Config()
    params = config.refimg
    start = time.perf_counter()
    fc = get_filter(filtercode).code
    ref_key = ProductKey("ref", fc, int(ccdid), int(qid), int(field), None, None, "o", "refimg", ".fits")
    name = ref_key.filename
    try:
        table = epoch_table(store, field, ccdid, qid, fc)
        chosen = select_epochs(table, params, allowed_infobits=ALLOWED_INFOBITS)
        epochs = [_load_epoch(store, str(n)) for n in chosen["name"]]
    except ZTFSDSError as exc:
        log.error("refimg %s: %s", name, exc)
        return ProductStatus("refimg", name, ok=False, message=str(exc), elapsed=time.perf_counter() - start)
    shape = epochs[0].sciimg.shape
    grid = reference_grid(epochs[0].wcs, shape)
    result = coadd(epochs, grid, shape, zp=REFERENCE_ZP, params=params, product=name)

    # measure the co-add as a science image
    image, var, mask = result.image, result.variance, result.mask
    usable_var = np.where(np.isfinite(var), var, 0.0).astype(np.float32)
    scales = np.array([10 ** (0.4 * (REFERENCE_ZP - e.magzp)) for e in epochs])
    gain0 = float(np.median([float(read_header(store.path(ProductKey.parse(e.name))).get("GAIN", 6.0))
                             for e in epochs[:3]]))
    gain = gain0 / float(np.median(scales)) * len(epochs)
    src = extract(image, mask, usable_var, params=config.astrom, gain=gain, filename=name)
    bkg = background(image, mask, filename=name)
    psf = None
    seeing = maglim = float("nan")
    psfcat = None
    try:
        psf = build_psf(image, mask, src, size=config.photom.psf_size, oversample=config.photom.psf_oversampling,
                        degree=config.photom.psf_degree, max_stars=config.photom.psf_max_stars, gain=gain,
                        product=name)
        seeing = float(psf.fwhm((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0))
        fit = psf_photometry(image, psf, src["x"], src["y"], src["flux"], mskimg=mask, background=bkg.level,
                             bkg_rms=bkg.rms, gain=gain, fit_radius=max(config.photom.fit_radius, 1.1 * seeing),
                             group_radius=config.photom.group_radius, psf_error=config.photom.psf_error,
                             product=name)
        psfcat = psfcat_table(fit, src, grid, REFERENCE_ZP)
        good = np.asarray(psfcat["flags"]) == 0
        maglim = limiting_magnitude(np.asarray(psfcat["flux"])[good], np.asarray(psfcat["sigflux"])[good],
                                    REFERENCE_ZP)
    except PhotometryError as exc:
        log.error("refimg %s: %s", name, exc)
    ap = aperture_photometry(image, src["x"], src["y"], config.photom.aperture_diameters, mskimg=mask,
                             varimg=usable_var, background=bkg.level, gain=gain, product=name)
    ra, dec = grid.all_pix2world(np.asarray(src["x"]), np.asarray(src["y"]), 0)
    sexcat = Table(src, copy=True)
    sexcat["ra"], sexcat["dec"] = ra, dec
    sexcat["flux_aper"] = np.asarray(ap["flux_aper"])
    sexcat["fluxerr_aper"] = np.asarray(ap["fluxerr_aper"])

    h = grid.to_header()
    fid = get_filter(fc).fid
    jds = np.array([e.jd for e in epochs])
    covered = result.coverage[result.coverage > 0]
    for card in [
        ("FIELDID", int(field), "ZTF field"), ("CCDID", int(ccdid), "CCD id"), ("QID", int(qid), "readout quadrant"),
        ("RCID", rcid_of(int(ccdid), int(qid)), "readout-channel id"), ("FILTER", fc, "filter"),
        ("FILTERID", fid, "filter id"), ("RFID", rfid_of(int(field), fid, rcid_of(int(ccdid), int(qid))),
                                          "reference-image id"),
        ("NFRAMES", len(epochs), "epochs co-added"), ("JDSTART", float(jds.min()), "first epoch [JD]"),
        ("JDEND", float(jds.max()), "last epoch [JD]"), ("MAGZP", REFERENCE_ZP, "zero point [mag]"),
        ("SEEING", round(seeing, 3) if math.isfinite(seeing) else -999.0, "seeing FWHM [pixels]"),
        ("MAGLIM", round(maglim, 3) if math.isfinite(maglim) else -999.0, "5-sigma mag-limit in PSF-fit catalog"),
        ("GAIN", float(gain), "effective gain [e-/DN]"), ("MEDSKY", 0.0, "background subtracted [DN]"),
        ("SKYSIG", float(np.median(bkg.rms)), "robust background noise [DN]"),
        ("COVMED", float(np.median(covered)) if covered.size else 0.0, "median epochs per pixel"),
        ("COVFRAC", float((result.coverage >= max(1, len(epochs) // 2)).mean()),
         "fraction with half the epochs or more"),
        ("NREJECT", int(result.nrejected), "pixel values rejected as outliers"),
    ]:
        h[card[0]] = (card[1], card[2])
    config.to_header(h, stages=("refimg",))
    for i, e in enumerate(epochs):
        h[f"HIERARCH ZTFSDS REF EPOCH{i + 1:02d}"] = e.name
    outputs = [store.write_fits(ref_key, fits.PrimaryHDU(image, h)),
               store.write_fits(ref_key.with_suffix("refunc"), fits.PrimaryHDU(np.sqrt(var).astype(np.float32), h)),
               store.write_fits(ref_key.with_suffix("refcov"), fits.PrimaryHDU(result.coverage, h)),
               store.write_fits(ref_key.with_suffix("refmsk"), fits.PrimaryHDU(mask, h)),
               store.write_fits(ref_key.with_suffix("refsexcat"), table_hdulist(h, sexcat, "SOURCES"))]
    if psf is not None:
        outputs.append(store.write_fits(ref_key.with_suffix("refimgpsf"), psf.to_hdulist()))
    if psfcat is not None:
        outputs.append(store.write_fits(ref_key.with_suffix("refpsfcat"), table_hdulist(h, psfcat, "PSFCAT")))
    message = (f"{len(epochs)} epochs ({len(table)} available), SEEING {seeing:.2f} px, MAGLIM {maglim:.2f}, "
               f"{result.nrejected} outliers rejected")
    return ProductStatus("refimg", name, ok=psf is not None, message=message, outputs=outputs,
                         elapsed=time.perf_counter() - start)


def reference_synopsis(store: ProductStore) -> Table:
    """Every reference image of the data root with its quality and coverage (for the weekly review).

    Returns
    -------
    `~astropy.table.Table`
        ``field, ccdid, qid, filter, rfid, nframes, jdstart, jdend, seeing [px], maglim, covmed, covfrac,
        name``, one row per reference, sorted by field.
    """
    rows = []
    for key in store.keys("ref", suffix="refimg"):
        h = read_header(store.path(key))
        rows.append((key.field, key.ccdid, key.qid, key.filtercode, int(h.get("RFID", 0)), int(h.get("NFRAMES", 0)),
                     float(h.get("JDSTART", np.nan)), float(h.get("JDEND", np.nan)), float(h.get("SEEING", np.nan)),
                     float(h.get("MAGLIM", np.nan)), float(h.get("COVMED", np.nan)), float(h.get("COVFRAC", np.nan)),
                     key.filename))
    names = ["field", "ccdid", "qid", "filter", "rfid", "nframes", "jdstart", "jdend", "seeing", "maglim", "covmed",
             "covfrac", "name"]
    dtype = ["i4", "i4", "i4", "U2", "i8", "i4", "f8", "f8", "f8", "f8", "f8", "f8", "U80"]
    table = Table(rows=rows, names=names, dtype=dtype) if rows else Table(names=names, dtype=dtype)
    table["seeing"].unit = u.pix
    table["maglim"].unit = u.mag
    table.sort(["field", "ccdid", "qid", "filter"])
    return table


