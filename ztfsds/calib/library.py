"""The calibration library: a night's master biases, flats, bad-pixel masks, gains and crosstalk.

`build_library` turns one night's raw calibration exposures (biases ``..._OO_cNN_b.fits``, LED dome
flats ``..._<fc>_cNN_f.fits``) and science exposures (for crosstalk and hot pixels) into calibration
products, per CCD and readout quadrant; `load_calibration` finds the newest products valid for a
night and returns the `~ztfsds.calib.calibration.CCDCalibration` that the calibration stage applies.

The measurements, each a pure function of arrays:

- `master_bias`: every raw bias less its per-row overscan level (`overscan_level`), sigma-clipped
  mean per pixel (`ztfsds.stats.clipped_stack`); the read noise from the scatter of frame
  differences; noisy columns and pixels from the per-pixel scatter.
- `master_flat`: every dome flat less overscan and master bias, linearised (the camera's
  non-linearity), normalised by its median, combined with inverse-variance weights; the gain from
  the photon transfer of consecutive pairs (variance of their difference against their level,
  less the read noise). `normalize_ccd_flats` scales a CCD's four quadrant flats together to median
  1, so that the amplifiers' relative gains stay in the flat.
- `hot_pixels`: single pixels that stand above their neighbours in every science exposure of the
  night (hot pixels collect charge with exposure time; stars move with the pointing, cosmic rays
  do not repeat). Up to `MAX_SCIENCE_FRAMES` exposures, evenly spread over the night, are used
  for hot pixels, crosstalk and saturation.
- `bad_pixel_mask`: DEAD, LOW_RESPONSIVITY, HIGH_RESPONSIVITY from the flat against its own smooth
  (mesh-median) version; NOISY from the bias scatter, the hot pixels and isolated bright flat pixels.
- `measure_crosstalk`: bright, unsaturated pixels of each amplifier, mirrored into each other
  amplifier of the CCD (`ztfsds.camera.crosstalk_mirror`), against the victim's signal there; a
  clipped least-squares slope per (victim, source) pair with a free offset per star.
- `saturation_level`: the raw level above the bias at which the ADC clips, or a lower full-well
  plateau where the science data show one.

Products (`ztfsds.products.ProductKey.calibration`), one per quadrant::

    cal/YYYY/MMDD/bias/OO/cNN/qQ/ztf_YYYYMMDD_OO_cNN_qQ_bias.fits
        master bias [DN] (primary, float32) and NOISY (int16, 1 where noisy); header: NFRAMES,
        RAWF01.. (input files), INPHASH, RDNOIDN [DN], SATURATE [raw DN above bias], NLA, NLB,
        XTALK1..XTALK4 (this victim's row of the crosstalk matrix), XTALKE1..4, XTALKN1..4, XTALKOK,
        VALIDFRM, and the calibration parameters (PIPEVERS, CFGHASH, CALHASH, HIERARCH ZTFSDS CALIB ...).
    cal/YYYY/MMDD/hifreqflat/<fc>/cNN/qQ/ztf_YYYYMMDD_<fc>_cNN_qQ_hifreqflat.fits
        master flat (float32, median 1 over the CCD, 1 on DEAD pixels); header: NFRAMES, RAWF..,
        INPHASH, FLATLVL [DN], FLATNORM [DN], GAIN [e-/DN], GAINERR, READNOI [e-] (the amplifier's,
        digitisation noise left out), RDNOIDN [DN] (a bias frame's noise), CIDBIAS, VALIDFRM.
    cal/YYYY/MMDD/bpm/<fc>/cNN/qQ/ztf_YYYYMMDD_<fc>_cNN_qQ_bpm.fits
        bad-pixel mask (int16 `~ztfsds.products.MaskBits`); header: NDEAD, NLOWRESP, NHIGHRES, NNOISY,
        NHOT, CIDBIAS, CIDHIFLT, VALIDFRM and the MaskBits legend.

The dome flats of the simulator are uniformly lit, so the 'hifreqflat' here holds the whole flat
(vignetting included); the name is ZTF's.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ..camera import (
    ADC_MAX,
    QIDS,
    RAW_OVERSCAN_HDUS,
    RAW_QUADRANT_HDUS,
    crosstalk_mirror,
    linearize,
    nonlinearity_coefficients,
)
from ..camera import rcid as _rcid
from ..config import CalibParams, Config
from ..errors import InputError, ProductNotFoundError
from ..products import MaskBits, ProductKey, ProductStore
from ..products.fitsio import open_fits
from ..stats import clipped_stack, robust_sigma
from .calibration import CCDCalibration, QuadrantCalibration
from .overscan import overscan_level

__all__ = [
    "RawCCD",
    "MasterBias",
    "MasterFlat",
    "CrosstalkResult",
    "read_raw_ccd",
    "master_bias",
    "master_flat",
    "normalize_ccd_flats",
    "hot_pixels",
    "bad_pixel_mask",
    "measure_crosstalk",
    "saturation_level",
    "build_library",
    "load_calibration",
]

log = logging.getLogger(__name__)

#: Side of the mesh cells [px] of the smooth flat and of the local background (median per cell,
#: bilinear between cell centres): larger than the biggest responsivity cluster (~13 px across).
SMOOTH_MESH = 32
#: A pixel whose flat is below this fraction of the smooth flat around it is DEAD.
DEAD_RESPONSE = 0.15
#: LOW/HIGH_RESPONSIVITY: flat / smooth flat further from 1 than this many robust sigma ...
RESPONSE_SIGMA = 6.0
#: ... and than this fraction.
RESPONSE_FLOOR = 0.03
#: NOISY columns: median per-pixel bias scatter of the column above this multiple of the typical.
NOISY_COLUMN = 1.3
#: NOISY pixels: bias scatter above this multiple of the typical (only with >= 5 bias frames).
NOISY_PIXEL = 3.0
#: Hot pixels: combined significance [sigma of the sky] of the excess over the 8 neighbours' median.
HOT_SIGMA = 4.5
#: Most science exposures of a CCD used for crosstalk, hot pixels and saturation (evenly spread).
MAX_SCIENCE_FRAMES = 20
#: Crosstalk sources: unsaturated pixels this far above their background [linear DN].
XTALK_THRESHOLD = 10000.0
#: Fewest source pixels for a crosstalk coefficient to count as measured.
XTALK_MIN_PIXELS = 20
#: Clip threshold [robust sigma] of the crosstalk fit residuals and of frame-difference variances.
_FIT_CLIP = 4.0
_VAR_CLIP = 5.0
#: Dome flats with a quadrant below this median level above bias [DN] are unlit and left out.
_MIN_FLAT_LEVEL = 100.0
#: Most frame pairs used for the read noise (bias differences).
_MAX_PAIRS = 4
#: Variance of rounding to integer DN [DN^2], part of the noise of every raw frame.
_DIGITISATION_VAR = 1.0 / 12.0
#: Most input file names written to a product header (RAWF01..RAWF99); INPHASH covers all.
_MAX_NAME_CARDS = 99


# --------------------------------------------------------------------------------------------------
# Raw files
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawCCD:
    """One raw CCD file: four quadrants and their overscan strips, as written by the camera.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    header : `~astropy.io.fits.Header`
        Primary header.
    quadrants : dict of int to numpy.ndarray
        Raw quadrant (ny, nx) by qid 1-4 [DN], science orientation.
    overscans : dict of int to numpy.ndarray
        Raw overscan strip (ny, ncol) by qid [DN].
    """

    path: Path
    header: fits.Header
    quadrants: dict
    overscans: dict

    @property
    def shape(self) -> tuple[int, int]:
        """Quadrant shape ``(ny, nx)``."""
        return tuple(self.quadrants[QIDS[0]].shape)


def read_raw_ccd(path: str | os.PathLike) -> RawCCD:
    """Read and check a raw CCD file (primary + 4 quadrant HDUs + 4 overscan HDUs).

    Parameters
    ----------
    path : path-like
        A raw ``ztf_..._cNN_<t>.fits[.fz]`` file.

    Returns
    -------
    RawCCD

    Raises
    ------
    ztfsds.errors.InputError
        The file is missing, truncated or not FITS (`~ztfsds.errors.TruncatedFileError`,
        `~ztfsds.errors.FITSFormatError`), lacks an HDU, or its quadrants and overscans are not 2-D
        images of one shape with as many rows. The message names the file.
    """
    path = Path(path)
    try:
        hdul = open_fits(path)
    except FileNotFoundError:
        raise InputError(path, "raw file not found") from None
    with hdul:
        last = max(RAW_OVERSCAN_HDUS)
        if len(hdul) <= last:
            raise InputError(path, f"raw CCD file has {len(hdul)} HDUs, expected {last + 1}")
        header = hdul[0].header.copy()
        quads = {q: hdul[k].data for q, k in zip(QIDS, RAW_QUADRANT_HDUS)}
        overs = {q: hdul[k].data for q, k in zip(QIDS, RAW_OVERSCAN_HDUS)}
    _check_raw_arrays(path, quads, overs)
    return RawCCD(path, header, quads, overs)


def _check_raw_arrays(path, quads: dict, overs: dict) -> None:
    shape = None
    for q in QIDS:
        a, o = quads[q], overs[q]
        if a is None or a.ndim != 2 or a.dtype.kind not in "uif":
            raise InputError(path, f"quadrant HDU {RAW_QUADRANT_HDUS[q - 1]} is not a 2-D image")
        if o is None or o.ndim != 2 or o.dtype.kind not in "uif":
            raise InputError(path, f"overscan HDU {RAW_OVERSCAN_HDUS[q - 1]} is not a 2-D image")
        if shape is None:
            shape = a.shape
        if a.shape != shape:
            raise InputError(path, f"quadrant {q} has shape {a.shape}, quadrant 1 has {shape}")
        if o.shape[0] != a.shape[0]:
            raise InputError(path, f"overscan {q} has {o.shape[0]} rows, its quadrant {a.shape[0]}")


def _read_pair(path: Path, qid: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrant and overscan of one qid of an already checked raw file, reading only those HDUs."""
    try:
        with fits.open(path, memmap=False) as hdul:  # lazy: reads only the HDUs touched
            quad = np.array(hdul[RAW_QUADRANT_HDUS[qid - 1]].data, dtype=np.float32)
            over = np.array(hdul[RAW_OVERSCAN_HDUS[qid - 1]].data, dtype=np.float32)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(path, f"cannot read quadrant {qid} ({exc})") from exc
    return quad, over


