"""Per-exposure instrumental calibration: raw quadrants to sciimg, mskimg and varimg.

The camera turns electrons into raw counts in this order (`ztfsds.sim.raw` simulates it): flat field
and defects, cosmic rays, bleeding at the full well, conversion to DN, crosstalk from the other three
amplifiers (in linear DN), shot and read noise, non-linearity, bias, 16-bit ADC. The calibration
undoes it in the reverse order, per quadrant:

1. floating bias: the per-row level of the overscan strip (`overscan_level`), then the master bias
   (the image-area bias less the overscan level);
2. saturation, on the raw level: pixels at the ADC ceiling or at least ``saturation_margin`` of the
   channel's saturation level above the bias are SATURATED, and so are the pixels at the ends of
   saturated column runs (bleed trails) holding more than half the saturation level;
3. non-linearity: ``DN = x / (A x**2 + B x + 1)`` (IPAC's correction);
4. crosstalk: ``X[v, s]`` times the mirrored linear signal of each other amplifier ``s`` is
   subtracted. A saturated pixel's true charge is unknown (a full well can hold more than the ADC
   reads): its signal is first taken at the saturation level, then the excess of the source's
   saturated pixels over that level is measured from the ghosts they leave in the other quadrants
   (`calibrate_ccd` only). Pixels where the removed ghost exceeded ``crosstalk_ghost_sigma`` of the
   noise are flagged GHOST;
5. variance of the signal ``max(DN, 0) / gain + (read_noise / gain)**2`` [DN^2];
6. flat field: sciimg and variance divided by the flat and its square; the bad-pixel mask is OR-ed
   into the mask; pixels left non-finite are NaN and flagged NAN;
7. cosmic rays (SPIKE): a compiled single-pass detector (`ztfsds._ext._calib`): a pixel above the
   median of its 8 neighbours by ``cosmic_ray_sigma``, with at most one brighter neighbour and
   sharper than a PSF by ``cosmic_ray_contrast``, grown by one pixel into neighbours that pass the
   tests at ``cosmic_ray_grow_sigma``.

`calibrate_ccd` does this for the quadrants of one CCD (the crosstalk needs all four);
`calibrate_quadrant` for one quadrant, given the other amplifiers' signals (`linear_signal`);
`calibrate_raw_file` reads a raw CCD file and isolates failures to the quadrant they concern.

Arrays are in science orientation, the orientation of the raw quadrant HDUs; sciimg and varimg are
float32 [DN] and [DN^2], mskimg int16 `~ztfsds.products.MaskBits`.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from astropy.io import fits
from scipy import ndimage

from .._ext import _calib
from .._version import __version__
from ..camera import ADC_MAX, QIDS, RAW_OVERSCAN_HDUS, RAW_QUADRANT_HDUS, amp_corner, get_filter, linearize
from ..config import CalibParams
from ..errors import (
    ConfigError,
    FITSFormatError,
    InputError,
    MissingExtensionError,
    MissingKeywordError,
    NonFiniteError,
    ProductNotFoundError,
    ShapeError,
    TruncatedFileError,
    ZTFSDSError,
)
from ..products import MaskBits
from ..products.fitsio import open_fits
from .calibration import CCDCalibration, QuadrantCalibration
from .overscan import overscan_level

__all__ = ["CalibratedQuadrant", "calibrate_quadrant", "calibrate_ccd", "calibrate_raw_file", "linear_signal"]

log = logging.getLogger(__name__)

#: A pixel next to a saturated pixel of its column is the end of a bleed trail (flagged SATURATED)
#: when it holds at least this fraction of the saturation level.
BLEED_FRACTION = 0.5
#: The cosmic-ray sharpness test takes the neighbours' excess over the background at its upper noise
#: bound: plus this many times the pixel noise (about two standard deviations of that excess).
CR_NOISE_MARGIN = 1.0
#: Fewest saturated pixels (of a quadrant, and of one blob) used to estimate their crosstalk level.
_MIN_SATURATED = 5
#: Largest estimated excess of a saturated pixel's signal over the clip level, as a fraction of it.
_MAX_SATURATED_EXCESS = 0.5
#: Mask bits that exclude a pixel and its 8 neighbours from the cosmic-ray detection.
_CR_SKIP_NEAR = int(MaskBits.SATURATED | MaskBits.NAN)
#: Mask bits of pixels that are never flagged as cosmic rays (bad already: a hot pixel is no hit).
_CR_SKIP_SELF = _CR_SKIP_NEAR | int(MaskBits.DEAD | MaskBits.NOISY | MaskBits.LOW_RESPONSIVITY
                                    | MaskBits.HIGH_RESPONSIVITY)


@dataclasses.dataclass(frozen=True)
class CalibratedQuadrant:
    """The calibrated images of one readout quadrant.

    Attributes
    ----------
    sciimg : numpy.ndarray
        float32 (ny, nx) calibrated image [DN]: bias-subtracted, linearised, crosstalk-corrected and
        flat-fielded; NaN where it could not be computed (flagged NAN).
    mskimg : numpy.ndarray
        int16 (ny, nx) `~ztfsds.products.MaskBits`: the bad-pixel mask plus SATURATED, GHOST,
        SPIKE (cosmic rays) and NAN.
    varimg : numpy.ndarray
        float32 (ny, nx) variance of ``sciimg`` [DN^2] (shot noise of the signal and read noise).
    header : astropy.io.fits.Header
        Cards of what was applied: GAIN [e-/DN], READNOI [e-], SATURATE [DN of sciimg], NSATPIX,
        NSPIKE, XTALKSRC, INFOBITS, the calibration products (``qcal.provenance``), PIPEVERS and the
        calibration parameters (CALHASH and ``HIERARCH ZTFSDS CALIB ...``).
    """

    sciimg: np.ndarray
    mskimg: np.ndarray
    varimg: np.ndarray
    header: fits.Header


@dataclasses.dataclass
class _Linear:
    """Step 1-3 of one quadrant: linear signal [DN] and raw saturation (2 at the ceiling, 1 within the
    saturation margin of it, else 0)."""

    qcal: QuadrantCalibration
    lin: np.ndarray
    sat: np.ndarray
    clip: float         # linear DN of the saturation level: crosstalk sources are clipped here


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def calibrate_quadrant(raw, overscan, qcal: QuadrantCalibration, *, params: CalibParams | None = None,
                       crosstalk_sources: dict | None = None, filename=None) -> CalibratedQuadrant:
    """Calibrate one raw readout quadrant.

    Parameters
    ----------
    raw : numpy.ndarray
        Raw quadrant (ny, nx) [DN], uint16 as read from the raw file (any real dtype is accepted).
    overscan : numpy.ndarray
        Its overscan strip (ny, 30) [DN].
    qcal : `~ztfsds.calib.QuadrantCalibration`
        The quadrant's bias, flat, bad-pixel mask, gain, read noise, non-linearity and saturation.
    params : `~ztfsds.config.CalibParams`, optional
        Overscan, saturation, cosmic-ray and crosstalk parameters; ``workers`` threads.
    crosstalk_sources : dict of int to (float, numpy.ndarray), optional
        The other amplifiers of the CCD: source qid to ``(X[v - 1, s - 1], signal)``, the crosstalk
        coefficient onto this quadrant and the source's `linear_signal` [DN]. Ignored when
        ``params.crosstalk`` is False.
    filename : str or path-like, optional
        Named in errors.

    Returns
    -------
    CalibratedQuadrant

    Raises
    ------
    ztfsds.errors.ShapeError
        The raw quadrant, the overscan or a crosstalk source has the wrong shape.
    ztfsds.errors.NonFiniteError
        The raw quadrant holds NaN or inf.
    ztfsds.errors.MissingExtensionError
        ``overscan`` is None.
    ztfsds.errors.InputError
        Anything else unusable in the inputs (a dtype, an overscan without valid rows).

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.calib import QuadrantCalibration
    >>> shape = (64, 64)
    >>> qcal = QuadrantCalibration(ccdid=13, qid=1, filtercode="zr", bias=np.zeros(shape, np.float32),
    ...                            flat=np.ones(shape, np.float32), bpm=np.zeros(shape, np.int16),
    ...                            gain=6.0, read_noise=9.0, nonlin_a=0.0, nonlin_b=0.0,
    ...                            saturation=64000.0)
    >>> raw = np.full(shape, 1600, np.uint16)
    >>> raw[10, 20] = 65535                      # a saturated pixel
    >>> res = calibrate_quadrant(raw, np.full((64, 30), 500, np.uint16), qcal)
    >>> float(res.sciimg[0, 0]), round(float(res.varimg[0, 0]), 3)     # 1100 DN; 1100 / 6 + (9 / 6)**2
    (1100.0, 185.583)
    >>> MaskBits.describe(res.mskimg[10, 20])
    ['SATURATED']
    """
    params = params or CalibParams()
    lin = _linear(raw, overscan, qcal, params, filename)
    sources = []
    if params.crosstalk and crosstalk_sources:
        for s, item in sorted(crosstalk_sources.items()):
            try:
                coef, signal = item
            except (TypeError, ValueError):
                raise ConfigError(f"crosstalk_sources[{s!r}] must be a pair (coefficient, signal)") from None
            if s not in QIDS or s == qcal.qid:
                raise ConfigError(f"crosstalk source qid must be one of the other quadrants 1-4, got {s!r}")
            signal = np.ascontiguousarray(signal, dtype=np.float32)
            if signal.shape != lin.lin.shape:
                raise ShapeError(filename, signal.shape, lin.lin.shape, f"crosstalk source q{s}")
            sources.append((s, float(coef), signal, None, np.inf))
    return _finish(lin, _ghost(qcal.qid, sources, lin.lin.shape, params.workers), [s[0] for s in sources],
                   params, filename)


def linear_signal(raw, overscan, qcal: QuadrantCalibration, *, params: CalibParams | None = None,
                  filename=None) -> np.ndarray:
    """The linear signal of a quadrant as a crosstalk source [DN].

    Overscan and bias subtracted, linearised, and clipped at the saturation level (saturated pixels
    are set to it): the true signal of a saturated pixel is unknown, and its crosstalk is taken as that
    of the saturation level.

    Parameters
    ----------
    raw, overscan, qcal, params, filename
        As `calibrate_quadrant`.

    Returns
    -------
    numpy.ndarray
        float32 (ny, nx) [DN].
    """
    params = params or CalibParams()
    lin = _linear(raw, overscan, qcal, params, filename)
    out = np.minimum(lin.lin, np.float32(lin.clip), out=lin.lin)
    out[lin.sat == 2] = np.float32(lin.clip)
    return out


def calibrate_ccd(quadrants: dict, overscans: dict, ccdcal: CCDCalibration, *,
                  params: CalibParams | None = None, filename=None) -> dict:
    """Calibrate the quadrants of one CCD exposure, removing the crosstalk between their amplifiers.

    Parameters
    ----------
    quadrants : dict of int to numpy.ndarray
        Raw quadrants by qid (usually all four; the crosstalk of a missing one is not removed).
    overscans : dict of int to numpy.ndarray
        Their overscan strips by qid.
    ccdcal : `~ztfsds.calib.CCDCalibration`
        The CCD's calibration (one `~ztfsds.calib.QuadrantCalibration` per qid and the crosstalk
        matrix).
    params : `~ztfsds.config.CalibParams`, optional
        As `calibrate_quadrant`.
    filename : str or path-like, optional
        Named in errors.

    Returns
    -------
    dict of int to CalibratedQuadrant

    Raises
    ------
    ztfsds.errors.ZTFSDSError
        The first error of any quadrant (see `calibrate_quadrant`), or a qid without calibration or
        overscan.
    """
    params = params or CalibParams()
    lins = {}
    for q in sorted(quadrants):
        lins[q] = _linear(quadrants[q], _overscan_of(overscans, q, filename), _qcal_of(ccdcal, q, filename),
                          params, filename)
    ghosts = _ccd_ghosts(lins, ccdcal, params)
    return {v: _finish(lins[v], *ghosts[v], params, filename) for v in sorted(lins)}


def calibrate_raw_file(path, ccdcal: CCDCalibration, params: CalibParams | None = None) -> dict:
    """Calibrate a raw CCD file, quadrant by quadrant.

    The primary header must hold CCD_ID, equal to the calibration's CCD, and a FILTER (when present)
    equal to the calibration's filter. A quadrant whose image or overscan HDU is missing, truncated or
    unusable fails alone: its entry is the error, and the other quadrants are calibrated (without
    its crosstalk, which then cannot be computed; see XTALKSRC in their headers).

    Parameters
    ----------
    path : str or path-like
        Raw CCD file: HDUs 1-4 the quadrants qid 1-4, HDUs 5-8 their overscans.
    ccdcal : `~ztfsds.calib.CCDCalibration`
        The CCD's calibration for the exposure's filter and night.
    params : `~ztfsds.config.CalibParams`, optional
        As `calibrate_quadrant`.

    Returns
    -------
    dict of int to (CalibratedQuadrant or ztfsds.errors.ZTFSDSError)
        One entry per qid 1-4.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        The file does not exist.
    ztfsds.errors.FITSFormatError
        The file is not FITS (or is empty: `~ztfsds.errors.TruncatedFileError`).
    ztfsds.errors.MissingKeywordError
        CCD_ID is missing from the primary header.
    ztfsds.errors.InputError
        The file is of another CCD or filter than ``ccdcal``.
    """
    params = params or CalibParams()
    path = Path(path)
    hdus = _RawFile(path)
    try:
        _check_primary(path, hdus.header(), ccdcal)
        lins: dict = {}
        out: dict = {}
        for q in QIDS:
            try:
                raw = hdus.data(RAW_QUADRANT_HDUS[q - 1])
                overscan = hdus.data(RAW_OVERSCAN_HDUS[q - 1])
                lins[q] = _linear(raw, overscan, _qcal_of(ccdcal, q, path), params, path)
            except ZTFSDSError as exc:
                log.warning("%s: quadrant %d not calibrated: %s", path.name, q, exc)
                out[q] = exc
    finally:
        hdus.close()
    ghosts = _ccd_ghosts(lins, ccdcal, params)
    for v in sorted(lins):
        try:
            out[v] = _finish(lins[v], *ghosts[v], params, path)
        except ZTFSDSError as exc:
            log.warning("%s: quadrant %d not calibrated: %s", path.name, v, exc)
            out[v] = exc
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------


def _run_rows(work: Callable[[int, int], object], nrows: int, workers: int) -> list:
    """Call ``work(r0, r1)`` over row ranges covering ``0:nrows`` on ``workers`` threads; the results.

    The kernels release the GIL and each call writes its own rows only.
    """
    if workers <= 1 or nrows < 64:
        return [work(0, nrows)]
    edges = np.linspace(0, nrows, min(nrows, 4 * workers) + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        return [f.result() for f in futures]


def _hdu_name(qid: int, overscan: bool = False) -> str:
    return f"HDU {(RAW_OVERSCAN_HDUS if overscan else RAW_QUADRANT_HDUS)[qid - 1]} (quadrant {qid}" + \
        (" overscan)" if overscan else ")")


def _linear(raw, overscan, qcal: QuadrantCalibration, params: CalibParams, filename) -> _Linear:
    """Steps 1-3: overscan and bias, saturation, non-linearity; validates the inputs."""
    q = qcal.qid
    if raw is None:
        raise MissingExtensionError(filename, f"no image for quadrant {q} ({_hdu_name(q)})")
    if overscan is None:
        raise MissingExtensionError(filename, f"no overscan for quadrant {q} ({_hdu_name(q, True)})")
    raw = np.asarray(raw)
    if raw.dtype.kind not in "uif":
        raise InputError(filename, f"{_hdu_name(q)}: raw data must be real numbers, got dtype {raw.dtype}")
    if raw.shape != qcal.shape:
        raise ShapeError(filename, raw.shape, qcal.shape, RAW_QUADRANT_HDUS[q - 1])
    if raw.dtype.kind == "u" and raw.dtype.itemsize == 2:
        raw = np.ascontiguousarray(raw, dtype=np.uint16)     # native byte order, no copy if it is
    else:
        raw = np.ascontiguousarray(raw, dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(raw)))
        if bad:
            raise NonFiniteError(filename, f"{_hdu_name(q)} has {bad} NaN/inf pixels")
    overscan = np.asarray(overscan)
    if overscan.ndim != 2 or overscan.shape[0] != raw.shape[0]:
        raise ShapeError(filename, overscan.shape, (raw.shape[0], params.overscan_columns[1]),
                         RAW_OVERSCAN_HDUS[q - 1])
    _check_qcal(qcal, filename)
    level = overscan_level(overscan, params, filename=filename)
    bias = np.ascontiguousarray(qcal.bias, dtype=np.float32)
    ny, nx = raw.shape
    lin = np.empty((ny, nx), dtype=np.float32)
    sat = np.empty((ny, nx), dtype=np.uint8)
    sat_x = np.float32(params.saturation_margin * qcal.saturation)

    def work(y0, y1):
        _calib.linear_rows(raw, level, bias, np.float32(qcal.nonlin_a), np.float32(qcal.nonlin_b), sat_x,
                           np.float32(qcal.saturation), np.float32(ADC_MAX), y0, y1, lin, sat)

    _run_rows(work, ny, params.workers)
    clip = float(linearize(float(qcal.saturation), qcal.nonlin_a, qcal.nonlin_b))
    return _Linear(qcal=qcal, lin=lin, sat=sat, clip=clip)


def _check_qcal(qcal: QuadrantCalibration, filename) -> None:
    for name in ("bias", "flat", "bpm"):
        arr = getattr(qcal, name)
        if np.shape(arr) != qcal.shape:
            raise InputError(filename, f"calibration of quadrant {qcal.qid}: {name} has shape {np.shape(arr)}, "
                                       f"the bias {qcal.shape}")
    for name in ("gain", "read_noise", "saturation"):
        value = getattr(qcal, name)
        if not (np.isfinite(value) and value > 0):
            raise InputError(filename, f"calibration of quadrant {qcal.qid}: {name} = {value!r} must be > 0")
    if not (np.isfinite(qcal.nonlin_a) and np.isfinite(qcal.nonlin_b)):
        raise InputError(filename, f"calibration of quadrant {qcal.qid}: non-linearity coefficients "
                                   f"({qcal.nonlin_a!r}, {qcal.nonlin_b!r}) must be finite")


def _ccd_ghosts(lins: dict, ccdcal: CCDCalibration, params: CalibParams) -> dict:
    """Crosstalk ghost of each quadrant [DN] from the others: victim qid to (ghost or None, sources).

    The sources are clipped at their saturation level, then the true level of their saturated pixels
    is estimated from the ghosts they leave (`_saturated_excess`).
    """
    xt = np.asarray(ccdcal.crosstalk, dtype=np.float64)
    out = {}
    for v, lin in lins.items():
        srcs = [s for s in sorted(lins) if s != v and xt[v - 1, s - 1] != 0.0] if params.crosstalk else []
        sources = [(s, float(xt[v - 1, s - 1]), lins[s].lin, lins[s].sat, lins[s].clip) for s in srcs]
        out[v] = (_ghost(v, sources, lin.lin.shape, params.workers), srcs)
    if params.crosstalk:
        for s in sorted(lins):
            _saturated_excess(s, lins, {v: g for v, (g, srcs) in out.items() if s in srcs}, xt)
    return out


def _ghost(victim: int, sources: list, shape: tuple, workers: int) -> np.ndarray | None:
    """Sum of ``coef * min(signal, clip)`` of the sources (qid, coef, signal, sat or None, clip), mirrored
    onto the victim's readout positions; None without sources."""
    if not sources:
        return None
    ny, nx = shape
    ghost = np.zeros(shape, dtype=np.float32)
    rv, cv = amp_corner(victim, shape)
    for s, coef, signal, sat, clip in sources:
        rs, cs = amp_corner(s, shape)
        use_sat = sat is not None
        sat_arr = sat if use_sat else np.zeros((1, 1), np.uint8)

        def add(y0, y1, signal=signal, sat_arr=sat_arr, use_sat=use_sat, coef=coef, clip=clip,
                flip_y=rs != rv, flip_x=cs != cv):
            _calib.ghost_rows(signal, sat_arr, use_sat, np.float32(coef), np.float32(clip), flip_y, flip_x,
                              y0, y1, ghost)

        _run_rows(add, ny, workers)
    return ghost


