"""The ZTF camera as data: detectors, readout channels, filters, focal plane and field grid.

Everything the pipeline and the simulator need to know about the instrument that does not change from
one exposure to the next lives here: the 16 CCDs x 4 readout quadrants (64 readout channels, ``rcid``),
their amplifiers, nominal gain/read noise/saturation and measured non-linearity, the three filters,
the focal-plane layout of the quadrants, the nominal ("pointing prior") WCS of each quadrant, and the
ZTF field grid.

Conventions
-----------
* ``ccdid`` 1-16, ``qid`` 1-4, ``rcid = 4 * (ccdid - 1) + (qid - 1)`` in 0-63, ``fid`` 1-3 (zg, zr, zi).
* Pixel coordinates returned by this module are FITS (1-based) coordinates, like ``xpos``/``ypos`` in
  IPAC catalogues and alerts: the centre of the first pixel is (1, 1), the quadrant centre is
  (1536.5, 1540.5).
* Focal-plane coordinates (``EW``, ``NS``) are degrees in the gnomonic tangent plane of the field
  centre, ``EW`` positive towards **east**, ``NS`` positive towards **north**.
* A science quadrant has +x pointing **west** and +y pointing **south**: pixel (1, 1) is the quadrant's
  north-east corner (real sciimg header: CD1_1 = CD2_2 = -2.8117e-4 deg/px).

Sources: the real IPAC science quadrant ``ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits``;
IPAC's non-linearity tables (distributed with ``ztfimg``); the quadrant layout table (distributed with
``ztffields``); the field grid (distributed with ``ztf_sim``); Bellm et al. 2019 (PASP 131, 018002).
See ``ztfsds/data/camera/README.md`` for the provenance and licences of the data files.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
from dataclasses import dataclass
from importlib import resources

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from .errors import ConfigError, InputError

__all__ = [
    "tangent_project",
    "tangent_deproject",
    "rotate_focal_plane",
    # geometry constants
    "N_CCDS",
    "QUADRANTS_PER_CCD",
    "N_READOUT_CHANNELS",
    "CCDIDS",
    "QIDS",
    "QUADRANT_NAXIS1",
    "QUADRANT_NAXIS2",
    "QUADRANT_SHAPE",
    "QUADRANT_CENTER",
    "CCD_NAXIS1",
    "CCD_NAXIS2",
    "OVERSCAN_NAXIS1",
    "OVERSCAN_NAXIS2",
    "OVERSCAN_SHAPE",
    "RAW_NFRAMES",
    "RAW_QUADRANT_HDUS",
    "RAW_OVERSCAN_HDUS",
    "PIXEL_SIZE",
    "PIXEL_SCALE",
    "ADC_BITS",
    "ADC_MAX",
    "NOMINAL_GAIN",
    "NOMINAL_READ_NOISE",
    "NOMINAL_DARK_CURRENT",
    "NOMINAL_SATURATION",
    "AMP_NAMES",
    # channel ids
    "rcid",
    "ccd_quadrant",
    "amp_id",
    "amp_name",
    "qid_from_amp",
    # filters
    "Filter",
    "FILTERS",
    "filter_by_fid",
    "get_filter",
    # readout channels and non-linearity
    "ReadoutChannel",
    "readout_channel",
    "readout_channels",
    "NONLINEARITY_EPOCHS",
    "nonlinearity_epoch",
    "nonlinearity_table",
    "nonlinearity_coefficients",
    "linearize",
    "delinearize",
    # focal plane
    "focal_plane_layout",
    "quadrant_corners",
    "amp_corner",
    "crosstalk_mirror",
    "ccd_corners",
    "ccd_gaps",
    "active_area",
    "nominal_wcs",
    "quadrant_footprint",
    "locate",
    # field grid
    "field_grid",
    "field_center",
    "fields_in_grid",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Geometry constants
# --------------------------------------------------------------------------------------------------

#: Number of science CCDs in the mosaic.
N_CCDS = 16
#: Readout quadrants (amplifiers) per CCD.
QUADRANTS_PER_CCD = 4
#: Number of readout channels (quadrants) in the mosaic, ``rcid`` 0-63.
N_READOUT_CHANNELS = N_CCDS * QUADRANTS_PER_CCD
#: Valid CCD ids.
CCDIDS = tuple(range(1, N_CCDS + 1))
#: Valid quadrant ids within a CCD.
QIDS = tuple(range(1, QUADRANTS_PER_CCD + 1))

#: Active quadrant width in pixels (FITS NAXIS1, x).
QUADRANT_NAXIS1 = 3072
#: Active quadrant height in pixels (FITS NAXIS2, y).
QUADRANT_NAXIS2 = 3080
#: numpy shape ``(ny, nx)`` of a quadrant image.
QUADRANT_SHAPE = (QUADRANT_NAXIS2, QUADRANT_NAXIS1)
#: FITS (1-based) pixel coordinates of the quadrant centre; CRPIX of every IPAC quadrant WCS.
QUADRANT_CENTER = (0.5 * (QUADRANT_NAXIS1 + 1), 0.5 * (QUADRANT_NAXIS2 + 1))
#: Full CCD science area in pixels (x).
CCD_NAXIS1 = 2 * QUADRANT_NAXIS1
#: Full CCD science area in pixels (y).
CCD_NAXIS2 = 2 * QUADRANT_NAXIS2
#: Columns of the separate overscan strip of each quadrant.
OVERSCAN_NAXIS1 = 30
#: Rows of the overscan strip (one per quadrant row).
OVERSCAN_NAXIS2 = QUADRANT_NAXIS2
#: numpy shape ``(ny, nx)`` of an overscan strip.
OVERSCAN_SHAPE = (OVERSCAN_NAXIS2, OVERSCAN_NAXIS1)
#: Image HDUs in a raw CCD file (NFRAMES): 4 quadrants then their 4 overscans.
RAW_NFRAMES = 8
#: Raw-file HDU index of quadrant ``qid`` is ``RAW_QUADRANT_HDUS[qid - 1]`` (EXTNAME '1'..'4').
RAW_QUADRANT_HDUS = (1, 2, 3, 4)
#: Raw-file HDU index of the overscan of quadrant ``qid`` is ``RAW_OVERSCAN_HDUS[qid - 1]``.
RAW_OVERSCAN_HDUS = (5, 6, 7, 8)

#: Physical pixel size (e2v CCD231-C6).
PIXEL_SIZE = 15.0 * u.um
#: Pixel scale: the real header PIXSCALE (the WCS CD matrix gives 1.0122"; Bellm+2019 quote 1.01").
PIXEL_SCALE = 1.012 * u.arcsec / u.pix

#: ADC resolution in bits.
ADC_BITS = 16
#: Largest raw value the ADC can produce [DN].
ADC_MAX = 2**ADC_BITS - 1

# Per-channel gain and read noise are not published per channel. These are the nominal values written
# in every real sciimg header (GAIN = 6.0 e-/adu, READNOI = 9 e-); Bellm et al. 2019 Table 1 quotes
# 5.8 e-/DN and 10.3 e-.
#: Nominal gain of every readout channel (real header GAIN).
NOMINAL_GAIN = 6.0 * u.electron / u.adu
#: Nominal read noise of every readout channel (real header READNOI).
NOMINAL_READ_NOISE = 9.0 * u.electron
#: Nominal dark current (real header DARKCUR, "e-/s @ 150 K").
NOMINAL_DARK_CURRENT = 1.0 * u.electron / u.s
# The raw channel saturates where the 16-bit ADC clips (ZTF_REFERENCE.md section 1: "raw ADC 16-bit
# (65535)"). IPAC's per-image SATURATE keyword (58647.152 DN in the real sciimg) is this level after
# bias subtraction, linearisation and flat-fielding, so it is lower and varies from image to image.
#: Raw level at which a readout channel saturates.
NOMINAL_SATURATION = float(ADC_MAX) * u.adu

#: Amplifier names indexed by AMP_ID (IPAC tables: f, e, h, g <-> AMP_ID 2, 3, 0, 1).
AMP_NAMES = ("H", "G", "F", "E")

def _data_file(name: str):
    """Traversable of a packaged data file in ztfsds/data/camera (works from a wheel or a zip)."""
    return resources.files("ztfsds") / "data" / "camera" / name


# --------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------


def _as_int(name: str, value, lo: int, hi: int):
    """Validate integer id(s) in ``[lo, hi]``; returns an int or an int64 array."""
    arr = np.asarray(value)
    numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == bool or not numeric:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    iarr = arr.astype(np.int64)
    bad = (iarr < lo) | (iarr > hi)
    if np.any(bad):
        shown = np.unique(iarr[bad])[:10].tolist() if iarr.ndim else int(iarr)
        raise ConfigError(f"{name} must be in {lo}..{hi}, got {shown}")
    return int(iarr) if iarr.ndim == 0 else iarr


def _as_scalar_int(name: str, value, lo: int, hi: int) -> int:
    """Like `_as_int` for a single id."""
    if np.ndim(value) != 0:
        raise ConfigError(f"{name} must be a single integer in {lo}..{hi}, got {value!r}")
    return _as_int(name, value, lo, hi)


# --------------------------------------------------------------------------------------------------
# Channel identifiers
# --------------------------------------------------------------------------------------------------


def rcid(ccdid, qid):
    """Readout-channel id of a CCD quadrant.

    Parameters
    ----------
    ccdid : int or array-like of int
        CCD id, 1-16.
    qid : int or array-like of int
        Quadrant id within the CCD, 1-4.

    Returns
    -------
    int or `numpy.ndarray`
        ``4 * (ccdid - 1) + (qid - 1)``, in 0-63 (an int64 array if either input is an array).

    Raises
    ------
    ztfsds.errors.ConfigError
        (a `ValueError`) if an id is out of range or not an integer.

    Examples
    --------
    >>> rcid(13, 3)
    50
    """
    c = _as_int("ccdid", ccdid, 1, N_CCDS)
    q = _as_int("qid", qid, 1, QUADRANTS_PER_CCD)
    return QUADRANTS_PER_CCD * (c - 1) + (q - 1)


def ccd_quadrant(rcid):
    """CCD and quadrant ids of a readout channel (the inverse of `rcid`).

    Parameters
    ----------
    rcid : int or array-like of int
        Readout-channel id, 0-63.

    Returns
    -------
    ccdid, qid : int or `numpy.ndarray`
        CCD id (1-16) and quadrant id (1-4).

    Examples
    --------
    >>> ccd_quadrant(50)
    (13, 3)
    """
    r = _as_int("rcid", rcid, 0, N_READOUT_CHANNELS - 1)
    return r // QUADRANTS_PER_CCD + 1, r % QUADRANTS_PER_CCD + 1


def amp_id(qid):
    """Amplifier id (header AMP_ID, 0-3) of a quadrant: ``qid - 1``.

    The mapping is inferred from the real sciimg header of c13 q3 (AMP_ID = 2, AMP_NAME = 'F') and the
    IPAC non-linearity tables (amplifier names f, e, h, g <-> AMP_ID 2, 3, 0, 1 on every CCD).

    Parameters
    ----------
    qid : int or array-like of int
        Quadrant id, 1-4.

    Returns
    -------
    int or `numpy.ndarray`
    """
    return _as_int("qid", qid, 1, QUADRANTS_PER_CCD) - 1


def amp_name(qid) -> str:
    """Amplifier name (header AMP_NAME: 'H', 'G', 'F', 'E' for qid 1-4) of a quadrant.

    Parameters
    ----------
    qid : int
        Quadrant id, 1-4.

    Returns
    -------
    str
    """
    return AMP_NAMES[_as_scalar_int("qid", qid, 1, QUADRANTS_PER_CCD) - 1]


def qid_from_amp(amp) -> int:
    """Quadrant id of an amplifier given by AMP_ID (0-3) or AMP_NAME ('e'-'h', any case).

    Parameters
    ----------
    amp : int or str
        AMP_ID or AMP_NAME.

    Returns
    -------
    int
        qid, 1-4.
    """
    if isinstance(amp, str):
        name = amp.strip().upper()
        if name not in AMP_NAMES:
            raise ConfigError(f"amplifier name must be one of {AMP_NAMES}, got {amp!r}")
        return AMP_NAMES.index(name) + 1
    return _as_int("amp_id", amp, 0, QUADRANTS_PER_CCD - 1) + 1


# --------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One of the three ZTF filters.

    Attributes
    ----------
    code : str
        ZTF filter code: 'zg', 'zr' or 'zi' (product file names, ``filtercode``).
    fid : int
        Filter id: 1, 2, 3 (header FILTERID, alert ``fid``).
    name : str
        Filter name, 'ZTF_g' etc.
    header_filter : str
        Value of the FILTER header keyword ('ZTF_g', 'ZTF_r', 'ZTF_i').
    wavelength_mean : float
        Mean wavelength of the P48 system throughput [Angstrom].
    wavelength_min, wavelength_max : float
        Half-maximum edges of the throughput [Angstrom].
    sky_brightness : float
        Dark-sky brightness at zenith [mag/arcsec^2] (Bellm et al. 2019).
    zero_point : float
        Nominal photometric zero point for counts in e-/s [AB mag] (Explanatory Supplement 10.1.2).
    calibration_color : str
        Pan-STARRS1 colour of the photometric-calibration colour term: 'g-r' for zg and zr, 'r-i' for zi.
    median_fwhm : float
        Median delivered image quality [arcsec] (Bellm et al. 2019).
    """

    code: str
    fid: int
    name: str
    header_filter: str
    wavelength_mean: float
    wavelength_min: float
    wavelength_max: float
    sky_brightness: float
    zero_point: float
    calibration_color: str
    median_fwhm: float

    @property
    def wavelength(self) -> u.Quantity:
        """Mean wavelength as a Quantity [Angstrom]."""
        return self.wavelength_mean * u.AA

    @property
    def bandwidth(self) -> u.Quantity:
        """Full width at half maximum of the throughput [Angstrom]."""
        return (self.wavelength_max - self.wavelength_min) * u.AA


