"""Observing conditions and the night schedule of the simulated survey.

`make_schedule` plans the exposures of a set of ZTF fields on a night at Palomar, and optionally on
earlier nights so that reference images can be built; every `Exposure` carries the true conditions
the image simulator renders and the pipeline must recover (seeing, airmass, sky, transparency, zero
point, pointing offset, rotation). Everything is deterministic given the seed, and each night draws
from its own random stream (seeded by ``(seed, nid)``), so adding history nights does not change the
conditions of the main night.

The model
---------
* **Site and time.** Palomar (lat 33.3573 deg, lon -116.8598 deg; header values). Hour angles use the
  Greenwich apparent sidereal time (IAU 2006/2000A, UT1 taken as UTC) and the field positions
  precessed to the equator of date (ERFA); the Sun and the Moon come from ERFA's ``epv00`` and
  ``moon98`` (the Moon topocentric). Airmass is Kasten & Young (1989); refraction is ignored. The
  night is the UT date (ZTF's ``nid``); it runs between the evening and morning nautical twilights
  (Sun at -12 deg [MEM: ZTF observes from nautical twilight]), e.g. UT 02:40-12:40 in late
  September.
* **Schedule.** Each field gets ``nexp_per_field`` visits per filter, cycling through ``filters``,
  placed at evenly spaced fractions (jittered) of the interval in which the field is above airmass
  2.5; exposures are 30 s, separated by 15 s of overhead (readout and slew) and 90 s more for a filter
  change (ztf_sim). Exposures that would end above airmass 2.5 or in twilight are dropped.
  History nights are spaced by 2 or 3 days (random) before ``night``, with
  ``history_epochs_per_night`` visits per field and filter.
* **Weather** (per night; ``weather="variable"``): 65 % clear (transparency 1), 25 % thin cirrus
  (transparency N(0.85, 0.08) per exposure, clipped to 0.5-1), 10 % cloudy (N(0.45, 0.2), clipped to
  0.05-0.9). ``weather="clear"`` makes every night clear.
* **Seeing** (FWHM at zenith, arcsec): a night median drawn log-normal around 2.0" (sigma 0.15 in
  ln), times a per-exposure log-normal factor (sigma 0.08), times the filter's median delivered
  FWHM / 2.0 (2.1/2.0 in g and i; Bellm et al. 2019), clipped to 1.5-3.5". The delivered FWHM
  scales further as ``airmass**0.6`` (`ztfsds.sim.optics.psf_params`).
* **Sky** [mag/arcsec^2] at the pointing: the dark zenith sky of the filter (g 22.01, r 21.15,
  i 19.89; Bellm et al. 2019) brightened with airmass as ``X * 10**(-0.4 k (X - 1))`` (Krisciunas &
  Schaefer 1991, KS91), plus moonlight from the KS91 model (their scattering function, lunar
  brightness against phase and extinction terms, evaluated with the filter's extinction coefficient
  and converted from V with solar colours g - V = +0.30, r - V = -0.16, i - V = -0.28), plus twilight
  ``(10**(0.26 (h + 18)) - 1)`` times the dark sky for a Sun altitude h > -18 deg (35x at -12 deg).
  Clouds do not change ``sky_mag``: it is the sky as calibrated with the exposure's own ``zp``
  (sky DN per arcsec^2 ``= 10**(-0.4 (sky_mag - zp))``), so the sky dims with the stars.
  ``sky_gradient`` = the fractional change of that sky across a quadrant (0.87 deg) towards +x
  (west) and +y (south), from the same model evaluated 0.435 deg either side of the pointing.
* **Zero point** (true MAGZP of the 30 s exposure, counts in DN)::

      zp = ZP0[filter] - extinction[filter] * (airmass - 1) + 2.5 log10(transparency)

  with ZP0 = 26.20 (zg), 26.30 (zr), 25.75 (zi) (typical per-image MAGZP of real quadrants,
  ZTF_REFERENCE section 1, taken as the airmass-1 value) and extinction = 0.18, 0.10, 0.06 mag per
  airmass (typical Palomar values).
* **Pointing** offsets ``(dRA cos Dec, dDec)`` [arcsec]: Rayleigh-distributed length with
  sigma 12" (median 14", 95 % below 30"), capped at 60", random direction; rotation N(0, 0.03) deg
  clipped to +-0.1 deg.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import asdict, dataclass, fields as _dc_fields

import astropy.units as u
import erfa
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ..camera import FILTERS, field_center, get_filter
from ..errors import ConfigError
from ..products import expid as _expid
from ..products import filefracday as _filefracday
from ..products import nid as _nid

__all__ = [
    "PALOMAR_LATITUDE",
    "PALOMAR_LONGITUDE",
    "EXPTIME",
    "OVERHEAD",
    "FILTER_CHANGE_TIME",
    "MAX_AIRMASS",
    "TWILIGHT_SUN_ALTITUDE",
    "NOMINAL_MAGZP",
    "EXTINCTION",
    "Exposure",
    "make_schedule",
    "schedule_table",
    "airmass",
    "sun_moon",
    "sky_brightness",
    "zero_point",
]

logger = logging.getLogger(__name__)

#: Site latitude [deg] (real sciimg header).
PALOMAR_LATITUDE = 33.3573
#: Site longitude [deg, east positive].
PALOMAR_LONGITUDE = -116.8598
_EARTH_RADIUS_AU = 6378.137 / 1.495978707e8
#: Exposure time [s].
EXPTIME = 30.0
#: Time between the end of one exposure and the start of the next (readout, slew) [s].
OVERHEAD = 15.0
#: Extra time for a filter change [s] (ztf_sim).
FILTER_CHANGE_TIME = 90.0
#: Largest airmass observed (ztf_sim).
MAX_AIRMASS = 2.5
#: Sun altitude that starts and ends the night [deg].
TWILIGHT_SUN_ALTITUDE = -12.0
#: Zero point at airmass 1 (counts in DN, 30 s) per filter.
NOMINAL_MAGZP = {"zg": 26.20, "zr": 26.30, "zi": 25.75}
#: Atmospheric extinction [mag per airmass] per filter (typical Palomar values).
EXTINCTION = {"zg": 0.18, "zr": 0.10, "zi": 0.06}

# solar colours (filter - V) used to turn the KS91 V-band moonlight into each filter
_MOON_COLOUR = {"zg": 0.30, "zr": -0.16, "zi": -0.28}
_SEEING_MEDIAN = 2.0
_SEEING_NIGHT_SIGMA = 0.15
_SEEING_EXP_SIGMA = 0.08
_SEEING_RANGE = (1.5, 3.5)
_POINTING_SIGMA = 12.0
_POINTING_MAX = 60.0
_ROTATION_SIGMA = 0.03
_ROTATION_MAX = 0.1
_TT_MINUS_UTC = 69.184 / 86400.0  # TAI - UTC = 37 s since 2017; a second either way changes nothing here
_J2000 = 2451545.0
_GRID_STEP = 5.0 / 1440.0  # 5 min
_QUADRANT_HALF = 0.435  # deg, half a quadrant


# --------------------------------------------------------------------------------------------------
# Positional astronomy (vectorised; ERFA)
# --------------------------------------------------------------------------------------------------


def _unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _frame(jd):
    """NPB matrices (n, 3, 3) and local apparent sidereal time [rad] (n,) at UTC JDs.

    Precession-nutation (IAU 2006/2000A) and the equation of the equinoxes change by well under an
    arcsecond in a day, so they are evaluated once per UT day; the sidereal time (GMST 2006, UT1
    taken as UTC) at every instant.
    """
    jd = np.atleast_1d(np.asarray(jd, dtype=float))
    d = jd - _J2000
    tt = d + _TT_MINUS_UTC
    days, inv = np.unique(np.floor(jd + 0.5), return_inverse=True)
    tt_days = days - _J2000 + _TT_MINUS_UTC
    npb = erfa.pnm06a(_J2000, tt_days)[inv]
    ee = erfa.ee06a(_J2000, tt_days)[inv]
    gast = erfa.gmst06(_J2000, d, _J2000, tt) + ee
    return npb, gast + math.radians(PALOMAR_LONGITUDE)


def _altitude(vec_date, lst):
    """Altitude [deg] of direction(s) in the true-of-date frame; broadcast over time axis 0."""
    ha = lst - np.arctan2(vec_date[..., 1], vec_date[..., 0])
    dec = np.arcsin(np.clip(vec_date[..., 2] / np.linalg.norm(vec_date, axis=-1), -1, 1))
    lat = math.radians(PALOMAR_LATITUDE)
    s = math.sin(lat) * np.sin(dec) + math.cos(lat) * np.cos(dec) * np.cos(ha)
    return np.degrees(np.arcsin(np.clip(s, -1, 1)))


def _observer(lst):
    """Geocentric position of the observer in the true-of-date frame [au] (spherical Earth)."""
    lat = math.radians(PALOMAR_LATITUDE)
    return _EARTH_RADIUS_AU * np.stack(
        [math.cos(lat) * np.cos(lst), math.cos(lat) * np.sin(lst), np.full_like(lst, math.sin(lat))], axis=-1
    )


def _airmass_from_alt(alt_deg):
    """Kasten & Young (1989) airmass, at least 1 (the formula gives 0.9999 at the zenith); inf below the
    horizon."""
    h = np.asarray(alt_deg, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = 1.0 / (np.sin(np.radians(h)) + 0.50572 * np.maximum(h + 6.07995, 1e-9) ** -1.6364)
    return np.where(h > 0, np.maximum(x, 1.0), np.inf)


def airmass(ra, dec, jd):
    """Airmass at Palomar of positions at times.

    Parameters
    ----------
    ra, dec : float or array-like
        ICRS coordinates [deg].
    jd : float or array-like
        UTC Julian dates; broadcast against ``ra``/``dec``.

    Returns
    -------
    `numpy.ndarray`
        Kasten & Young (1989) airmass (``inf`` below the horizon).

    Examples
    --------
    >>> print(f"{float(airmass(55.06, 33.35, 2459116.9317708)):.3f}")
    1.018
    """
    ra, dec, jd = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (ra, dec, jd)))
    return _airmass_from_alt(_altitudes(ra.ravel(), dec.ravel(), jd.ravel())).reshape(ra.shape)


def _altitudes(ra, dec, jd):
    """Altitudes [deg] of 1-d arrays of positions at times (the frame computed once per time)."""
    times, inv = np.unique(jd, return_inverse=True)
    npb, lst = _frame(times)
    vec = np.einsum("nij,nj->ni", npb[inv], _unit(ra, dec))
    return _altitude(vec, lst[inv])


def sun_moon(jd) -> dict:
    """Sun and Moon at Palomar at UTC Julian dates.

    Parameters
    ----------
    jd : float or array-like
        UTC Julian dates.

    Returns
    -------
    dict of `numpy.ndarray`
        ``sun_alt``, ``moon_alt`` [deg] (the Moon topocentric), ``moon_ra``, ``moon_dec`` [deg,
        topocentric, ICRS axes], ``moon_illumination`` (illuminated fraction 0-1) and ``moon_phase``
        (Sun-Moon-Earth phase angle [deg]).
    """
    jd = np.atleast_1d(np.asarray(jd, dtype=float))
    tt = jd - _J2000 + _TT_MINUS_UTC
    npb, lst = _frame(jd)
    pvh, _ = erfa.epv00(_J2000, tt)
    sun = -pvh["p"]  # geocentric Sun [au], ICRS axes
    moon = erfa.moon98(_J2000, tt)["p"]  # geocentric Moon [au], GCRS
    obs_icrs = np.einsum("nji,nj->ni", npb, _observer(lst))  # date -> ICRS: transpose
    moon_topo = moon - obs_icrs
    sun_alt = _altitude(np.einsum("nij,nj->ni", npb, sun), lst)
    moon_alt = _altitude(np.einsum("nij,nj->ni", npb, moon_topo), lst)
    # phase angle at the Moon between the Sun and the Earth
    to_sun = sun - moon
    to_earth = -moon
    cosi = np.sum(to_sun * to_earth, axis=-1) / (np.linalg.norm(to_sun, axis=-1) * np.linalg.norm(to_earth, axis=-1))
    phase = np.degrees(np.arccos(np.clip(cosi, -1, 1)))
    mra = np.degrees(np.arctan2(moon_topo[:, 1], moon_topo[:, 0])) % 360.0
    mdec = np.degrees(np.arcsin(moon_topo[:, 2] / np.linalg.norm(moon_topo, axis=-1)))
    return {
        "sun_alt": sun_alt,
        "moon_alt": moon_alt,
        "moon_ra": mra,
        "moon_dec": mdec,
        "moon_illumination": 0.5 * (1.0 + np.cos(np.radians(phase))),
        "moon_phase": phase,
    }


def _separation(ra1, dec1, ra2, dec2):
    a, b = _unit(ra1, dec1), _unit(ra2, dec2)
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1, 1)))


def _ks_airmass(alt_deg):
    """KS91 eq. 3 optical path for scattering: (1 - 0.96 sin^2 Z)^-1/2."""
    z = np.radians(90.0 - np.asarray(alt_deg, dtype=float))
    return 1.0 / np.sqrt(1.0 - 0.96 * np.sin(z) ** 2)


def sky_brightness(filtercode, ra, dec, jd, *, _sm=None):
    """Sky surface brightness at Palomar (the model of the module docstring).

    Parameters
    ----------
    filtercode : str
        'zg', 'zr' or 'zi' (or anything `ztfsds.camera.get_filter` accepts).
    ra, dec : float or array-like
        ICRS coordinates [deg].
    jd : float or array-like
        UTC Julian dates; broadcast against ``ra``/``dec``.

    Returns
    -------
    `numpy.ndarray`
        Sky brightness [mag/arcsec^2] (NaN below the horizon).

    Examples
    --------
    >>> print(f"{float(sky_brightness('zr', 55.06, 33.35, 2459116.9317708)):.2f}")
    21.13
    """
    f = get_filter(filtercode)
    ra, dec, jd = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (ra, dec, jd)))
    shape = ra.shape
    ra, dec, jd = ra.ravel(), dec.ravel(), jd.ravel()
    sm = sun_moon(jd) if _sm is None else _sm
    alt = _altitudes(ra, dec, jd)
    x = _airmass_from_alt(alt)
    k = EXTINCTION[f.code]
    dark = 10.0 ** (-0.4 * f.sky_brightness)
    with np.errstate(invalid="ignore", over="ignore"):
        b_dark = dark * x * 10.0 ** (-0.4 * k * (x - 1.0))
        # Krisciunas & Schaefer (1991): moonlight in nanoLamberts
        rho = _separation(ra, dec, sm["moon_ra"], sm["moon_dec"])
        alpha = sm["moon_phase"]
        i_star = 10.0 ** (-0.4 * (3.84 + 0.026 * alpha + 4e-9 * alpha**4))
        f_rho = 10.0**5.36 * (1.06 + np.cos(np.radians(rho)) ** 2) + 10.0 ** (6.15 - rho / 40.0)
        x_moon = _ks_airmass(np.maximum(sm["moon_alt"], 0.0))
        b_moon_nl = f_rho * i_star * 10.0 ** (-0.4 * k * x_moon) * (1.0 - 10.0 ** (-0.4 * k * _ks_airmass(alt)))
        b_moon_nl = np.where(sm["moon_alt"] > 0, b_moon_nl, 0.0)
        # nL -> V mag/arcsec^2 (KS91 eq. 1 inverted), then to the filter with solar colours
        v_moon = (20.7233 - np.log(np.maximum(b_moon_nl, 1e-30) / 34.08)) / 0.92104
        b_moon = np.where(b_moon_nl > 0, 10.0 ** (-0.4 * (v_moon + _MOON_COLOUR[f.code])), 0.0)
        h = sm["sun_alt"]
        b_twi = np.where(h > -18.0, dark * (10.0 ** (0.26 * (np.minimum(h, 0.0) + 18.0)) - 1.0), 0.0)
        mag = -2.5 * np.log10(b_dark + b_moon + b_twi)
    return np.where(alt > 0, mag, np.nan).reshape(shape)


def zero_point(filtercode, airmass_, transparency=1.0):
    """The true zero point of a 30 s exposure (counts in DN).

    ``zp = NOMINAL_MAGZP - EXTINCTION * (airmass - 1) + 2.5 log10(transparency)``.

    Examples
    --------
    >>> print(f"{zero_point('zr', 1.5, 0.8):.4f}")
    26.0077
    """
    code = get_filter(filtercode).code
    return (NOMINAL_MAGZP[code] - EXTINCTION[code] * (np.asarray(airmass_, dtype=float) - 1.0)
            + 2.5 * np.log10(np.asarray(transparency, dtype=float)))


# --------------------------------------------------------------------------------------------------
# Exposures
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """One exposure of the simulated survey: identity and true observing conditions.

    Attributes
    ----------
    jd : float
        UTC Julian date of the start of the exposure (OBSJD).
    filefracday : str
        ``YYYYMMDDdddddd`` of ``jd`` (`ztfsds.products.filefracday`).
    expid : int
        Exposure id (`ztfsds.products.expid`).
    field : int
        ZTF field id.
    filtercode : str
        'zg', 'zr' or 'zi'.
    exptime : float
        Exposure time [s] (30).
    seeing : float
        Seeing FWHM at zenith in this filter [arcsec] (delivered: ``* airmass**0.6``).
    airmass : float
        Airmass at the pointing at ``jd``.
    sky_mag : float
        Sky brightness at the pointing [mag/arcsec^2], calibrated with ``zp``.
    transparency : float
        Cloud transmission (1 = clear).
    extinction : float
        Extinction coefficient of the filter [mag per airmass].
    pointing_offset : tuple of float
        ``(dRA cos Dec, dDec)`` of the true pointing from the field centre [arcsec].
    rotation : float
        Focal-plane rotation (position angle) [deg].
    moon_illumination : float
        Illuminated fraction of the Moon.
    zp : float
        True MAGZP (counts in DN in this 30 s exposure).
    moon_separation : float
        Moon - pointing separation [deg].
    moon_alt : float
        Moon altitude [deg] (negative: down).
    sun_alt : float
        Sun altitude [deg].
    sky_gradient : tuple of float
        Fractional change of the sky across a quadrant (3072 x 3080 px) towards +x (west) and +y
        (south): the ``gradient`` of `ztfsds.sim.optics.sky_image` for a full quadrant (scale it by
        ``nx / 3072``, ``ny / 3080`` for a smaller array).
    night : datetime.date
        UT date of the night (the date of ``nid``).
    """

    jd: float
    filefracday: str
    expid: int
    field: int
    filtercode: str
    exptime: float
    seeing: float
    airmass: float
    sky_mag: float
    transparency: float
    extinction: float
    pointing_offset: tuple
    rotation: float
    moon_illumination: float
    zp: float
    moon_separation: float
    moon_alt: float
    sun_alt: float
    sky_gradient: tuple
    night: _dt.date

    @property
    def fid(self) -> int:
        """Filter id (1, 2, 3)."""
        return FILTERS[self.filtercode].fid

    @property
    def nid(self) -> int:
        """Night id (UT days since 2017-01-01)."""
        return _nid(self.jd)

    @property
    def obsmjd(self) -> float:
        """Modified Julian date of the start of the exposure."""
        return self.jd - 2400000.5

    @property
    def center(self) -> SkyCoord:
        """Nominal field centre."""
        return field_center(self.field)

    @property
    def pointing(self) -> SkyCoord:
        """True pointing centre (the field centre moved by ``pointing_offset``)."""
        c = self.center
        ra, dec = _offset_radec(float(c.ra.deg), float(c.dec.deg), *self.pointing_offset)
        return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")

    @property
    def cloud_extinction(self) -> float:
        """Cloud extinction ``-2.5 log10(transparency)`` [mag]."""
        return -2.5 * math.log10(self.transparency)

    @property
    def fwhm(self) -> float:
        """Delivered FWHM at the optical axis: ``seeing * airmass**0.6`` [arcsec]."""
        return self.seeing * self.airmass**0.6


def _offset_radec(ra0, dec0, dx_arcsec, dy_arcsec):
    """Gnomonic deprojection of an offset (east, north) [arcsec] about (ra0, dec0)."""
    xi, eta = np.radians(dx_arcsec / 3600.0), np.radians(dy_arcsec / 3600.0)
    r0, d0 = np.radians(ra0), np.radians(dec0)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = r0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def schedule_table(exposures) -> Table:
    """The exposures of a schedule as a Table (one row per exposure, columns as `Exposure`).

    ``pointing_offset`` and ``sky_gradient`` become ``(n, 2)`` columns; ``fid``, ``nid`` and the
    true pointing ``ra``, ``dec`` [deg] are added.
    """
    names = [f.name for f in _dc_fields(Exposure)]
    rows = [asdict(e) for e in exposures]
    t = Table()
    for name in names:
        vals = [r[name] for r in rows]
        if name in ("pointing_offset", "sky_gradient"):
            t[name] = np.array(vals, dtype=float).reshape(-1, 2)
        elif name == "night":
            t[name] = np.array([v.isoformat() for v in vals], dtype="U10")
        else:
            t[name] = vals if vals else np.zeros(0)
    t["fid"] = np.array([e.fid for e in exposures], dtype=np.int16)
    t["nid"] = np.array([e.nid for e in exposures], dtype=np.int32)
    pts = [e.pointing for e in exposures]
    t["ra"] = np.array([p.ra.deg for p in pts])
    t["dec"] = np.array([p.dec.deg for p in pts])
    for name in ("ra", "dec", "rotation", "moon_separation", "moon_alt", "sun_alt"):
        t[name].unit = u.deg
    t["exptime"].unit = u.s
    t["seeing"].unit = u.arcsec
    t["pointing_offset"].unit = u.arcsec
    t["sky_mag"].unit = u.mag / u.arcsec**2
    t["zp"].unit = u.mag
    return t


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------


def _night_rng(seed, nid_value: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(nid_value), salt])


def _night_window(night: _dt.date):
    """JDs of the start and end of the night (Sun below TWILIGHT_SUN_ALTITUDE) and a time grid."""
    jd0 = 2440587.5 + (night - _dt.date(1970, 1, 1)).days  # 00:00 UT
    grid = jd0 + np.arange(0.0, 16.0 / 24.0, _GRID_STEP)  # Palomar nights fall in UT 00-16 h
    dark = sun_moon(grid)["sun_alt"] < TWILIGHT_SUN_ALTITUDE
    if not np.any(dark):
        return None
    i0, i1 = np.flatnonzero(dark)[[0, -1]]
    return grid[i0], grid[i1], grid


def _plan_night(rng, night, field_ids, ra, dec, filters, visits_per_filter):
    """Start JDs, field indices and filter codes of one night's exposures, in time order."""
    win = _night_window(night)
    if win is None:
        return []
    t_start, t_end, grid = win
    grid = grid[(grid >= t_start) & (grid <= t_end)]
    am = airmass(ra[:, None], dec[:, None], grid[None, :])
    plan = []
    for j in range(len(field_ids)):
        up = np.flatnonzero(am[j] < MAX_AIRMASS * 0.98)
        if len(up) == 0:
            logger.debug("field %d is not observable on %s", field_ids[j], night)
            continue
        w0, w1 = grid[up[0]], grid[up[-1]] - (EXPTIME + OVERHEAD) / 86400.0
        if w1 <= w0:
            continue
        nvis = visits_per_filter * len(filters)
        frac = (np.arange(nvis) + 0.5 + rng.uniform(-0.25, 0.25, nvis)) / nvis
        for k in range(nvis):
            plan.append((w0 + frac[k] * (w1 - w0), j, filters[k % len(filters)]))
    plan.sort(key=lambda p: p[0])
    out, t_free, last_filter = [], -np.inf, None
    for target, j, fc in plan:
        t = max(target, t_free + ((FILTER_CHANGE_TIME / 86400.0) if (last_filter not in (None, fc)) else 0.0))
        if t + EXPTIME / 86400.0 > t_end:
            continue
        out.append((t, j, fc))
        t_free = t + (EXPTIME + OVERHEAD) / 86400.0
        last_filter = fc
    return out