def _saturated_excess(s: int, lins: dict, ghosts: dict, xt: np.ndarray) -> float:
    """Estimate the signal of source ``s``'s saturated pixels above its clip level from their ghosts.

    A saturated pixel's charge is unknown (a full well can hold more than the ADC reads), so its ghost
    was first computed from the clip level. In each victim, the median of (signal - ghost) over the
    mirrored saturated pixels less the median of a band 2-4 px around them measures ``X[v, s] E``; the
    victims' measurements (per saturated blob) are combined by weighted least squares into ``E`` >= 0
    [DN], and ``X[v, s] E`` is added to each victim's ghost there. Returns E (0 without saturation).
    """
    src = lins[s]
    ceiling = src.sat == 2
    if not ghosts or np.count_nonzero(ceiling) < _MIN_SATURATED:
        return 0.0
    shape = src.sat.shape
    ny, nx = shape
    labels, _ = ndimage.label(ceiling)
    rs, cs = amp_corner(s, shape)
    num = den = 0.0
    used = []
    for blob, box in enumerate(ndimage.find_objects(labels), start=1):
        ys = slice(max(box[0].start - 4, 0), min(box[0].stop + 4, ny))
        xs = slice(max(box[1].start - 4, 0), min(box[1].stop + 4, nx))
        foot = labels[ys, xs] == blob
        if np.count_nonzero(foot) < _MIN_SATURATED:
            continue
        near = ndimage.binary_dilation(foot, iterations=2)
        for v, ghost in ghosts.items():
            rv, cv = amp_corner(v, shape)
            fy, fx = rs != rv, cs != cv
            vy = slice(ny - ys.stop, ny - ys.start) if fy else ys
            vx = slice(nx - xs.stop, nx - xs.start) if fx else xs
            flip = (slice(None, None, -1 if fy else 1), slice(None, None, -1 if fx else 1))
            resid = (lins[v].lin[vy, vx] - ghost[vy, vx])[flip]
            ok = (lins[v].sat[vy, vx][flip] == 0) & (np.asarray(lins[v].qcal.bpm)[vy, vx][flip] == 0)
            ok &= np.isfinite(resid)
            inside, band = resid[foot & ok], resid[~near & ok]
            if inside.size < _MIN_SATURATED or band.size < 10:
                continue
            bkg = float(np.median(band))
            sigma = 1.4826 * float(np.median(np.abs(band - bkg)))
            if not sigma > 0:
                continue
            x = float(xt[v - 1, s - 1])
            w = inside.size / sigma**2
            num += w * x * (float(np.median(inside)) - bkg)
            den += w * x * x
            used.append((v, vy, vx, flip, foot))
    if den <= 0:
        return 0.0
    excess = float(np.clip(num / den, 0.0, _MAX_SATURATED_EXCESS * src.clip))
    for v, vy, vx, flip, foot in used:
        ghosts[v][vy, vx][flip][foot] += np.float32(xt[v - 1, s - 1] * excess)
    log.debug("quadrant %d: saturated pixels %.0f DN above the clip level %.0f DN", s, excess, src.clip)
    return excess