# Band edges and mean wavelengths: half-maximum points of the ztfquery P48 throughput curves
# (ZTF_REFERENCE.md section 1). Sky and zero points: Bellm+2019 / Explanatory Supplement via
# lenstronomy's ZTF configuration. Median FWHM: Bellm+2019 Table 1.
#: The three ZTF filters by filter code.
FILTERS = {
    "zg": Filter("zg", 1, "ZTF_g", "ZTF_g", 4814.0, 4145.0, 5467.0, 22.01, 26.325, "g-r", 2.1),
    "zr": Filter("zr", 2, "ZTF_r", "ZTF_r", 6422.0, 5652.0, 7206.0, 21.15, 26.275, "g-r", 2.0),
    "zi": Filter("zi", 3, "ZTF_i", "ZTF_i", 7883.0, 7214.0, 8672.0, 19.89, 25.660, "r-i", 2.1),
}

_FILTERS_BY_FID = {f.fid: f for f in FILTERS.values()}


def filter_by_fid(fid) -> Filter:
    """The filter with a given filter id.

    Parameters
    ----------
    fid : int
        1 (zg), 2 (zr) or 3 (zi).

    Returns
    -------
    Filter
    """
    return _FILTERS_BY_FID[_as_scalar_int("fid", fid, 1, 3)]