def _weather(rng, n, weather):
    if weather == "clear":
        return np.ones(n)
    state = rng.random()
    if state < 0.65:
        return np.ones(n)
    if state < 0.90:
        return np.clip(rng.normal(0.85, 0.08, n), 0.5, 1.0)
    return np.clip(rng.normal(0.45, 0.2, n), 0.05, 0.9)


def _exposures_for_night(seed, night, field_ids, ra, dec, filters, visits, weather):
    nid_value = _nid(night)
    plan_rng = _night_rng(seed, nid_value, 1)
    cond_rng = _night_rng(seed, nid_value, 2)
    plan = _plan_night(plan_rng, night, field_ids, ra, dec, filters, visits)
    n = len(plan)
    transparency = _weather(cond_rng, n, weather)
    seeing_night = _SEEING_MEDIAN * math.exp(cond_rng.normal(0.0, _SEEING_NIGHT_SIGMA))
    seeing_exp = seeing_night * np.exp(cond_rng.normal(0.0, _SEEING_EXP_SIGMA, n))
    off_r = np.minimum(_POINTING_SIGMA * np.sqrt(-2.0 * np.log1p(-cond_rng.random(n))), _POINTING_MAX)
    off_t = cond_rng.uniform(0.0, 2.0 * np.pi, n)
    rot = np.clip(cond_rng.normal(0.0, _ROTATION_SIGMA, n), -_ROTATION_MAX, _ROTATION_MAX)
    if n == 0:
        return []
    jd = np.array([p[0] for p in plan])
    j = np.array([p[1] for p in plan])
    fcs = [p[2] for p in plan]
    # true pointing centres
    dx, dy = off_r * np.sin(off_t), off_r * np.cos(off_t)
    pra, pdec = _offset_radec(ra[j], dec[j], dx, dy)
    am = airmass(pra, pdec, jd)
    sm = sun_moon(jd)
    msep = _separation(pra, pdec, sm["moon_ra"], sm["moon_dec"])
    out = []
    for code in sorted(set(fcs)):
        sel = np.array([c == code for c in fcs])
        sub = {k: v[sel] for k, v in sm.items()}
        # centre, then +-half a quadrant along RA (east/west) and Dec (north/south)
        cosd = np.cos(np.radians(pdec[sel]))
        h = _QUADRANT_HALF
        sky = [
            sky_brightness(code, pra[sel] + dra / cosd, pdec[sel] + ddec, jd[sel], _sm=sub)
            for dra, ddec in ((0, 0), (-h, 0), (h, 0), (0, -h), (0, h))
        ]
        flux = [10.0 ** (-0.4 * s) for s in sky]
        gx = (flux[1] - flux[2]) / flux[0]  # +x is west (smaller RA)
        gy = (flux[3] - flux[4]) / flux[0]  # +y is south
        idx = np.flatnonzero(sel)
        for k, i in enumerate(idx):
            out.append((i, sky[0][k], gx[k], gy[k]))
    sky_by_i = {i: (s, gx, gy) for i, s, gx, gy in out}
    exposures = []
    for i in range(n):
        code = fcs[i]
        f = get_filter(code)
        s_mag, gx, gy = sky_by_i[i]
        seeing = float(np.clip(seeing_exp[i] * f.median_fwhm / _SEEING_MEDIAN, *_SEEING_RANGE))
        exposures.append(
            Exposure(
                jd=float(jd[i]),
                filefracday=_filefracday(float(jd[i])),
                expid=_expid(float(jd[i])),
                field=int(field_ids[j[i]]),
                filtercode=code,
                exptime=EXPTIME,
                seeing=seeing,
                airmass=float(am[i]),
                sky_mag=float(s_mag),
                transparency=float(transparency[i]),
                extinction=EXTINCTION[code],
                pointing_offset=(float(dx[i]), float(dy[i])),
                rotation=float(rot[i]),
                moon_illumination=float(sm["moon_illumination"][i]),
                zp=float(zero_point(code, am[i], transparency[i])),
                moon_separation=float(msep[i]),
                moon_alt=float(sm["moon_alt"][i]),
                sun_alt=float(sm["sun_alt"][i]),
                sky_gradient=(float(gx), float(gy)),
                night=night,
            )
        )
    # exposures that drifted above the airmass limit (pointing offset, rounding) are dropped
    return [e for e in exposures if e.airmass < MAX_AIRMASS]