def _finish(lin: _Linear, ghost: np.ndarray | None, sources: list, params: CalibParams,
            filename) -> CalibratedQuadrant:
    """Steps 4-7: crosstalk (``ghost``), variance, flat, masks, cosmic rays; and the header."""
    qcal = lin.qcal
    ny, nx = lin.lin.shape
    workers = params.workers
    flat = np.ascontiguousarray(qcal.flat, dtype=np.float32)
    bpm = np.ascontiguousarray(qcal.bpm, dtype=np.int16)
    sci = np.empty((ny, nx), dtype=np.float32)
    var = np.empty((ny, nx), dtype=np.float32)
    mask = np.empty((ny, nx), dtype=np.int16)
    gain = float(qcal.gain)
    rn2 = np.float32((qcal.read_noise / gain) ** 2)
    ghost_k2 = np.float32(params.crosstalk_ghost_sigma ** 2)
    bleed_lin = np.float32(BLEED_FRACTION * lin.clip)
    ghost_arr = ghost if ghost is not None else np.zeros((1, 1), np.float32)

    def finish(y0, y1):
        return _calib.finish_rows(lin.lin, lin.sat, flat, bpm, ghost_arr, ghost is not None,
                                  np.float32(1.0 / gain), rn2, ghost_k2, bleed_lin, int(MaskBits.SATURATED),
                                  int(MaskBits.GHOST), int(MaskBits.NAN), y0, y1, sci, var, mask)

    fmax = max(_run_rows(finish, ny, workers))
    nspike = _cosmic_rays(sci, var, mask, params)

    sat_linear = float(linearize(params.saturation_margin * qcal.saturation, qcal.nonlin_a, qcal.nonlin_b))
    header = fits.Header()
    # the flat keeps the channels' relative gains: one sciimg DN is gain * flat electrons
    sub = (slice(None, None, 4), slice(None, None, 4))
    good = bpm[sub] == 0
    flat_median = float(np.median(flat[sub][good])) if good.any() else 1.0
    header["GAIN"] = (round(gain * flat_median, 5), "e- per sciimg DN (AMPGAIN x median flat)")
    header["AMPGAIN"] = (round(gain, 5), "amplifier gain [e-/raw DN] of the calibration")
    header["READNOI"] = (round(float(qcal.read_noise), 4), "read noise [e-] of the calibration")
    header["SATURATE"] = (round(sat_linear / fmax, 3) if fmax > 0 else round(sat_linear, 3),
                          "lowest sciimg level that may be saturated [DN]")
    header["NSATPIX"] = (int(np.count_nonzero(lin.sat)), "raw pixels at or near saturation")
    header["NSPIKE"] = (nspike, "pixels flagged as cosmic rays (SPIKE)")
    header["XTALKSRC"] = (",".join(map(str, sources)), "amplifiers whose crosstalk was removed")
    header["INFOBITS"] = (0, "image quality bits (BITnn legend)")
    for key, value in qcal.provenance.items():
        header[key] = value
    header["PIPEVERS"] = (__version__, "ztfsds version")
    for card in params.header_cards():
        header.append(card)
    return CalibratedQuadrant(sciimg=sci, mskimg=mask, varimg=var, header=header)