def get_filter(code_or_fid) -> Filter:
    """Look a filter up by code, name, header value, band letter or fid.

    Parameters
    ----------
    code_or_fid : str or int or Filter
        'zg', 'ZTF_g', 'g' (any case), or fid 1-3; a `Filter` is returned unchanged.

    Returns
    -------
    Filter

    Examples
    --------
    >>> get_filter("ZTF_r").fid
    2
    """
    if isinstance(code_or_fid, Filter):
        return code_or_fid
    if isinstance(code_or_fid, str):
        key = code_or_fid.strip().lower()
        for f in FILTERS.values():
            if key in (f.code, f.name.lower(), f.header_filter.lower(), f.code[1:]):
                return f
        raise ConfigError(f"unknown ZTF filter {code_or_fid!r}; expected one of {sorted(FILTERS)}")
    return filter_by_fid(code_or_fid)


# --------------------------------------------------------------------------------------------------
# Readout channels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadoutChannel:
    """One readout channel (CCD quadrant read by one amplifier).

    Attributes
    ----------
    rcid : int
        Readout-channel id, 0-63.
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.
    amp_id : int
        Amplifier id (header AMP_ID), 0-3.
    amp_name : str
        Amplifier name (header AMP_NAME), 'H', 'G', 'F' or 'E'.
    raw_hdu : int
        HDU of the quadrant in the raw CCD file (1-4).
    overscan_hdu : int
        HDU of the quadrant's overscan strip in the raw CCD file (5-8).
    gain : float
        Gain [e-/DN]; nominal header value, the same for every channel.
    read_noise : float
        Read noise [e-]; nominal header value.
    dark_current : float
        Dark current [e-/s]; nominal header value.
    saturation : float
        Raw level at which the channel saturates [DN]: the 16-bit ADC ceiling.
    """

    rcid: int
    ccdid: int
    qid: int
    amp_id: int
    amp_name: str
    raw_hdu: int
    overscan_hdu: int
    gain: float
    read_noise: float
    dark_current: float
    saturation: float


@functools.lru_cache(maxsize=None)
def _readout_channel(ccdid: int, qid: int) -> ReadoutChannel:
    return ReadoutChannel(
        rcid=QUADRANTS_PER_CCD * (ccdid - 1) + (qid - 1),
        ccdid=ccdid,
        qid=qid,
        amp_id=qid - 1,
        amp_name=AMP_NAMES[qid - 1],
        raw_hdu=RAW_QUADRANT_HDUS[qid - 1],
        overscan_hdu=RAW_OVERSCAN_HDUS[qid - 1],
        gain=float(NOMINAL_GAIN.value),
        read_noise=float(NOMINAL_READ_NOISE.value),
        dark_current=float(NOMINAL_DARK_CURRENT.value),
        saturation=float(NOMINAL_SATURATION.value),
    )


def readout_channel(ccdid, qid) -> ReadoutChannel:
    """The readout channel of a CCD quadrant.

    Parameters
    ----------
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.

    Returns
    -------
    ReadoutChannel
    """
    return _readout_channel(
        _as_scalar_int("ccdid", ccdid, 1, N_CCDS), _as_scalar_int("qid", qid, 1, QUADRANTS_PER_CCD)
    )


@functools.lru_cache(maxsize=1)
def _readout_channels_table() -> Table:
    rows = [_readout_channel(c, q) for c in CCDIDS for q in QIDS]
    names = list(ReadoutChannel.__dataclass_fields__)
    t = Table(rows=[tuple(getattr(r, n) for n in names) for r in rows], names=names)
    t["gain"].unit = u.electron / u.adu
    t["read_noise"].unit = u.electron
    t["dark_current"].unit = u.electron / u.s
    t["saturation"].unit = u.adu
    return t


def readout_channels() -> Table:
    """All 64 readout channels as a table, ordered by ``rcid``.

    Returns
    -------
    `~astropy.table.Table`
        One row per channel with the `ReadoutChannel` attributes as columns (gain [e-/DN],
        read_noise [e-], dark_current [e-/s], saturation [DN]).
    """
    return _readout_channels_table().copy()


# --------------------------------------------------------------------------------------------------
# Non-linearity
# --------------------------------------------------------------------------------------------------

#: IPAC non-linearity tables, oldest first, with the first UTC date each is taken to be in force.
NONLINEARITY_EPOCHS = {"201803": None, "201910": "2019-10-01", "202004": "2020-04-28"}
# MJD of the switch dates above (Time('2019-10-01').mjd, Time('2020-04-28').mjd), kept as numbers so
# that choosing a table needs no time-scale conversion.
_NL_SWITCH_MJD = ((58757.0, "201910"), (58967.0, "202004"))


def _to_time(date) -> Time:
    if isinstance(date, Time):
        if not date.isscalar:
            raise ConfigError(f"date must be a single time, got an array of shape {date.shape}")
        return date
    try:
        if isinstance(date, _dt.datetime):
            return Time(date, scale="utc")
        if isinstance(date, _dt.date):
            return Time(date.isoformat(), scale="utc")
        if isinstance(date, str):
            return Time(date, scale="utc")
    except ValueError as exc:
        raise ConfigError(f"cannot read {date!r} as a date: {exc}") from None
    raise ConfigError(f"date must be an astropy Time, a datetime/date or an ISO string, got {date!r}")


def nonlinearity_epoch(date) -> str:
    """Which IPAC non-linearity table applies to an observation date.

    The three tables carry their provenance in their headers: '201803' (Roger Smith, 2018-03-28
    measurement), '201910' (Stephen Kaye, 2019-09-27, installed 2019-10-01) and '202004'
    (Stephen Kaye, "20200427_ZTFPerformanceParameters", installed 2020-04-28). The switch dates used
    here are those installation dates: '201803' before 2019-10-01 (including commissioning data),
    '201910' from 2019-10-01 to 2020-04-27 inclusive, '202004' from 2020-04-28 (UTC). IPAC's exact
    operational switch dates are not public; this is our choice.

    Parameters
    ----------
    date : `~astropy.time.Time`, `datetime.datetime`, `datetime.date` or str
        Observation date (strings are read as UTC ISO dates/times).

    Returns
    -------
    str
        '201803', '201910' or '202004'.
    """
    mjd = _to_time(date).utc.mjd
    epoch = "201803"
    for start, name in _NL_SWITCH_MJD:
        if mjd >= start:
            epoch = name
    return epoch


