"""From electrons to raw ZTF CCD files: the simulated readout chain and the raw-file writer.

`electrons_to_raw` takes the expected electrons falling on the four quadrants of a CCD and makes
the 16-bit raw quadrants and overscans that the camera would write, with a truth dictionary of what
it did; `simulate_bias_ccd` and `simulate_dome_flat_ccd` make calibration exposures through the same
chain; `write_raw_ccd` writes one raw CCD file in the camera's layout and `raw_header` makes its
primary header.

The chain (per quadrant, science orientation, float32)
------------------------------------------------------
1. ``e = incident * flat``; defects: dead pixels x0, low-responsivity x0.3, high x1.5; hot pixels add
   ``rate * exptime`` electrons (dark current is otherwise zero).
2. Cosmic rays (``cosmic_rays=True``): ``COSMIC_RAY_RATE`` = 14 hits per cm^2 per minute (~150 per
   full quadrant in 30 s; the real sample mskimg flags 0.004 % of its pixels as radiation hits,
   ~380 px), tracks of 1-5 pixels at random angles carrying 1000-20000 e- (log-uniform).
3. Saturation: charge above the channel's full well spills up and down its column, filling each
   pixel to the full well (a bleed trail); charge that reaches the array edge is lost.
4. Conversion to DN with the channel's true gain.
5. Crosstalk: ``dn[v] += X[v, s] * mirror(dn[s])`` for the other three amplifiers of the CCD, from
   the noiseless signal in linear DN (see `ztfsds.sim.instrument.crosstalk_mirror`).
6. Noise: Gaussian with variance ``e + read_noise**2`` (+ the extra variance of noisy columns) in
   electrons, converted to DN, for pixels with more than 50 e-; below that, Poisson(e) plus Gaussian
   read noise. (Shot and read noise are independent Gaussians, so one draw serves both; the read
   noise then passes the non-linearity below, which changes it by less than 3 % at 60 kDN, where
   shot noise is 60x larger.)
7. Non-linearity: raw counts from true counts, the inverse of IPAC's ``DN_true = x / (A x**2 + B x +
   1)`` (the `ztfsds.camera.delinearize` formula, evaluated in float32: within 0.02 DN of it).
8. Bias: ``bias_level + floating_bias[row] + bias_structure``; the overscan gets ``bias_level +
   floating_bias[row]`` plus read noise and, in its first columns, a trail (``overscan_tail``,
   e-folding 1 column: below 0.1 DN from column 5 on) of the last pixel read in the row. The
   floating bias is drawn per exposure and quadrant: a Legendre series of degree 3 in the row,
   coefficients N(0, 4), N(0, 2), N(0, 1), N(0, 0.5) DN.
9. ADC: clipped to 0-65535, rounded, uint16.

With ``orientation_flip=True`` every returned array (quadrants and overscans) is rotated by 180 deg
(``[::-1, ::-1]``), as ztfimg infers for the real raw files; the truth is always in science
orientation, the orientation of the input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.coordinates import Angle
from astropy.table import Table
from astropy.time import Time

from ..camera import (
    ADC_MAX,
    NOMINAL_DARK_CURRENT,
    NOMINAL_GAIN,
    NOMINAL_READ_NOISE,
    OVERSCAN_NAXIS1,
    PIXEL_SCALE,
    PIXEL_SIZE,
    QIDS,
    QUADRANT_NAXIS1,
    QUADRANT_NAXIS2,
    RAW_NFRAMES,
    RAW_OVERSCAN_HDUS,
    RAW_QUADRANT_HDUS,
    amp_corner,
    amp_name,
    crosstalk_mirror,
    field_center,
    get_filter,
)
from ..errors import ConfigError, InputError, ShapeError
from ..products import ProductKey, atomic_write
from ..products import expid as _expid
from ..products import filefracday as _filefracday
from .instrument import CameraTruth

__all__ = [
    "COSMIC_RAY_RATE",
    "GAUSSIAN_THRESHOLD",
    "GHOST_MASK_THRESHOLD",
    "IMGTYPE_CODES",
    "electrons_to_raw",
    "simulate_bias_ccd",
    "simulate_dome_flat_ccd",
    "delinearize32",
    "bleed_columns",
    "raw_header",
    "write_raw_ccd",
]

log = logging.getLogger(__name__)

#: Cosmic-ray hits per cm^2 of detector per minute of exposure.
COSMIC_RAY_RATE = 14.0
#: Mean charge [e-] above which Poisson noise is drawn as a Gaussian.
GAUSSIAN_THRESHOLD = 50.0
#: A pixel is in the truth ghost mask where its crosstalk ghost exceeds the quadrant's typical ghost
#: level (from sky) by this much [DN].
GHOST_MASK_THRESHOLD = 1.0
#: IMGTYPE header values and the raw file-name codes they go with.
IMGTYPE_CODES = {"object": "o", "bias": "b", "dark": "d", "dome": "f", "focus": "c"}

_PIXEL_AREA_CM2 = float(PIXEL_SIZE.to_value(u.cm)) ** 2
_FLOATING_SIGMAS = (4.0, 2.0, 1.0, 0.5)
_CR_LENGTH_P = np.array([0.35, 0.25, 0.18, 0.13, 0.09])


# --------------------------------------------------------------------------------------------------
# Pieces of the chain
# --------------------------------------------------------------------------------------------------


def delinearize32(true_dn: np.ndarray, a: float, b: float) -> np.ndarray:
    """Raw counts from true counts in float32 (the `ztfsds.camera.delinearize` formula).

    Parameters
    ----------
    true_dn : numpy.ndarray
        float32 linear counts [DN]; overwritten with the result.
    a, b : float
        Non-linearity coefficients A [DN^-2], B [DN^-1].

    Returns
    -------
    numpy.ndarray
        ``true_dn`` itself, now raw counts ``2 y / ((1 - B y) + sqrt((1 - B y)**2 - 4 A y**2))``
        (where no raw value gives ``y``, which needs A > 0, the result is 65535).

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.camera import delinearize
    >>> y = np.array([0.0, 1e4, 5e4], dtype=np.float32)
    >>> bool(np.allclose(delinearize32(y.copy(), -8.66e-12, 2.69e-7), delinearize(y, -8.66e-12, 2.69e-7), atol=0.02))
    True
    """
    y = true_dn
    p = np.float32(1.0) - np.float32(b) * y
    disc = y * y
    disc *= np.float32(-4.0 * a)
    disc += p * p
    bad = disc < 0 if a > 0 else None
    np.sqrt(disc, out=disc)
    disc += p
    y *= np.float32(2.0)
    y /= disc
    if bad is not None and bad.any():
        y[bad] = np.float32(ADC_MAX)
    return y


def _bleed_column(col: np.ndarray, fw: float) -> None:
    """Spill the charge above ``fw`` of a 1-D float64 column half up and half down, in place."""
    while True:
        over = np.flatnonzero(col > fw)
        if not over.size:
            return
        a = int(over[0])
        breaks = np.flatnonzero(np.diff(over) > 1)
        b = int(over[breaks[0]]) if breaks.size else int(over[-1])
        excess = float(np.sum(col[a:b + 1] - fw))
        col[a:b + 1] = fw
        for path in (col[b + 1:], col[a - 1::-1] if a > 0 else col[:0]):
            if not path.size:
                continue
            charge = 0.5 * excess
            need = np.cumsum(fw - path)  # charge used up to fill each pixel in turn (negative: picked up)
            reach = np.flatnonzero(need >= charge)
            if not reach.size:
                path[:] = fw  # the rest falls off the array edge
                continue
            k = int(reach[0])
            before = float(need[k - 1]) if k > 0 else 0.0
            path[:k] = fw
            path[k] += charge - before


def bleed_columns(electrons: np.ndarray, full_well: float) -> np.ndarray:
    """Saturate an image at the full well, spilling the excess charge along columns.

    Parameters
    ----------
    electrons : numpy.ndarray
        float32 (ny, nx) charge [e-]; modified in place.
    full_well : float
        Capacity of a pixel [e-].

    Returns
    -------
    numpy.ndarray
        bool (ny, nx): pixels filled to the full well (the saturated cores and their bleed trails).

    Examples
    --------
    >>> import numpy as np
    >>> im = np.zeros((9, 3), dtype=np.float32)
    >>> im[4, 1] = 500.0
    >>> bleed_columns(im, 100.0).sum(axis=0).tolist()
    [0, 5, 0]
    >>> float(im.sum())
    500.0
    """
    fw = np.float32(full_well)
    cols = np.flatnonzero((electrons > fw).any(axis=0))
    mask = np.zeros(electrons.shape, dtype=bool)
    for c in cols:
        col = electrons[:, c].astype(np.float64)
        _bleed_column(col, float(fw))
        electrons[:, c] = col
        mask[:, c] = col >= float(fw) * (1.0 - 1e-6)
    return mask


def _floating_bias(rng: np.random.Generator, ny: int) -> np.ndarray:
    t = np.linspace(-1.0, 1.0, ny)
    coef = rng.standard_normal(len(_FLOATING_SIGMAS)) * np.array(_FLOATING_SIGMAS)
    return np.polynomial.legendre.legval(t, coef).astype(np.float32)


def _cosmic_rays(rng: np.random.Generator, shape, exptime: float):
    """Deposits of the cosmic rays of one quadrant: (flat indices, electrons, per-hit table columns)."""
    ny, nx = shape
    n = int(rng.poisson(COSMIC_RAY_RATE * ny * nx * _PIXEL_AREA_CM2 * exptime / 60.0))
    x0, y0 = rng.uniform(0, nx, n), rng.uniform(0, ny, n)
    length = rng.choice(np.arange(1, 6), size=n, p=_CR_LENGTH_P)
    theta = rng.uniform(0.0, np.pi, n)
    total = np.exp(rng.uniform(np.log(1000.0), np.log(20000.0), n))
    w = rng.uniform(0.6, 1.4, (n, 5))
    k = np.arange(5)
    w *= k[None, :] < length[:, None]
    w /= w.sum(axis=1, keepdims=True)
    xs = np.floor(x0[:, None] + k[None, :] * np.cos(theta)[:, None]).astype(np.int64)
    ys = np.floor(y0[:, None] + k[None, :] * np.sin(theta)[:, None]).astype(np.int64)
    charge = total[:, None] * w
    ok = (w > 0) & (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    charge_in = np.where(ok, charge, 0.0)
    deposited = charge_in.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = (charge_in * (xs + 0.0)).sum(axis=1) / deposited
        yc = (charge_in * (ys + 0.0)).sum(axis=1) / deposited
    keep = deposited > 0
    cols = {"x": xc[keep], "y": yc[keep], "electrons": deposited[keep], "length": length[keep]}
    return (ys * nx + xs)[ok], charge[ok].astype(np.float32), cols


def _check_electrons(electrons, shape) -> dict[int, np.ndarray]:
    if not isinstance(electrons, dict) or set(electrons) != set(QIDS):
        got = sorted(electrons) if isinstance(electrons, dict) else type(electrons).__name__
        raise ConfigError(f"electrons must be a dict with one image for each qid 1-4, got {got}")
    out = {}
    for q in QIDS:
        arr = np.asarray(electrons[q])
        if arr.shape != tuple(shape):
            raise ShapeError(None, arr.shape, tuple(shape), f"electrons[{q}]")
        arr = arr.astype(np.float32, copy=False)
        lo = float(arr.min())
        if not np.isfinite(lo) or not np.isfinite(float(arr.max())) or lo < 0:
            raise InputError(None, f"electrons[{q}] must be finite and non-negative")
        out[q] = arr
    return out


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ConfigError(f"rng must be a numpy Generator or an integer seed, got {rng!r}")


def _noise(dn: np.ndarray | None, ch, noisy, rng: np.random.Generator, shape) -> np.ndarray:
    """Add shot + read noise [DN] to ``dn`` (mean linear counts) in place; ``None`` means no signal."""
    gain = ch.gain
    rn2 = np.float32(ch.read_noise_dn**2)
    cols, sigma = noisy
    z = rng.standard_normal(shape, dtype=np.float32)
    if dn is None:  # a bias: read noise only
        z *= np.float32(ch.read_noise_dn)
        for c, s in zip(cols, sigma):
            z[:, c] *= np.float32(np.sqrt(1.0 + (s / ch.read_noise) ** 2))
        return z
    var = dn * np.float32(1.0 / gain)  # shot-noise variance [DN^2] = e / gain^2
    var += rn2
    for c, s in zip(cols, sigma):
        var[:, c] += np.float32((s / gain) ** 2)
    low = np.flatnonzero(dn.reshape(-1) < np.float32(GAUSSIAN_THRESHOLD / gain))
    if low.size:
        mean_e = dn.reshape(-1)[low].astype(np.float64) * gain
        read_sd = np.sqrt(np.maximum(var.reshape(-1)[low] - mean_e / gain**2, 0.0))
        low_vals = rng.poisson(mean_e) / gain + read_sd * z.reshape(-1)[low]
    np.sqrt(var, out=var)
    var *= z
    dn += var
    if low.size:
        dn.reshape(-1)[low] = low_vals
    return dn


# --------------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------------


def _readout(camera: CameraTruth, ccdid: int, dn: dict[int, np.ndarray] | None, rng, *,
             orientation_flip: bool):
    """Steps 5-9 for the four quadrants: crosstalk, noise, non-linearity, bias, ADC.

    ``dn`` holds the noiseless linear signal [DN] of each quadrant (consumed) or is None (a bias).
    """
    shape = camera.shape
    ny, nx = shape
    truth: dict = {"floating_bias": {}, "saturated_adc": {}}
    ghosts = None
    if dn is not None:
        xt = camera.crosstalk(ccdid)
        ghosts, tmp = {}, np.empty(shape, dtype=np.float32)
        for v in QIDS:
            g = np.zeros(shape, dtype=np.float32)
            for s in QIDS:
                if s != v and xt[v - 1, s - 1] != 0.0:
                    np.multiply(crosstalk_mirror(dn[s], s, v), np.float32(xt[v - 1, s - 1]), out=tmp)
                    g += tmp
            ghosts[v] = g
        del tmp
        peak, masks = {}, {}
        for v in QIDS:
            base = float(np.median(ghosts[v][::8, ::8]))
            peak[v] = float(ghosts[v].max()) - base
            masks[v] = ghosts[v] > np.float32(base + GHOST_MASK_THRESHOLD)
        truth["crosstalk"] = {"matrix": xt, "ghost_peak": peak, "ghost_mask": masks}

    quads, overscans = {}, {}
    for q in QIDS:
        ch = camera.channel(ccdid, q)
        sig = _noise(None if dn is None else dn.pop(q), ch, camera.noisy_column_sigma(ccdid, q), rng, shape)
        if ghosts is not None:
            sig += ghosts.pop(q)
        if dn is not None:  # (a bias's few DN of read noise are linear to 1e-5 DN)
            delinearize32(sig, ch.nonlin_a, ch.nonlin_b)
        # the last pixel of each row read, for the overscan trail
        last_col = nx - 1 if amp_corner(q, shape)[1] == 0 else 0
        last = sig[:, last_col].copy()

        floating = _floating_bias(rng, ny)
        rows, cols = camera.bias_vectors(ccdid, q)
        sig += (rows + floating + np.float32(ch.bias_level))[:, None]
        sig += cols[None, :]
        np.clip(sig, 0.0, float(ADC_MAX), out=sig)
        np.rint(sig, out=sig)
        truth["saturated_adc"][q] = sig >= np.float32(ADC_MAX)
        raw = sig.astype(np.uint16)
        del sig

        ov = rng.standard_normal((ny, OVERSCAN_NAXIS1), dtype=np.float32)
        ov *= np.float32(ch.read_noise_dn)
        ov += (floating + np.float32(ch.bias_level))[:, None]
        k = np.arange(OVERSCAN_NAXIS1, dtype=np.float32)
        ov += (np.float32(ch.overscan_tail) * np.maximum(last, 0.0))[:, None] * np.exp(-k)[None, :]
        np.clip(ov, 0.0, float(ADC_MAX), out=ov)
        np.rint(ov, out=ov)
        ov = ov.astype(np.uint16)
        truth["floating_bias"][q] = floating
        if orientation_flip:
            raw = np.ascontiguousarray(raw[::-1, ::-1])
            ov = np.ascontiguousarray(ov[::-1, ::-1])
        quads[q], overscans[q] = raw, ov
    truth["orientation_flip"] = bool(orientation_flip)
    return quads, overscans, truth


def electrons_to_raw(electrons: dict[int, np.ndarray], ccdid: int, camera: CameraTruth,
                     filtercode: str, *, rng, exptime: float = 30.0, cosmic_rays: bool = True,
                     orientation_flip: bool = False
                     ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict]:
    """Read out one CCD: expected incident electrons to raw 16-bit quadrants and overscans.

    Parameters
    ----------
    electrons : dict of int to numpy.ndarray
        Expected (noiseless) electrons falling on each pixel during the exposure, sky plus sources,
        before the flat field: one float32 (ny, nx) image per qid 1-4, science orientation,
        ``camera.shape``. Not modified.
    ccdid : int
        The CCD (one of ``camera.ccdids``).
    camera : CameraTruth
        The simulated camera (`ztfsds.sim.instrument.make_camera`).
    filtercode : str
        Filter of the exposure ('zg', 'zr', 'zi'), for the flat field.
    rng : numpy.random.Generator or int
        Random generator (or seed): the result is a deterministic function of its state.
    exptime : float, optional
        Exposure time [s]: hot-pixel charge and the number of cosmic rays scale with it.
    cosmic_rays : bool, optional
        Add cosmic rays.
    orientation_flip : bool, optional
        Rotate the returned arrays by 180 deg (the truth stays in science orientation).

    Returns
    -------
    quadrants : dict of int to numpy.ndarray
        uint16 (ny, nx) raw quadrant by qid.
    overscans : dict of int to numpy.ndarray
        uint16 (ny, 30) raw overscan by qid: bias level + floating bias + read noise (+ the trail of
        the row's last pixel in the first ~5 columns), no signal.
    truth : dict
        ``floating_bias``: {qid: float32 (ny,) [DN]} per-exposure floating bias by science row
        (the overscan level of row ``y`` is ``bias_level + floating_bias[y]``);
        ``cosmic_rays``: Table (qid, x, y, electrons, length) of the hits, x, y the charge-weighted
        0-based array position (science orientation), electrons the charge deposited on the array;
        ``cosmic_ray_mask``: {qid: bool (ny, nx)} pixels hit;
        ``saturated``: {qid: bool (ny, nx)} pixels at the ADC ceiling (65535) or filled to the full
        well (bleed trails included); ``bleed``: {qid: bool} pixels filled to the full well;
        ``crosstalk``: {'matrix': (4, 4) X[victim-1, source-1], 'ghost_peak': {qid: brightest ghost
        above its sky level [DN]}, 'ghost_mask': {qid: bool, ghost > typical ghost + 1 DN}};
        and ``ccdid``, ``filtercode``, ``exptime``, ``orientation_flip``.

    Examples
    --------
    >>> import numpy as np
    >>> from ztfsds.sim.instrument import make_camera
    >>> cam = make_camera(3, shape=(64, 64), ccdids=[1])
    >>> sky = {q: np.full((64, 64), 1000.0, dtype=np.float32) for q in (1, 2, 3, 4)}
    >>> quads, ovs, truth = electrons_to_raw(sky, 1, cam, "zr", rng=np.random.default_rng(0))
    >>> quads[1].dtype, quads[1].shape, ovs[1].shape
    (dtype('uint16'), (64, 64), (64, 30))
    """
    rng = _rng(rng)
    if ccdid not in camera.ccdids:
        raise ConfigError(f"CCD {ccdid!r} is not simulated by {camera!r}")
    if not np.isfinite(exptime) or exptime < 0:
        raise ConfigError(f"exptime must be a non-negative number of seconds, got {exptime!r}")
    fcode = get_filter(filtercode).code
    inputs = _check_electrons(electrons, camera.shape)
    shape = camera.shape
    dn, bleed, cr_mask, cr_tables = {}, {}, {}, []
    for q in QIDS:
        ch = camera.channel(ccdid, q)
        e = np.multiply(inputs[q], camera.flat(ccdid, q, fcode), dtype=np.float32)
        camera.apply_response_defects(e, ccdid, q)
        hot_idx, hot_e = camera.hot_charge(ccdid, q, exptime)
        e.reshape(-1)[hot_idx] += hot_e
        mask = np.zeros(shape, dtype=bool)
        if cosmic_rays and exptime > 0:
            idx, charge, cols = _cosmic_rays(rng, shape, exptime)
            np.add.at(e.reshape(-1), idx, charge)
            mask.reshape(-1)[idx] = True
            cols["qid"] = np.full(len(cols["x"]), q, dtype=np.int16)
            cr_tables.append(cols)
        cr_mask[q] = mask
        bleed[q] = bleed_columns(e, ch.full_well)
        e *= np.float32(1.0 / ch.gain)
        dn[q] = e
    quads, overscans, truth = _readout(camera, ccdid, dn, rng, orientation_flip=orientation_flip)

    names = ("qid", "x", "y", "electrons", "length")
    if cr_tables:
        crt = Table({n: np.concatenate([t[n] for t in cr_tables]) for n in names})
    else:
        crt = Table({n: np.zeros(0, dtype=dt) for n, dt in zip(names, (np.int16, float, float, float, np.int64))})
    crt["x"].unit = crt["y"].unit = u.pix
    crt["electrons"].unit = u.electron
    truth.update(
        ccdid=ccdid, filtercode=fcode, exptime=float(exptime), cosmic_rays=crt, cosmic_ray_mask=cr_mask,
        bleed=bleed, saturated={q: truth["saturated_adc"][q] | bleed[q] for q in QIDS},
    )
    del truth["saturated_adc"]
    return quads, overscans, truth


def simulate_bias_ccd(camera: CameraTruth, ccdid: int, *, rng, orientation_flip: bool = False
                      ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict]:
    """A bias exposure of one CCD: zero exposure time, bias + floating bias + read noise.

    Parameters
    ----------
    camera : CameraTruth
        The simulated camera.
    ccdid : int
        The CCD.
    rng : numpy.random.Generator or int
        Random generator or seed.
    orientation_flip : bool, optional
        Rotate the returned arrays by 180 deg.

    Returns
    -------
    quadrants, overscans, truth
        As `electrons_to_raw`; the truth holds ``floating_bias``, ``ccdid`` and
        ``orientation_flip``.
    """
    rng = _rng(rng)
    if ccdid not in camera.ccdids:
        raise ConfigError(f"CCD {ccdid!r} is not simulated by {camera!r}")
    quads, overscans, truth = _readout(camera, ccdid, None, rng, orientation_flip=orientation_flip)
    del truth["saturated_adc"]
    truth["ccdid"] = ccdid
    return quads, overscans, truth


def simulate_dome_flat_ccd(camera: CameraTruth, ccdid: int, filtercode: str, level_e: float, *, rng,
                           exptime: float = 10.0, orientation_flip: bool = False
                           ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict]:
    """An LED dome flat of one CCD: uniform illumination through the flat field, no cosmic rays.

    Parameters
    ----------
    camera : CameraTruth
        The simulated camera.
    ccdid : int
        The CCD.
    filtercode : str
        Filter ('zg', 'zr', 'zi').
    level_e : float
        Incident electrons per pixel (before the flat field), e.g. 20,000-30,000.
    rng : numpy.random.Generator or int
        Random generator or seed.
    exptime : float, optional
        Exposure time [s] (hot pixels integrate over it).
    orientation_flip : bool, optional
        Rotate the returned arrays by 180 deg.

    Returns
    -------
    quadrants, overscans, truth
        As `electrons_to_raw`.
    """
    if not np.isfinite(level_e) or level_e < 0:
        raise ConfigError(f"level_e must be a non-negative number of electrons, got {level_e!r}")
    ones = {q: np.full(camera.shape, level_e, dtype=np.float32) for q in QIDS}
    return electrons_to_raw(ones, ccdid, camera, filtercode, rng=rng, exptime=exptime, cosmic_rays=False,
                            orientation_flip=orientation_flip)


# --------------------------------------------------------------------------------------------------
# Raw files
# --------------------------------------------------------------------------------------------------


def raw_header(*, ccdid: int, obsjd, imgtype: str = "object", exptime: float = 30.0,
               filtercode: str = "zr", field: int = 0, ra: float | None = None,
               dec: float | None = None, airmass: float = 1.0, expid: int | None = None,
               programid: int = 1, ilum_led: int | None = None, ilumwave: float | None = None,
               ilumpowr: float | None = None) -> fits.Header:
    """Primary header of a raw CCD file with the real camera's keywords.

    Parameters
    ----------
    ccdid : int
        CCD id (CCD_ID).
    obsjd : float or `~astropy.time.Time`
        Exposure start, UTC Julian date (OBSJD; also OBSMJD, DATE-OBS, UTC-OBS, SHUTOPEN, SHUTCLSD,
        the FILENAME stamp and the default EXPID).
    imgtype : {'object', 'bias', 'dome', 'dark', 'focus'}, optional
        IMGTYPE.
    exptime : float, optional
        EXPTIME and EXPOSURE [s] (0 for a bias).
    filtercode : str, optional
        'zg', 'zr', 'zi' (FILTER 'ZTF_r', FILTERID 2), or 'OO' (no filter: FILTER 'NONE',
        FILTERID 0).
    field : int, optional
        FIELDID (0 for calibration exposures).
    ra, dec : float, optional
        Telescope pointing [deg] (RAD/DECD, TELRAD/TELDECD and the sexagesimal RA/DEC, TELRA/TELDEC);
        by default the centre of ``field`` (omitted when field is 0).
    airmass : float, optional
        AIRMASS.
    expid : int, optional
        EXPID; by default `ztfsds.products.expid` of ``obsjd``.
    programid : int, optional
        PROGRMID.
    ilum_led, ilumwave, ilumpowr : optional
        Dome-flat LED number, wavelength [nm] and power (ILUM_LED, ILUMWAVE, ILUMPOWR), written when
        given.

    Returns
    -------
    `~astropy.io.fits.Header`

    Examples
    --------
    >>> h = raw_header(ccdid=13, obsjd=2459116.9317708, field=655)
    >>> h["FILENAME"], h["FILTER"], h["EXPID"]
    ('ztf_20200924431770_000655_zr_c13_o.fits', 'ZTF_r', 136243177)
    """
    if imgtype not in IMGTYPE_CODES:
        raise ConfigError(f"imgtype must be one of {tuple(IMGTYPE_CODES)}, got {imgtype!r}")
    t = obsjd if isinstance(obsjd, Time) else Time(float(obsjd), format="jd", scale="utc")
    jd = float(t.utc.jd)
    if filtercode == "OO":
        fcode, fid, fname = "OO", 0, "NONE"
    else:
        f = get_filter(filtercode)
        fcode, fid, fname = f.code, f.fid, f.header_filter
    stamp = _filefracday(jd)
    fname_raw = ProductKey.raw(stamp, int(field), fcode, int(ccdid), imgtype=IMGTYPE_CODES[imgtype]).filename
    if ra is None and dec is None and field:
        c = field_center(int(field))
        ra, dec = float(c.ra.deg), float(c.dec.deg)
    h = fits.Header()
    h["ORIGIN"] = ("Zwicky Transient Facility", "Data origin")
    h["OBSERVER"] = ("ZTF Robotic Observing Software", "Observer")
    h["INSTRUME"] = ("ZTF/MOSAIC", "Instrument name")
    h["IMGTYPE"] = (imgtype, "Image type")
    h["EXPOSURE"] = (float(exptime), "Total Exposure Time (s)")
    h["EXPTIME"] = (float(exptime), "Requested Exposure Time (s)")
    h["CCDSUM"] = ("1 1", "CCD binning")
    h["PIXSCALE"] = (float(PIXEL_SCALE.value), "Pixel scale, in arcsec per pixel")
    h["FILENAME"] = (fname_raw, "File name")
    h["ORIGNAME"] = (fname_raw, "Original file name")
    h["FIELDID"] = (int(field), "ZTF field ID number")
    h["PROGRMID"] = (int(programid), "Queue program ID")
    h["FILTERID"] = (fid, "Filter ID code")
    h["FILTER"] = (fname, "Filter name")
    h["OBSJD"] = (jd, "Julian day corresponds to UTC-OBS (day)")
    h["OBSMJD"] = (jd - 2400000.5, "MJD corresponds to UTC-OBS (day)")
    iso = t.utc.isot
    h["DATE-OBS"] = (iso, "UTC date of exposure start")
    h["UTC-OBS"] = (iso, "UTC time of exposure start")
    h["SHUTOPEN"] = (iso, "Shutter open time")
    h["SHUTCLSD"] = ((t + float(exptime) * u.s).utc.isot, "Shutter close time")
    if ra is not None and dec is not None:
        ra_s = Angle(ra, u.deg).to_string(unit=u.hour, sep=":", precision=2, pad=True, alwayssign=True)
        dec_s = Angle(dec, u.deg).to_string(unit=u.deg, sep=":", precision=1, pad=True, alwayssign=True)
        h["RA"] = (ra_s, "Requested right ascension")
        h["DEC"] = (dec_s, "Requested declination")
        h["RAD"] = (float(ra), "Requested right ascension (deg)")
        h["DECD"] = (float(dec), "Requested declination (deg)")
        h["TELRA"] = (ra_s, "Telescope right ascension")
        h["TELDEC"] = (dec_s, "Telescope declination")
        h["TELRAD"] = (float(ra), "Telescope right ascension (deg)")
        h["TELDECD"] = (float(dec), "Telescope declination (deg)")
    h["AIRMASS"] = (float(airmass), "Airmass (Hardie)")
    h["OBSERVAT"] = ("Palomar Observatory", "Observatory")
    h["TELESCOP"] = ("Palomar 48-inch", "Observatory telescope")
    h["OBSLON"] = (-116.8598, "Observatory longitude (deg)")
    h["OBSLAT"] = (33.3573, "Observatory latitude (deg E)")
    h["OBSALT"] = (1668.0, "Observatory altitude (m)")
    h["EXPID"] = (int(_expid(jd) if expid is None else expid), "Exposure ID")
    h["CCD_ID"] = (int(ccdid), "ID value of CCD detector")
    for key, value, comment in (("ILUM_LED", ilum_led, "Dome-flat LED number"),
                                ("ILUMWAVE", ilumwave, "Dome-flat LED wavelength (nm)"),
                                ("ILUMPOWR", ilumpowr, "Dome-flat LED power")):
        if value is not None:
            h[key] = (value, comment)
    h["NFRAMES"] = (RAW_NFRAMES, "number of frames in FITS file")
    return h


def _hdu_header(ccdid: int, qid: int, extname: str, overscan: bool) -> fits.Header:
    h = fits.Header()
    h["EXTNAME"] = extname
    h["HDUVERS"] = 1
    h["CCD_ID"] = (ccdid, "ID value of CCD detector")
    h["QID"] = (qid, "Readout quadrant id (1-4)")
    h["AMP_ID"] = (qid - 1, "ID value of CCD amplifier")
    h["AMP_NAME"] = (amp_name(qid), "Name of CCD amplifier")
    h["GAIN"] = (float(NOMINAL_GAIN.value), "Gain e-/adu")
    h["READNOI"] = (float(NOMINAL_READ_NOISE.value), "Read noise e-")
    h["DARKCUR"] = (float(NOMINAL_DARK_CURRENT.value), "Dark current e-/s @ 150 K")
    h["OVERSCAN"] = (bool(overscan), "True for an overscan strip")
    return h


def write_raw_ccd(path: str | os.PathLike, quadrants: dict[int, np.ndarray], overscans: dict[int, np.ndarray],
                  header: fits.Header, *, compress: bool = False, checksum: bool = False) -> Path:
    """Write one raw CCD file in the camera's layout, atomically.

    HDU 0: the exposure header (`raw_header`), no data, NFRAMES = 8; HDUs 1-4: the quadrants
    qid 1-4 (EXTNAME '1'-'4'); HDUs 5-8: their overscans (EXTNAME '5'-'8'). A quadrant smaller than
    the camera's is the centred sub-array of it: LTV1/LTV2 say where (IRAF convention, 0 at full size). Every image HDU carries
    CCD_ID, QID, AMP_ID, AMP_NAME, the nominal GAIN (6.0) and READNOI (9) as the real headers do,
    and OVERSCAN. Data are uint16 (BITPIX 16, BZERO 32768).

    Parameters
    ----------
    path : path-like
        Destination (``ztf_..._c13_o.fits``, or ``.fits.fz`` when compressed).
    quadrants, overscans : dict of int to numpy.ndarray
        uint16 arrays by qid 1-4, (ny, nx) and (ny, 30).
    header : `~astropy.io.fits.Header`
        Primary header; must hold CCD_ID.
    compress : bool, optional
        Rice tile-compress the eight image HDUs (lossless for integers), as the real ``.fits.fz``.
    checksum : bool, optional
        Write CHECKSUM/DATASUM cards.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if "CCD_ID" not in header:
        raise ConfigError("the raw primary header must hold CCD_ID")
    ccdid = int(header["CCD_ID"])
    for name, group, width in (("quadrants", quadrants, None), ("overscans", overscans, OVERSCAN_NAXIS1)):
        if set(group) != set(QIDS):
            raise ConfigError(f"{name} must have one array for each qid 1-4, got {sorted(group)}")
        for q in QIDS:
            a = group[q]
            if a.dtype != np.uint16 or a.ndim != 2 or (width is not None and a.shape[1] != width):
                raise ConfigError(f"{name}[{q}] must be a 2-D uint16 array"
                                  + (f" with {width} columns" if width else "") + f", got {a.dtype} {a.shape}")
    if any(overscans[q].shape[0] != quadrants[q].shape[0] for q in QIDS):
        raise ConfigError("every overscan must have as many rows as its quadrant")
    primary = fits.PrimaryHDU(header=header.copy())
    primary.header["NFRAMES"] = (RAW_NFRAMES, "number of frames in FITS file")
    hdus = [primary]
    for hdu_ids, group, is_ov in ((RAW_QUADRANT_HDUS, quadrants, False), (RAW_OVERSCAN_HDUS, overscans, True)):
        for q, k in zip(QIDS, hdu_ids):
            h = _hdu_header(ccdid, q, str(k), is_ov)
            data = np.ascontiguousarray(group[q])
            # where a (centred) sub-array sits in the full quadrant: physical = logical - LTV (IRAF)
            h["LTV1"] = (0.0 if is_ov else -float((QUADRANT_NAXIS1 - data.shape[1]) // 2),
                         "sub-array offset: full-quadrant x = x - LTV1")
            h["LTV2"] = (-float((QUADRANT_NAXIS2 - data.shape[0]) // 2), "sub-array offset: full-quadrant y = y - LTV2")
            if compress:
                hdus.append(fits.CompImageHDU(data=data, header=h, compression_type="RICE_1"))
            else:
                hdus.append(fits.ImageHDU(data=data, header=h))
    path = Path(path)
    with atomic_write(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, checksum=checksum)
    log.debug("wrote raw CCD file %s", path)
    return path