def _cosmic_rays(sci: np.ndarray, var: np.ndarray, mask: np.ndarray, params: CalibParams) -> int:
    """Step 7: flag SPIKE in ``mask`` in place; returns the number of pixels flagged."""
    ny, nx = sci.shape
    if ny < 3 or nx < 3:
        return 0
    hits = np.empty((ny, nx), dtype=np.uint8)
    row_hits = np.zeros(ny, dtype=np.intp)

    def detect(y0, y1):
        return _calib.cosmic_ray_rows(sci, var, mask, _CR_SKIP_SELF, _CR_SKIP_NEAR, params.cosmic_ray_sigma,
                                      params.cosmic_ray_contrast, CR_NOISE_MARGIN, y0, y1, hits, row_hits)

    if sum(_run_rows(detect, ny, params.workers)) == 0:
        return 0

    def grow(y0, y1):
        return _calib.cosmic_ray_grow_rows(sci, var, mask, hits, row_hits, _CR_SKIP_SELF,
                                           params.cosmic_ray_grow_sigma, params.cosmic_ray_contrast,
                                           CR_NOISE_MARGIN, int(MaskBits.SPIKE), y0, y1, mask)

    return int(sum(_run_rows(grow, ny, params.workers)))


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _qcal_of(ccdcal: CCDCalibration, qid, filename) -> QuadrantCalibration:
    qcal = ccdcal.quadrants.get(qid)
    if qcal is None:
        raise InputError(filename, f"no calibration for quadrant {qid!r} of CCD {ccdcal.ccdid} "
                                   f"(has {sorted(ccdcal.quadrants)})")
    if qcal.qid != qid:
        raise InputError(filename, f"the calibration filed under quadrant {qid} is for quadrant {qcal.qid}")
    return qcal


