"""Product runner of the photometry stage: PSF model, psfcat, sexcat apertures, zero point, MAGLIM.

`run_photom` reads an astrometrically calibrated quadrant (sciimg, mskimg, varimg and the ``sexcat``
sources of `~ztfsds.astrom.run_astrom`), and

1. fits the spatially varying PSF (`~ztfsds.photom.psf.build_psf`) and writes it as the ``sciimgpsf``
   product (and the PSF at the image centre as ``sciimgdaopsfcent``, a plain stamp as IPAC's);
2. PSF-fits every source (`~ztfsds.photom.psffit.psf_photometry`) into the ``psfcat`` product;
3. measures the six fixed apertures on every source (`~ztfsds.photom.aperture.aperture_photometry`)
   and the aperture corrections APCOR1-6 on bright isolated stars, added to the ``sexcat``;
4. calibrates against the PS1-like catalog (`~ztfsds.photom.photcal.photometric_calibration`):
   MAGZP, CLRCOEFF ... in every product header and calibrated ``mag`` columns in both catalogs;
5. writes MAGLIM (from the PSF catalog's uncertainties), MAGLIMEM (the empirical limit), SEEING (the
   PSF model's FWHM at the centre, in pixels: the FWHM of the pixel-integrated point source, which is
   what IPAC's SEEING measures) and INFOBITS 3-11 and 20.

A quadrant without a PSF (too few stars) still gets its aperture catalog, with bit 20 (and 8: no
calibration without PSF-fit fluxes); one without astrometry gets PSF and catalogs without sky positions
and bit 8. Running it again gives the same products.
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

from ..astrom.extraction import background
from ..catalogs import query_for_wcs
from ..config import Config
from ..errors import PhotometryError, ZTFSDSError
from ..products import InfoBits, MaskBits, ProductStatus, ProductStore, read_header, table_hdulist
from ..products.quadrant import read_quadrant, update_quadrant_headers
from .aperture import aperture_corrections, aperture_photometry, apcor_header_cards
from .photcal import PhotCalResult, empirical_limiting_magnitude, limiting_magnitude, photometric_calibration
from .psf import build_psf
from .psffit import psf_photometry

__all__ = ["run_photom", "PHOTOM_INFOBITS", "psfcat_table"]

log = logging.getLogger(__name__)

#: INFOBITS of the photometry stage (3-11, 20): cleared before a re-run records its own.
PHOTOM_INFOBITS = sum(1 << b for b in (3, 4, 5, 6, 7, 8, 9, 10, 11, 20))

#: ZTF's thresholds of bits 3-7.
MAX_SEEING_ARCSEC = 5.0
MIN_MAGLIM = 17.5
MIN_PSF_SOURCES = 10
MIN_SEX_SOURCES = 20

_LN10 = math.log(10.0)


def _mags(flux, flux_err, magzp):
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(flux) & (flux > 0) & math.isfinite(magzp)
        mag = np.where(ok, magzp - 2.5 * np.log10(np.where(ok, flux, 1.0)), np.nan)
        err = np.where(ok, 2.5 / _LN10 * np.asarray(flux_err, dtype=float) / np.where(ok, flux, 1.0), np.nan)
    return mag, err


def psfcat_table(fit: Table, sources: Table, wcs: WCS | None, magzp: float = float("nan")) -> Table:
    """The ``psfcat`` product table from a `psf_photometry` result.

    Columns follow IPAC's PSF catalogs (``sourceid``, ``ra``, ``dec``, ``flux``, ``sigflux``, ``mag``,
    ``sigmag``, ``snr``, ``chi``, ``sharp``, ``flags``), with 0-based ``x``, ``y`` as every ztfsds catalog;
    ``chi`` is DAOPHOT's (the RMS of the fit residuals over the expected: ``sqrt`` of the reduced chi2).
    """
    out = Table()
    out["sourceid"] = np.asarray(sources["id"], dtype=np.int64)
    for name in ("x", "y", "x_err", "y_err"):
        out[name] = np.asarray(fit[name], dtype=np.float64)
        out[name].unit = u.pix
    ra = dec = np.full(len(fit), np.nan)
    if wcs is not None and len(fit):
        ra, dec = wcs.all_pix2world(np.asarray(fit["x"]), np.asarray(fit["y"]), 0)
    out["ra"], out["dec"] = ra, dec
    out["ra"].unit = out["dec"].unit = u.deg
    out["flux"] = np.asarray(fit["flux"], dtype=np.float64)
    out["sigflux"] = np.asarray(fit["flux_err"], dtype=np.float64)
    out["flux"].unit = out["sigflux"].unit = u.adu
    mag, err = _mags(out["flux"], out["sigflux"], magzp)
    out["mag"], out["sigmag"] = mag, err
    out["mag"].unit = out["sigmag"].unit = u.mag
    out["snr"] = np.asarray(fit["snr"], dtype=np.float64)
    out["chi"] = np.sqrt(np.clip(np.asarray(fit["chi2"], dtype=np.float64), 0.0, None))
    out["sharp"] = np.asarray(fit["sharp"], dtype=np.float64)
    for name in ("npix", "nbad", "group_id", "group_size"):
        if name in fit.colnames:
            out[name] = np.asarray(fit[name]).astype(np.int32)
    out["flags"] = np.asarray(fit["flags"]).astype(np.int32)
    return out


def run_photom(key, store: ProductStore, config: Config | None = None) -> ProductStatus:
    """PSF, PSF-fit and aperture catalogs, photometric calibration and MAGLIM of one quadrant.

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        The quadrant (any of its products' keys or file names; the sciimg is used).
    store : `~ztfsds.products.ProductStore`
        Data root with the calibrated, astrometrically solved products (``run_astrom``) and the PS1-like
        catalog (``ztfsds catalogs build``).
    config : `~ztfsds.config.Config`, optional
        Parameters (the ``photom`` set is used and recorded in the headers).

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        ``ok`` when the PSF catalog was written and calibrated; INFOBITS 3-11 and 20 as IPAC sets them.
    """
    config = config or Config()
    params = config.photom
    start = time.perf_counter()
    try:
        quad = read_quadrant(store, key)
        key, sci, header, msk, var = quad.key, quad.sciimg, quad.header, quad.mskimg, quad.varimg
        sexcat_path = store.path(key.with_suffix("sexcat"))
        if not sexcat_path.exists():
            raise ZTFSDSError(f"{key.filename}: no sexcat (run the astrometry stage first)")
        sources = Table.read(sexcat_path, hdu="SOURCES")
    except ZTFSDSError as exc:
        name = getattr(key, "filename", str(key))
        log.error("photom %s: %s", name, exc)
        return ProductStatus("photom", name, ok=False, infobits=int(InfoBits.PSF_FAILED | InfoBits.PHOTCAL_FAILED),
                             message=str(exc), elapsed=time.perf_counter() - start)

    name = key.filename
    infobits = 0
    messages = []
    bad = (msk.astype(np.int32) & int(MaskBits.BAD)) != 0
    bkg = background(sci, msk, mesh=config.astrom.background_mesh, filename=name)
    gain = float(header["GAIN"]) if "GAIN" in header else None
    saturate = float(header["SATURATE"]) if "SATURATE" in header else None
    astrom_ok = "CTYPE1" in header and not int(header.get("INFOBITS", 0)) & int(InfoBits.ASTROM_FAILED)
    wcs = WCS(header) if astrom_ok else None

    # 1. PSF
    psf = None
    try:
        psf = build_psf(sci, bad.astype(np.int16), sources, size=params.psf_size,
                        oversample=params.psf_oversampling, degree=params.psf_degree,
                        max_stars=params.psf_max_stars, gain=gain if gain else 6.0, saturate=saturate,
                        product=name)
    except PhotometryError as exc:
        infobits |= int(exc.infobits or InfoBits.PSF_FAILED) | int(InfoBits.PHOTCAL_FAILED)
        messages.append(str(exc))
        log.error("photom %s: %s", name, exc)

    x = np.asarray(sources["x"], dtype=float)
    y = np.asarray(sources["y"], dtype=float)
    # 2. PSF-fit catalog
    fit = None
    if psf is not None:
        seeing = float(psf.fwhm((sci.shape[1] - 1) / 2.0, (sci.shape[0] - 1) / 2.0))
        fit_radius = max(params.fit_radius, 1.1 * seeing) if math.isfinite(seeing) else params.fit_radius
        fit = psf_photometry(sci, psf, x, y, np.asarray(sources["flux"], dtype=float), mskimg=msk,
                             background=bkg.level, bkg_rms=bkg.rms, gain=gain, saturate=saturate,
                             fit_radius=fit_radius, group_radius=max(params.group_radius, fit_radius + 1.0),
                             max_group=params.max_group, psf_error=params.psf_error, product=name)
    # 3. apertures (at the extraction's positions) and their corrections
    ap = aperture_photometry(sci, x, y, params.aperture_diameters, mskimg=msk, varimg=var,
                             background=bkg.level, bkg_rms=bkg.rms, gain=gain, product=name)
    apcor = apcor_unc = None
    if fit is not None and len(fit):
        isolated = ((np.asarray(sources["flags"]) == 0) & (np.asarray(fit["flags"]) == 0)
                    & (np.asarray(fit["snr"]) > 50) & np.all(np.asarray(ap["flags_aper"]) == 0, axis=1))
        if "group_size" in fit.colnames:
            isolated &= np.asarray(fit["group_size"]) == 1
        try:
            apcor, apcor_unc = aperture_corrections(np.asarray(fit["flux"]), np.asarray(ap["flux_aper"]),
                                                    np.asarray(ap["fluxerr_aper"]), select=isolated, product=name)
        except PhotometryError as exc:
            messages.append(f"no aperture corrections: {exc}")

    # 4. photometric calibration
    cal = PhotCalResult(ok=False, infobits=int(InfoBits.PHOTCAL_FAILED))
    psfcat = psfcat_table(fit, sources, wcs) if fit is not None else None
    if psfcat is not None and wcs is not None:
        try:
            epoch = float(header["OBSJD"]) if "OBSJD" in header else None
            ps1 = query_for_wcs(store, "ps1", wcs, sci.shape, margin=30 * u.arcsec, epoch=epoch)
            cal = photometric_calibration(psfcat, ps1, str(header.get("FILTER", key.filtercode)), params=params)
        except ZTFSDSError as exc:
            cal.message = f"photometric calibration not possible: {exc}"
        if not cal.ok:
            messages.append(cal.message)
    elif psfcat is not None:
        cal.message = "photometric calibration not possible: no astrometric solution"
        messages.append(cal.message)
    infobits |= cal.infobits
    magzp = cal.magzp if cal.ok else float("nan")
    if psfcat is not None:
        psfcat["mag"], psfcat["sigmag"] = _mags(psfcat["flux"], psfcat["sigflux"], magzp)

    # 5. limits, seeing, counts
    maglim = maglim_em = float("nan")
    seeing = float("nan") if psf is None else seeing
    if psfcat is not None and cal.ok:
        usable = np.asarray(psfcat["flags"]) == 0
        maglim = limiting_magnitude(np.asarray(psfcat["flux"])[usable], np.asarray(psfcat["sigflux"])[usable],
                                    magzp, snr=params.maglim_snr)
    if psf is not None:
        cx, cy = (sci.shape[1] - 1) / 2.0, (sci.shape[0] - 1) / 2.0
        if cal.ok:
            stamp = psf.stamp(cx, cy)
            nea = 1.0 / float(np.sum(stamp**2))
            maglim_em = empirical_limiting_magnitude(magzp, float(np.median(bkg.rms)), nea, snr=params.maglim_snr)
    pixscale = float(header.get("PIXSCALE", 1.012))
    if math.isfinite(seeing) and seeing * pixscale > MAX_SEEING_ARCSEC:
        infobits |= int(InfoBits.BAD_SEEING)
    if math.isfinite(maglim) and maglim < MIN_MAGLIM:
        infobits |= int(InfoBits.LOW_MAGLIM_PSF)
    if math.isfinite(maglim_em) and maglim_em < MIN_MAGLIM:
        infobits |= int(InfoBits.LOW_MAGLIM_EMPIRICAL)
    npsf = 0 if psfcat is None else int(np.sum(np.asarray(psfcat["flags"]) == 0))
    if npsf < MIN_PSF_SOURCES:
        infobits |= int(InfoBits.FEW_PSF_SOURCES)
    if len(sources) < MIN_SEX_SOURCES:
        infobits |= int(InfoBits.FEW_SEX_SOURCES)

    def update(h: fits.Header) -> None:
        h["INFOBITS"] = (int(h.get("INFOBITS", 0)) & ~PHOTOM_INFOBITS) | infobits
        cal.update_header(h)
        h["INFOBITS"] = (int(h.get("INFOBITS", 0)) & ~PHOTOM_INFOBITS) | infobits
        h["SEEING"] = (round(seeing, 3) if math.isfinite(seeing) else -999.0, "seeing FWHM [pixels]")
        h["MAGLIM"] = (round(maglim, 3) if math.isfinite(maglim) else -999.0,
                       "5-sigma mag-limit in PSF-fit catalog [mag]")
        h["MAGLIMEM"] = (round(maglim_em, 3) if math.isfinite(maglim_em) else -999.0,
                         "5-sigma mag-limit from sky noise and PSF [mag]")
        if apcor is not None:
            for kw, value, comment in apcor_header_cards(params.aperture_diameters, apcor, apcor_unc):
                h[kw] = (value, comment)
        if psf is not None:
            h["PSFNSTAR"] = (int(psf.nstar), "number of stars in the PSF model")
        config.to_header(h, stages=("photom",))

    update_quadrant_headers(store, key, update)
    cat_header = read_header(store.path(key))
    outputs = [store.path(key)]
    if psf is not None:
        hdul = psf.to_hdulist()
        hdul[0].header["EXTNAME"] = "PSFMODEL"
        outputs.append(store.write_fits(key.with_suffix("sciimgpsf"), hdul))
        cent = psf.stamp((sci.shape[1] - 1) / 2.0, (sci.shape[0] - 1) / 2.0).astype(np.float32)
        outputs.append(store.write_fits(key.with_suffix("sciimgdaopsfcent"),
                                        fits.PrimaryHDU(cent, fits.Header([("SEEING", cat_header["SEEING"])]))))
    if psfcat is not None:
        outputs.append(store.write_fits(key.with_suffix("psfcat"), table_hdulist(cat_header, psfcat, "PSFCAT")))
    # the sexcat: the extraction's table plus the apertures and calibrated magnitudes
    sexcat = Table(sources, copy=True)
    for col in ("flux_aper", "fluxerr_aper"):
        sexcat[col] = np.asarray(ap[col], dtype=np.float64)
        sexcat[col].unit = u.adu
    mag_aper, magerr_aper = _mags(sexcat["flux_aper"], sexcat["fluxerr_aper"], magzp)
    sexcat["mag_aper"], sexcat["magerr_aper"] = mag_aper, magerr_aper
    sexcat["mag_aper"].unit = sexcat["magerr_aper"].unit = u.mag
    sexcat["flags_aper"] = np.asarray(ap["flags_aper"]).astype(np.int32)
    sexcat["mag"], sexcat["magerr"] = _mags(sexcat["flux"], sexcat["flux_err"], magzp)
    sexcat["mag"].unit = sexcat["magerr"].unit = u.mag
    if wcs is not None:
        ra, dec = wcs.all_pix2world(x, y, 0)
        sexcat["ra"], sexcat["dec"] = ra, dec
    outputs.append(store.write_fits(key.with_suffix("sexcat"), table_hdulist(cat_header, sexcat, "SOURCES")))

    ok = psfcat is not None and cal.ok
    if ok:
        message = (f"{len(psfcat)} PSF-fit sources, {cal.message}, MAGLIM {maglim:.2f}, SEEING {seeing:.2f} px")
    else:
        message = "; ".join(m for m in messages if m) or "photometry incomplete"
        log.error("photom %s: %s", name, message)
    return ProductStatus("photom", name, ok=bool(ok), infobits=int(infobits), message=message, outputs=outputs,
                         elapsed=time.perf_counter() - start)