def make_schedule(fields, *, night, nexp_per_field=1, filters=("zr",), seed, history_nights=0,
                  history_epochs_per_night=1, weather="variable") -> list[Exposure]:
    """Plan the exposures of ZTF fields on a night at Palomar (and on earlier nights).

    Parameters
    ----------
    fields : int or sequence of int
        ZTF field ids.
    night : `datetime.date`
        UT date of the night (its ``nid``); the night runs between the nautical twilights of that UT
        date (evening ~UT 02-04 h, morning ~UT 11-13 h at Palomar).
    nexp_per_field : int, optional
        Visits per field and filter on ``night``.
    filters : sequence of str, optional
        Filter codes; visits cycle through them in this order.
    seed : int
        Seed; the result is a deterministic function of all arguments.
    history_nights : int, optional
        Number of earlier nights to add, spaced 2-3 days apart before ``night`` (so that reference
        images can be built: ~20 nights give 15-20 epochs with transparency >= 0.8 per field and
        filter, fewer for fields that set early).
    history_epochs_per_night : int, optional
        Visits per field and filter on each history night.
    weather : {'variable', 'clear'}, optional
        'clear' makes every night photometric (transparency 1).

    Returns
    -------
    list of `Exposure`
        All exposures in time order (history nights first). Fields that are never above airmass 2.5
        in a night get no exposure that night.

    Examples
    --------
    >>> import datetime
    >>> exps = make_schedule([655], night=datetime.date(2020, 9, 24), filters=("zr", "zg"), seed=1)
    >>> [e.filtercode for e in exps]
    ['zr', 'zg']
    """
    if not isinstance(night, _dt.date) or isinstance(night, _dt.datetime):
        raise ConfigError(f"night must be a datetime.date, got {night!r}")
    field_ids = np.atleast_1d(np.asarray(fields)).astype(np.int64).ravel()
    if len(field_ids) == 0:
        raise ConfigError("no fields given")
    centres = field_center(field_ids)
    ra = np.atleast_1d(centres.ra.deg).astype(float)
    dec = np.atleast_1d(centres.dec.deg).astype(float)
    codes = tuple(get_filter(f).code for f in ((filters,) if isinstance(filters, str) else filters))
    if not codes:
        raise ConfigError("no filters given")
    for name, v in (("nexp_per_field", nexp_per_field), ("history_nights", history_nights),
                    ("history_epochs_per_night", history_epochs_per_night)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
    if weather not in ("variable", "clear"):
        raise ConfigError(f"weather must be 'variable' or 'clear', got {weather!r}")
    if seed is None or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")

    gap_rng = np.random.default_rng([int(seed), _nid(night), 0])
    gaps = np.cumsum(gap_rng.integers(2, 4, int(history_nights)))
    nights = [night - _dt.timedelta(days=int(g)) for g in gaps[::-1]]
    out = []
    for nt in nights:
        out += _exposures_for_night(seed, nt, field_ids, ra, dec, codes, int(history_epochs_per_night), weather)
    if nexp_per_field:
        out += _exposures_for_night(seed, night, field_ids, ra, dec, codes, int(nexp_per_field), weather)
    logger.debug("schedule: %d exposures over %d nights", len(out), len(nights) + 1)
    return out
