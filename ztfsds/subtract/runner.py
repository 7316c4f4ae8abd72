"""Product runner of image subtraction: reference -> science grid, ZOGY, candidates.

`subtract_images` is the core on arrays + headers (any pair of calibrated images with WCS, including real
IRSA products); `run_subtract` reads a science quadrant and the reference of its field / CCD / quadrant /
filter from the data root and writes IPAC's products: ``scimrefdiffimg`` (D, in DN at the science zero
point, with the reference's RFID, NFRAMREF, RFJDSTRT, RFJDEND and the difference image's 5-sigma limit
DIFFMLIM), ``diffimgpsf`` (P_D), ``diffimgvar`` (variance of D), ``diffimgmsk`` and ``candidates`` (the
candidate table + their 63x63 cutouts).

Steps (ZTF_REFERENCE 2.6): the reference (image, variance, mask) is resampled onto the science image's
pixels (`ztfsds.refimg.resample`), scaled to its zero point; the science image's background map is
subtracted and a residual constant offset between the two (the median of ``new - ref`` over sky pixels)
removed; ZOGY (`ztfsds.subtract.zogy`) gives D, P_D, S and Scorr with the astrometric-noise term;
`~ztfsds.subtract.candidates.find_candidates` finds and measures the extrema of Scorr; streaks on D
(`~ztfsds.subtract.streaks.detect_streaks`) set mask bit 0 (SATELLITE_TRACK) and flag the candidates
lying on them (``onstreak``); each candidate gets ``rb`` (`~ztfsds.subtract.realbogus.rb_score`) and
``drb`` (`~ztfsds.subtract.braai.braai_score`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..astrom.extraction import background
from ..config import Config, SubtractParams
from ..errors import ZTFSDSError
from ..products import MaskBits, ProductStatus, ProductStore, read_image, table_hdulist
from ..products.quadrant import read_quadrant
from .braai import DRBVERSION
from .candidates import find_candidates
from .realbogus import RB_VERSION

__all__ = ["subtract_images", "Subtraction", "run_subtract", "difference_psf"]

log = logging.getLogger(__name__)


@dataclass
class Subtraction:
    """The outputs of `subtract_images` on the science grid: ``diff`` (D), ``psf`` (P_D as an oversampled
    `~ztfsds.photom.psf.PSFModel`, `difference_psf`), ``scorr``,
    ``variance`` (of D), ``mask``, ``ref`` (the reference resampled and scaled), ``sci`` (background
    subtracted), ``sigma`` (D's background noise), ``maglim`` (5-sigma point-source limit on D),
    ``candidates`` / ``cutouts`` and ``flux_ratio`` (the new/reference flux scale measured on stars and
    applied, on top of the zero points; NaN when not measured)."""

    diff: np.ndarray
    psf: object
    scorr: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    ref: np.ndarray
    sci: np.ndarray
    sigma: float
    maglim: float
    candidates: Table
    cutouts: np.ndarray
    flux_ratio: float = float("nan")
    streaks: Table | None = None


def _psf_stamp(psf, shape, size=None):
    """The PSF at the image centre, as the stars of the image are fitted with it (negative wings
    included: they are how the model represents the local background of the stars it was built from;
    clipping them would make P_N and P_R differ from the stars they stand for by a few percent)."""
    ny, nx = shape
    stamp = psf.stamp((nx - 1) / 2.0, (ny - 1) / 2.0, size=size)
    return stamp / stamp.sum()


def _flux_ratio(new, ref, bad, refcat, sigma_new, sigma_ref, diameter=14.0) -> float:
    """Median ``new / ref`` flux of bright isolated unflagged reference stars in a large aperture (NaN
    with fewer than 10 of them)."""
    from ..photom.aperture import aperture_photometry

    ny, nx = new.shape
    x, y = np.asarray(refcat["x"], float), np.asarray(refcat["y"], float)
    sel = (np.isfinite(x) & (x > 12) & (x < nx - 13) & (y > 12) & (y < ny - 13)
           & (np.asarray(refcat["flags"]) == 0) & (np.asarray(refcat["snr"]) > 30))
    if "group_size" in refcat.colnames:
        sel &= np.asarray(refcat["group_size"]) == 1
    if sel.sum() < 10:
        return float("nan")
    mask = bad.astype(np.int16) * np.int16(int(MaskBits.DEAD))
    fn = aperture_photometry(new, x[sel], y[sel], (diameter,), mskimg=mask, bkg_rms=sigma_new)
    fr = aperture_photometry(ref, x[sel], y[sel], (diameter,), mskimg=mask, bkg_rms=sigma_ref)
    a, b = np.asarray(fn["flux_aper"])[:, 0], np.asarray(fr["flux_aper"])[:, 0]
    ea, eb = np.asarray(fn["fluxerr_aper"])[:, 0], np.asarray(fr["fluxerr_aper"])[:, 0]
    ok = (np.asarray(fn["flags_aper"])[:, 0] == 0) & (np.asarray(fr["flags_aper"])[:, 0] == 0) & (b > 0) & (a > 0)
    ok &= (a / np.maximum(ea, 1e-9) > 50) & (b / np.maximum(eb, 1e-9) > 50)
    if ok.sum() < 10:
        return float("nan")
    r = a[ok] / b[ok]
    med = np.median(r)
    keep = np.abs(r - med) < 3 * 1.4826 * np.median(np.abs(r - med)) + 1e-6
    return float(np.median(r[keep]))


def difference_psf(psf_new, p_new: np.ndarray, p_ref: np.ndarray, sigma_new: float, sigma_ref: float,
                   position: tuple[float, float]):
    """P_D as an oversampled `~ztfsds.photom.psf.PSFModel` (degree 0), exact at every sub-pixel phase.

    A point source of flux ``T`` in the new image appears in D as ``T (P_N * k)`` with
    ``k^ = P_R^ / (F_D sqrt(sigma_N^2 |P_R^|^2 + sigma_R^2 |P_N^|^2))`` (ZOGY eqs. 13-15), ``P_N`` the
    source's own pixel-integrated PSF at its sub-pixel phase. The new image's oversampled model grid
    (nodes ``1 / ovs`` px apart) convolved with ``k`` dilated by ``ovs`` is therefore D's PSF on the same
    grid: interpolating it (as the PSF-fit kernels do) gives the right profile at any phase, where a
    pixel-sampled P_D stamp of an undersampled PSF, shifted by interpolation, errs by several percent.

    Parameters
    ----------
    psf_new : `~ztfsds.photom.psf.PSFModel`
        The new image's PSF model.
    p_new, p_ref : numpy.ndarray
        The pixel stamps ZOGY was given (odd, unit sum).
    sigma_new, sigma_ref : float
        ZOGY's background sigmas.
    position : (float, float)
        Where the new image's PSF is evaluated (x, y) [px].
    """
    from scipy.signal import fftconvolve

    from ..photom.psf import PSFModel

    n = 4 * max(p_new.shape[0], p_ref.shape[0]) + 1
    def embed(stamp):
        out = np.zeros((n, n))
        h = stamp.shape[0] // 2
        c = n // 2
        out[c - h:c + h + 1, c - h:c + h + 1] = stamp
        return np.fft.fft2(np.fft.ifftshift(out))
    pn, pr = embed(p_new), embed(p_ref)
    f_d = 1.0 / math.sqrt(sigma_new**2 + sigma_ref**2)
    k = np.real(np.fft.fftshift(np.fft.ifft2(pr / (f_d * np.sqrt(sigma_new**2 * np.abs(pr) ** 2
                                                                      + sigma_ref**2 * np.abs(pn) ** 2 + 1e-8)))))
    # the kernel's support: where it holds all but 1e-4 of its absolute sum
    c = n // 2
    r = np.hypot(*np.mgrid[-c:c + 1, -c:c + 1])
    order = np.argsort(r.ravel())
    cum = np.cumsum(np.abs(k).ravel()[order])
    rk = int(math.ceil(r.ravel()[order][np.searchsorted(cum, (1 - 1e-4) * cum[-1])]))
    rk = min(rk, c)
    k = k[c - rk:c + rk + 1, c - rk:c + rk + 1]
    ovs = psf_new.oversample
    dil = np.zeros(((2 * rk) * ovs + 1, (2 * rk) * ovs + 1))
    dil[::ovs, ::ovs] = k
    grid = psf_new.oversampled(*position)
    full = fftconvolve(grid, dil, mode="same")
    full /= full.sum() / ovs**2
    return PSFModel(basis=full[None], oversample=ovs, degree=0, x0=0.0, y0=0.0, scale=1.0, nstar=psf_new.nstar)


def subtract_images(sci, sci_header, sci_mask, sci_var, sci_psf, ref, ref_header, ref_mask, ref_var, ref_psf, *,
                    params: SubtractParams | None = None, refcat: Table | None = None,
                    ref_sources: Table | None = None, photom=None, product: str | None = None) -> Subtraction:
    """ZOGY subtraction of a reference from a science image and its candidates.

    Parameters
    ----------
    sci, sci_header, sci_mask, sci_var : array, Header, array, array or None
        Calibrated science image [DN] (background included), its header (WCS, MAGZP), MaskBits and
        variance [DN^2].
    sci_psf, ref_psf : `~ztfsds.photom.psf.PSFModel`
        PSFs of the science image and of the reference.
    ref, ref_header, ref_mask, ref_var : array, Header, array, array or None
        The reference on its own grid [DN at its MAGZP, background subtracted or not], header (WCS,
        MAGZP), mask and variance.
    params : `~ztfsds.config.SubtractParams`, optional
    refcat : `~astropy.table.Table`, optional
        Reference PSF catalog (``ra``, ``dec``, ``mag`` ...) for the candidates' nearest sources and
        the flux scale.
    ref_sources : `~astropy.table.Table`, optional
        The reference's extraction catalog (``refsexcat``, with ``ra``, ``dec``): when given, the PSF of
        the reference *as resampled onto the science grid* is fitted on its stars (the second
        interpolation broadens it by a few percent, which ZOGY would leave in D as core-positive,
        ring-negative residuals of every star); else ``ref_psf`` is used.
    photom : `~ztfsds.config.PhotomParams`, optional
        PSF-model parameters for that fit.
    product : str, optional
        Named in errors.

    Returns
    -------
    Subtraction
    """
    from ..refimg.resample import resample
    from .zogy import zogy

    params = params or SubtractParams()
    shape = sci.shape
    wcs_sci, wcs_ref = WCS(sci_header), WCS(ref_header)
    rs = resample(np.asarray(ref, np.float32), wcs_ref, wcs_sci, shape,
                  variance=None if ref_var is None else np.asarray(ref_var, np.float32),
                  mask=None if ref_mask is None else np.asarray(ref_mask, np.int16), product=product)
    zp_sci, zp_ref = float(sci_header["MAGZP"]), float(ref_header["MAGZP"])
    scale = 10 ** (0.4 * (zp_sci - zp_ref))
    ref_img = np.where(rs.footprint & np.isfinite(rs.image), rs.image * scale, 0.0).astype(np.float32)
    bkg_sci = background(sci, sci_mask, filename=product)
    new = (np.asarray(sci, np.float32) - bkg_sci.level).astype(np.float32)
    bkg_ref = background(ref_img, None if rs.mask is None else rs.mask, filename=product)
    ref_img = (ref_img - bkg_ref.level).astype(np.float32)
    bad = (np.asarray(sci_mask).astype(np.int32) & int(MaskBits.BAD)) != 0
    if rs.mask is not None:
        bad |= (rs.mask.astype(np.int32) & int(MaskBits.BAD)) != 0
    bad |= ~rs.footprint | ~np.isfinite(new) | ~np.isfinite(ref_img)
    sigma_new = float(np.median(bkg_sci.rms))
    sigma_ref = float(np.median(bkg_ref.rms))
    # residual offset between the two backgrounds, over pixels that are sky in both
    sky = ~bad & (np.abs(new) < 2 * sigma_new) & (np.abs(ref_img) < 2 * max(sigma_ref, 1e-6))
    if sky.sum() > 100:
        ref_img += np.float32(np.median(new[sky] - ref_img[sky]))
    var_new = np.asarray(sci_var, np.float32) if sci_var is not None else np.full(shape, sigma_new**2, np.float32)
    if rs.variance is not None:
        var_ref = np.where(np.isfinite(rs.variance), rs.variance * scale**2, sigma_ref**2).astype(np.float32)
    else:
        var_ref = np.full(shape, sigma_ref**2, np.float32)
    new = np.where(bad, 0.0, new).astype(np.float32)
    ref_img = np.where(bad, 0.0, ref_img).astype(np.float32)
    if refcat is not None and len(refcat) and "ra" in refcat.colnames:
        rx, ry = wcs_sci.all_world2pix(np.asarray(refcat["ra"]), np.asarray(refcat["dec"]), 0)
        refcat = Table(refcat, copy=True)
        refcat["x"], refcat["y"] = rx, ry
        fratio = _flux_ratio(new, ref_img, bad, refcat, sigma_new, sigma_ref)
        if math.isfinite(fratio):
            # the zero points scale the two to 1-2 %; the stars themselves say the rest
            ref_img *= np.float32(fratio)
            var_ref *= np.float32(fratio**2)
    else:
        fratio = float("nan")
    p_new = _psf_stamp(sci_psf, shape)
    p_ref = _psf_stamp(ref_psf, ref.shape)
    if ref_sources is not None and len(ref_sources):
        from ..config import PhotomParams
        from ..errors import PhotometryError
        from ..photom.psf import build_psf

        photom = photom or PhotomParams()
        src = Table(ref_sources, copy=True)
        src["x"], src["y"] = wcs_sci.all_world2pix(np.asarray(src["ra"]), np.asarray(src["dec"]), 0)
        try:
            resampled_psf = build_psf(ref_img, bad.astype(np.int16), src, size=photom.psf_size,
                                      oversample=photom.psf_oversampling, degree=0,
                                      max_stars=photom.psf_max_stars, gain=1e6, product=product)
            p_ref = _psf_stamp(resampled_psf, shape, size=p_ref.shape[0])
        except PhotometryError as exc:
            log.warning("subtract %s: reference PSF on the science grid not fitted (%s); using the "
                        "reference's own", product, exc)
    z = zogy(new, ref_img, p_new, p_ref, sigma_new=sigma_new, sigma_ref=sigma_ref, var_new=var_new, var_ref=var_ref,
             dx=params.astrometric_noise, dy=params.astrometric_noise, workers=params.fft_workers, mask=bad,
             product=product)
    # variance of D: its background noise, raised where the images' own variance is above the
    # background's (the sources' shot noise)
    sigma_d = float(z.sigma_D) if hasattr(z, "sigma_D") else float(np.nanstd(z.D[~bad]))
    ratio = (var_new + var_ref) / (sigma_new**2 + sigma_ref**2)
    var_d = (sigma_d**2 * np.maximum(ratio, 1.0)).astype(np.float32)
    mask = np.asarray(sci_mask, np.int16) | (np.int16(MaskBits.NAN) * (~rs.footprint)).astype(np.int16)
    if rs.mask is not None:
        mask |= (rs.mask & np.int16(int(MaskBits.BAD))).astype(np.int16)
    nea = 1.0 / float(np.sum(np.asarray(z.P_D, float) ** 2))  # pixel-sampled P_D: the noise-equivalent area
    maglim = zp_sci - 2.5 * math.log10(5.0 * sigma_d * math.sqrt(nea))
    pd_model = difference_psf(sci_psf, p_new, p_ref, sigma_new, sigma_ref, ((shape[1] - 1) / 2, (shape[0] - 1) / 2))
    # streaks (satellite trails, fast movers) on D in units of its noise: mask bit 0, and the
    # candidates on them flagged
    from .streaks import detect_streaks, on_streak, streak_mask

    with np.errstate(invalid="ignore", divide="ignore"):
        dsig = np.where(bad, 0.0, np.nan_to_num(np.asarray(z.D, np.float32)) / np.sqrt(var_d)).astype(np.float32)
    streaks = detect_streaks(dsig, sigma=1.0, mask=bad, product=product)
    if len(streaks):
        mask |= (streak_mask(shape, streaks) * np.int16(int(MaskBits.SATELLITE_TRACK))).astype(np.int16)
    cands, stamps = find_candidates(z.D, pd_model, z.Scorr, np.asarray(sci, np.float32), ref_img + 0.0, mask, var_d,
                                    zp=zp_sci, threshold=params.detect_threshold, size=params.cutout_size,
                                    refcat=refcat)
    cands["onstreak"] = on_streak(np.asarray(cands["xpos"]), np.asarray(cands["ypos"]), streaks) if len(cands) \
        else np.zeros(0, bool)
    # real-bogus: ours (trained on simulated injections and artefacts) and the published braai CNN
    from .braai import braai_score
    from .realbogus import rb_score

    if len(cands):
        cands["rb"] = rb_score(cands, stamps)
        cands["drb"] = np.atleast_1d(braai_score(stamps[:, 0], stamps[:, 1], stamps[:, 2])).astype(np.float32)
    else:
        cands["rb"] = np.zeros(0, np.float32)
        cands["drb"] = np.zeros(0, np.float32)
    return Subtraction(diff=np.asarray(z.D, np.float32), psf=pd_model, scorr=np.asarray(z.Scorr, np.float32),
                       variance=var_d, mask=mask, ref=ref_img, sci=new, sigma=sigma_d, maglim=maglim,
                       candidates=cands, cutouts=stamps, flux_ratio=fratio, streaks=streaks)


def run_subtract(key, store: ProductStore, config: Config | None = None) -> ProductStatus:
    """Subtract the reference from one science quadrant and write the difference products.

    Parameters
    ----------
    key : `~ztfsds.products.ProductKey` or str
        The science quadrant (any of its products).
    store : `~ztfsds.products.ProductStore`
        Data root with the quadrant's photometry products and its reference (``ztfsds refimg build``).
    config : `~ztfsds.config.Config`, optional

    Returns
    -------
    `~ztfsds.products.ProductStatus`
        Not ``ok`` (with the reason, nothing written) when the quadrant has no reference or no PSF.
    """
    from ..photom.forced import psf_from_hdulist

    config = config or Config()
    start = time.perf_counter()
    try:
        quad = read_quadrant(store, key)
        key = quad.key
        ref_key = key.reference("refimg")
        if not store.exists(ref_key):
            raise ZTFSDSError(f"{key.filename}: no reference image {ref_key.filename} (ztfsds refimg build)")
        ref, ref_header = read_image(store.path(ref_key))
        ref_unc = read_image(store.path(ref_key.with_suffix("refunc")))[0]
        ref_msk = read_image(store.path(ref_key.with_suffix("refmsk")))[0]
        with fits.open(store.path(key.with_suffix("sciimgpsf"))) as hdul:
            sci_psf = psf_from_hdulist(hdul)
        with fits.open(store.path(ref_key.with_suffix("refimgpsf"))) as hdul:
            ref_psf = psf_from_hdulist(hdul)
        refcat_path = store.path(ref_key.with_suffix("refpsfcat"))
        refcat = Table.read(refcat_path, hdu="PSFCAT") if refcat_path.exists() else None
        refsex_path = store.path(ref_key.with_suffix("refsexcat"))
        ref_sources = Table.read(refsex_path, hdu="SOURCES") if refsex_path.exists() else None
        if "MAGZP" not in quad.header or "CTYPE1" not in quad.header:
            raise ZTFSDSError(f"{key.filename}: no astrometric or photometric calibration")
    except (ZTFSDSError, OSError) as exc:
        name = getattr(key, "filename", str(key))
        log.error("subtract %s: %s", name, exc)
        return ProductStatus("subtract", name, ok=False, message=str(exc), elapsed=time.perf_counter() - start)
    sub = subtract_images(quad.sciimg, quad.header, quad.mskimg, quad.varimg, sci_psf, ref, ref_header, ref_msk,
                          ref_unc.astype(np.float32) ** 2, ref_psf, params=config.subtract, refcat=refcat,
                          ref_sources=ref_sources, photom=config.photom, product=key.filename)
    h = quad.header.copy()
    for card in (("REFIMG", ref_key.filename, "reference image"), ("RFID", int(ref_header.get("RFID", 0)), "reference id"),
                 ("NFRAMREF", int(ref_header.get("NFRAMES", 0)), "epochs in the reference"),
                 ("RFJDSTRT", float(ref_header.get("JDSTART", 0.0)), "first reference epoch [JD]"),
                 ("RFJDEND", float(ref_header.get("JDEND", 0.0)), "last reference epoch [JD]"),
                 ("DIFFMLIM", round(sub.maglim, 3), "5-sigma mag limit of the difference image"),
                 ("DIFSIGMA", float(sub.sigma), "background noise of D [DN]"),
                 ("NCANDS", len(sub.candidates), "candidates with |Scorr| >= threshold"),
                 ("NSTREAKS", 0 if sub.streaks is None else len(sub.streaks), "streaks found on D"),
                 ("RBVERSN", RB_VERSION, "real-bogus model (rb)"), ("DRBVERSN", DRBVERSION, "deep real-bogus model (drb)"),
                 ("FLUXRAT", round(sub.flux_ratio, 5) if math.isfinite(sub.flux_ratio) else -999.0,
                  "new/ref flux scale measured on stars")):
        h[card[0]] = (card[1], card[2])
    config.to_header(h, stages=("subtract",))
    outputs = [store.write_fits(key.with_suffix("scimrefdiffimg"), fits.PrimaryHDU(sub.diff, h)),
               store.write_fits(key.with_suffix("diffimgpsf"), sub.psf.to_hdulist()),
               store.write_fits(key.with_suffix("diffimgvar"), fits.PrimaryHDU(sub.variance, h)),
               store.write_fits(key.with_suffix("diffimgmsk"), fits.PrimaryHDU(sub.mask, h))]
    cand_hdul = table_hdulist(h, sub.candidates, "CANDIDATES")
    cut = fits.ImageHDU(sub.cutouts, name="CUTOUTS")
    cut.header["PLANES"] = ("sci,ref,diff", "order of the cutout planes")
    cand_hdul.append(cut)
    if sub.streaks is not None:
        sh = fits.table_to_hdu(Table(sub.streaks, meta={}))
        sh.name = "STREAKS"
        cand_hdul.append(sh)
    outputs.append(store.write_fits(key.with_suffix("candidates"), cand_hdul))
    message = f"{len(sub.candidates)} candidates, DIFFMLIM {sub.maglim:.2f}, sigma(D) {sub.sigma:.2f} DN"
    return ProductStatus("subtract", key.filename, ok=True, message=message, outputs=outputs,
                         elapsed=time.perf_counter() - start)


