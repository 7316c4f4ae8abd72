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
from dataclasses import dataclass, field

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

__all__ = ["subtract_images", "Subtraction", "run_subtract", "difference_psf", "zogy_tiles"]

log = logging.getLogger(__name__)


@dataclass
class Subtraction:
    """The outputs of `subtract_images` on the science grid: ``diff`` (D), ``psf`` (P_D as an oversampled
    `~ztfsds.photom.psf.PSFModel`, `difference_psf`), ``scorr``,
    ``variance`` (of D), ``mask``, ``ref`` (the reference resampled and scaled), ``sci`` (background
    subtracted), ``sigma`` (D's background noise), ``maglim`` (5-sigma point-source limit on D),
    ``candidates`` / ``cutouts`` and ``flux_ratio`` (the new/reference flux scale measured on stars and
    applied, on top of the zero points; NaN when not measured), ``streaks`` and ``timings`` (wall time
    [s] of each step: ``resample``, ``prepare`` (backgrounds, flux ratio, masks), ``ref_psf``, ``zogy``,
    ``streaks``, ``candidates``, ``realbogus``)."""

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
    timings: dict = field(default_factory=dict)


def _flux_ratio(new, ref, bad, refcat, psf_new, psf_ref, sigma_new, sigma_ref) -> float:
    """Median ``new / ref`` PSF-fit flux of bright isolated unflagged reference stars at their
    catalog positions (NaN with fewer than 10 of them measured at S/N > 50 in both).

    Each image is fitted with its own PSF model (``psf_ref`` None: a constant one fitted here on the
    reference), so the ratio is that of total fluxes whatever the two seeings: an aperture of fixed
    size misses more of the broader image's light (2.5 % at 4 px against 2.4 px seeing in 14 px).
    """
    from ..photom.psffit import forced_photometry

    ny, nx = new.shape
    x, y = np.asarray(refcat["x"], float), np.asarray(refcat["y"], float)
    sel = (np.isfinite(x) & (x > 12) & (x < nx - 13) & (y > 12) & (y < ny - 13)
           & (np.asarray(refcat["flags"]) == 0) & (np.asarray(refcat["snr"]) > 30))
    if "group_size" in refcat.colnames:
        sel &= np.asarray(refcat["group_size"]) == 1
    if sel.sum() < 10:
        return float("nan")
    if psf_ref is None:
        from ..errors import PhotometryError
        from ..photom.psf import build_psf

        try:
            psf_ref = build_psf(ref, bad.astype(np.int16), Table({"x": x[sel], "y": y[sel]}), degree=0, gain=1e6)
        except PhotometryError:
            return float("nan")
    mask = bad.astype(np.int16) * np.int16(int(MaskBits.DEAD))
    fn = forced_photometry(new, psf_new, x[sel], y[sel], mskimg=mask, bkg_rms=sigma_new)
    fr = forced_photometry(ref, psf_ref, x[sel], y[sel], mskimg=mask, bkg_rms=sigma_ref)
    a, b = np.asarray(fn["flux"], float), np.asarray(fr["flux"], float)
    ea, eb = np.asarray(fn["flux_err"], float), np.asarray(fr["flux_err"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(a) & np.isfinite(b) & (a > 50 * ea) & (b > 50 * eb)
    if ok.sum() < 10:
        return float("nan")
    r = a[ok] / b[ok]
    med = np.median(r)
    keep = np.abs(r - med) < 3 * 1.4826 * np.median(np.abs(r - med)) + 1e-6
    return float(np.median(r[keep]))

def _zogy_kernel(p_new, p_ref, sigma_new, sigma_ref, oversample):
    """ZOGY's kernel ``k`` from the new image to D (see `difference_psf`), cut to its support and dilated
    onto a grid of nodes ``1 / oversample`` px apart (zeros between the pixels' nodes)."""
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
    dil = np.zeros(((2 * rk) * oversample + 1, (2 * rk) * oversample + 1))
    dil[::oversample, ::oversample] = k
    return dil


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

    ovs = psf_new.oversample
    full = fftconvolve(psf_new.oversampled(*position), _zogy_kernel(p_new, p_ref, sigma_new, sigma_ref, ovs),
                       mode="same")
    full /= full.sum() / ovs**2
    return PSFModel(basis=full[None], oversample=psf_new.oversample, degree=0, x0=0.0, y0=0.0, scale=1.0,
                    nstar=psf_new.nstar)


def _psf_at(psf, x, y, size):
    """The unit-sum pixel stamp of a PSF model at ``(x, y)`` [px], ``size`` px a side."""
    stamp = psf.stamp(float(x), float(y), size=size)
    return stamp / stamp.sum()


def zogy_tiles(shape, tile_size: int, margin: int):
    """The tiles ZOGY runs on: ``[(core, window), ...]``, each ``(y0, y1, x0, x1)`` [px].

    The image is cut into ``round(n / tile_size)`` (at least one) near-equal cores along each axis. Each core is widened by at least ``margin`` px on every
    side (the kernels' reach), to a size the FFTs handle fast: the window. A window may reach beyond
    the image: that part is zero (the images are background-subtracted), so that the FFTs' wrap-around
    does not bring the opposite edge's stars in. Only the core of each result is kept.
    """
    from scipy.fft import next_fast_len

    ny, nx = shape
    cuts = []
    for n in (ny, nx):
        k = max(1, int(round(n / tile_size)))
        cuts.append(np.round(np.linspace(0, n, k + 1)).astype(int))
    out = []
    for y0, y1 in zip(cuts[0][:-1], cuts[0][1:]):
        for x0, x1 in zip(cuts[1][:-1], cuts[1][1:]):
            core = (int(y0), int(y1), int(x0), int(x1))
            window = []
            for a0, a1 in ((int(y0), int(y1)), (int(x0), int(x1))):
                size = next_fast_len(a1 - a0 + 2 * margin, real=True)
                lo = a0 - (size - (a1 - a0)) // 2
                window += [lo, lo + size]
            out.append((core, tuple(window)))
    return out


def _window(image, window, fill):
    """``image[y0:y1, x0:x1]`` of a window that may reach beyond the image (``fill`` there)."""
    y0, y1, x0, x1 = window
    ny, nx = image.shape
    if y0 >= 0 and x0 >= 0 and y1 <= ny and x1 <= nx:
        return image[y0:y1, x0:x1]
    out = np.full((y1 - y0, x1 - x0), fill, dtype=image.dtype)
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
    out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return out

def _difference_psf_model(psf_new, kernels, cores):
    """D's PSF over the whole image as one `~ztfsds.photom.psf.PSFModel`.

    Convolution is linear, so in each ZOGY tile D's PSF *is* a model of the new image's degree: its
    polynomial terms convolved with the tile's kernel (``kernels``: the dilated kernels of
    `_zogy_kernel`, one per tile of ``cores``). The tiles' models are sampled on a 4 x 4 grid
    of positions inside each core, and one polynomial of the new image's degree (its x0, y0, scale)
    is fitted through all the samples, node by node: smooth across the tile boundaries, and exact
    (to the kernels' slow change from tile to tile) inside them. One tile: its model.
    """
    from scipy.signal import fftconvolve

    from ..photom.psf import PSFModel, poly_terms

    ovs = psf_new.oversample
    samples, positions = [], []
    for dil, (y0, y1, x0, x1) in zip(kernels, cores):
        # the kernel has unit sum in the flux convention of the new image's model: a source of flux f
        # there (its model's flux, which may drift by a few 0.1 % across the image) is f in D
        terms = np.stack([fftconvolve(b, dil, mode="same") for b in psf_new.basis]) / dil.sum()
        if len(kernels) == 1:
            return PSFModel(basis=terms, oversample=ovs, degree=psf_new.degree, x0=psf_new.x0,
                            y0=psf_new.y0, scale=psf_new.scale, nstar=psf_new.nstar)
        for fy in (0.125, 0.375, 0.625, 0.875):
            for fx in (0.125, 0.375, 0.625, 0.875):
                x, y = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
                samples.append(np.tensordot(psf_new.poly(x, y)[0], terms, axes=1))
                positions.append((x, y))
    xy = np.asarray(positions, float)
    a = poly_terms((xy[:, 0] - psf_new.x0) / psf_new.scale, (xy[:, 1] - psf_new.y0) / psf_new.scale, psf_new.degree)
    stack = np.stack(samples)
    coef, *_ = np.linalg.lstsq(a, stack.reshape(len(stack), -1), rcond=None)
    basis = coef.reshape((a.shape[1],) + stack.shape[1:])
    return PSFModel(basis=basis, oversample=ovs, degree=psf_new.degree, x0=psf_new.x0, y0=psf_new.y0,
                    scale=psf_new.scale, nstar=psf_new.nstar)

def _saturation_halo(sci_mask, ref_mask, fwhm):
    """Pixels within a ZOGY kernel's reach (``5 FWHM``) of a SATURATED pixel of either image.

    A masked pixel is 0 in both images; where it is a bright star's saturated core the two kernels
    spread that hole differently and D rings around it, far above the noise. (Other masked pixels cut
    fainter light, and a transient next to one must stay a candidate: they are left alone.)
    """
    import scipy.ndimage as ndi

    holes = (np.asarray(sci_mask) & int(MaskBits.SATURATED)) != 0
    if ref_mask is not None:
        holes |= (np.asarray(ref_mask) & int(MaskBits.SATURATED)) != 0
    if not holes.any():
        return holes
    r = int(math.ceil(5.0 * fwhm))
    # the distance transform round each hole's bounding box only
    halo = np.zeros_like(holes)
    labels, _ = ndi.label(holes)
    for sl in ndi.find_objects(labels):
        y0, y1 = max(sl[0].start - r, 0), min(sl[0].stop + r, holes.shape[0])
        x0, x1 = max(sl[1].start - r, 0), min(sl[1].stop + r, holes.shape[1])
        halo[y0:y1, x0:x1] |= ndi.distance_transform_edt(~holes[y0:y1, x0:x1]) <= r
    return halo

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
    timings = {}
    clock = [time.perf_counter()]

    def lap(step):
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock[0]
        clock[0] = now

    wcs_sci, wcs_ref = WCS(sci_header), WCS(ref_header)
    rs = resample(np.asarray(ref, np.float32), wcs_ref, wcs_sci, shape,
                  variance=None if ref_var is None else np.asarray(ref_var, np.float32),
                  mask=None if ref_mask is None else np.asarray(ref_mask, np.int16), product=product)
    lap("resample")
    zp_sci, zp_ref = float(sci_header["MAGZP"]), float(ref_header["MAGZP"])
    scale = 10 ** (0.4 * (zp_sci - zp_ref))
    ref_img = np.multiply(rs.image, np.float32(scale), dtype=np.float32)
    ref_img[~(rs.footprint & np.isfinite(ref_img))] = 0.0
    bkg_sci = background(sci, sci_mask, filename=product)
    new = np.subtract(sci, bkg_sci.level, dtype=np.float32)
    bkg_ref = background(ref_img, rs.mask, filename=product)
    ref_img -= bkg_ref.level
    bad = (np.asarray(sci_mask) & int(MaskBits.BAD)) != 0
    if rs.mask is not None:
        bad |= (rs.mask & int(MaskBits.BAD)) != 0
    bad |= ~rs.footprint
    bad |= ~np.isfinite(new)
    bad |= ~np.isfinite(ref_img)
    sigma_new = float(bkg_sci.global_rms)
    # the reference has been resampled twice (each epoch onto the co-add grid, the co-add onto the
    # science grid): interpolation lowers the pixel-to-pixel variance but not the noise at the PSF's
    # scale, which is what the matched filter sees; its noise is given ZOGY at that level
    sigma_ref = float(bkg_ref.global_rms) * math.sqrt(params.ref_noise_factor)
    # residual offset between the two backgrounds, over pixels that are sky in both (every second
    # pixel of every second row: millions of pixels still, for an offset known to < 0.01 sigma)
    sub_new, sub_ref = new[::2, ::2], ref_img[::2, ::2]
    sky = ~bad[::2, ::2] & (np.abs(sub_new) < 2 * sigma_new) & (np.abs(sub_ref) < 2 * max(sigma_ref, 1e-6))
    if sky.sum() > 100:
        ref_img += np.float32(np.median(sub_new[sky] - sub_ref[sky]))
    var_new = np.asarray(sci_var, np.float32) if sci_var is not None else np.full(shape, sigma_new**2, np.float32)
    if rs.variance is not None:
        var_ref = np.where(np.isfinite(rs.variance), rs.variance * (scale**2 * params.ref_noise_factor),
                           sigma_ref**2).astype(np.float32)
    else:
        var_ref = np.full(shape, sigma_ref**2, np.float32)
    new[bad] = 0.0
    ref_img[bad] = 0.0
    if refcat is not None and len(refcat) and "ra" in refcat.colnames:
        rx, ry = wcs_sci.all_world2pix(np.asarray(refcat["ra"]), np.asarray(refcat["dec"]), 0)
        refcat = Table(refcat, copy=True)
        refcat["x"], refcat["y"] = rx, ry
    resampled_psf = None
    tiles = zogy_tiles(shape, params.tile_size, params.tile_margin)
    stamp_size = sci_psf.size
    # the reference's PSF where a science pixel falls on it (its own model, on its own grid)
    def p_ref_at(x, y):
        ra, dec = wcs_sci.all_pix2world([x], [y], 0)
        rx, ry = wcs_ref.all_world2pix(ra, dec, 0)
        return _psf_at(ref_psf, float(rx[0]), float(ry[0]), stamp_size)
    lap("prepare")
    if ref_sources is not None and len(ref_sources):
        from ..config import PhotomParams
        from ..errors import PhotometryError
        from ..photom.psf import build_psf

        photom = photom or PhotomParams()
        src = Table(ref_sources, copy=True)
        src["x"], src["y"] = wcs_sci.all_world2pix(np.asarray(src["ra"]), np.asarray(src["dec"]), 0)
        try:
            # one PSF per ZOGY tile: a spatially varying model when there are several
            resampled_psf = build_psf(ref_img, bad.astype(np.int16), src, size=photom.psf_size,
                                      oversample=photom.psf_oversampling,
                                      degree=photom.psf_degree if len(tiles) > 1 else 0,
                                      max_stars=min(photom.psf_max_stars, params.ref_psf_stars), gain=1e6,
                                      product=product)

            def p_ref_at(x, y):
                return _psf_at(resampled_psf, x, y, stamp_size)
        except PhotometryError as exc:
            log.warning("subtract %s: reference PSF on the science grid not fitted (%s); using the "
                        "reference's own", product, exc)
    fratio = float("nan")
    if refcat is not None and len(refcat) and "x" in refcat.colnames:
        # the zero points scale the two to ~1 %; the stars themselves say the rest (PSF-fit fluxes,
        # each image with its own PSF: total fluxes whatever the two seeings)
        fratio = _flux_ratio(new, ref_img, bad, refcat, sci_psf, resampled_psf, sigma_new, sigma_ref)
        if math.isfinite(fratio) and abs(fratio - 1.0) > params.max_flux_ratio_change:
            # both zero points are tied to the same PS1-like stars to ~1 %: a larger departure is the
            # measurement failing (few stars, a poor PSF model in bad seeing), not the images
            log.warning("subtract %s: flux ratio %.4f measured on the stars departs from the zero points' by more "
                        "than %.0f %%; not applied", product, fratio, 100 * params.max_flux_ratio_change)
            fratio = float("nan")
        if math.isfinite(fratio):
            ref_img *= np.float32(fratio)
            var_ref *= np.float32(fratio**2)
    lap("ref_psf")
    # ZOGY tile by tile, each with the two PSFs at its centre (the PSFs vary across a quadrant; one
    # PSF for the whole of it leaves residuals of every star far from the centre, and biases the
    # photometry there by ~1 %); the tiles overlap by a margin wider than the kernels and only
    # their cores are kept
    diff = np.empty(shape, np.float32)
    scorr = np.empty(shape, np.float32)
    kernels, cores, pd_stamps = [], [], []
    for (cy0, cy1, cx0, cx1), win in tiles:
        xc, yc = 0.5 * (cx0 + cx1 - 1), 0.5 * (cy0 + cy1 - 1)
        p_new = _psf_at(sci_psf, xc, yc, stamp_size)
        p_ref = p_ref_at(xc, yc)
        core = (slice(cy0 - win[0], cy1 - win[0]), slice(cx0 - win[2], cx1 - win[2]))
        z = zogy(_window(new, win, 0.0), _window(ref_img, win, 0.0), p_new, p_ref, sigma_new=sigma_new,
                 sigma_ref=sigma_ref, var_new=_window(var_new, win, 0.0), var_ref=_window(var_ref, win, 0.0),
                 dx=params.astrometric_noise, dy=params.astrometric_noise, workers=params.fft_workers,
                 mask=_window(bad, win, True), product=product)
        diff[cy0:cy1, cx0:cx1] = z.D[core]
        scorr[cy0:cy1, cx0:cx1] = z.Scorr[core]
        kernels.append(_zogy_kernel(p_new, p_ref, sigma_new, sigma_ref, sci_psf.oversample))
        cores.append((cy0, cy1, cx0, cx1))
        pd_stamps.append(np.asarray(z.P_D, float))
        sigma_d = float(z.sigma_D)
    pd_model = _difference_psf_model(sci_psf, kernels, cores)
    # variance of D: its background noise, raised where the images' own variance is above the
    # background's (the sources' shot noise)
    var_d = np.add(var_new, var_ref, dtype=np.float32)
    var_d *= np.float32(1.0 / (sigma_new**2 + sigma_ref**2))
    np.maximum(var_d, np.float32(1.0), out=var_d)
    var_d *= np.float32(sigma_d**2)
    mask = np.array(sci_mask, dtype=np.int16)
    mask[~rs.footprint] |= np.int16(MaskBits.NAN)
    if rs.mask is not None:
        mask |= (rs.mask & int(MaskBits.BAD)).astype(np.int16, copy=False)
    # D within a kernel's reach of a saturated star's masked core is that 0-filled hole convolved by
    # the two kernels: not a measurement (HALO; no candidates there)
    fwhm = sci_psf.fwhm0 if math.isfinite(sci_psf.fwhm0) else sci_psf.fwhm((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    halo = _saturation_halo(sci_mask, rs.mask, max(fwhm, 1.0))
    mask[halo] |= np.int16(MaskBits.HALO)
    # likewise the band along the edge of the reference's coverage (stars cut by it, interpolation
    # with part of the kernel off the reference): flagged NAN, D is not a measurement there
    if not rs.footprint.all():
        import scipy.ndimage as ndi

        r = int(math.ceil(5.0 * max(fwhm, 1.0)))
        near = ndi.maximum_filter((~rs.footprint).view(np.uint8), size=2 * r + 1, mode="constant", cval=0) > 0
        mask[near] |= np.int16(MaskBits.NAN)
    # what is left of the sky: the two images' background maps (of different depth and seeing) agree
    # to ~0.05 sigma, which the matched filter turns into a ~0.35 sigma offset of Scorr and an
    # excess of 5-sigma peaks of one sign; the residual level of D and of Scorr is mapped (as the
    # images' backgrounds are) and removed
    for img in (diff, scorr):
        with np.errstate(invalid="ignore"):
            img -= background(img, mask, filename=product).level
    nea = 1.0 / float(np.mean([np.sum(p**2) for p in pd_stamps]))  # pixel-sampled P_D: noise-equivalent area
    maglim = zp_sci - 2.5 * math.log10(5.0 * sigma_d * math.sqrt(nea))
    lap("zogy")
    # streaks (satellite trails, fast movers) on D in units of its noise: mask bit 0, and the
    # candidates on them flagged
    from .streaks import detect_streaks, on_streak, streak_mask

    with np.errstate(invalid="ignore", divide="ignore"):
        dsig = np.nan_to_num(diff / np.sqrt(var_d))
        dsig[bad] = 0.0
    streaks = detect_streaks(dsig, sigma=1.0, mask=bad, product=product)
    if len(streaks):
        mask |= (streak_mask(shape, streaks) * np.int16(int(MaskBits.SATELLITE_TRACK))).astype(np.int16)
    lap("streaks")
    cands, stamps = find_candidates(diff, pd_model, scorr, np.asarray(sci, np.float32), ref_img, mask, var_d,
                                    zp=zp_sci, threshold=params.detect_threshold, size=params.cutout_size,
                                    refcat=refcat)
    cands["onstreak"] = on_streak(np.asarray(cands["xpos"]), np.asarray(cands["ypos"]), streaks) if len(cands) \
        else np.zeros(0, bool)
    # real-bogus: ours (trained on simulated injections and artefacts) and the published braai CNN
    lap("candidates")
    from .braai import braai_score
    from .realbogus import rb_score

    if len(cands):
        cands["rb"] = rb_score(cands, stamps)
        cands["drb"] = np.atleast_1d(braai_score(stamps[:, 0], stamps[:, 1], stamps[:, 2])).astype(np.float32)
    else:
        cands["rb"] = np.zeros(0, np.float32)
        cands["drb"] = np.zeros(0, np.float32)
    lap("realbogus")
    return Subtraction(diff=diff, psf=pd_model, scorr=scorr,
                       variance=var_d, mask=mask, ref=ref_img, sci=new, sigma=sigma_d, maglim=maglim,
                       candidates=cands, cutouts=stamps, flux_ratio=fratio, streaks=streaks, timings=timings)


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