# --------------------------------------------------------------------------------------------------
# Small array helpers
# --------------------------------------------------------------------------------------------------


def _params(params: CalibParams | None) -> CalibParams:
    return params if params is not None else CalibParams()


def _stack_options(params: CalibParams) -> dict:
    return dict(sigma_lower=params.stack_clip_sigma, sigma_upper=params.stack_clip_sigma,
                maxiters=params.stack_maxiters, workers=params.workers)


def _clipped_mean_var(values: np.ndarray, sigma: float = _VAR_CLIP, iters: int = 5) -> tuple[float, float]:
    """Mean and variance of finite values after iterative clipping at ``sigma`` standard deviations.

    Plain moments (not the MAD) because integer-valued raw differences bias a MAD; a 5-sigma clip
    removes a Gaussian's variance only at the 1e-5 level. The first centre and scale come from a
    subsample of at most ~200,000 values (median and MAD).
    """
    x = np.asarray(values, dtype=np.float32).ravel()
    x = x[np.isfinite(x)]
    if x.size < 3:
        return float("nan"), float("nan")
    sub = x[:: max(1, x.size // 200_000)]
    centre = float(np.median(sub))
    scale = robust_sigma(sub) or float(np.std(sub)) or 1e-12
    keep = None
    for _ in range(iters):
        new = np.abs(x - np.float32(centre)) < np.float32(sigma * scale)
        if keep is not None and np.array_equal(new, keep):
            break
        keep = new
        if keep.sum() < 3:
            return float("nan"), float("nan")
        kept = x[keep].astype(np.float64)
        centre = float(kept.mean())
        scale = float(kept.std()) or 1e-12
    kept = x[keep].astype(np.float64)
    return float(kept.mean()), float(kept.var(ddof=1))


def _cell_centres(n: int, mesh: int) -> tuple[int, np.ndarray]:
    ncell = -(-n // mesh)
    starts = np.arange(ncell) * mesh
    ends = np.minimum(starts + mesh, n)
    return ncell, 0.5 * (starts + ends - 1)


def _interp_matrix(n: int, centres: np.ndarray) -> np.ndarray:
    """(n, ncell) weights of linear interpolation between cell centres (constant beyond the ends)."""
    ncell = centres.size
    w = np.zeros((n, ncell), dtype=np.float32)
    if ncell == 1:
        w[:, 0] = 1.0
        return w
    x = np.clip(np.arange(n, dtype=np.float64), centres[0], centres[-1])
    j = np.clip(np.searchsorted(centres, x, side="right") - 1, 0, ncell - 2)
    t = (x - centres[j]) / (centres[j + 1] - centres[j])
    rows = np.arange(n)
    w[rows, j] = 1.0 - t
    w[rows, j + 1] += t
    return w


def _mesh_background(image: np.ndarray, mesh: int = SMOOTH_MESH, mask: np.ndarray | None = None) -> np.ndarray:
    """Smooth version of an image: median per mesh cell, 3x3 median of the cells, bilinear in between.

    Masked and non-finite pixels are left out; a cell without valid pixels takes its neighbours'
    value. Returns float32 of the image's shape.
    """
    ny, nx = image.shape
    my, cy = _cell_centres(ny, mesh)
    mx, cx = _cell_centres(nx, mesh)
    pad = np.full((my * mesh, mx * mesh), np.nan, dtype=np.float32)
    pad[:ny, :nx] = image
    if mask is not None:
        pad[:ny, :nx][mask] = np.nan
    cells = pad.reshape(my, mesh, mx, mesh).transpose(0, 2, 1, 3).reshape(my, mx, mesh * mesh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells are filled below
        grid = np.nanmedian(cells, axis=2)
    bad = ~np.isfinite(grid)
    if bad.all():
        return np.full(image.shape, np.nan, dtype=np.float32)
    if bad.any():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        grid = grid[tuple(idx)]
    if my >= 3 and mx >= 3:
        grid = ndimage.median_filter(grid, size=3, mode="nearest")
    wy = _interp_matrix(ny, cy)
    wx = _interp_matrix(nx, cx)
    return (wy @ grid.astype(np.float32) @ wx.T).astype(np.float32)


def _neighbour_max(image: np.ndarray) -> np.ndarray:
    """Largest of the 8 neighbours of every pixel (-inf beyond the edges)."""
    pad = np.pad(image, 1, mode="constant", constant_values=-np.inf)
    ny, nx = image.shape
    out = np.full(image.shape, -np.inf, dtype=image.dtype)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            np.maximum(out, pad[dy:dy + ny, dx:dx + nx], out=out)
    return out


# --------------------------------------------------------------------------------------------------
# Master bias
# --------------------------------------------------------------------------------------------------


class MasterBias(NamedTuple):
    """A master bias and the noise measured with it.

    Attributes
    ----------
    bias : numpy.ndarray
        float32 (ny, nx): image-area bias less the per-row overscan level [DN].
    read_noise : float
        Noise of one bias frame [DN]: the amplifier's read noise and the ADC's digitisation noise
        (1/12 DN^2), as in every raw frame (the READNOI header card leaves the digitisation out).
    noisy : numpy.ndarray
        bool (ny, nx): noisy columns and pixels.
    """

    bias: np.ndarray
    read_noise: float
    noisy: np.ndarray


def _overscan_corrected(frames, params, *, dtype=np.float32) -> np.ndarray:
    frames = list(frames)
    if not frames:
        raise InputError(None, "no frames given")
    raw0 = np.asarray(frames[0][0])
    cube = np.empty((len(frames),) + raw0.shape, dtype=dtype)
    for i, (raw, over) in enumerate(frames):
        raw = np.asarray(raw)
        if raw.shape != raw0.shape:
            raise InputError(None, f"frame {i} has shape {raw.shape}, frame 0 has {raw0.shape}")
        cube[i] = raw
        cube[i] -= overscan_level(over, params)[:, None]
    return cube


def master_bias(frames: Sequence, params: CalibParams | None = None) -> MasterBias:
    """Master bias of one quadrant from raw bias frames.

    Parameters
    ----------
    frames : sequence of (array, array)
        ``(raw quadrant, raw overscan strip)`` of each bias exposure [DN], at least 2.
    params : `~ztfsds.config.CalibParams`, optional
        Overscan options and ``stack_clip_sigma``, ``stack_maxiters``, ``workers`` of the combination.

    Returns
    -------
    MasterBias
        ``(bias [DN], read_noise [DN], noisy)``: each frame less its per-row overscan level
        (`overscan_level`), sigma-clipped mean per pixel; read noise from the clipped variance of
        consecutive frame differences (noisy pixels left out); NOISY columns where the median
        per-pixel scatter of the column exceeds `NOISY_COLUMN` times the typical one, and with 5 or
        more frames single pixels above `NOISY_PIXEL` times.

    Raises
    ------
    ztfsds.errors.InputError
        Fewer than 2 frames, or frames of different shapes, or an unusable overscan strip.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> structure = np.tile(rng.normal(0, 1, 64), (64, 1))        # fixed column pattern [DN]
    >>> frames = [(500 + structure + rng.normal(0, 2, (64, 64)), 500 + rng.normal(0, 2, (64, 30)))
    ...           for _ in range(10)]
    >>> mb = master_bias(frames)
    >>> bool(np.std(mb.bias - structure) < 0.8), round(mb.read_noise, 1)
    (True, 2.0)
    """
    params = _params(params)
    cube = _overscan_corrected(frames, params)
    n = cube.shape[0]
    if n < 2:
        raise InputError(None, f"a master bias needs at least 2 frames, got {n}")
    res = clipped_stack(cube, combine="mean", **_stack_options(params))
    bias = np.where(np.isfinite(res.data), res.data, np.float32(0.0)).astype(np.float32)
    scatter = res.std.astype(np.float64) * np.sqrt(n / max(n - 1, 1))
    column = np.nanmedian(scatter, axis=0)
    typical = float(np.nanmedian(column))
    noisy = np.zeros(bias.shape, dtype=bool)
    if typical > 0:
        noisy[:, column > NOISY_COLUMN * typical] = True
        if n >= 5:
            noisy |= scatter > NOISY_PIXEL * typical
    good = ~noisy
    variances = []
    # a few million pixels per difference pin the noise to < 0.1 %: at most _MAX_PAIRS pairs
    for i in np.unique(np.linspace(0, n - 2, min(n - 1, _MAX_PAIRS)).round().astype(int)):
        d = cube[i + 1] - cube[i]
        variances.append(_clipped_mean_var(d[good])[1])
    read_noise = float(np.sqrt(np.nanmean(variances) / 2.0))
    return MasterBias(bias, read_noise, noisy)


# --------------------------------------------------------------------------------------------------
# Master flat and gain
# --------------------------------------------------------------------------------------------------


class MasterFlat(NamedTuple):
    """A quadrant's master flat before the CCD normalisation, and the gain measured with it.

    Attributes
    ----------
    flat : numpy.ndarray
        float32 (ny, nx) combined flat [linear DN at ``level``].
    level : float
        Mean of the frames' median levels [linear DN above bias].
    gain : float
        Gain from the photon transfer of consecutive frame pairs [e-/DN]; NaN with one frame.
    gain_error : float
        Standard error of ``gain`` from the spread between pairs [e-/DN] (NaN with fewer than 2 pairs).
    weights : numpy.ndarray
        Weight of each frame in the combination.
    """

    flat: np.ndarray
    level: float
    gain: float
    gain_error: float
    weights: np.ndarray


def _pair_gain(a: np.ndarray, b: np.ndarray, good: np.ndarray, read_noise: float) -> float:
    """Gain [e-/DN] from two linear flat frames of about the same level (photon transfer)."""
    ma, _ = _clipped_mean_var(a[good])
    mb, _ = _clipped_mean_var(b[good])
    r = ma / mb
    _, var = _clipped_mean_var((a - r * b)[good])
    # var = (ma + r^2 mb) / g + (1 + r^2) rn^2
    shot = var - (1.0 + r * r) * read_noise**2
    return float((ma + r * r * mb) / shot) if shot > 0 else float("nan")


def master_flat(frames: Sequence, bias: np.ndarray, *, read_noise: float, nonlin=(0.0, 0.0),
                mask: np.ndarray | None = None, params: CalibParams | None = None) -> MasterFlat:
    """Master flat and gain of one quadrant from raw dome flats of one filter.

    Each frame is corrected for the overscan and the master bias, linearised
    (`ztfsds.camera.linearize`), divided by its median and combined by a sigma-clipped weighted
    mean, the weights the inverse variance of a normalised frame, ``m**2 / (m / gain + rn**2)`` (so
    frames of different LED sets and levels combine optimally). The combination is scaled back to
    the frames' mean level, so quadrants of one CCD keep their relative gains (`normalize_ccd_flats`).

    Parameters
    ----------
    frames : sequence of (array, array)
        ``(raw quadrant, raw overscan strip)`` of each flat exposure [DN], in time order (pairs for
        the gain are consecutive frames).
    bias : numpy.ndarray
        Master bias of the quadrant [DN] (`master_bias`).
    read_noise : float
        Read noise [DN] (`master_bias`), for the gain and the weights.
    nonlin : (float, float), optional
        Non-linearity coefficients ``(a, b)`` of the amplifier (`ztfsds.camera.nonlinearity_coefficients`).
    mask : numpy.ndarray, optional
        bool (ny, nx), pixels left out of the levels and the gain (noisy, known defects).
    params : `~ztfsds.config.CalibParams`, optional
        Overscan and stack options.

    Returns
    -------
    MasterFlat

    Raises
    ------
    ztfsds.errors.InputError
        No frames, frames of different shapes, or a frame without signal.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> true_flat = 1 + rng.normal(0, 0.01, (64, 64))
    >>> gain, level = 5.0, 8000.0                       # e-/DN, DN
    >>> frames = [(300 + rng.normal(level * true_flat, np.sqrt(level * true_flat / gain + 4.0)),
    ...            300 + rng.normal(0, 2, (64, 64))) for _ in range(8)]
    >>> mf = master_flat(frames, np.zeros((64, 64)), read_noise=2.0)
    >>> bool(abs(mf.gain / gain - 1) < 0.03), bool(np.std(mf.flat / mf.level / true_flat) < 0.002)
    (True, True)
    """
    params = _params(params)
    cube = _overscan_corrected(frames, params)
    a, b = (float(v) for v in nonlin)
    cube -= np.asarray(bias, dtype=np.float32)[None]
    if a != 0.0 or b != 0.0:
        for i in range(cube.shape[0]):
            cube[i] = linearize(cube[i], a, b)
    n = cube.shape[0]
    good = np.ones(cube.shape[1:], dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
    step = max(1, int(np.sqrt(good.size / 1.0e6)))
    sub = good[::step, ::step]
    levels = np.array([float(np.median(f[::step, ::step][sub])) for f in cube])
    if not np.all(levels > 0):
        bad = int(np.argmin(levels))
        raise InputError(None, f"flat frame {bad} has no signal (median {levels[bad]:.1f} DN above bias)")
    gains = [_pair_gain(cube[i], cube[i + 1], good, read_noise) for i in range(0, n - 1, 2)]
    gains = np.array([g for g in gains if np.isfinite(g)])
    gain = float(np.mean(gains)) if gains.size else float("nan")
    gain_error = float(np.std(gains, ddof=1) / np.sqrt(gains.size)) if gains.size >= 2 else float("nan")
    if np.isfinite(gain):
        weights = levels**2 / (levels / gain + read_noise**2)
    else:
        weights = levels.copy()
    weights = weights / weights.sum()
    cube /= levels.astype(np.float32)[:, None, None]
    res = clipped_stack(cube, combine="mean", weights=weights, **_stack_options(params))
    level = float(np.mean(levels))
    flat = np.where(np.isfinite(res.data), res.data * np.float32(level), np.float32(0.0)).astype(np.float32)
    return MasterFlat(flat, level, gain, gain_error, weights)


def normalize_ccd_flats(flats: dict, masks: dict | None = None) -> tuple[dict, float]:
    """Scale the four quadrant flats of a CCD together to median 1.

    Parameters
    ----------
    flats : dict of int to numpy.ndarray
        Master flat of each quadrant [DN] (`MasterFlat.flat`), by qid.
    masks : dict of int to numpy.ndarray, optional
        Bad-pixel masks by qid; pixels with any bit set are left out of the median.

    Returns
    -------
    flats : dict of int to numpy.ndarray
        float32 flats, median 1 over the good pixels of all quadrants (relative gains kept).
    norm : float
        The median that was divided out [DN].

    Examples
    --------
    >>> import numpy as np
    >>> out, norm = normalize_ccd_flats({1: np.full((4, 4), 100.0), 2: np.full((4, 4), 110.0)})
    >>> norm, round(float(out[2][0, 0]), 4)
    (105.0, 1.0476)
    """
    values = []
    for q, f in flats.items():
        v = np.asarray(f, dtype=np.float32)
        good = np.isfinite(v)
        if masks is not None and q in masks:
            good &= np.asarray(masks[q]) == 0
        values.append(v[good])
    norm = float(np.median(np.concatenate(values)))
    if not np.isfinite(norm) or norm <= 0:
        raise InputError(None, f"the CCD's flats have median {norm}: cannot normalise")
    return {q: (np.asarray(f, dtype=np.float32) / np.float32(norm)).astype(np.float32)
            for q, f in flats.items()}, norm


# --------------------------------------------------------------------------------------------------
# Bad pixels
# --------------------------------------------------------------------------------------------------


def hot_pixels(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Hot pixels of a quadrant from the night's science exposures.

    A hot pixel collects charge of its own every second, so it stands above its neighbours in every
    exposure; a star moves with the pointing from one exposure to the next and a cosmic ray does not
    repeat. In each frame the excess of a pixel over the median of its 8 neighbours is measured in
    units of the frame's sky noise, ``z``. A pixel is hot when ``z > 1`` in every frame, the sum
    of ``z`` over the ``n`` frames, its largest value replaced by the second largest (so that one
    star or cosmic ray does not make it), exceeds ``HOT_SIGMA * sqrt(n)``, and in most frames it is a
    single sharp pixel: its excess over the brightest neighbour is more than half its height above
    the local background less 3 sigma (so faint hot pixels pass and stars' peaks do not).

    Parameters
    ----------
    frames : iterable of numpy.ndarray
        Bias-subtracted science images of one quadrant [DN], at least 2 (with fewer, no pixel is
        called hot). Consumed one at a time (a generator keeps memory low).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> frames = [rng.normal(100, 5, (64, 64)) for _ in range(3)]
    >>> for f in frames:
    ...     f[10, 20] += 25.0                                   # a hot pixel
    >>> frames[0][30, 30] += 500.0                              # a cosmic ray
    >>> np.argwhere(hot_pixels(frames)).tolist()
    [[10, 20]]
    """
    ring = np.ones((3, 3), dtype=bool)
    ring[1, 1] = False
    n = 0
    every = zsum = top = second = sharp = None
    for frame in frames:
        img = np.asarray(frame, dtype=np.float32)
        height = img - _mesh_background(img)
        sigma = np.float32(robust_sigma(height[::2, ::2]) or 1.0)
        z = (img - ndimage.median_filter(img, footprint=ring, mode="nearest")) / sigma
        is_sharp = (img - _neighbour_max(img)) > np.float32(0.5) * height - np.float32(3.0) * sigma
        if every is None:
            every, zsum, top, second = z > 1.0, z.copy(), z, np.full_like(z, -np.inf)
            sharp = is_sharp.astype(np.int32)
        else:
            every &= z > 1.0
            zsum += z
            second = np.maximum(second, np.minimum(top, z))
            top = np.maximum(top, z)
            sharp += is_sharp
        n += 1
    if n < 2:
        return np.zeros((0, 0) if every is None else every.shape, dtype=bool)
    # the brightest frame counts as the second brightest: one star or cosmic ray is not enough
    return every & (zsum - top + second > HOT_SIGMA * np.sqrt(n)) & (2 * sharp > n)


def bad_pixel_mask(flat: np.ndarray, *, noisy: np.ndarray | None = None, hot: np.ndarray | None = None
                   ) -> np.ndarray:
    """Bad-pixel mask of a quadrant from its master flat and its bias and science noise.

    The flat is divided by its smooth version (`SMOOTH_MESH` mesh medians); the ratio's robust
    scatter sigma (pixel response non-uniformity and noise) sets the thresholds:

    - DEAD: ratio below `DEAD_RESPONSE` (dead pixels, and bad columns beyond their charge trap);
    - LOW_RESPONSIVITY: ratio below ``1 - max(RESPONSE_SIGMA * sigma, RESPONSE_FLOOR)``;
    - HIGH_RESPONSIVITY: ratio above ``1 + ...``, in groups of 2 or more touching pixels;
    - NOISY: a single isolated pixel above that (the charge of a hot pixel in the flat), ``noisy``
      (bias scatter, `master_bias`) and ``hot`` (`hot_pixels`).

    Parameters
    ----------
    flat : numpy.ndarray
        Master flat of the quadrant (any normalisation).
    noisy, hot : numpy.ndarray, optional
        bool (ny, nx) noisy and hot pixels.

    Returns
    -------
    numpy.ndarray
        int16 (ny, nx), an OR of `~ztfsds.products.MaskBits`; 0 for good pixels.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(4)
    >>> flat = 1 + rng.normal(0, 0.007, (128, 128))
    >>> flat[40:44, 50:54] *= 0.3                                # a low-responsivity cluster
    >>> flat[90, 10] = 0.0                                       # a dead pixel
    >>> bpm = bad_pixel_mask(flat)
    >>> int((bpm == MaskBits.LOW_RESPONSIVITY).sum()), int(bpm[90, 10]) == MaskBits.DEAD
    (16, True)
    """
    flat = np.asarray(flat, dtype=np.float32)
    finite = np.isfinite(flat)
    smooth = _mesh_background(flat, SMOOTH_MESH, mask=~finite | (flat <= 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(finite & (smooth > 0), flat / smooth, np.float32(0.0))
    dead = ratio < DEAD_RESPONSE
    sigma = robust_sigma(ratio[~dead][:: max(1, int(ratio.size // 2_000_000))])
    limit = max(RESPONSE_SIGMA * sigma, RESPONSE_FLOOR)
    low = ~dead & (ratio < 1.0 - limit)
    high = ratio > 1.0 + limit
    labels, nlab = ndimage.label(high, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=nlab + 1)
    single = high & (sizes[labels] == 1)
    mask = np.zeros(flat.shape, dtype=np.int16)
    mask[dead] |= np.int16(MaskBits.DEAD)
    mask[low] |= np.int16(MaskBits.LOW_RESPONSIVITY)
    mask[high & ~single] |= np.int16(MaskBits.HIGH_RESPONSIVITY)
    noisy_all = single.copy()
    for extra in (noisy, hot):
        if extra is not None:
            noisy_all |= np.asarray(extra, dtype=bool)
    mask[noisy_all] |= np.int16(MaskBits.NOISY)
    return mask


# --------------------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------------------


def saturation_level(bias: np.ndarray, overscan_max: float, science: Sequence[np.ndarray] = (),
                     *, noisy: np.ndarray | None = None) -> float:
    """Raw level above the bias [DN] at and above which a quadrant's pixels are saturated.

    The 16-bit ADC clips at `~ztfsds.camera.ADC_MAX`: a pixel saturates at ``ADC_MAX - overscan
    level - image bias``, which is taken at its lowest (the highest overscan level seen in the
    biases, the 99.9th percentile of the master bias). Where the science exposures show a plateau
    below that (many pixels piled up within 0.25 % of one raw level above 80 % of it: a full well
    reached before the ADC clips) the plateau is the saturation level instead.

    Parameters
    ----------
    bias : numpy.ndarray
        Master bias [DN] (image area less the overscan level).
    overscan_max : float
        Highest per-row overscan level of the bias frames [DN].
    science : sequence of numpy.ndarray, optional
        Raw science quadrants less overscan and bias [DN] (not linearised).
    noisy : numpy.ndarray, optional
        Pixels left out of the bias percentile.

    Returns
    -------
    float
        [raw DN above bias].

    Examples
    --------
    >>> import numpy as np
    >>> saturation_level(np.zeros((8, 8)), 535.0)
    65000.0
    >>> sci = np.zeros((100, 100)); sci[:5, :] = 58000.0           # bleed trails at a full well
    >>> saturation_level(np.zeros((8, 8)), 535.0, [sci])
    58000.0
    """
    b = np.asarray(bias, dtype=np.float32)
    if noisy is not None:
        b = b[~np.asarray(noisy, dtype=bool)]
    adc = float(ADC_MAX) - float(overscan_max) - float(np.percentile(b, 99.9))
    values = [np.asarray(s, dtype=np.float32) for s in science]
    if values:
        high = np.concatenate([v[(v > 0.8 * adc) & (v < adc - 1.0)] for v in values])
        if high.size >= 25:
            width = 0.0025 * adc
            counts, edges = np.histogram(high, bins=np.arange(0.8 * adc, adc + width, width))
            k = int(np.argmax(counts))
            others = (counts.sum() - counts[k]) / max(counts.size - 1, 1)
            if counts[k] >= 25 and counts[k] >= 10 * (others + 1.0):
                in_bin = high[(high >= edges[k]) & (high < edges[k + 1])]
                return float(np.floor(np.min(in_bin)))
    return float(np.floor(adc))


# --------------------------------------------------------------------------------------------------
# Crosstalk
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CrosstalkResult:
    """The crosstalk matrix of a CCD measured from science exposures.

    Attributes
    ----------
    matrix : numpy.ndarray
        float64 (4, 4): ``matrix[v - 1, s - 1]`` is the fraction of amplifier ``s``'s signal [DN]
        seen by amplifier ``v`` at the mirrored position; 0 on the diagonal and where not measured.
    error : numpy.ndarray
        float64 (4, 4) standard errors (0 where not measured).
    npix : numpy.ndarray
        int64 (4, 4): source pixels in each fit.
    """

    matrix: np.ndarray
    error: np.ndarray
    npix: np.ndarray

    @property
    def measured(self) -> np.ndarray:
        """bool (4, 4): pairs fitted from at least `XTALK_MIN_PIXELS` source pixels."""
        return self.npix >= XTALK_MIN_PIXELS

    @property
    def complete(self) -> bool:
        """All 12 off-diagonal coefficients measured."""
        return bool(self.measured[~np.eye(4, dtype=bool)].all())


def _fit_ratio(excess: np.ndarray, source: np.ndarray, group: np.ndarray) -> tuple[float, float, int]:
    """Slope of excess against source with a free offset per group (star), clipped; (x, error, n).

    The offset per star absorbs the error of the victim's background under that star's ghost (its
    own faint sources, the smooth-background model), which is shared by all the star's pixels.
    """
    keep = np.ones(excess.size, dtype=bool)
    x, err = 0.0, 0.0
    for _ in range(10):
        g = np.unique(group[keep], return_inverse=True)[1]
        counts = np.bincount(g)
        e = excess[keep] - (np.bincount(g, excess[keep]) / counts)[g]
        s = source[keep] - (np.bincount(g, source[keep]) / counts)[g]
        ss = float(np.dot(s, s))
        dof = int(keep.sum()) - counts.size - 1
        if ss <= 0 or dof < 2:
            return 0.0, 0.0, 0
        x = float(np.dot(e, s)) / ss
        r = e - x * s
        scale = robust_sigma(r) or 1e-12
        # cluster-robust (sandwich) error: pixels of one star share their background error
        per_group = np.bincount(g, s * r)
        ngr = counts.size
        err = float(np.sqrt(np.dot(per_group, per_group) * ngr / max(ngr - 1, 1)) / ss)
        new = keep.copy()
        new[keep] = np.abs(r) < _FIT_CLIP * scale
        if np.array_equal(new, keep):
            break
        keep = new
    return x, err, int(keep.sum())


def measure_crosstalk(paths: Sequence, bias: dict, *, nonlin: dict | None = None,
                      saturation: dict | None = None, params: CalibParams | None = None) -> CrosstalkResult:
    """Crosstalk matrix of a CCD from the bright stars of its science exposures.

    In every exposure, each quadrant is corrected for overscan and bias, linearised, and its smooth
    background (`SMOOTH_MESH` mesh medians) subtracted. Pixels of a source amplifier more than
    `XTALK_THRESHOLD` above background and at least 2 px from saturated ones are mirrored into each
    victim (`ztfsds.camera.crosstalk_mirror`); the victim's signal there against the source signal
    gives the coefficient: a least-squares slope with a free offset per source star (which absorbs
    the victim's local background error under the ghost), residuals clipped at 4 sigma (the
    victim's own stars, cosmic rays), and a cluster-robust error (the pixels of one star share
    their background). The data support a coefficient to ``error`` (typically 5-40 % from a few
    exposures of a 512 x 512 px quadrant, a few % from 20 full-size exposures).

    Parameters
    ----------
    paths : sequence of path-like
        Raw science files of one CCD.
    bias : dict of int to numpy.ndarray
        Master bias of each quadrant [DN].
    nonlin : dict of int to (float, float), optional
        Non-linearity coefficients by qid (default: none).
    saturation : dict of int to float, optional
        Saturation level by qid [raw DN above bias] (default: the ADC ceiling less 1000 DN).
    params : `~ztfsds.config.CalibParams`, optional
        Overscan options.

    Returns
    -------
    CrosstalkResult
        Pairs with fewer than `XTALK_MIN_PIXELS` source pixels are 0 (a warning is logged).

    Raises
    ------
    ztfsds.errors.InputError
        A file is unreadable (see `read_raw_ccd`) or does not match the bias shape.
    """
    params = _params(params)
    nonlin = nonlin or {}
    pairs = {(v, s): ([], [], []) for v in QIDS for s in QIDS if v != s}
    ngroup = 0
    for path in paths:
        raw = read_raw_ccd(path)
        signal, bright, saturated_at = {}, {}, {}
        for q in QIDS:
            if raw.quadrants[q].shape != np.shape(bias[q]):
                raise InputError(path, f"quadrant {q} has shape {raw.quadrants[q].shape}, the bias "
                                       f"{np.shape(bias[q])}")
            quad = raw.quadrants[q].astype(np.float32)
            sub = quad - overscan_level(raw.overscans[q], params, filename=path)[:, None]
            sub -= np.asarray(bias[q], dtype=np.float32)
            sat_level = (saturation or {}).get(q, float(ADC_MAX) - 1000.0)
            saturated = (quad >= ADC_MAX) | (sub >= sat_level)
            # pixels next to saturated ones may hold charge spilled past the bleed trail
            saturated = ndimage.binary_dilation(saturated, iterations=2)
            a, b = nonlin.get(q, (0.0, 0.0))
            lin = linearize(sub, a, b) if (a or b) else sub
            lin = lin - _mesh_background(lin)
            signal[q] = lin
            bright[q] = (lin > XTALK_THRESHOLD) & ~saturated
            saturated_at[q] = saturated
        for s in QIDS:
            labels, nlab = ndimage.label(bright[s], structure=np.ones((3, 3), dtype=bool))
            labels[labels > 0] += ngroup
            ngroup += nlab
            for v in QIDS:
                if v == s:
                    continue
                sel = crosstalk_mirror(bright[s], s, v) & ~saturated_at[v]
                if sel.any():
                    excess, source, group = pairs[v, s]
                    excess.append(signal[v][sel])
                    source.append(crosstalk_mirror(signal[s], s, v)[sel])
                    group.append(crosstalk_mirror(labels, s, v)[sel])
    matrix = np.zeros((4, 4))
    error = np.zeros((4, 4))
    npix = np.zeros((4, 4), dtype=np.int64)
    for (v, s), (excess, source, group) in pairs.items():
        if not excess:
            continue
        x, err, n = _fit_ratio(np.concatenate(excess).astype(np.float64), np.concatenate(source).astype(np.float64),
                               np.concatenate(group))
        npix[v - 1, s - 1] = n
        if n >= XTALK_MIN_PIXELS:
            matrix[v - 1, s - 1], error[v - 1, s - 1] = x, err
    result = CrosstalkResult(matrix, error, npix)
    if not result.complete:
        missing = sorted({s for v in QIDS for s in QIDS if v != s and not result.measured[v - 1, s - 1]})
        log.warning("crosstalk: too few bright unsaturated pixels (< %d) in the %d science exposure(s) for "
                    "source amplifier(s) %s; their coefficients are set to 0", XTALK_MIN_PIXELS, len(paths),
                    ", ".join(f"q{s}" for s in missing))
    return result


# --------------------------------------------------------------------------------------------------
# The library: build and load
# --------------------------------------------------------------------------------------------------


def _amplifier_noise(read_noise_dn: float) -> float:
    """The amplifier's read noise [DN]: the noise of a bias frame less the ADC's 1/12 DN^2."""
    return float(np.sqrt(max(read_noise_dn**2 - _DIGITISATION_VAR, 0.0)))


def _night_text(night) -> str:
    if isinstance(night, (_dt.date, _dt.datetime)):
        return night.strftime("%Y%m%d")
    text = str(night).replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"night must be YYYYMMDD, YYYY-MM-DD or a date, got {night!r}")
    return text


def _iso(night: str) -> str:
    return f"{night[:4]}-{night[4:6]}-{night[6:]}"


def _name_cards(header: fits.Header, paths: Sequence[Path]) -> None:
    names = [Path(p).name for p in paths]
    header["NFRAMES"] = (len(names), "number of input frames combined")
    for i, name in enumerate(names[:_MAX_NAME_CARDS], 1):
        header[f"RAWF{i:02d}"] = (name, "input raw file")
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]
    header["INPHASH"] = (digest, "sha256 of the sorted input file names")


def _base_header(kind: str, night: str, ccdid: int, qid: int, params: CalibParams) -> fits.Header:
    h = fits.Header()
    h["CALTYPE"] = (kind, "calibration product type")
    h["CCD_ID"] = (ccdid, "CCD id")
    h["QID"] = (qid, "readout quadrant id")
    h["RCID"] = (_rcid(ccdid, qid), "readout channel id")
    h["VALIDFRM"] = (night, "first night (YYYYMMDD) of validity")
    Config(calib=params).to_header(h, stages=("calib",))
    return h


def _validated(paths: list[Path], what: str) -> tuple[list[Path], tuple | None]:
    """Readable raw files of one shape; unreadable ones are skipped with a warning."""
    ok, shape = [], None
    for p in paths:
        try:
            raw = read_raw_ccd(p)
        except InputError as exc:
            log.warning("skipping %s file: %s", what, exc)
            continue
        if shape is None:
            shape = raw.shape
        if raw.shape != shape:
            log.warning("skipping %s file %s: quadrant shape %s differs from %s", what, p, raw.shape, shape)
            continue
        ok.append(p)
    return ok, shape


def _raw_files(store: ProductStore, night: str, ccds) -> dict:
    """{ccdid: {'b': [...], 'f': {fc: [...]}, 'o': [...]}} of the night's raw files, in time order."""
    found: dict = {}
    for key in store.keys("raw", night=night):
        if ccds is not None and key.ccdid not in ccds:
            continue
        entry = found.setdefault(key.ccdid, {"b": [], "f": {}, "o": []})
        path = store.path(key)
        if key.imgtype == "b":
            entry["b"].append(path)
        elif key.imgtype == "f" and key.filtercode != "OO":
            entry["f"].setdefault(key.filtercode, []).append(path)
        elif key.imgtype == "o":
            entry["o"].append(path)
    return found


@dataclasses.dataclass
class _BiasSet:
    """The master bias of each quadrant of a CCD (this night's, or an earlier night's product)."""

    bias: dict
    noisy: dict
    read_noise: dict
    saturation: dict
    names: dict  # qid -> bias product file name
    overscan_max: dict = dataclasses.field(default_factory=dict)  # this night's only


def build_library(store: ProductStore, night, *, ccds=None, params: CalibParams | None = None) -> list[Path]:
    """Build and write a night's calibration products from its raw exposures.

    For every CCD with raw calibration files on the night: master biases (`master_bias`), crosstalk
    (`measure_crosstalk`) and hot pixels (`hot_pixels`) from the science exposures, saturation
    levels (`saturation_level`), and per filter with dome flats the master flats and gains
    (`master_flat`, `normalize_ccd_flats`) and bad-pixel masks (`bad_pixel_mask`). A night without
    biases uses the newest earlier bias products of the store for its flats. The products and
    their header cards are listed in the module notes. Unreadable raw files are skipped with a
    warning; running it again rewrites identical products.

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore`
        Data root: raw files in, ``cal/`` products out.
    night : str or datetime.date
        ``YYYYMMDD``.
    ccds : iterable of int, optional
        Only these CCDs (default: every CCD with raw files on the night).
    params : `~ztfsds.config.CalibParams`, optional
        Calibration parameters (recorded in every product header).

    Returns
    -------
    list of pathlib.Path
        The products written.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        The night has no raw bias or flat exposures of the requested CCDs.
    ztfsds.errors.InputError
        All of a CCD's bias files, or all of a filter's flat files, are unreadable (after the other
        CCDs were built).
    """
    params = _params(params)
    night = _night_text(night)
    ccd_set = None if ccds is None else {int(c) for c in ccds}
    files = _raw_files(store, night, ccd_set)
    usable = {c: f for c, f in files.items() if f["b"] or f["f"]}
    if not usable:
        raise ProductNotFoundError(f"no raw bias or flat exposures of night {night}"
                                   + (f" for CCDs {sorted(ccd_set)}" if ccd_set else "")
                                   + f" under {store.root / 'raw'}")
    written: list[Path] = []
    failed: list[InputError] = []
    for ccdid in sorted(usable):
        try:
            written += _build_ccd(store, night, ccdid, usable[ccdid], params)
        except InputError as exc:  # one CCD's unusable inputs do not stop the others
            log.error("c%02d night %s: no calibration built: %s", ccdid, night, exc)
            failed.append(exc)
    if failed:
        raise failed[0]
    return written


def _build_ccd(store: ProductStore, night: str, ccdid: int, files: dict, params: CalibParams) -> list[Path]:
    nonlin = {q: nonlinearity_coefficients(ccdid, q, _iso(night)) for q in QIDS}
    written: list[Path] = []
    biases, _ = _validated(files["b"], "bias")
    if files["b"] and not biases:
        raise InputError(files["b"][0], f"none of the {len(files['b'])} bias files of CCD {ccdid} on night "
                                         f"{night} is readable")
    if len(biases) == 1:
        log.warning("c%02d night %s: only one readable bias frame (a master bias needs 2)", ccdid, night)
        biases = []
    if biases:
        bset = _bias_this_night(night, ccdid, biases, params)
    else:
        bset = _bias_from_store(store, night, ccdid)
        if bset is None:
            log.warning("c%02d night %s: no bias frames and no earlier bias products; nothing built",
                        ccdid, night)
            return written
    shape = bset.bias[QIDS[0]].shape

    step = -(-len(files["o"]) // MAX_SCIENCE_FRAMES)
    science, sshape = _validated(files["o"][::max(step, 1)], "science")
    if science and sshape != shape:
        log.warning("c%02d night %s: science quadrants %s differ from the bias %s; not used", ccdid, night,
                    sshape, shape)
        science = []
    if science and biases:  # (the crosstalk is kept with this night's bias products)
        xtalk = measure_crosstalk(science, bset.bias, nonlin=nonlin, saturation=bset.saturation, params=params)
    else:
        if not science:
            log.warning("c%02d night %s: no science exposures: crosstalk not measured (0), no hot pixels "
                        "from them", ccdid, night)
        xtalk = CrosstalkResult(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), dtype=np.int64))
    hot = {}
    for q in QIDS:
        highs: list = []

        def frames(q=q, highs=highs):
            for p in science:
                quad, over = _read_pair(p, q)
                quad -= overscan_level(over, params, filename=p)[:, None]
                quad -= bset.bias[q]
                highs.append(quad[quad > 0.5 * bset.saturation[q]])
                yield quad

        hot[q] = hot_pixels(frames()) if len(science) >= 2 else np.zeros(shape, dtype=bool)
        if biases:
            bset.saturation[q] = saturation_level(bset.bias[q], bset.overscan_max[q], highs, noisy=bset.noisy[q])
    if biases:
        written += _write_bias(store, night, ccdid, bset, biases, xtalk, nonlin, params)

    for fc in sorted(files["f"]):
        flats, fshape = _validated(files["f"][fc], f"{fc} flat")
        if not flats:
            raise InputError(files["f"][fc][0], f"none of the {len(files['f'][fc])} {fc} flat files of CCD "
                                                 f"{ccdid} on night {night} is readable")
        if fshape != shape:
            log.warning("c%02d night %s: %s flats have quadrants %s, the bias %s; no %s flat", ccdid, night, fc,
                        fshape, shape, fc)
            continue
        written += _build_flats(store, night, ccdid, fc, flats, bset, hot, nonlin, params)
    return written


def _bias_this_night(night, ccdid, paths, params) -> _BiasSet:
    bset = _BiasSet({}, {}, {}, {}, {})
    for q in QIDS:
        frames = [_read_pair(p, q) for p in paths]
        mb = master_bias(frames, params)
        bset.bias[q], bset.noisy[q], bset.read_noise[q] = mb.bias, mb.noisy, mb.read_noise
        bset.overscan_max[q] = max(float(np.max(overscan_level(o, params, filename=p)))
                                   for p, (_, o) in zip(paths, frames))
        # the ADC estimate; the caller refines it with the science exposures
        bset.saturation[q] = saturation_level(mb.bias, bset.overscan_max[q], noisy=mb.noisy)
        bset.names[q] = ProductKey.calibration(night, "OO", ccdid, q, "bias").filename
        log.info("c%02d q%d %s: master bias from %d frames, read noise %.3f DN, %d noisy pixels", ccdid, q,
                 night, len(frames), mb.read_noise, int(mb.noisy.sum()))
    return bset


def _write_bias(store, night, ccdid, bset: _BiasSet, paths, xtalk: CrosstalkResult, nonlin, params) -> list[Path]:
    written = []
    for q in QIDS:
        key = ProductKey.calibration(night, "OO", ccdid, q, "bias")
        h = _base_header("bias", night, ccdid, q, params)
        h["BUNIT"] = ("DN", "image-area bias less the overscan level")
        _name_cards(h, paths)
        h["RDNOIDN"] = (round(bset.read_noise[q], 5), "[DN] read noise (frame differences)")
        h["SATURATE"] = (bset.saturation[q], "[DN] raw level above bias of saturation")
        h["NLA"], h["NLB"] = nonlin[q][0], nonlin[q][1]
        h.comments["NLA"] = "[DN^-2] nonlinearity A: x/(A x^2+B x+1)"
        h.comments["NLB"] = "[DN^-1] non-linearity B used"
        for s in QIDS:
            h[f"XTALK{s}"] = (float(xtalk.matrix[q - 1, s - 1]), f"crosstalk fraction of q{s} signal into q{q}")
        for s in QIDS:
            h[f"XTALKE{s}"] = (float(xtalk.error[q - 1, s - 1]), f"error of XTALK{s}")
        for s in QIDS:
            h[f"XTALKN{s}"] = (int(xtalk.npix[q - 1, s - 1]), f"source pixels of XTALK{s}")
        h["XTALKOK"] = (xtalk.complete, "all crosstalk coefficients measured this night")
        h["NNOISY"] = (int(bset.noisy[q].sum()), "noisy pixels (NOISY extension)")
        hdus = fits.HDUList([fits.PrimaryHDU(bset.bias[q].astype(np.float32), header=h),
                             fits.CompImageHDU(bset.noisy[q].astype(np.int16), name="NOISY",
                                               compression_type="RICE_1")])
        written.append(store.write_fits(key, hdus))
    return written


def _lit_flats(paths, bset: _BiasSet, params, what: str) -> list[Path]:
    """The flats whose quadrants all hold signal; unlit ones (shutter, LED failures) are skipped."""
    lit = []
    for p in paths:
        levels = []
        for q in QIDS:
            quad, over = _read_pair(p, q)
            quad -= overscan_level(over, params, filename=p)[:, None]
            quad -= bset.bias[q]
            levels.append(float(np.median(quad[::4, ::4])))
        if min(levels) > _MIN_FLAT_LEVEL:
            lit.append(p)
        else:
            log.warning("skipping %s file %s: median %.1f DN above bias in a quadrant (unlit)", what, p, min(levels))
    return lit


def _build_flats(store, night, ccdid, fc, paths, bset: _BiasSet, hot, nonlin, params) -> list[Path]:
    paths = _lit_flats(paths, bset, params, f"{fc} flat")
    if not paths:
        log.warning("c%02d night %s: no usable %s flat; none built", ccdid, night, fc)
        return []
    flats, gains, errors, levels, weights = {}, {}, {}, {}, {}
    for q in QIDS:
        frames = [_read_pair(p, q) for p in paths]
        mf = master_flat(frames, bset.bias[q], read_noise=bset.read_noise[q], nonlin=nonlin[q],
                         mask=bset.noisy[q] | hot[q], params=params)
        flats[q], gains[q], errors[q], levels[q], weights[q] = mf.flat, mf.gain, mf.gain_error, mf.level, mf.weights
        log.info("c%02d q%d %s %s: master flat from %d frames at %.0f DN, gain %.4f e-/DN", ccdid, q, night, fc,
                 len(frames), mf.level, mf.gain)
    masks = {q: bad_pixel_mask(flats[q], noisy=bset.noisy[q], hot=hot[q]) for q in QIDS}
    normed, norm = normalize_ccd_flats(flats, masks)
    written = []
    for q in QIDS:
        dead = (masks[q] & np.int16(MaskBits.DEAD)) != 0
        flat = np.where(dead | ~np.isfinite(normed[q]), np.float32(1.0), normed[q]).astype(np.float32)
        gain = gains[q]
        fkey = ProductKey.calibration(night, fc, ccdid, q, "hifreqflat")
        h = _base_header("hifreqflat", night, ccdid, q, params)
        h["FILTER"] = (fc, "filter code")
        _name_cards(h, paths)
        h["FLATLVL"] = (round(levels[q], 3), "[DN] mean level of the input flats above bias")
        h["FLATNORM"] = (round(norm, 5), "[DN] CCD median divided out")
        if np.isfinite(gain):
            h["GAIN"] = (round(gain, 6), "[e-/DN] gain (photon transfer)")
            h["READNOI"] = (round(_amplifier_noise(bset.read_noise[q]) * gain, 5), "[e-] amplifier read noise")
        else:
            log.warning("c%02d q%d %s %s: one flat frame, no gain measured", ccdid, q, night, fc)
        if np.isfinite(errors[q]):
            h["GAINERR"] = (round(errors[q], 6), "[e-/DN] standard error of GAIN")
        h["RDNOIDN"] = (round(bset.read_noise[q], 5), "[DN] read noise")
        h["CIDBIAS"] = (bset.names[q], "bias product used")
        written.append(store.write_fits(fkey, fits.HDUList([fits.PrimaryHDU(flat, header=h)])))

        bkey = ProductKey.calibration(night, fc, ccdid, q, "bpm")
        hb = _base_header("bpm", night, ccdid, q, params)
        hb["FILTER"] = (fc, "filter code")
        m = masks[q]
        for card, bit, text in (("NDEAD", MaskBits.DEAD, "dead pixels"),
                                ("NLOWRESP", MaskBits.LOW_RESPONSIVITY, "low-responsivity pixels"),
                                ("NHIGHRES", MaskBits.HIGH_RESPONSIVITY, "high-responsivity pixels"),
                                ("NNOISY", MaskBits.NOISY, "noisy pixels (bias, hot, flat)")):
            hb[card] = (int(np.count_nonzero(m & np.int16(bit))), text)
        hb["NHOT"] = (int(hot[q].sum()), "hot pixels seen in the science exposures")
        hb["CIDBIAS"] = (bset.names[q], "bias product used")
        hb["CIDHIFLT"] = (fkey.filename, "flat product used")
        for card in MaskBits.legend_cards():
            hb.append(card)
        written.append(store.write_fits(bkey, fits.HDUList([fits.PrimaryHDU(m.astype(np.int16), header=hb)])))
    return written


# ---- lookup --------------------------------------------------------------------------------------


def _newest_complete(store: ProductStore, night: str, ccdid: int, filtercode: str, suffix: str,
                     accept=None, later: bool = False) -> list[ProductKey] | None:
    """The four quadrant keys of the newest night <= ``night`` that has all four (and passes ``accept``);
    with ``later``, failing that, of the earliest night after it."""
    by_night: dict = {}
    for key in store.keys("cal", suffix=suffix):
        if key.ccdid == ccdid and key.filtercode == filtercode:
            by_night.setdefault(key.night, {})[key.qid] = key
    order = sorted((n for n in by_night if n <= night), reverse=True)
    if later:
        order += sorted(n for n in by_night if n > night)
    for n in order:
        quads = by_night[n]
        if set(quads) == set(QIDS):
            keys = [quads[q] for q in QIDS]
            if accept is None or accept(keys):
                return keys
    return None


def _bias_from_store(store: ProductStore, night: str, ccdid: int) -> _BiasSet | None:
    keys = _newest_complete(store, night, ccdid, "OO", "bias")
    if keys is None:
        return None
    bias, noisy, rn, sat, names = {}, {}, {}, {}, {}
    for q, key in zip(QIDS, keys):
        data, h = store.read_image(key)
        bias[q] = data.astype(np.float32)
        noisy[q] = store.read_image(key, "NOISY")[0] != 0
        rn[q], sat[q], names[q] = float(h["RDNOIDN"]), float(h["SATURATE"]), key.filename
    log.info("c%02d night %s: using the bias products of night %s", ccdid, night, keys[0].night)
    return _BiasSet(bias, noisy, rn, sat, names)


def load_calibration(store: ProductStore, night, ccdid: int, filtercode: str) -> CCDCalibration:
    """The calibration of a CCD for a filter and night, from the newest products valid then.

    For each product family (bias, hifreqflat and bpm of the filter) the newest night on or before
    ``night`` with products for all four quadrants is used -- or, when there is none (reprocessing
    exposures older than the first calibration night), the earliest night after it, with a log
    message; the crosstalk comes from the newest bias products whose XTALKOK says every coefficient
    was measured (else from the newest, with a warning).

    Parameters
    ----------
    store : `~ztfsds.products.ProductStore`
        Data root.
    night : str or datetime.date
        ``YYYYMMDD`` of the exposures to calibrate.
    ccdid : int
        CCD.
    filtercode : str
        'zg', 'zr' or 'zi'.

    Returns
    -------
    `~ztfsds.calib.calibration.CCDCalibration`
        Gain and read noise from the flat headers (GAIN, READNOI), saturation and non-linearity from
        the bias headers (SATURATE, NLA, NLB); provenance ``CIDBIAS``, ``CIDHIFLT``, ``CIDBPM``.

    Raises
    ------
    ztfsds.errors.ProductNotFoundError
        No bias, flat or bad-pixel-mask products of the CCD (and filter) at all; the message names what
        is missing.
    ztfsds.errors.InputError
        A product is unreadable or lacks a header card it needs.
    """
    night = _night_text(night)
    ccdid = int(ccdid)
    found = {}
    for suffix, fc in (("bias", "OO"), ("hifreqflat", filtercode), ("bpm", filtercode)):
        keys = _newest_complete(store, night, ccdid, fc, suffix, later=True)
        if keys is None:
            raise ProductNotFoundError(
                f"no {suffix} products ({fc}, c{ccdid:02d}, all four quadrants) for night {night} "
                f"under {store.root / 'cal'}: run build_library for a night with "
                f"{'bias' if suffix == 'bias' else fc + ' dome-flat'} exposures")
        if keys[0].night > night:
            log.info("c%02d night %s: no %s products before the night; using those of %s", ccdid, night,
                     suffix, keys[0].night)
        found[suffix] = keys

    def xtalk_ok(keys):
        return all(bool(store.read_header(k).get("XTALKOK", False)) for k in keys)

    xkeys = _newest_complete(store, night, ccdid, "OO", "bias", accept=xtalk_ok, later=True)
    if xkeys is None:
        xkeys = found["bias"]
        log.warning("c%02d night %s: no bias product with a complete crosstalk measurement; using the "
                    "(partial or zero) crosstalk of %s", ccdid, night, xkeys[0].night)
    crosstalk = np.zeros((4, 4))
    for q, key in zip(QIDS, xkeys):
        h = store.read_header(key)
        for s in QIDS:
            crosstalk[q - 1, s - 1] = float(h.get(f"XTALK{s}", 0.0)) if s != q else 0.0

    quadrants = {}
    for q, bkey, fkey, mkey in zip(QIDS, found["bias"], found["hifreqflat"], found["bpm"]):
        bias, bh = store.read_image(bkey)
        flat, fh = store.read_image(fkey, shape=bias.shape)
        bpm, _ = store.read_image(mkey, shape=bias.shape)
        for card, h, k in (("SATURATE", bh, bkey), ("NLA", bh, bkey), ("NLB", bh, bkey),
                           ("GAIN", fh, fkey), ("READNOI", fh, fkey)):
            if card not in h:
                raise InputError(store.path(k), f"calibration product lacks header card {card!r}")
        quadrants[q] = QuadrantCalibration(
            ccdid=ccdid, qid=q, filtercode=filtercode, bias=bias.astype(np.float32),
            flat=flat.astype(np.float32), bpm=bpm.astype(np.int16), gain=float(fh["GAIN"]),
            read_noise=float(fh["READNOI"]), nonlin_a=float(bh["NLA"]), nonlin_b=float(bh["NLB"]),
            saturation=float(bh["SATURATE"]),
            provenance={"CIDBIAS": bkey.filename, "CIDHIFLT": fkey.filename, "CIDBPM": mkey.filename},
        )
    used = max(found["bias"][0].night, found["hifreqflat"][0].night, found["bpm"][0].night)
    return CCDCalibration(ccdid=ccdid, filtercode=filtercode, night=used, quadrants=quadrants, crosstalk=crosstalk)