@functools.lru_cache(maxsize=None)
def _nonlinearity_table(epoch: str) -> Table:
    fname = f"linearity_coeffs_{epoch}.txt"
    ccd, amp, a, b = [], [], [], []
    with _data_file(fname).open("r") as fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            c, name, aid = int(parts[0]), parts[1].upper(), int(parts[2])
            av, bv = float(parts[3]), float(parts[4])
            if AMP_NAMES[aid] != name:
                problem = f"amplifier {name!r} listed with AMP_ID {aid}, expected {AMP_NAMES[aid]!r}"
                raise InputError(fname, problem)
            ccd.append(c)
            amp.append(aid)
            a.append(av)
            b.append(bv)
    ccd, amp = np.array(ccd), np.array(amp)
    r = QUADRANTS_PER_CCD * (ccd - 1) + amp
    if len(r) != N_READOUT_CHANNELS or len(np.unique(r)) != N_READOUT_CHANNELS:
        raise InputError(fname, f"expected one row for each of the 64 amplifiers, got {len(r)} rows")
    order = np.argsort(r)
    t = Table(
        {
            "rcid": r[order],
            "ccdid": ccd[order],
            "qid": amp[order] + 1,
            "amp_id": amp[order],
            "amp_name": [AMP_NAMES[i] for i in amp[order]],
            "a": np.array(a)[order],
            "b": np.array(b)[order],
        }
    )
    t["a"].unit = u.adu**-2
    t["b"].unit = u.adu**-1
    t.meta["epoch"] = epoch
    t.meta["source"] = fname
    logger.debug("loaded non-linearity table %s", fname)
    return t


def nonlinearity_table(date_or_epoch) -> Table:
    """The IPAC non-linearity coefficients of all 64 amplifiers.

    Parameters
    ----------
    date_or_epoch : str or `~astropy.time.Time` or `datetime.date`
        Either a table name ('201803', '201910', '202004') or an observation date (see
        `nonlinearity_epoch` for how the table is chosen).

    Returns
    -------
    `~astropy.table.Table`
        64 rows ordered by rcid: rcid, ccdid, qid, amp_id, amp_name, a [DN^-2], b [DN^-1], where
        ``DN_true = x / (a x**2 + b x + 1)`` for raw (bias-subtracted) counts ``x`` [DN].
    """
    if isinstance(date_or_epoch, str) and date_or_epoch in NONLINEARITY_EPOCHS:
        epoch = date_or_epoch
    else:
        epoch = nonlinearity_epoch(date_or_epoch)
    return _nonlinearity_table(epoch).copy()


def nonlinearity_coefficients(ccdid, qid, date) -> tuple[float, float]:
    """Non-linearity coefficients of one amplifier in force on a date.

    IPAC corrects raw counts ``x`` [DN] as ``DN_true = x / (A x**2 + B x + 1)`` with per-amplifier
    coefficients measured three times. The table is chosen by date: '201803' before 2019-10-01,
    '201910' from 2019-10-01 until 2020-04-27, '202004' from 2020-04-28 (see `nonlinearity_epoch`;
    the switch dates are the tables' installation dates, our choice).

    Parameters
    ----------
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.
    date : `~astropy.time.Time`, `datetime.datetime`, `datetime.date` or str
        Observation date (UTC).

    Returns
    -------
    A, B : float
        Coefficients [DN^-2] and [DN^-1].

    Examples
    --------
    >>> nonlinearity_coefficients(13, 3, "2020-09-24")
    (-8.66e-12, 2.69e-07)
    """
    r = rcid(ccdid, qid)
    t = _nonlinearity_table(nonlinearity_epoch(date))
    return float(t["a"][r]), float(t["b"][r])


def _float_array(x):
    arr = np.asarray(x)
    return arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)


def linearize(raw_dn, a, b):
    """Correct raw counts for the CCD non-linearity.

    Parameters
    ----------
    raw_dn : float or array-like
        Measured (bias-subtracted) counts ``x`` [DN].
    a, b : float or array-like
        Coefficients A [DN^-2] and B [DN^-1] (`nonlinearity_coefficients`); broadcast against
        ``raw_dn``.

    Returns
    -------
    `numpy.ndarray` or float
        ``x / (A x**2 + B x + 1)`` [DN]; float32 if ``raw_dn`` is float32, float64 otherwise.
    """
    x = _float_array(raw_dn)
    out = x / (a * x * x + b * x + 1.0)
    return out.astype(x.dtype, copy=False)