def _overscan_of(overscans: dict, qid, filename):
    if qid not in overscans or overscans[qid] is None:
        raise MissingExtensionError(filename, f"no overscan for quadrant {qid} ({_hdu_name(qid, True)})")
    return overscans[qid]


def _check_primary(path: Path, header: fits.Header, ccdcal: CCDCalibration) -> None:
    if "CCD_ID" not in header:
        raise MissingKeywordError(path, "CCD_ID", 0)
    if int(header["CCD_ID"]) != int(ccdcal.ccdid):
        raise InputError(path, f"raw file of CCD {header['CCD_ID']} but the calibration is for CCD {ccdcal.ccdid}")
    if "FILTER" in header:
        try:
            fcode = get_filter(str(header["FILTER"])).code
        except ConfigError:
            raise InputError(path, f"unknown FILTER {header['FILTER']!r} in the primary header") from None
        if fcode != ccdcal.filtercode:
            raise InputError(path, f"raw file taken in {fcode} but the calibration is for {ccdcal.filtercode}")


class _RawFile:
    """The HDUs of a raw CCD file, read one by one so that a truncated one fails alone.

    The whole file is read at once (`~ztfsds.products.fitsio.open_fits`) when it is intact; when it is
    truncated, HDU by HDU, each failure becoming the error of that HDU.
    """

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise ProductNotFoundError(f"{path}: no such file")
        try:
            self.hdul = open_fits(path)
            self.lenient = False
        except TruncatedFileError:
            if path.stat().st_size == 0:
                raise
            self.hdul = self._open_lazy()
            self.lenient = True

    def _open_lazy(self) -> fits.HDUList:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return fits.open(self.path, memmap=False, lazy_load_hdus=True)
            except (OSError, ValueError, TypeError, IndexError) as exc:
                raise FITSFormatError(self.path, f"not a readable FITS file ({exc})") from exc

    def header(self) -> fits.Header:
        return self.hdul[0].header

    def data(self, index: int) -> np.ndarray:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                hdu = self.hdul[index]
                data = hdu.data
            except IndexError:
                if self.lenient:
                    raise TruncatedFileError(self.path, f"HDU {index} is missing: the file is truncated") from None
                raise MissingExtensionError(self.path, f"no HDU {index} (file has {len(self.hdul)} HDUs)") from None
            except (OSError, ValueError, TypeError) as exc:
                raise TruncatedFileError(self.path, f"HDU {index} cannot be read: {exc}") from exc
        if any("truncated" in str(w.message) for w in caught):
            raise TruncatedFileError(self.path, f"HDU {index} is truncated")
        if data is None:
            raise MissingExtensionError(self.path, f"HDU {index} holds no data")
        return data

    def close(self) -> None:
        self.hdul.close()
