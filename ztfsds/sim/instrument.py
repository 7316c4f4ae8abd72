"""The simulated ZTF camera: the per-channel truth that the calibration stage has to recover.

`make_camera` draws, from one seed, everything about the 64 readout channels that does not change
from one exposure to the next: gains, read noise, bias levels and bias structure, full wells,
non-linearity, flat fields, bad pixels and crosstalk. `ztfsds.sim.raw` turns electrons into raw
counts with it. Every per-quadrant quantity comes from its own seed (``[seed, rcid, purpose]``), so
a camera made for a subset of CCDs, or asked for one quadrant only, gives exactly the values the full
camera gives, and large arrays are computed on demand and kept in a small cache.

Conventions
-----------
* **Orientation.** Every array here (flat, defects, bias structure) is in *science orientation*, the
  orientation of a sciimg (pixel (1, 1) at the quadrant's north-east corner, +x west, +y south);
  numpy index ``[y, x]`` is FITS pixel ``(x + 1, y + 1)``. Any ``shape`` ``(ny, nx)`` may be
  simulated (small ones for tests); a small quadrant is treated as a scaled-down full quadrant for
  the focal-plane position (vignetting) and as a window of full-size pixels for everything else.
* **Amplifiers.** Each quadrant is read by the amplifier at the CCD's outer corner that the quadrant
  touches (q1 NE, q2 NW, q3 SW, q4 SE), i.e. at array index ``(0, 0)`` for q1, ``(0, nx - 1)`` for
  q2, ``(ny - 1, nx - 1)`` for q3 and ``(ny - 1, 0)`` for q4 (`amp_corner`). Rows are shifted
  towards the amplifier's row (parallel transfer: bleed trails run along columns) and each row is
  read starting at the amplifier's column.
* **Crosstalk.** ``crosstalk(ccdid)[v - 1, s - 1]`` is the fraction of amplifier ``s``'s signal
  [DN] that appears in amplifier ``v`` at the *same readout position* (same distance in rows and
  columns from each amplifier's corner). In science orientation the ghost of a source at
  ``[y, x]`` of q1 therefore lands at ``[y, nx - 1 - x]`` of q2, ``[ny - 1 - y, nx - 1 - x]`` of q3
  and ``[ny - 1 - y, x]`` of q4 (`crosstalk_mirror`): mirror images across the CCD's centre lines.
* **Flat field.** ``flat(ccdid, qid, filtercode)`` is the relative quantum efficiency of each pixel
  in electrons: ``electrons_detected = flat * electrons_incident`` for every pixel that is not a
  defect. It is pixel response non-uniformity (white, 0.9 / 0.7 / 0.6 % rms in g / r / i) times a
  low-frequency pattern (~0.4 % rms, scales of 400-4000 px) times vignetting, which falls as
  ``1 - v (r / 5.22 deg)**2`` with the distance ``r`` from the optical axis (``v`` = 5.5 / 5.0 /
  4.5 % in g / r / i, so ~5 % lower at the mosaic corners than on axis). It is normalised so that
  its median over the four quadrants of a CCD is 1 (exactly up to ~1000 x 1000 px quadrants, from a
  1-in-9 subsample, to ~1e-5, at full size). It does **not** hold the amplifier
  gains (those convert electrons to DN afterwards) nor the defects: ``response = flat * defect
  factor`` (`CameraTruth.response`), where the factor is 0 for dead pixels, 0.3 for low- and 1.5
  for high-responsivity pixels.
* **Defect codes** are `ztfsds.products.MaskBits` values: DEAD (512), LOW_RESPONSIVITY (4),
  HIGH_RESPONSIVITY (8) and NOISY (16: hot pixels and noisy columns); a pixel may carry several.
* **Full well.** The e2v CCD231-C6 data sheet quotes ~350 ke-, but then a channel would reach its
  full well (~58 kDN at 6 e-/DN) before the ADC clips at 65535 and raw saturation would sit at a
  different level in every channel. Here the full well is set 5-10 % *above* the charge at which the
  16-bit ADC clips (``gain * linearize(65535 - bias)``), ~390-460 ke-: the raw ADC saturates first,
  every saturated pixel reads 65535, and the bleed trails of over-full pixels read 65535 too.
* Dark current is taken as zero; hot pixels collect charge at their own rates.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType

import astropy.units as u
import numpy as np
from astropy.table import Table

from ..camera import (
    ADC_MAX,
    AMP_NAMES,
    CCDIDS,
    QIDS,
    QUADRANT_SHAPE,
    amp_corner,
    get_filter,
    linearize,
    nonlinearity_coefficients,
    quadrant_corners,
    rcid as _rcid,
)
from ..errors import ConfigError
from ..products import MaskBits

__all__ = [
    "ChannelTruth",
    "CameraTruth",
    "make_camera",
    "PRNU_RMS",
    "VIGNETTING",
    "DEFECT_RESPONSE",
    "FOCAL_PLANE_EDGE",
    "TRUE_GAIN_MEAN",
    "TRUE_READ_NOISE_RANGE",
]

#: Mean true gain of the readout channels [e-/DN]: the measured ZTF value (Bellm et al. 2019, PASP 131,
#: 018002, Table 1); the raw headers carry the nominal 6.0, as the real camera's do.
TRUE_GAIN_MEAN = 5.8
#: Range of the channels' true read noise [e-] (mean 10.3 e-, the measured value of Bellm et al. 2019).
TRUE_READ_NOISE_RANGE = (9.5, 11.1)

#: White pixel-response non-uniformity (rms, fraction) of the flat per filter.
PRNU_RMS = {"zg": 0.009, "zr": 0.007, "zi": 0.006}
#: Vignetting depth per filter: the flat falls as ``1 - v (r / FOCAL_PLANE_EDGE)**2``.
VIGNETTING = {"zg": 0.055, "zr": 0.050, "zi": 0.045}
#: Distance of the mosaic's outer corners from the optical axis [deg].
FOCAL_PLANE_EDGE = 5.22
#: Response factor of each responsivity defect code (dead pixels collect nothing).
DEFECT_RESPONSE = {
    int(MaskBits.DEAD): 0.0,
    int(MaskBits.LOW_RESPONSIVITY): 0.3,
    int(MaskBits.HIGH_RESPONSIVITY): 1.5,
}

# rms of the low-frequency flat pattern (fraction) and the number of its separable cosine terms
_LOWFREQ_RMS = 0.004
_LOWFREQ_TERMS = 6
# rates of defects in a full-size quadrant
_HOT_FRACTION = 1.0e-4
_DEAD_FRACTION = 5.0e-5
_LOW_CLUSTERS = 4.0
_HIGH_CLUSTERS = 1.5
_NOISY_COLUMNS = 2.0
_BAD_COLUMNS = 0.5

# seed purposes: [seed, rcid, purpose(, fid)] or [seed, 1000 + ccdid, purpose] for per-CCD draws
_P_CHANNEL, _P_BIAS, _P_DEFECTS, _P_PRNU, _P_LOWFREQ, _P_XTALK = range(6)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


# --------------------------------------------------------------------------------------------------
# Readout geometry
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Per-channel truth
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelTruth:
    """The true properties of one simulated readout channel.

    Attributes
    ----------
    rcid, ccdid, qid, amp_id : int
        Channel identifiers (``amp_id = qid - 1``).
    amp_name : str
        Amplifier name, 'H', 'G', 'F' or 'E'.
    gain : float
        True gain [e-/DN]: `TRUE_GAIN_MEAN` (5.8, the measured ZTF value of Bellm et al. 2019,
        Table 1) with 3 % channel-to-channel scatter; raw headers say the nominal 6.0 for all.
    read_noise : float
        Read noise [e-], uniform in `TRUE_READ_NOISE_RANGE` (9.5-11.1, mean the measured 10.3 e-
        of Bellm et al. 2019); raw headers say the nominal 9.
    bias_level : float
        Level of the serial overscan [DN], 300-1000, before the per-exposure floating bias.
    bias_offset : float
        Mean of the image-area bias minus the overscan level [DN] (N(0, 3)).
    bias_row_ramp : float
        Linear change of the image-area bias from the first to the last row read [DN].
    bias_row_transient : float
        Extra bias of the first rows read, decaying with an e-folding of 20 rows [DN].
    bias_column_rms : float
        rms of the fixed column-to-column bias offsets [DN], ~1.
    bias_column_transient : float
        Extra bias of the first columns of every row read, e-folding 4 columns [DN].
    overscan_tail : float
        Fraction (5e-5 to 2e-4) of the last pixel read in a row that trails into the first overscan
        column (e-folding 1 column: below 0.1 DN from column 5 on even after a saturated pixel).
    full_well : float
        Full well [e-]; 5-10 % above the charge at which the ADC clips (see the module notes).
    nonlin_a, nonlin_b : float
        IPAC non-linearity coefficients A [DN^-2] and B [DN^-1] of this amplifier on the camera's
        date (`ztfsds.camera.nonlinearity_coefficients`): ``DN_true = x / (A x**2 + B x + 1)``.
    """

    rcid: int
    ccdid: int
    qid: int
    amp_id: int
    amp_name: str
    gain: float
    read_noise: float
    bias_level: float
    bias_offset: float
    bias_row_ramp: float
    bias_row_transient: float
    bias_column_rms: float
    bias_column_transient: float
    overscan_tail: float
    full_well: float
    nonlin_a: float
    nonlin_b: float

    @property
    def read_noise_dn(self) -> float:
        """Read noise in DN (``read_noise / gain``)."""
        return self.read_noise / self.gain

    @property
    def adc_saturation_electrons(self) -> float:
        """Charge [e-] at which the raw value reaches 65535 for the mean bias of the image area."""
        x = float(ADC_MAX) - self.bias_level - self.bias_offset
        return float(linearize(x, self.nonlin_a, self.nonlin_b)) * self.gain


def _draw_channel(seed: int, ccdid: int, qid: int, date) -> ChannelTruth:
    r = _rcid(ccdid, qid)
    g = _rng(seed, r, _P_CHANNEL)
    gain = TRUE_GAIN_MEAN * (1.0 + float(np.clip(g.normal(0.0, 0.03), -0.09, 0.09)))
    read_noise = float(g.uniform(*TRUE_READ_NOISE_RANGE))
    bias_level = float(g.uniform(300.0, 1000.0))
    bias_offset = float(g.normal(0.0, 3.0))
    ramp = float(g.uniform(-4.0, 4.0))
    row_tr = float(g.uniform(2.0, 6.0))
    col_rms = float(g.uniform(0.7, 1.3))
    col_tr = float(g.uniform(3.0, 8.0))
    tail = float(g.uniform(5e-5, 2e-4))
    a, b = nonlinearity_coefficients(ccdid, qid, date)
    # the brightest raw bias of the image area stays below bias_level + bias_offset + ~25 DN
    x_clip = float(ADC_MAX) - bias_level - bias_offset - 25.0
    e_clip = float(linearize(x_clip, a, b)) * gain
    full_well = float(round(e_clip * g.uniform(1.05, 1.10), -2))
    return ChannelTruth(
        rcid=r, ccdid=ccdid, qid=qid, amp_id=qid - 1, amp_name=AMP_NAMES[qid - 1], gain=gain,
        read_noise=read_noise, bias_level=bias_level, bias_offset=bias_offset, bias_row_ramp=ramp,
        bias_row_transient=row_tr, bias_column_rms=col_rms, bias_column_transient=col_tr,
        overscan_tail=tail, full_well=full_well, nonlin_a=a, nonlin_b=b,
    )


@dataclass(frozen=True)
class _Defects:
    """Sparse defects of one quadrant (flat pixel indices into the science-orientation array)."""

    index: np.ndarray  # int64, every pixel with a code
    code: np.ndarray  # int32 MaskBits of those pixels
    resp_index: np.ndarray  # int64, pixels with a responsivity code (dead, low, high)
    factor: np.ndarray  # float32 response factor of those pixels
    hot_index: np.ndarray  # int64
    hot_rate: np.ndarray  # float32 [e-/s]
    noisy_columns: np.ndarray  # int64 column indices
    noisy_sigma: np.ndarray  # float32 extra noise per pixel [e-]


class _LRU:
    """A small thread-safe least-recently-used cache of arrays."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value):
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get(self, key, make):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value