def delinearize(true_dn, a, b):
    """Invert `linearize`: the raw counts that the non-linear response makes of true counts.

    Solves ``y (A x**2 + B x + 1) = x`` for the root continuous with ``x = y`` at ``y = 0``,
    ``x = 2 y / ((1 - B y) + sqrt((1 - B y)**2 - 4 A y**2))`` (the numerically stable form, exact
    for A = 0 too). Where the discriminant is negative (no raw value produces ``y``; only possible
    for A > 0) the result is NaN.

    Parameters
    ----------
    true_dn : float or array-like
        Linear (true) counts ``y`` [DN].
    a, b : float or array-like
        Coefficients A [DN^-2] and B [DN^-1]; broadcast against ``true_dn``.

    Returns
    -------
    `numpy.ndarray` or float
        Raw counts [DN]; float32 if ``true_dn`` is float32, float64 otherwise.
    """
    y0 = _float_array(true_dn)
    y = y0.astype(np.float64)
    p = 1.0 - b * y
    disc = p * p - 4.0 * a * y * y
    with np.errstate(invalid="ignore"):
        x = 2.0 * y / (p + np.sqrt(disc))
    x = np.where(disc < 0, np.nan, x)
    return x.astype(y0.dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# Focal plane
# --------------------------------------------------------------------------------------------------
#
# ztf_ccd_quad_layout.tbl gives the four corners (EW, NS) of every readout quadrant in degrees in the
# tangent plane of the field centre. Checked against the real quadrant c13 q3 of field 655: its
# corners, projected about the field centre, lie at EW +1.95..+2.82, NS +2.00..+2.87, i.e. on the
# table's rcid 50 (EW +1.92..+2.78, NS +2.00..+2.87), so the table's EW is positive towards EAST. The
# other ztffields file, ztf_ccd_layout.tbl, has the opposite EW sign for the CCDs (CCD 13 at
# EW -3.65..-1.92); we do not use it and derive the CCD outlines from the quadrant table instead.
# The real quadrant is 0.035 deg east of the table position (a per-exposure pointing offset, or an
# error in the table), which bounds the accuracy of the nominal WCS to a few arcminutes.

#: Largest angular distance from a field centre to any quadrant corner is 5.22 deg; candidate fields in
#: `locate` are those whose centre lies within this radius.
_FIELD_SEARCH_RADIUS = 5.5 * u.deg


@functools.lru_cache(maxsize=1)
def _quadrant_corner_array() -> np.ndarray:
    """(64, 4, 2) float64 corners [deg] in pixel-corner order NE, NW, SW, SE."""
    fname = "ztf_ccd_quad_layout.tbl"
    with _data_file(fname).open("r") as fh:
        d = np.loadtxt(fh, delimiter=",", skiprows=1)
    if d.shape != (4 * N_READOUT_CHANNELS, 4):
        raise InputError(fname, f"expected 256 rows of EW,NS,CCD,Quad, got shape {d.shape}")
    ccd, quad = d[:, 2].astype(int), d[:, 3].astype(int)
    out = np.empty((N_READOUT_CHANNELS, 4, 2))
    for r in range(N_READOUT_CHANNELS):
        sel = quad == r
        pts = d[sel, :2]
        if len(pts) != 4 or np.any(ccd[sel] != r // QUADRANTS_PER_CCD + 1):
            raise InputError(fname, f"rcid {r} does not have 4 corners on CCD {r // 4 + 1}")
        east = pts[:, 0] > pts[:, 0].mean()
        north = pts[:, 1] > pts[:, 1].mean()
        # Pixel (1, 1) is the NE corner (+x west, +y south), so the pixel-order corners
        # (lo, lo), (hi, lo), (hi, hi), (lo, hi) are NE, NW, SW, SE.
        for k, (e, n) in enumerate(((True, True), (False, True), (False, False), (True, False))):
            hit = np.flatnonzero((east == e) & (north == n))
            if len(hit) != 1:
                raise InputError(fname, f"rcid {r}: corners are not a rectangle")
            out[r, k] = pts[hit[0]]
    logger.debug("loaded focal-plane layout %s", fname)
    out.setflags(write=False)
    return out


def focal_plane_layout() -> Table:
    """The focal-plane positions of all 64 readout quadrants.

    Returns
    -------
    `~astropy.table.Table`
        64 rows ordered by rcid: rcid, ccdid, qid, ew_center, ns_center [deg] and ew, ns [deg], the
        four corners in pixel-corner order (NE, NW, SW, SE, i.e. pixels (0.5, 0.5), (3072.5, 0.5),
        (3072.5, 3080.5), (0.5, 3080.5)). EW is positive towards east, NS towards north, in the
        tangent plane of the field centre.
    """
    c = _quadrant_corner_array()
    r = np.arange(N_READOUT_CHANNELS)
    t = Table(
        {
            "rcid": r,
            "ccdid": r // QUADRANTS_PER_CCD + 1,
            "qid": r % QUADRANTS_PER_CCD + 1,
            "ew_center": c[:, :, 0].mean(axis=1),
            "ns_center": c[:, :, 1].mean(axis=1),
            "ew": c[:, :, 0].copy(),
            "ns": c[:, :, 1].copy(),
        }
    )
    for name in ("ew_center", "ns_center", "ew", "ns"):
        t[name].unit = u.deg
    return t


def quadrant_corners(ccdid, qid) -> u.Quantity:
    """Focal-plane corners of a readout quadrant.

    Parameters
    ----------
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.

    Returns
    -------
    `~astropy.units.Quantity`
        Shape (4, 2) [deg]: (EW, NS) of the NE, NW, SW and SE corners (the corners of pixels
        (1, 1), (3072, 1), (3072, 3080), (1, 3080)); EW positive east, NS positive north.
    """
    return _quadrant_corner_array()[rcid(ccdid, qid)].copy() * u.deg


def ccd_corners(ccdid) -> u.Quantity:
    """Focal-plane corners of a whole CCD (the outer corners of its four quadrants).

    Derived from the quadrant layout (q1 is the NE quadrant of every CCD, q2 NW, q3 SW, q4 SE)
    because the ztffields CCD table uses the opposite EW sign.

    Parameters
    ----------
    ccdid : int
        CCD id, 1-16.

    Returns
    -------
    `~astropy.units.Quantity`
        Shape (4, 2) [deg]: (EW, NS) of the NE, NW, SW and SE corners.
    """
    c = _as_int("ccdid", ccdid, 1, N_CCDS)
    q = _quadrant_corner_array()[QUADRANTS_PER_CCD * (c - 1) : QUADRANTS_PER_CCD * c]
    # quadrant k (qid k+1) contributes its own outer corner k: q1 NE, q2 NW, q3 SW, q4 SE
    return np.array([q[k, k] for k in range(4)]) * u.deg


def ccd_gaps() -> tuple[u.Quantity, u.Quantity]:
    """Mean gaps between adjacent CCDs, computed from the quadrant layout.

    CCDs 1-4 form the southern row (CCD 1 easternmost), 13-16 the northern row.

    Returns
    -------
    ew_gap, ns_gap : `~astropy.units.Quantity`
        Mean east-west gap between neighbouring CCD columns and north-south gap between neighbouring
        CCD rows [deg] (about 0.13 and 0.18 deg).
    """
    corners = np.array([ccd_corners(c).to_value(u.deg) for c in CCDIDS]).reshape(4, 4, 4, 2)  # row, col
    # west edge (NW, SW corners) of column k minus east edge (NE, SE) of column k + 1
    ew = corners[:, :-1, [1, 2], 0] - corners[:, 1:, [0, 3], 0]
    # south edge (SW, SE) of row k + 1 minus north edge (NW, NE) of row k
    ns = corners[1:, :, [2, 3], 1] - corners[:-1, :, [1, 0], 1]
    return float(ew.mean()) * u.deg, float(ns.mean()) * u.deg


def _polygon_area(xy: np.ndarray) -> np.ndarray:
    x, y = xy[..., 0], xy[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - y * np.roll(x, -1, axis=-1), axis=-1))


def active_area() -> u.Quantity:
    """Total light-sensitive area of the 64 quadrants in the focal-plane layout.

    Returns
    -------
    `~astropy.units.Quantity`
        About 47.7 deg^2 (the quoted ZTF field of view is 47 deg^2).
    """
    return float(_polygon_area(_quadrant_corner_array()).sum()) * u.deg**2


# ---- tangent-plane arithmetic (degrees in, degrees out, vectorised) --------------------------------


def tangent_project(ra, dec, ra0, dec0):
    """Gnomonic projection of (ra, dec) about (ra0, dec0); returns (xi east, eta north) [deg]."""
    ra, dec, ra0, dec0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    cdec, sdec, cd0, sd0 = np.cos(dec), np.sin(dec), np.cos(dec0), np.sin(dec0)
    cdra = np.cos(ra - ra0)
    cosc = sd0 * sdec + cd0 * cdec * cdra
    xi = cdec * np.sin(ra - ra0) / cosc
    eta = (cd0 * sdec - sd0 * cdec * cdra) / cosc
    return np.degrees(xi), np.degrees(eta)


def tangent_deproject(xi, eta, ra0, dec0):
    """Inverse of `tangent_project`; returns (ra in [0, 360), dec) [deg]."""
    xi, eta, ra0, dec0 = (np.radians(v) for v in (xi, eta, ra0, dec0))
    cd0, sd0 = np.cos(dec0), np.sin(dec0)
    den = cd0 - eta * sd0
    ra = ra0 + np.arctan2(xi, den)
    dec = np.arctan2(sd0 + eta * cd0, np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def rotate_focal_plane(ew, ns, theta_deg):
    """Rotate focal-plane vectors by theta (position angle, from north through east)."""
    t = np.radians(theta_deg)
    c, s = np.cos(t), np.sin(t)
    return ew * c + ns * s, -ew * s + ns * c


def _quadrant_frames(field_ra, field_dec, rc, rotation_deg):
    """Nominal TAN frame of quadrant(s) ``rc`` for field centre(s); vectorised over all inputs.

    Returns crval_ra, crval_dec [deg] and the CD matrix [deg/px] with shape (..., 2, 2). CRVAL is the
    layout centre of the quadrant, rotated by ``rotation`` about the field centre and deprojected.
    +y points along the (rotated) field-plane -NS direction as seen in the quadrant's own tangent
    plane, which includes the convergence of meridians (1.6 deg for c13 q3 of field 655; the real
    header has 1.57 deg); +x is perpendicular to it, towards -EW. The CD matrix is a pure rotation
    times PIXEL_SCALE, without skew, like IPAC's: a gnomonic field plane would shear an off-axis
    quadrant by up to 0.1 deg, which the real solution does not show.
    """
    corners = _quadrant_corner_array()[rc]
    ewc, nsc = rotate_focal_plane(corners[..., 0].mean(axis=-1), corners[..., 1].mean(axis=-1), rotation_deg)
    crval_ra, crval_dec = tangent_deproject(ewc, nsc, field_ra, field_dec)
    scale = PIXEL_SCALE.to_value(u.deg / u.pix)
    # direction of -NS (rotated) at the quadrant centre, by central differences; the map field plane
    # -> sky -> quadrant plane is projective, so h = 1e-3 deg is ample
    h = 1e-3
    dew, dns = rotate_focal_plane(0.0, -1.0, rotation_deg)
    ends = []
    for sgn in (1.0, -1.0):
        ra, dec = tangent_deproject(ewc + sgn * h * dew, nsc + sgn * h * dns, field_ra, field_dec)
        ends.append(np.stack(tangent_project(ra, dec, crval_ra, crval_dec), axis=-1))
    uy = ends[0] - ends[1]
    uy = uy / np.linalg.norm(uy, axis=-1, keepdims=True)
    ux = np.stack([uy[..., 1], -uy[..., 0]], axis=-1)  # uy turned 90 deg clockwise: (0,-1) -> (-1,0)
    cd = scale * np.stack([ux, uy], axis=-1)  # cd[..., i, j]: d(world_i)/d(pixel_j)
    return crval_ra, crval_dec, cd


def _center_radec(field_or_center) -> tuple[float, float]:
    if isinstance(field_or_center, SkyCoord):
        if not field_or_center.isscalar:
            raise ConfigError("field_or_center must be a single field id or a scalar SkyCoord")
        c = field_or_center.icrs
        return float(c.ra.deg), float(c.dec.deg)
    c = field_center(field_or_center)
    if not c.isscalar:
        raise ConfigError("field_or_center must be a single field id or a scalar SkyCoord")
    return float(c.ra.deg), float(c.dec.deg)


def _rotation_deg(rotation) -> float:
    if isinstance(rotation, u.Quantity) and rotation.isscalar and rotation.unit.is_equivalent(u.deg):
        return float(rotation.to_value(u.deg))
    raise ConfigError(f"rotation must be a scalar angle Quantity (e.g. 0.1 * u.deg), got {rotation!r}")


def nominal_wcs(field_or_center, ccdid, qid, *, rotation=0 * u.deg) -> WCS:
    """Nominal ("pointing prior") TAN WCS of a science quadrant.

    The equivalent of ZTF's wcs.cfg prior: where a quadrant lands on the sky if the telescope points
    exactly at the field centre. The astrometry stage starts from it and the simulator perturbs it.
    Distortion and the per-exposure pointing offset are ignored: expect errors of a few arcminutes
    (2.1' for c13 q3 of a real exposure of field 655, nearly all of it a pointing offset).

    Parameters
    ----------
    field_or_center : int or `~astropy.coordinates.SkyCoord`
        ZTF field id (its grid centre is used) or the pointing centre.
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.
    rotation : `~astropy.units.Quantity`, optional
        Rotation of the focal plane about the pointing centre, as a position angle (from north
        through east) [angle]. Both the quadrant's position and its pixel axes rotate.

    Returns
    -------
    `~astropy.wcs.WCS`
        RA---TAN/DEC--TAN, ICRS; CRPIX (1536.5, 1540.5) the quadrant centre; CRVAL the quadrant centre
        on the sky (gnomonic deprojection of the layout centre about the pointing centre); CD with
        1.012"/px, +x towards west and +y towards south along the field's axes. ``pixel_shape`` is
        (3072, 3080).
    """
    ra0, dec0 = _center_radec(field_or_center)
    r = rcid(ccdid, qid)
    cra, cdec, cd = _quadrant_frames(ra0, dec0, r, _rotation_deg(rotation))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.crpix = list(QUADRANT_CENTER)
    w.wcs.crval = [float(cra), float(cdec)]
    w.wcs.cd = cd
    w.pixel_shape = (QUADRANT_NAXIS1, QUADRANT_NAXIS2)
    w.wcs.set()
    return w


def quadrant_footprint(field_or_center, ccdid, qid, *, rotation=0 * u.deg) -> SkyCoord:
    """Sky positions of the four corners of a quadrant for a pointing.

    Parameters
    ----------
    field_or_center : int or `~astropy.coordinates.SkyCoord`
        ZTF field id or pointing centre.
    ccdid : int
        CCD id, 1-16.
    qid : int
        Quadrant id, 1-4.
    rotation : `~astropy.units.Quantity`, optional
        Focal-plane rotation about the pointing centre (position angle) [angle].

    Returns
    -------
    `~astropy.coordinates.SkyCoord`
        Four ICRS corners in pixel-corner order (NE, NW, SW, SE): the outer corners of pixels (1, 1),
        (3072, 1), (3072, 3080), (1, 3080) under `nominal_wcs`. (The layout polygon of
        `quadrant_corners` is a 0.863 deg square and lies up to ~15" inside these corners: the real
        quadrant is 3072 x 3080 px of 1.012".)
    """
    ra0, dec0 = _center_radec(field_or_center)
    x = np.array([0.5, QUADRANT_NAXIS1 + 0.5, QUADRANT_NAXIS1 + 0.5, 0.5])
    y = np.array([0.5, 0.5, QUADRANT_NAXIS2 + 0.5, QUADRANT_NAXIS2 + 0.5])
    ra, dec = _pixel_to_sky(x, y, ra0, dec0, rcid(ccdid, qid), _rotation_deg(rotation))
    return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")


@functools.lru_cache(maxsize=1)
def _quadrant_cells():
    """The quadrants as an 8 x 8 grid: column/row boundaries [deg] and the rcid of each cell."""
    centres = _quadrant_corner_array().mean(axis=1)  # (64, 2)
    bounds, index = [], []
    for axis in (0, 1):
        order = np.argsort(centres[:, axis])
        groups = order.reshape(8, 8)  # 8 columns (rows) of 8 quadrants each
        means = centres[groups, axis].mean(axis=1)
        bounds.append(0.5 * (means[1:] + means[:-1]))
        idx = np.empty(N_READOUT_CHANNELS, dtype=np.int64)
        for k, g in enumerate(groups):
            idx[g] = k
        index.append(idx)
    cells = np.full((8, 8), -1, dtype=np.int64)
    cells[index[1], index[0]] = np.arange(N_READOUT_CHANNELS)
    if np.any(cells < 0):
        raise InputError("ztf_ccd_quad_layout.tbl", "the quadrants do not form an 8 x 8 grid")
    return bounds[0], bounds[1], cells


def _sky_to_pixel(ra, dec, field_ra, field_dec, rc, rotation_deg):
    """FITS pixel coordinates of (ra, dec) in the nominal WCS of quadrant(s) ``rc``; vectorised."""
    cra, cdec, cd = _quadrant_frames(field_ra, field_dec, rc, rotation_deg)
    xi, eta = tangent_project(ra, dec, cra, cdec)
    det = cd[..., 0, 0] * cd[..., 1, 1] - cd[..., 0, 1] * cd[..., 1, 0]
    dx = (cd[..., 1, 1] * xi - cd[..., 0, 1] * eta) / det
    dy = (cd[..., 0, 0] * eta - cd[..., 1, 0] * xi) / det
    return QUADRANT_CENTER[0] + dx, QUADRANT_CENTER[1] + dy


def _pixel_to_sky(x, y, field_ra, field_dec, rc, rotation_deg):
    """Inverse of `_sky_to_pixel`: (ra, dec) [deg] of FITS pixel coordinates; vectorised."""
    cra, cdec, cd = _quadrant_frames(field_ra, field_dec, rc, rotation_deg)
    dx, dy = np.asarray(x) - QUADRANT_CENTER[0], np.asarray(y) - QUADRANT_CENTER[1]
    xi = cd[..., 0, 0] * dx + cd[..., 0, 1] * dy
    eta = cd[..., 1, 0] * dx + cd[..., 1, 1] * dy
    return tangent_deproject(xi, eta, cra, cdec)


def _in_array(x, y):
    return (x >= 0.5) & (x <= QUADRANT_NAXIS1 + 0.5) & (y >= 0.5) & (y <= QUADRANT_NAXIS2 + 0.5)


def _assign_quadrants(ra, dec, field_ra, field_dec, ew, ns, rotation_deg):
    """Quadrant and pixel of (position, field) pairs; vectorised.

    ``ew``, ``ns`` are the positions in the (un-rotated) focal plane of each pair's field [deg]. Each
    pair is binned into the 8 x 8 grid of quadrants and accepted if the nominal WCS of that quadrant
    puts it on the pixel array; pairs that fail (CCD gaps, or binned across a quadrant edge) are tried
    against the neighbouring cells. Returns rcid (-1 where none), x, y (NaN where none).
    """
    colb, rowb, cells = _quadrant_cells()
    corners = _quadrant_corner_array()
    n = len(ew)
    out = np.full(n, -1, dtype=np.int64)
    x_out, y_out = np.full(n, np.nan), np.full(n, np.nan)
    margin = 0.05  # deg; the nominal arrays reach ~0.005 deg beyond the layout squares
    todo = np.flatnonzero(
        (ew >= corners[..., 0].min() - margin) & (ew <= corners[..., 0].max() + margin)
        & (ns >= corners[..., 1].min() - margin) & (ns <= corners[..., 1].max() + margin)
    )
    col, row = np.searchsorted(colb, ew[todo]), np.searchsorted(rowb, ns[todo])
    for dc, dr in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        c, r = col + dc, row + dr
        ok = np.flatnonzero((c >= 0) & (c < 8) & (r >= 0) & (r < 8))
        idx = todo[ok]
        cand = cells[r[ok], c[ok]]
        x, y = _sky_to_pixel(ra[idx], dec[idx], field_ra[idx], field_dec[idx], cand, rotation_deg)
        hit = _in_array(x, y)
        out[idx[hit]], x_out[idx[hit]], y_out[idx[hit]] = cand[hit], x[hit], y[hit]
        keep = np.ones(len(todo), dtype=bool)
        keep[ok[hit]] = False
        todo, col, row = todo[keep], col[keep], row[keep]
        if not len(todo):
            break
    return out, x_out, y_out


def _parse_positions(ra, dec):
    if isinstance(ra, SkyCoord):
        if dec is not None:
            raise ConfigError("give either a SkyCoord or ra and dec, not both")
        c = ra.icrs
        return np.atleast_1d(c.ra.deg).ravel(), np.atleast_1d(c.dec.deg).ravel()
    if dec is None:
        raise ConfigError("dec is required when ra is not a SkyCoord")
    try:
        r = np.atleast_1d(u.Quantity(ra, u.deg).value).astype(float).ravel()
        d = np.atleast_1d(u.Quantity(dec, u.deg).value).astype(float).ravel()
    except (u.UnitsError, TypeError, ValueError):
        raise ConfigError(f"ra and dec must be angles or numbers in degrees, got {ra!r}, {dec!r}") from None
    r, d = np.broadcast_arrays(r, d)
    if not np.all(np.isfinite(r) & np.isfinite(d)) or np.any(np.abs(d) > 90.0):
        raise ConfigError("ra/dec must be finite with |dec| <= 90 deg")
    return r % 360.0, d


def locate(ra, dec=None, *, fields=None, grid=1, rotation=0 * u.deg) -> Table:
    """Find the field, CCD, quadrant and pixel of sky positions under nominal pointings.

    Candidate fields are those whose centre lies within 5.5 deg of a position. The position is then
    projected into each candidate's tangent plane, binned into the 8 x 8 grid of quadrants of the
    layout, and accepted where that quadrant's `nominal_wcs` puts it on the pixel array
    (0.5 <= x <= 3072.5, 0.5 <= y <= 3080.5); in CCD gaps the neighbouring quadrants are tried.
    Positions in gaps or outside every candidate field give no row; a position covered by several
    fields gives one row per field (at most one quadrant per field: where the nominal arrays of two
    quadrants of one CCD overlap, by up to ~15" along their shared edge, the quadrant whose layout
    cell holds the position wins).

    Parameters
    ----------
    ra : `~astropy.coordinates.SkyCoord` or float or array-like or `~astropy.units.Quantity`
        Positions (a SkyCoord, then ``dec`` is omitted) or right ascensions [deg].
    dec : float or array-like or `~astropy.units.Quantity`, optional
        Declinations [deg].
    fields : int or array-like of int, optional
        Restrict the search to these field ids (overrides ``grid``).
    grid : int or sequence of int or None, optional
        Field grid(s) to search: 1 primary (default), 2 secondary, 3, 4; None for all grids.
    rotation : `~astropy.units.Quantity`, optional
        Focal-plane rotation about the pointing centre (position angle) [angle].

    Returns
    -------
    `~astropy.table.Table`
        Columns: index (row of the input position), ra, dec [deg], field, ccdid, qid, rcid,
        x, y (FITS 1-based pixel coordinates [pix]); sorted by index then field.
    """
    pra, pdec = _parse_positions(ra, dec)
    rot = _rotation_deg(rotation)
    grid_table = _field_grid_table()
    if fields is not None:
        ids = np.atleast_1d(np.asarray(fields)).ravel()
        rows = _field_rows(ids)
    elif grid is None:
        rows = np.arange(len(grid_table))
    else:
        g = _as_int("grid", np.atleast_1d(grid), 1, 4)
        rows = np.flatnonzero(np.isin(np.asarray(grid_table["grid"]), g))

    fra = np.asarray(grid_table["ra"])[rows]
    fdec = np.asarray(grid_table["dec"])[rows]
    fid = np.asarray(grid_table["field"])[rows]

    names = ("index", "ra", "dec", "field", "ccdid", "qid", "rcid", "x", "y")
    dtypes = (np.int64, float, float, np.int32, np.int16, np.int16, np.int16, float, float)
    if len(pra) and len(rows):
        pts = SkyCoord(pra * u.deg, pdec * u.deg, frame="icrs")
        cen = SkyCoord(fra * u.deg, fdec * u.deg, frame="icrs")
        ip, jf, _, _ = search_around_sky(pts, cen, _FIELD_SEARCH_RADIUS)
    else:
        ip = jf = np.zeros(0, dtype=np.int64)

    xi, eta = tangent_project(pra[ip], pdec[ip], fra[jf], fdec[jf])
    ew, ns = rotate_focal_plane(xi, eta, -rot)
    rc, x, y = _assign_quadrants(pra[ip], pdec[ip], fra[jf], fdec[jf], ew, ns, rot)
    keep = rc >= 0
    ip, jf, rc, x, y = ip[keep], jf[keep], rc[keep], x[keep], y[keep]

    order = np.lexsort((fid[jf], ip))
    cols = (ip, pra[ip], pdec[ip], fid[jf], rc // 4 + 1, rc % 4 + 1, rc, x, y)
    t = Table([np.asarray(c)[order].astype(dt) for c, dt in zip(cols, dtypes)], names=names)
    t["ra"].unit = t["dec"].unit = u.deg
    t["x"].unit = t["y"].unit = u.pix
    return t


# --------------------------------------------------------------------------------------------------
# Field grid
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _field_grid_table() -> Table:
    main = "ZTF_Fields_grids1-4.txt"
    extra = "ztf_fields_880_881.csv"
    with _data_file(main).open("r") as fh:
        a = np.loadtxt(fh, comments="%", usecols=range(8))
    with _data_file(extra).open("r") as fh:
        b = np.loadtxt(fh, delimiter=",", skiprows=1, usecols=range(8))
    d = np.concatenate([a, np.atleast_2d(b)])
    d = d[np.argsort(d[:, 0], kind="stable")]
    field = d[:, 0].astype(np.int32)
    if len(np.unique(field)) != len(field):
        raise InputError(main, "duplicate field ids in the field grid")
    # The files' galactic coordinates were computed as if the J2000 centres were FK4 B1950 (checked:
    # they agree with that to 3e-4 deg and are off by up to 0.6 deg otherwise), so recompute them.
    # The ecliptic ones agree with the J2000 barycentric mean ecliptic to 5e-4 deg and are kept.
    gal = SkyCoord(d[:, 1] * u.deg, d[:, 2] * u.deg, frame="icrs").galactic
    t = Table(
        {
            "field": field,
            "ra": d[:, 1],
            "dec": d[:, 2],
            "ebv": d[:, 3],
            "gal_l": gal.l.deg,
            "gal_b": gal.b.deg,
            "ecl_l": d[:, 6],
            "ecl_b": d[:, 7],
            "grid": (field // 1000 + 1).astype(np.int8),
        }
    )
    for name in ("ra", "dec", "gal_l", "gal_b", "ecl_l", "ecl_b"):
        t[name].unit = u.deg
    t["ebv"].unit = u.mag
    t.meta["source"] = f"{main} + {extra}"
    logger.debug("loaded ZTF field grid: %d fields", len(t))
    return t


def _field_rows(field) -> np.ndarray:
    """Row numbers in the field grid of field id(s); raises for unknown ids."""
    t = _field_grid_table()
    ids = np.asarray(t["field"])
    f = np.atleast_1d(np.asarray(field))
    if f.dtype == bool or not (np.issubdtype(f.dtype, np.integer) or np.issubdtype(f.dtype, np.floating)):
        raise ConfigError(f"field ids must be integers, got {field!r}")
    fi = f.astype(np.int64)
    pos = np.clip(np.searchsorted(ids, fi), 0, len(ids) - 1)
    bad = (ids[pos] != fi) | (fi != f)
    if np.any(bad):
        raise ConfigError(
            f"unknown ZTF field id(s) {np.unique(f[bad])[:10].tolist()}: the grid has fields "
            "1-881 (primary), 1001-1895 (secondary), 2001-2877 and 3001-3893"
        )
    return pos


def field_grid() -> Table:
    """The ZTF field grid: every field centre of the four grids.

    Returns
    -------
    `~astropy.table.Table`
        3546 rows sorted by field: field, ra, dec [deg, ICRS], ebv [mag], gal_l, gal_b, ecl_l,
        ecl_b [deg], grid (1 primary: fields 1-881; 2 secondary: 1001-1895; 3: 2001-2877;
        4: 3001-3893). Galactic coordinates are recomputed from ra/dec (the source file's are
        wrong by up to 0.6 deg); ecliptic ones are the source's (J2000 mean ecliptic).
    """
    return _field_grid_table().copy()


def field_center(field) -> SkyCoord:
    """Pointing centre of ZTF field(s).

    Parameters
    ----------
    field : int or array-like of int
        Field id(s).

    Returns
    -------
    `~astropy.coordinates.SkyCoord`
        ICRS centre(s) (scalar for a scalar field id).

    Raises
    ------
    ztfsds.errors.ConfigError
        (a `ValueError`) naming any unknown field id.

    Examples
    --------
    >>> c = field_center(655)
    >>> print(f"{c.ra.deg:.5f} {c.dec.deg:.2f}")
    55.06078 33.35
    """
    rows = _field_rows(field)
    t = _field_grid_table()
    ra = np.asarray(t["ra"])[rows]
    dec = np.asarray(t["dec"])[rows]
    if np.ndim(field) == 0:
        ra, dec = ra[0], dec[0]
    else:
        ra, dec = ra.reshape(np.shape(field)), dec.reshape(np.shape(field))
    return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")


def fields_in_grid(grid) -> np.ndarray:
    """Field ids of one grid.

    Parameters
    ----------
    grid : int
        1 (primary, 881 fields), 2 (secondary, 895), 3 (877) or 4 (893).

    Returns
    -------
    `numpy.ndarray`
        Sorted int32 field ids.
    """
    g = _as_scalar_int("grid", grid, 1, 4)
    t = _field_grid_table()
    return np.asarray(t["field"])[np.asarray(t["grid"]) == g].copy()


# --------------------------------------------------------------------------------------------------
# Amplifier geometry
# --------------------------------------------------------------------------------------------------


def amp_corner(qid: int, shape: tuple[int, int] = QUADRANT_SHAPE) -> tuple[int, int]:
    """Array index ``(row, col)`` of the pixel next to a quadrant's amplifier (science orientation).

    Parameters
    ----------
    qid : int
        Quadrant id, 1-4.
    shape : tuple of int, optional
        Quadrant shape ``(ny, nx)``.

    Returns
    -------
    tuple of int
        ``(0, 0)`` for q1, ``(0, nx - 1)`` for q2, ``(ny - 1, nx - 1)`` for q3, ``(ny - 1, 0)`` for q4.

    Examples
    --------
    >>> amp_corner(3, (256, 256))
    (255, 255)
    """
    ny, nx = shape
    top = qid in (1, 2)
    left = qid in (1, 4)
    if qid not in QIDS:
        raise ConfigError(f"qid must be 1-4, got {qid!r}")
    return (0 if top else ny - 1, 0 if left else nx - 1)


def crosstalk_mirror(image: np.ndarray, source_qid: int, victim_qid: int) -> np.ndarray:
    """Map an image of quadrant ``source_qid`` to where its crosstalk lands in ``victim_qid``.

    Pixels at the same readout position (distance in rows and columns from each amplifier) are
    coupled, so the map flips rows when the two amplifiers sit on different rows of the CCD and
    columns when they sit on different columns.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image of the source quadrant, science orientation.
    source_qid, victim_qid : int
        Quadrant ids, 1-4.

    Returns
    -------
    numpy.ndarray
        A view of ``image``, flipped as needed.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(4).reshape(2, 2)
    >>> crosstalk_mirror(a, 1, 2).tolist()
    [[1, 0], [3, 2]]
    """
    rs, cs = amp_corner(source_qid, image.shape)
    rv, cv = amp_corner(victim_qid, image.shape)
    return image[:: -1 if rs != rv else 1, :: -1 if cs != cv else 1]