# --------------------------------------------------------------------------------------------------
# The camera
# --------------------------------------------------------------------------------------------------


class CameraTruth:
    """The simulated camera: channel truth plus lazily computed per-quadrant arrays.

    Build it with `make_camera`. Arrays returned by `flat` are cached and read-only; the others are
    new arrays. All arrays are in science orientation (see the module notes).

    Attributes
    ----------
    seed : int
        The seed everything is drawn from.
    shape : tuple of int
        Quadrant shape ``(ny, nx)``.
    ccdids : tuple of int
        CCDs this camera describes.
    date : datetime.date
        Date of the non-linearity coefficients.
    channels : mapping of int to ChannelTruth
        Channel truth by rcid (read-only mapping).
    """

    def __init__(self, seed: int, shape: tuple[int, int], ccdids: tuple[int, ...], date,
                 channels: dict[int, ChannelTruth], cache_size: int = 8):
        self.seed = seed
        self.shape = shape
        self.ccdids = ccdids
        self.date = date
        self.channels = MappingProxyType(dict(channels))
        self._cache_size = cache_size
        self._init_caches()

    def _init_caches(self):
        self._flats = _LRU(max(4, self._cache_size))
        self._defects = _LRU(4 * len(self.ccdids))

    def __getstate__(self):  # caches and locks stay behind when pickled
        state = self.__dict__.copy()
        for key in ("_flats", "_defects"):
            state.pop(key)
        state["channels"] = dict(self.channels)
        return state

    def __setstate__(self, state):
        state["channels"] = MappingProxyType(state["channels"])
        self.__dict__.update(state)
        self._init_caches()

    def __repr__(self) -> str:
        return (f"CameraTruth(seed={self.seed}, shape={self.shape}, ccdids={list(self.ccdids)}, "
                f"date={self.date.isoformat()})")

    # ---- lookup --------------------------------------------------------------------------------
    def _check(self, ccdid, qid=None) -> int:
        if ccdid not in self.ccdids:
            raise ConfigError(f"CCD {ccdid!r} is not simulated by {self!r}")
        if qid is not None and qid not in QIDS:
            raise ConfigError(f"qid must be 1-4, got {qid!r}")
        return _rcid(ccdid, qid) if qid is not None else -1

    def channel(self, ccdid: int, qid: int) -> ChannelTruth:
        """Truth of one readout channel.

        Parameters
        ----------
        ccdid : int
            CCD id (one of ``ccdids``).
        qid : int
            Quadrant id, 1-4.

        Returns
        -------
        ChannelTruth
        """
        return self.channels[self._check(ccdid, qid)]

    # ---- bias ------------------------------------------------------------------------------------
    def bias_vectors(self, ccdid: int, qid: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed image-area bias structure as row and column terms.

        Parameters
        ----------
        ccdid, qid : int
            The quadrant.

        Returns
        -------
        rows : numpy.ndarray
            float32 (ny,) [DN]: ``bias_offset`` + linear ramp + the frame-start transient.
        columns : numpy.ndarray
            float32 (nx,) [DN]: fixed column offsets (rms ``bias_column_rms``) + the line-start
            transient. ``bias_structure = rows[:, None] + columns[None, :]``.
        """
        r = self._check(ccdid, qid)
        ch = self.channels[r]
        ny, nx = self.shape
        g = _rng(self.seed, r, _P_BIAS)
        ry, cx = amp_corner(qid, self.shape)
        dist_y = np.abs(np.arange(ny) - ry)  # rows from the amplifier: order of reading
        dist_x = np.abs(np.arange(nx) - cx)
        rows = (ch.bias_offset + ch.bias_row_ramp * (dist_y / max(ny - 1, 1) - 0.5)
                + ch.bias_row_transient * np.exp(-dist_y / 20.0))
        cols = (ch.bias_column_rms * g.standard_normal(nx)
                + ch.bias_column_transient * np.exp(-dist_x / 4.0))
        return rows.astype(np.float32), cols.astype(np.float32)

    def bias_structure(self, ccdid: int, qid: int) -> np.ndarray:
        """Fixed bias of the image area relative to the overscan level.

        The raw image-area bias of an exposure is ``bias_level + floating_bias[:, None] +
        bias_structure`` (the overscan is ``bias_level + floating_bias[:, None]``), so this is what a
        master bias recovers after the overscan correction.

        Parameters
        ----------
        ccdid, qid : int
            The quadrant.

        Returns
        -------
        numpy.ndarray
            float32 (ny, nx) [DN].
        """
        rows, cols = self.bias_vectors(ccdid, qid)
        return rows[:, None] + cols[None, :]

    # ---- defects ---------------------------------------------------------------------------------
    def _sparse_defects(self, ccdid: int, qid: int) -> _Defects:
        r = self._check(ccdid, qid)
        return self._defects.get(r, lambda: self._make_defects(r))

    def _make_defects(self, r: int) -> _Defects:
        ny, nx = self.shape
        npix = ny * nx
        frac = npix / (QUADRANT_SHAPE[0] * QUADRANT_SHAPE[1])
        g = _rng(self.seed, r, _P_DEFECTS)
        code = np.zeros(npix, dtype=np.int32)

        hot = np.unique(g.integers(0, npix, g.poisson(_HOT_FRACTION * npix)))
        hot_rate = np.exp(g.uniform(np.log(1.0), np.log(1000.0), hot.size)).astype(np.float32)
        code[hot] |= int(MaskBits.NOISY)
        dead = g.integers(0, npix, g.poisson(_DEAD_FRACTION * npix))
        code[dead] |= int(MaskBits.DEAD)

        # at least ~1 of each kind per quadrant, even in small test quadrants
        n_noisy = g.poisson(max(_NOISY_COLUMNS * nx / QUADRANT_SHAPE[1], 1.0))
        noisy_cols = np.unique(g.integers(0, nx, n_noisy))
        noisy_sigma = g.uniform(20.0, 60.0, noisy_cols.size).astype(np.float32)
        code.reshape(ny, nx)[:, noisy_cols] |= int(MaskBits.NOISY)
        # bad columns: a charge trap stops everything beyond it (away from the amplifier)
        ry, _ = amp_corner(r % 4 + 1, self.shape)
        for _ in range(g.poisson(max(_BAD_COLUMNS * nx / QUADRANT_SHAPE[1], 0.3))):
            col, trap = int(g.integers(0, nx)), int(g.integers(0, ny))
            rows = slice(trap, ny) if ry == 0 else slice(0, trap + 1)
            code.reshape(ny, nx)[rows, col] |= int(MaskBits.DEAD)

        yy, xx = np.mgrid[-6:7, -6:7]
        for bit, mean in ((MaskBits.LOW_RESPONSIVITY, _LOW_CLUSTERS), (MaskBits.HIGH_RESPONSIVITY, _HIGH_CLUSTERS)):
            for _ in range(g.poisson(max(mean * frac, 1.0))):
                y0, x0, rad = g.uniform(0, ny), g.uniform(0, nx), g.uniform(1.5, 6.0)
                inside = (yy**2 + xx**2) <= rad**2
                py = (int(y0) + yy[inside])
                px = (int(x0) + xx[inside])
                ok = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
                code[py[ok] * nx + px[ok]] |= int(bit)

        resp_bits = int(MaskBits.DEAD) | int(MaskBits.LOW_RESPONSIVITY) | int(MaskBits.HIGH_RESPONSIVITY)
        index = np.flatnonzero(code)
        c = code[index]
        resp_index = index[(c & resp_bits) != 0]
        rc = code[resp_index]
        factor = np.ones(resp_index.size, dtype=np.float32)
        for bit in (MaskBits.LOW_RESPONSIVITY, MaskBits.HIGH_RESPONSIVITY):
            factor[(rc & int(bit)) != 0] *= np.float32(DEFECT_RESPONSE[int(bit)])
        factor[(rc & int(MaskBits.DEAD)) != 0] = 0.0
        noisy_cols = noisy_cols.astype(np.int64)
        for arr in (index, c, resp_index, factor, hot, hot_rate, noisy_cols, noisy_sigma):
            arr.setflags(write=False)
        return _Defects(index=index, code=c, resp_index=resp_index, factor=factor, hot_index=hot,
                        hot_rate=hot_rate, noisy_columns=noisy_cols, noisy_sigma=noisy_sigma)

    def defects(self, ccdid: int, qid: int) -> np.ndarray:
        """Bad-pixel map of a quadrant.

        Parameters
        ----------
        ccdid, qid : int
            The quadrant.

        Returns
        -------
        numpy.ndarray
            int32 (ny, nx): 0 for good pixels, else an OR of `ztfsds.products.MaskBits` values:
            DEAD (dead pixels, and bad columns from their trap to the far end), LOW_RESPONSIVITY
            (clusters at 0.3 response), HIGH_RESPONSIVITY (clusters at 1.5), NOISY (hot pixels and
            noisy columns). Expected per full-size quadrant: 0.01 % hot, 0.005 % dead, ~2 noisy
            columns, ~0.5 bad column, ~4 low- and ~1.5 high-responsivity clusters of radius
            1.5-6 px (columns and clusters: at least ~1 expected in any quadrant).
        """
        d = self._sparse_defects(ccdid, qid)
        out = np.zeros(self.shape, dtype=np.int32)
        out.reshape(-1)[d.index] = d.code
        return out

    def hot_pixels(self, ccdid: int, qid: int) -> Table:
        """Hot pixels of a quadrant and the charge they collect.

        Returns
        -------
        `~astropy.table.Table`
            Columns x, y (0-based array indices, science orientation) and rate [e-/s]
            (log-uniform in 1-1000 e-/s).
        """
        d = self._sparse_defects(ccdid, qid)
        nx = self.shape[1]
        t = Table({"x": d.hot_index % nx, "y": d.hot_index // nx, "rate": np.array(d.hot_rate)})
        t["rate"].unit = u.electron / u.s
        return t

    def noisy_columns(self, ccdid: int, qid: int) -> Table:
        """Noisy columns of a quadrant.

        Returns
        -------
        `~astropy.table.Table`
            Columns x (0-based column index, science orientation) and sigma [e-], the extra
            Gaussian noise of every pixel in the column (also in bias frames).
        """
        d = self._sparse_defects(ccdid, qid)
        t = Table({"x": np.array(d.noisy_columns), "sigma": np.array(d.noisy_sigma)})
        t["sigma"].unit = u.electron
        return t

    # ---- flat field ------------------------------------------------------------------------------
    def _smooth(self, r: int, fcode: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Low-frequency pattern times vignetting at pixel indices y (rows), x (cols); float32 2-D.

        Every term is separable, so the image is one rank-8 matrix product ``rows @ cols``.
        """
        ny, nx = self.shape
        fid = get_filter(fcode).fid
        g = _rng(self.seed, r, _P_LOWFREQ, fid)
        rows = np.empty((y.size, _LOWFREQ_TERMS + 2))
        cols = np.empty((_LOWFREQ_TERMS + 2, x.size))
        amp = _LOWFREQ_RMS * 2.0 / np.sqrt(_LOWFREQ_TERMS)
        for k in range(_LOWFREQ_TERMS):
            ly, lx = np.exp(g.uniform(np.log(400.0), np.log(4000.0), 2))
            py, px = g.uniform(0.0, 2 * np.pi, 2)
            a = amp * g.standard_normal()
            rows[:, k] = a * np.cos(2 * np.pi * y / ly + py)
            cols[k] = np.cos(2 * np.pi * x / lx + px)
        # vignetting 1 - v r^2 / R^2 is separable into a row and a column term; a small quadrant is
        # mapped onto the full quadrant's focal-plane footprint
        c = quadrant_corners(r // 4 + 1, r % 4 + 1).to_value(u.deg)  # NE, NW, SW, SE
        fu, fv = (x + 0.5) / nx, (y + 0.5) / ny
        ew = 0.5 * (c[0, 0] + c[3, 0]) + fu * (0.5 * (c[1, 0] + c[2, 0]) - 0.5 * (c[0, 0] + c[3, 0]))
        ns = 0.5 * (c[0, 1] + c[1, 1]) + fv * (0.5 * (c[2, 1] + c[3, 1]) - 0.5 * (c[0, 1] + c[1, 1]))
        k = VIGNETTING[fcode] / FOCAL_PLANE_EDGE**2
        rows[:, -2], cols[-2] = 1.0 - k * ns**2, 1.0
        rows[:, -1], cols[-1] = 1.0, -k * ew**2
        return np.matmul(rows.astype(np.float32), cols.astype(np.float32))

    def _make_ccd_flats(self, ccdid: int, fcode: str) -> None:
        """Flats of the four quadrants of a CCD, normalised together, into the cache."""
        ny, nx = self.shape
        stack = np.empty((4, ny, nx), dtype=np.float32)
        y, x = np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64)
        for i, q in enumerate(QIDS):
            r = _rcid(ccdid, q)
            f = stack[i]
            _rng(self.seed, r, _P_PRNU).standard_normal(self.shape, dtype=np.float32, out=f)
            f *= np.float32(PRNU_RMS[fcode])
            f += np.float32(1.0)
            f *= self._smooth(r, fcode, y, x)
        # median over the CCD: exact up to ~4e6 pixels, from a regular subsample beyond (error ~1e-5)
        step = max(1, int(np.sqrt(stack.size / 4.0e6)))
        stack /= np.float32(np.median(stack[:, ::step, ::step]))
        stack.setflags(write=False)
        for i, q in enumerate(QIDS):
            self._flats.put((ccdid, q, fcode), stack[i])

    def flat(self, ccdid: int, qid: int, filtercode: str) -> np.ndarray:
        """Flat field of a quadrant: relative response in electrons (see the module notes).

        Parameters
        ----------
        ccdid, qid : int
            The quadrant.
        filtercode : str
            'zg', 'zr' or 'zi' (anything `ztfsds.camera.get_filter` accepts).

        Returns
        -------
        numpy.ndarray
            float32 (ny, nx), read-only (cached): ``electrons_detected = flat * electrons_incident``
            for non-defective pixels; median 1 over the CCD's four quadrants. Excludes the gains and
            the defects.
        """
        self._check(ccdid, qid)
        fcode = get_filter(filtercode).code
        key = (ccdid, qid, fcode)
        flat = self._flats.peek(key)
        if flat is None:
            self._make_ccd_flats(ccdid, fcode)
            flat = self._flats.peek(key)
        return flat

    def response(self, ccdid: int, qid: int, filtercode: str) -> np.ndarray:
        """Total response of each pixel: the flat times the defect factor (dead 0, low 0.3, high 1.5).

        Returns
        -------
        numpy.ndarray
            float32 (ny, nx), a new array: ``electrons_detected = response * electrons_incident``.
        """
        out = np.array(self.flat(ccdid, qid, filtercode), dtype=np.float32, copy=True)
        self.apply_response_defects(out, ccdid, qid)
        return out

    def apply_response_defects(self, electrons: np.ndarray, ccdid: int, qid: int) -> None:
        """Multiply an image in place by the defect response factors (dead, low, high)."""
        d = self._sparse_defects(ccdid, qid)
        flat_view = electrons.reshape(-1)
        flat_view[d.resp_index] *= d.factor

    def hot_charge(self, ccdid: int, qid: int, exptime: float) -> tuple[np.ndarray, np.ndarray]:
        """Flat pixel indices of the hot pixels and the charge [e-] they collect in ``exptime`` s."""
        d = self._sparse_defects(ccdid, qid)
        return d.hot_index, d.hot_rate * np.float32(exptime)

    def noisy_column_sigma(self, ccdid: int, qid: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices of the noisy columns and their extra noise per pixel [e-]."""
        d = self._sparse_defects(ccdid, qid)
        return d.noisy_columns, d.noisy_sigma

    # ---- crosstalk -------------------------------------------------------------------------------
    def crosstalk(self, ccdid: int) -> np.ndarray:
        """Crosstalk matrix of a CCD.

        Parameters
        ----------
        ccdid : int
            The CCD.

        Returns
        -------
        numpy.ndarray
            float64 (4, 4): ``X[v - 1, s - 1]`` is the fraction of amplifier ``s``'s signal [DN]
            added to amplifier ``v`` at the same readout position (`crosstalk_mirror`); zero
            diagonal. Amplifiers on the same side of the CCD (q1-q2, q3-q4) couple most
            (3e-4 to 1e-3), those above each other (q1-q4, q2-q3) less (1.5e-4 to 5e-4), diagonal
            pairs least (1e-4 to 2.5e-4): a 60 kDN star gives a 6-60 DN ghost.
        """
        self._check(ccdid)
        g = _rng(self.seed, 1000 + ccdid, _P_XTALK)
        x = np.zeros((4, 4))
        ranges = {1: (3e-4, 1e-3), 2: (1.5e-4, 5e-4), 3: (1e-4, 2.5e-4)}
        for v in QIDS:
            for s in QIDS:
                if v == s:
                    continue
                rv, cv = amp_corner(v, (2, 2))
                rs, cs = amp_corner(s, (2, 2))
                kind = 1 if rv == rs else (2 if cv == cs else 3)
                lo, hi = ranges[kind]
                x[v - 1, s - 1] = np.exp(g.uniform(np.log(lo), np.log(hi)))
        return x


def make_camera(seed: int, *, shape: tuple[int, int] = QUADRANT_SHAPE, ccdids=CCDIDS,
                date=_dt.date(2020, 9, 24), cache_size: int = 8) -> CameraTruth:
    """Draw a simulated camera.

    Parameters
    ----------
    seed : int
        Non-negative seed; every channel's properties depend only on it and the channel.
    shape : tuple of int, optional
        Quadrant shape ``(ny, nx)``; the real one (3080, 3072) by default. The overscan is always
        ``(ny, 30)``.
    ccdids : iterable of int, optional
        CCDs to simulate (all 16 by default).
    date : datetime.date or str or `~astropy.time.Time`, optional
        Observation date, for the non-linearity coefficients.
    cache_size : int, optional
        How many per-quadrant flat fields to keep in memory.

    Returns
    -------
    CameraTruth

    Examples
    --------
    >>> cam = make_camera(1, shape=(64, 64), ccdids=[13])
    >>> ch = cam.channel(13, 3)
    >>> (ch.rcid, ch.amp_name, 5.4 < ch.gain < 6.6, ch.full_well > ch.adc_saturation_electrons)
    (50, 'F', True, True)
    >>> import numpy as np
    >>> float(np.median([cam.flat(13, q, "zr") for q in (1, 2, 3, 4)]))  # median 1 over the CCD
    1.0
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny < 8 or nx < 8:
        raise ConfigError(f"shape must be at least (8, 8), got {shape!r}")
    ids = tuple(sorted({int(c) for c in ccdids}))
    if not ids or any(c not in CCDIDS for c in ids):
        raise ConfigError(f"ccdids must be a non-empty subset of 1-16, got {ccdids!r}")
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date[:10])
    elif hasattr(date, "to_datetime"):
        date = date.to_datetime().date()
    elif isinstance(date, _dt.datetime):
        date = date.date()
    channels = {_rcid(c, q): _draw_channel(int(seed), c, q, date) for c in ids for q in QIDS}
    return CameraTruth(int(seed), (ny, nx), ids, date, channels, cache_size=cache_size)
