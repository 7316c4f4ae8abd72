"""The simulated sky: stars, galaxies, variables, transients and asteroids, with their calibrators.

`make_sky` draws every source within a radius of a position, deterministically from a seed; the
other functions evaluate that truth table at an epoch (`positions_at`, `mags_at`, `asteroid_track`)
or turn it into the reference catalogues the pipeline calibrates against (`gaia_like` as Gaia DR3,
`ps1_like` as Pan-STARRS1).

The model
---------
* **Stars.** Differential counts ``dN/dm`` rise as ``10**(0.28 m)`` from r = 9 to r = 20, the slope
  falls linearly to 0.12 at r = 23 and stays there. The surface density scales with galactic latitude
  as ``exp(-|b| / 13.5 deg) + 0.0546`` (5x more stars at b = 10 than at b = 40), normalised to
  20,000 stars per deg^2 brighter than r = 21 at ``|b|`` = 17.5 deg (15,000 in a 0.75 deg^2 quadrant;
  4,044 per deg^2 at ``|b|`` = 60 deg), set so that sep finds as many sources at 5 sigma on a
  simulated quadrant as on the real field-655 quadrant (b = -17.5). `star_density` gives these numbers. Colours follow the stellar
  locus: ``g - r`` from a blue (turn-off, N(0.55, 0.18)) and a red (M dwarf, N(1.35, 0.10))
  population, the red share growing from 15 % at r = 16 to 30 % at r = 22;
  ``r - i = -0.05 + 0.4 (g - r)`` up to ``g - r = 1.2`` and rising steeply (slope 3) on the M-dwarf
  branch beyond, with 0.03 mag scatter. Proper motions are Gaussian per component with
  ``sigma = 2 + 20 * 10**(-0.2 (r - 10))`` mas/yr (x1.5 for M dwarfs); 0.3 % of stars are high
  proper-motion stars with 100-1000 mas/yr. Positions are at the Gaia reference epoch J2016.0.
* **Galaxies.** Counts rise as ``10**(0.42 m)`` from r = 16, flattening to slope 0.30 by r = 23,
  normalised to 2,000 per deg^2 brighter than r = 21 (independent of latitude; extinction is not
  modelled). 60 % discs (Sersic n ~ 1, ``g - r`` ~ N(0.55, 0.12)), 40 % spheroids (n ~ 3.5,
  ``g - r`` ~ N(0.85, 0.08)); ``r_eff`` of median ``10**(0.5 - 0.15 (r - 18))`` arcsec
  (x0.7 for spheroids, 0.15 dex scatter) clipped to 0.5-5 arcsec; axis ratio 0.3-1, random PA.
* **Variables.** 1 % of stars brighter than r = 20: sinusoids (40 %), sawtooth "RR Lyrae-like"
  (30 %; rise in 15 % of the period) and damped random walks (30 %). Periods log-uniform in
  0.1-100 d, peak-to-peak amplitudes log-uniform in 0.1-1 mag. For a damped random walk ``period``
  holds the damping time tau (log-uniform 5-100 d) and ``amplitude`` the asymptotic rms
  (0.05-0.3 mag); its lightcurve is a sum of 64 random Fourier modes whose frequencies (Lorentzian,
  so the covariance is ``amplitude**2 exp(-|dt| / tau)``) and phases are hashed from the source's
  ``var_seed``, so ``mags_at`` is a deterministic, vectorised function of time. Amplitudes scale by
  1.25 / 1.0 / 0.85 in g / r / i.
* **Transients.** Supernovae (5 per deg^2) in galaxies brighter than r = 22 (offset by a
  Rayleigh(0.6 r_eff) radius along the host's ellipse, capped at 2.5 r_eff), peak r uniform in
  17-20.5, ``g - r`` ~ N(0.05, 0.15), ``r - i`` ~ N(-0.15, 0.12) at peak; rise N(15, 3) days;
  decline rate 0.02-0.05 mag/day in r. Nuclear transients (1.5 per deg^2) at the centres of
  galaxies brighter than r = 21, peak r 17.5-20.5, blue (``g - r`` ~ N(-0.25, 0.1)), rise
  20-40 d, decline 0.005-0.018 mag/day. Flux rises as ``((t - t_explosion) / rise)**2`` from
  ``t_explosion = t_peak - rise`` and then fades exponentially: ``decline`` is the e-folding time
  [day] of the r-band flux (``1.0857 / decline`` mag/day); g fades 1/0.75 times faster and i
  1/1.15 times slower.
* **Asteroids.** ``15 exp(-(beta / 15 deg)**2) + 1`` main-belt asteroids per deg^2 brighter than
  r = 21 at ecliptic latitude beta (drawn to r = 21.5 with count slope 0.3, 1.4x more), rates
  log-normal around 0.45 arcsec/min within 0.1-1 arcsec/min, moving along the ecliptic
  (80 % retrograde) with 15 deg scatter; plus 1.5 fast movers (NEOs) per deg^2 anywhere,
  30-100 arcsec/min in random directions, r 14-20. Their ``ra``, ``dec`` are the positions at
  ``t0`` (the ``asteroid_epoch`` of `make_sky`); they move linearly.

Column conventions: every numeric column is finite; quantities a kind does not have are 0
(``r_eff``, ``sersic_n``, ``pa``, ``period``, ``t_peak``, ``ra_rate``, ``h_mag``...), ``axis_ratio``
is 1 for point sources and ``host_id`` is -1 when there is no host.
"""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord
from astropy.table import Column, Table

from ..camera import get_filter
from ..errors import ConfigError

__all__ = [
    "J2016_JD",
    "J2012_JD",
    "KINDS",
    "DEFAULT_TRANSIENT_WINDOW",
    "make_sky",
    "positions_at",
    "mags_at",
    "COLOUR_TERMS",
    "asteroid_track",
    "gaia_like",
    "ps1_like",
    "star_density",
    "galaxy_density",
    "gaia_g_mag",
]

logger = logging.getLogger(__name__)

#: Julian date of J2016.0, the Gaia DR3 reference epoch of the star positions.
J2016_JD = 2457389.0
#: Julian date of J2012.0, the (approximate) mean epoch of the Pan-STARRS1 positions.
J2012_JD = 2455928.0
#: Values of the ``kind`` column.
KINDS = ("star", "galaxy", "variable", "supernova", "nuclear", "asteroid")
#: Transient peak-time window [JD] used when `make_sky` is given none (2020-08-27 to 2020-10-06,
#: around the real sample image of 2020-09-24).
DEFAULT_TRANSIENT_WINDOW = (2459100.0, 2459140.0)

_DAYS_PER_YEAR = 365.25
_MAS_PER_DEG = 3.6e6
_ARCSEC_PER_DEG = 3600.0
_MIN_PER_DAY = 1440.0
_FADE_LIMIT = 30.0  # a transient fainter than this is not there

# Stars: differential-count slopes and normalisation (see the module docstring).
_STAR_BRIGHT = 9.0
_STAR_SLOPES = (0.28, 0.12, 20.0, 23.0)  # bright slope, faint slope, turn start, turn end [mag]
_STAR_DENSITY_R21 = 20000.0  # stars / deg^2 brighter than r = 21 at |b| = _B_REF
_B_REF = 17.5
_B_SCALE = 13.5
_B_FLOOR = 0.0546
# Galaxies
_GAL_BRIGHT = 16.0
_GAL_SLOPES = (0.42, 0.30, 21.0, 23.0)
_GAL_DENSITY_R21 = 2000.0
# Variables and transients
_VAR_FRACTION = 0.01
_VAR_MAG_LIMIT = 20.0
_VAR_BAND_AMPLITUDE = {"g": 1.25, "r": 1.0, "i": 0.85}
_DRW_MODES = 64
_SAWTOOTH_RISE = 0.15
_SN_DENSITY = 5.0
_NUCLEAR_DENSITY = 1.5
_SN_HOST_LIMIT = 22.0
_NUCLEAR_HOST_LIMIT = 21.0
_DECLINE_BAND = {"g": 0.75, "r": 1.0, "i": 1.15}

#: Colour terms of the ZTF passbands against the PS1-like g, r, i of the sky table: a source's ZTF
#: magnitude is ``m_PS1 - k * colour`` (colour ``g - r`` for zg and zr, ``r - i`` for zi), so that
#: IPAC's calibration ``m_PS1 - m_inst = MAGZP + CLRCOEFF * colour`` recovers ``CLRCOEFF = k``
#: (real quadrants: CLRCOEFF ~ +0.08 to +0.12 in zr, ~ -0.06 in zg).
COLOUR_TERMS = {"zg": (-0.06, "g", "r"), "zr": (0.09, "g", "r"), "zi": (-0.03, "r", "i")}
# Asteroids
_MBA_PEAK_DENSITY = 15.0
_MBA_FLOOR_DENSITY = 1.0
_MBA_BETA_SCALE = 15.0
_FAST_DENSITY = 1.5

_FLOAT_COLUMNS = (
    ("ra", u.deg), ("dec", u.deg), ("pmra", u.mas / u.yr), ("pmdec", u.mas / u.yr),
    ("g", u.mag), ("r", u.mag), ("i", u.mag),
    ("sersic_n", None), ("r_eff", u.arcsec), ("axis_ratio", None), ("pa", u.deg),
    ("period", u.day), ("amplitude", u.mag), ("t0", u.day),
    ("t_peak", u.day), ("rise", u.day), ("decline", u.day),
    ("ra_rate", u.arcsec / u.min), ("dec_rate", u.arcsec / u.min), ("h_mag", u.mag),
)
_FLOAT_DEFAULTS = {"axis_ratio": 1.0}


# --------------------------------------------------------------------------------------------------
# Density model
# --------------------------------------------------------------------------------------------------


def _latitude_factor(gal_b):
    """Star density relative to |b| = 17.5 deg (exponential disc plus a halo floor)."""
    f = np.exp(-np.abs(gal_b) / _B_SCALE) + _B_FLOOR
    return f / (np.exp(-_B_REF / _B_SCALE) + _B_FLOOR)


def _slope(m, slopes):
    """Local count slope d log10(dN/dm) / dm: constant, linear turn-over, constant."""
    bright, faint, m1, m2 = slopes
    w = np.clip((np.asarray(m, dtype=float) - m1) / (m2 - m1), 0.0, 1.0)
    return bright + (faint - bright) * w


def _cumulative_counts(m_bright, m_faint, slopes, density_r21, step=0.005):
    """Magnitude grid and cumulative counts N(< m) [per deg^2] from ``m_bright``.

    The differential counts are ``10**A(m)`` with ``dA/dm = _slope(m)``, scaled so that
    ``N(< 21) = density_r21``.
    """
    top = max(m_faint, 21.0)
    grid = np.arange(m_bright, top + step, step)
    s = _slope(grid, slopes)
    a = np.concatenate([[0.0], np.cumsum(0.5 * (s[1:] + s[:-1]) * step)])
    dn = 10.0 ** (a - a.max())
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dn[1:] + dn[:-1]) * step)])
    cum *= density_r21 / np.interp(21.0, grid, cum)
    keep = grid <= m_faint + 0.5 * step
    return grid[keep], cum[keep]


def star_density(gal_b, r_limit=21.0, *, density_scale=1.0):
    """Model surface density of stars brighter than a magnitude.

    Parameters
    ----------
    gal_b : float or array-like
        Galactic latitude [deg].
    r_limit : float, optional
        Faint limit [AB mag, r].
    density_scale : float, optional
        The `make_sky` density multiplier.

    Returns
    -------
    float or `numpy.ndarray`
        Stars per deg^2 with ``9 <= r < r_limit``.

    Examples
    --------
    >>> round(float(star_density(17.5)))
    20000
    >>> round(float(star_density(60.0)))
    4044
    """
    grid, cum = _cumulative_counts(_STAR_BRIGHT, max(r_limit, _STAR_BRIGHT), _STAR_SLOPES, _STAR_DENSITY_R21)
    n = np.interp(r_limit, grid, cum, left=0.0)
    return density_scale * n * _latitude_factor(gal_b)


def galaxy_density(r_limit=21.0):
    """Model surface density of galaxies brighter than a magnitude.

    Parameters
    ----------
    r_limit : float, optional
        Faint limit [AB mag, r].

    Returns
    -------
    float
        Galaxies per deg^2 with ``16 <= r < r_limit``.

    Examples
    --------
    >>> round(galaxy_density(21.0))
    2000
    """
    grid, cum = _cumulative_counts(_GAL_BRIGHT, max(r_limit, _GAL_BRIGHT), _GAL_SLOPES, _GAL_DENSITY_R21)
    return float(np.interp(r_limit, grid, cum, left=0.0))


def _sample_counts(rng, area, m_bright, m_faint, slopes, density_r21):
    """Poisson number of sources in ``area`` [deg^2] and their magnitudes (inverse-CDF draws)."""
    if m_faint <= m_bright or density_r21 <= 0.0:
        return np.zeros(0)
    grid, cum = _cumulative_counts(m_bright, m_faint, slopes, density_r21)
    n = rng.poisson(cum[-1] * area)
    return np.interp(rng.uniform(0.0, cum[-1], n), cum, grid)


# --------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------


def _cap_area(radius):
    """Area of a spherical cap of angular radius ``radius`` [deg] in deg^2."""
    return 2.0 * np.pi * (1.0 - np.cos(np.radians(radius))) * np.degrees(1.0) ** 2


def _offset(ra0, dec0, sep, pa):
    """Positions [deg] at separation ``sep`` [deg] and position angle ``pa`` [deg, E of N]."""
    d0, s, p = np.radians(dec0), np.radians(sep), np.radians(pa)
    sin_dec = np.sin(d0) * np.cos(s) + np.cos(d0) * np.sin(s) * np.cos(p)
    dec = np.arcsin(np.clip(sin_dec, -1.0, 1.0))
    dra = np.arctan2(np.sin(p) * np.sin(s) * np.cos(d0), np.cos(s) - np.sin(d0) * sin_dec)
    return (ra0 + np.degrees(dra)) % 360.0, np.degrees(dec)


def _sample_cap(rng, n, ra0, dec0, radius):
    """``n`` positions uniform on the sphere within ``radius`` [deg] of (ra0, dec0)."""
    cos_sep = rng.uniform(np.cos(np.radians(radius)), 1.0, n)
    sep = np.degrees(np.arccos(cos_sep))
    return _offset(ra0, dec0, sep, rng.uniform(0.0, 360.0, n))


def _cos_dec(dec):
    return np.maximum(np.cos(np.radians(dec)), 1e-9)


def _ecliptic_frame(center):
    """Ecliptic latitude [deg] of ``center`` and the position angle [deg] of increasing longitude."""
    ecl = center.transform_to(BarycentricMeanEcliptic())
    ahead = SkyCoord(ecl.lon + 0.05 * u.deg, ecl.lat, frame=BarycentricMeanEcliptic()).icrs
    return float(ecl.lat.deg), float(center.icrs.position_angle(ahead).deg)


# --------------------------------------------------------------------------------------------------
# Populations: each returns a dict of column arrays (missing columns take their defaults)
# --------------------------------------------------------------------------------------------------


def _stellar_locus(rng, r):
    """``g - r`` and ``r - i`` of stars of magnitude ``r`` along the PS1-like stellar locus."""
    n = len(r)
    red_share = 0.15 + 0.15 * np.clip((r - 16.0) / 6.0, 0.0, 1.0)
    red = rng.uniform(size=n) < red_share
    gr = np.where(red, rng.normal(1.35, 0.10, n), rng.normal(0.55, 0.18, n))
    gr = np.where(red, np.clip(gr, 1.0, 1.6), np.clip(gr, 0.15, 1.3))
    ri = -0.05 + 0.4 * np.minimum(gr, 1.2) + 3.0 * np.maximum(gr - 1.2, 0.0)
    ri += rng.normal(0.0, 0.03, n)
    return gr, ri, red


def _proper_motions(rng, r, red):
    """Proper motions [mas/yr]: a magnitude-dependent dispersion and a few high-pm stars."""
    n = len(r)
    sigma = (2.0 + 20.0 * 10.0 ** (-0.2 * (r - 10.0))) * np.where(red, 1.5, 1.0)
    pmra, pmdec = rng.normal(0.0, sigma), rng.normal(0.0, sigma)
    fast = rng.uniform(size=n) < 0.003
    total = 10.0 ** rng.uniform(2.0, 3.0, n)
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    pmra = np.where(fast, total * np.sin(angle), pmra)
    pmdec = np.where(fast, total * np.cos(angle), pmdec)
    return pmra, pmdec


def _stars(rng, area, ra0, dec0, radius, gal_b, density_scale, faint_limit):
    density = _STAR_DENSITY_R21 * density_scale * float(_latitude_factor(gal_b))
    r = _sample_counts(rng, area, _STAR_BRIGHT, faint_limit, _STAR_SLOPES, density)
    ra, dec = _sample_cap(rng, len(r), ra0, dec0, radius)
    gr, ri, red = _stellar_locus(rng, r)
    pmra, pmdec = _proper_motions(rng, r, red)
    return {"kind": np.full(len(r), "star"), "ra": ra, "dec": dec, "pmra": pmra, "pmdec": pmdec,
            "g": r + gr, "r": r, "i": r - ri}


def _galaxies(rng, area, ra0, dec0, radius, faint_limit):
    r = _sample_counts(rng, area, _GAL_BRIGHT, faint_limit, _GAL_SLOPES, _GAL_DENSITY_R21)
    n = len(r)
    ra, dec = _sample_cap(rng, n, ra0, dec0, radius)
    spheroid = rng.uniform(size=n) < 0.4
    sersic = np.where(spheroid, rng.normal(3.5, 0.4, n), rng.lognormal(0.0, 0.25, n))
    size = 10.0 ** (0.5 - 0.15 * (r - 18.0) + rng.normal(0.0, 0.15, n)) * np.where(spheroid, 0.7, 1.0)
    q = np.where(spheroid, rng.uniform(0.55, 1.0, n), rng.uniform(0.3, 1.0, n))
    gr = np.clip(np.where(spheroid, rng.normal(0.85, 0.08, n), rng.normal(0.55, 0.12, n)), 0.35, 1.05)
    ri = 0.05 + 0.4 * gr + rng.normal(0.0, 0.05, n)
    return {"kind": np.full(n, "galaxy"), "ra": ra, "dec": dec, "g": r + gr, "r": r, "i": r - ri,
            "sersic_n": np.clip(sersic, 0.5, 4.0), "r_eff": np.clip(size, 0.5, 5.0),
            "axis_ratio": q, "pa": rng.uniform(0.0, 180.0, n)}


def _make_variables(rng, stars):
    """Turn 1 % of the stars brighter than r = 20 into variables, in place."""
    n = len(stars["r"])
    var = (stars["r"] < _VAR_MAG_LIMIT) & (rng.uniform(size=n) < _VAR_FRACTION)
    idx = np.flatnonzero(var)
    k = len(idx)
    kind_draw = rng.uniform(size=k)
    vtype = np.where(kind_draw < 0.4, "sine", np.where(kind_draw < 0.7, "sawtooth", "drw"))
    drw = vtype == "drw"
    period = np.where(drw, 10.0 ** rng.uniform(np.log10(5.0), 2.0, k), 10.0 ** rng.uniform(-1.0, 2.0, k))
    amplitude = np.where(drw, 10.0 ** rng.uniform(np.log10(0.05), np.log10(0.3), k),
                         10.0 ** rng.uniform(-1.0, 0.0, k))
    t0 = np.where(drw, 2458000.0, 2458000.0 + rng.uniform(0.0, 1.0, k) * period)
    seeds = rng.integers(1, 2**53, k)
    for name, values in (("period", period), ("amplitude", amplitude), ("t0", t0)):
        col = stars.setdefault(name, np.zeros(n))
        col[idx] = values
    stars["var_type"] = np.full(n, "", dtype="<U8")
    stars["var_type"][idx] = vtype
    stars["var_seed"] = np.zeros(n, dtype=np.int64)
    stars["var_seed"][idx] = seeds
    stars["kind"] = stars["kind"].astype("<U9")
    stars["kind"][idx] = "variable"


def _pick_hosts(rng, galaxies, n, host_limit):
    """Indices into ``galaxies`` of ``n`` hosts brighter than ``host_limit`` (-1 where none)."""
    pool = np.flatnonzero(galaxies["r"] < host_limit)
    if not len(pool):
        return np.full(n, -1)
    return rng.choice(pool, n)


def _transient_columns(rng, n, t_window, *, peak, gr, ri, rise, rate):
    """Common columns of a transient population; ``rate`` is the r decline [mag/day]."""
    r = rng.uniform(*peak, n)
    return {"g": r + rng.normal(*gr, n), "r": r, "i": r - rng.normal(*ri, n),
            "t_peak": rng.uniform(*t_window, n), "rise": rise, "decline": 2.5 / np.log(10.0) / rate}


def _supernovae(rng, area, ra0, dec0, radius, galaxies, t_window):
    n = rng.poisson(_SN_DENSITY * area)
    host = _pick_hosts(rng, galaxies, n, _SN_HOST_LIMIT)
    cols = _transient_columns(rng, n, t_window, peak=(17.0, 20.5), gr=(0.05, 0.15), ri=(-0.15, 0.12),
                              rise=np.clip(rng.normal(15.0, 3.0, n), 8.0, 25.0),
                              rate=rng.uniform(0.02, 0.05, n))
    ra, dec = _sample_cap(rng, n, ra0, dec0, radius)
    has = host >= 0
    h = host[has]
    # offset along the host's ellipse: major axis at the host PA, minor axis shrunk by q
    rad = np.minimum(rng.rayleigh(0.6, n), 2.5)[has] * galaxies["r_eff"][h]
    theta = rng.uniform(0.0, 2.0 * np.pi, n)[has]
    major, minor = rad * np.cos(theta), rad * np.sin(theta) * galaxies["axis_ratio"][h]
    sep = np.hypot(major, minor) / _ARCSEC_PER_DEG
    pa = galaxies["pa"][h] + np.degrees(np.arctan2(minor, major))
    ra[has], dec[has] = _offset(galaxies["ra"][h], galaxies["dec"][h], sep, pa)
    cols.update(kind=np.full(n, "supernova"), ra=ra, dec=dec, host_index=host)
    return cols


def _nuclear(rng, area, ra0, dec0, radius, galaxies, t_window):
    n = rng.poisson(_NUCLEAR_DENSITY * area)
    host = _pick_hosts(rng, galaxies, n, _NUCLEAR_HOST_LIMIT)
    cols = _transient_columns(rng, n, t_window, peak=(17.5, 20.5), gr=(-0.25, 0.1), ri=(-0.2, 0.1),
                              rise=rng.uniform(20.0, 40.0, n), rate=rng.uniform(0.005, 0.018, n))
    ra, dec = _sample_cap(rng, n, ra0, dec0, radius)
    has = host >= 0
    ra[has], dec[has] = galaxies["ra"][host[has]], galaxies["dec"][host[has]]
    cols.update(kind=np.full(n, "nuclear"), ra=ra, dec=dec, host_index=host)
    return cols


def _asteroid_h(rng, v, n, fast):
    """Absolute magnitude H from V at opposition-like geometry (main belt or NEO distances) [AU]."""
    helio = np.where(fast, rng.uniform(1.05, 1.3, n), rng.uniform(2.1, 3.3, n))
    delta = np.where(fast, rng.uniform(0.05, 0.3, n), helio - 1.0)
    return v - 5.0 * np.log10(helio * delta)


def _asteroids(rng, area, ra0, dec0, radius, ecl_beta, ecl_pa, faint_limit, epoch):
    mba_density = _MBA_PEAK_DENSITY * np.exp(-((ecl_beta / _MBA_BETA_SCALE) ** 2)) + _MBA_FLOOR_DENSITY
    r_slow = _sample_counts(rng, area, 16.0, min(faint_limit, 21.5), (0.3, 0.3, 99.0, 100.0), mba_density)
    n_fast = rng.poisson(_FAST_DENSITY * area)
    n = len(r_slow) + n_fast
    fast = np.arange(n) >= len(r_slow)
    r = np.concatenate([r_slow, rng.uniform(14.0, min(faint_limit, 20.0), n_fast)])
    rate = np.where(fast, 10.0 ** rng.uniform(np.log10(30.0), 2.0, n),
                    np.clip(rng.lognormal(np.log(0.45), 0.35, n), 0.1, 1.0))
    retro = rng.uniform(size=n) < 0.8
    direction = np.where(fast, rng.uniform(0.0, 360.0, n),
                         ecl_pa + np.where(retro, 180.0, 0.0) + rng.normal(0.0, 15.0, n))
    ra, dec = _sample_cap(rng, n, ra0, dec0, radius)
    gr = rng.uniform(0.45, 0.65, n)
    ri = rng.uniform(0.1, 0.2, n)
    return {"kind": np.full(n, "asteroid"), "ra": ra, "dec": dec, "g": r + gr, "r": r, "i": r - ri,
            "t0": np.full(n, float(epoch)),
            "ra_rate": rate * np.sin(np.radians(direction)), "dec_rate": rate * np.cos(np.radians(direction)),
            "h_mag": _asteroid_h(rng, r + 0.2, n, fast)}


# --------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------


def _assemble(parts, galaxy_offset, galaxy_part):
    """Concatenate population dicts into the sky Table with defaults, ids and units."""
    sizes = [len(p["ra"]) for p in parts]
    n = int(sum(sizes))
    out = Table()
    out["source_id"] = Column(np.arange(1, n + 1, dtype=np.int64))
    out["kind"] = Column(np.concatenate([np.asarray(p["kind"], dtype="<U9") for p in parts]))
    for name, unit in _FLOAT_COLUMNS:
        default = _FLOAT_DEFAULTS.get(name, 0.0)
        data = np.concatenate([np.asarray(p.get(name, np.full(s, default)), dtype=float)
                               for p, s in zip(parts, sizes)])
        out[name] = Column(data, unit=unit)
    host = np.concatenate([np.asarray(p.get("host_index", np.full(s, -1))) for p, s in zip(parts, sizes)])
    gal_ids = np.asarray(out["source_id"])[galaxy_offset:galaxy_offset + len(galaxy_part["ra"])]
    out["host_id"] = Column(np.where(host >= 0, gal_ids[np.maximum(host, 0)] if len(gal_ids) else -1, -1)
                            .astype(np.int64))
    out["var_type"] = Column(np.concatenate([np.asarray(p.get("var_type", np.full(s, "")), dtype="<U8")
                                             for p, s in zip(parts, sizes)]))
    out["var_seed"] = Column(np.concatenate([np.asarray(p.get("var_seed", np.zeros(s)), dtype=np.int64)
                                             for p, s in zip(parts, sizes)]))
    return out


def _check_make_sky_args(radius, density_scale, faint_limit, transient_window):
    if not np.isfinite(radius) or not 0.0 < radius <= 10.0:
        raise ConfigError(f"make_sky: radius must be in (0, 10] deg, got {radius!r}")
    if not np.isfinite(density_scale) or density_scale < 0.0:
        raise ConfigError(f"make_sky: density_scale must be >= 0, got {density_scale!r}")
    if not np.isfinite(faint_limit) or not 10.0 <= faint_limit <= 28.0:
        raise ConfigError(f"make_sky: faint_limit must be in 10..28 mag, got {faint_limit!r}")
    if transient_window is not None:
        lo, hi = (float(x) for x in transient_window)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ConfigError(f"make_sky: transient_window must be (start, end) JD, got {transient_window!r}")


def make_sky(
    center: SkyCoord,
    radius: float,
    *,
    seed: int,
    gal_b: float | None = None,
    density_scale: float = 1.0,
    faint_limit: float = 24.0,
    transients: bool = True,
    transient_window: tuple[float, float] | None = None,
    asteroid_epoch: float | None = None,
) -> Table:
    """Draw every source within ``radius`` of ``center``.

    Each population (stars, galaxies, variables, transients, asteroids) has its own random stream
    spawned from ``seed``, so for example ``transients=False`` leaves the stars and galaxies unchanged.

    Parameters
    ----------
    center : `~astropy.coordinates.SkyCoord`
        Centre of the simulated area (any frame).
    radius : float
        Radius of the area [deg], at most 10.
    seed : int
        Seed of the `numpy.random.Generator` streams; the table is a pure function of the arguments.
    gal_b : float, optional
        Galactic latitude setting the star density [deg]; computed from ``center`` if None.
    density_scale : float, optional
        Multiplier of the star density (galaxies, transients and asteroids are unaffected).
    faint_limit : float, optional
        Faintest r magnitude drawn for stars, galaxies and main-belt asteroids [AB mag].
    transients : bool, optional
        Include supernovae and nuclear transients.
    transient_window : tuple of float, optional
        (start, end) of the uniform distribution of transient peak times [JD]; None for
        `DEFAULT_TRANSIENT_WINDOW`.
    asteroid_epoch : float, optional
        Epoch of the asteroid positions ``t0`` [JD]; None for the middle of the transient window.
        Main-belt asteroids drift ~0.2 deg/day and fast movers ~1 deg/hour, so choose it near the
        exposures being simulated.

    Returns
    -------
    `~astropy.table.Table`
        One row per source: ``source_id`` (int64, unique in the table, from 1), ``kind`` (one of
        `KINDS`), ``ra``, ``dec`` [deg; stars at J2016.0, asteroids at ``t0``], ``pmra`` (pm in RA
        times cos dec), ``pmdec`` [mas/yr], ``g``, ``r``, ``i`` [AB mag; mean for variables, peak
        for transients], ``sersic_n``, ``r_eff`` [arcsec], ``axis_ratio``, ``pa`` [deg, E of N],
        ``period`` [day; tau for damped random walks], ``amplitude`` [mag; peak-to-peak, rms for
        damped random walks], ``t0`` [JD; variable phase zero, asteroid position epoch],
        ``t_peak`` [JD], ``rise`` [day], ``decline`` [day, e-folding time of the r flux],
        ``ra_rate`` (dRA/dt cos dec), ``dec_rate`` [arcsec/min], ``h_mag`` [mag], ``host_id``
        (int64, -1 if none), ``var_type`` ('', 'sine', 'sawtooth', 'drw'), ``var_seed`` (int64,
        the lightcurve key of a damped random walk). ``meta`` records the arguments, ``gal_b``,
        ``ecl_beta`` and ``area`` [deg^2].

    Raises
    ------
    ztfsds.errors.ConfigError
        On a radius, density scale, faint limit or transient window out of range.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> sky = make_sky(SkyCoord(55.0, 33.0, unit="deg"), 0.05, seed=1)
    >>> set(sky["kind"]) <= set(KINDS), sky["source_id"][0]
    (True, np.int64(1))
    """
    _check_make_sky_args(radius, density_scale, faint_limit, transient_window)
    center = center.icrs
    ra0, dec0 = float(center.ra.deg), float(center.dec.deg)
    if gal_b is None:
        gal_b = float(center.galactic.b.deg)
    window = tuple(float(x) for x in (transient_window or DEFAULT_TRANSIENT_WINDOW))
    epoch = 0.5 * (window[0] + window[1]) if asteroid_epoch is None else float(asteroid_epoch)
    ecl_beta, ecl_pa = _ecliptic_frame(center)
    area = _cap_area(radius)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]

    stars = _stars(rngs[0], area, ra0, dec0, radius, gal_b, density_scale, faint_limit)
    _make_variables(rngs[1], stars)
    galaxies = _galaxies(rngs[2], area, ra0, dec0, radius, faint_limit)
    parts = [stars, galaxies]
    if transients:
        parts.append(_supernovae(rngs[3], area, ra0, dec0, radius, galaxies, window))
        parts.append(_nuclear(rngs[4], area, ra0, dec0, radius, galaxies, window))
    parts.append(_asteroids(rngs[5], area, ra0, dec0, radius, ecl_beta, ecl_pa, faint_limit, epoch))
    sky = _assemble(parts, len(stars["ra"]), galaxies)
    sky.meta.update(seed=seed, center_ra=ra0, center_dec=dec0, radius=radius, area=area, gal_b=gal_b,
                    ecl_beta=ecl_beta, density_scale=density_scale, faint_limit=faint_limit,
                    transients=transients, transient_window=window, asteroid_epoch=epoch,
                    ref_epoch_jd=J2016_JD)
    logger.debug("make_sky: %d sources in %.3f deg^2 (b = %.1f deg)", len(sky), area, gal_b)
    return sky


# --------------------------------------------------------------------------------------------------
# Evaluation at an epoch
# --------------------------------------------------------------------------------------------------


def _values(sky, name, unit=None):
    """A column of a Table, Row, QTable or mapping as a 1-d float array in ``unit``."""
    try:
        v = sky[name]
    except (KeyError, ValueError):
        raise ConfigError(f"sky table has no column {name!r}") from None
    if isinstance(v, u.Quantity):
        v = v.to_value(unit) if unit is not None else v.value
    elif isinstance(v, Column) and v.unit is not None and unit is not None:
        v = v.quantity.to_value(unit)
    return np.atleast_1d(np.asarray(v, dtype=float))


def _kinds(sky):
    return np.atleast_1d(np.asarray(sky["kind"]).astype(str))


def _broadcast_jd(jd, n):
    jd = np.asarray(jd, dtype=float)
    try:
        return np.broadcast_to(jd, (n,))
    except ValueError:
        raise ConfigError(
            f"jd must be a scalar or hold one value per source ({n}), got shape {jd.shape}"
        ) from None


def _move(ra, dec, dra_cosdec_deg, ddec_deg):
    """Apply small on-sky offsets [deg] to positions [deg]."""
    new_dec = np.clip(dec + ddec_deg, -90.0, 90.0)
    return (ra + dra_cosdec_deg / _cos_dec(dec)) % 360.0, new_dec


def positions_at(sky, jd):
    """Positions of the sources at an epoch.

    Stars move by their proper motions from J2016.0 (JD 2457389.0); asteroids move linearly at
    ``ra_rate``, ``dec_rate`` from their ``t0``; everything else is fixed.

    Parameters
    ----------
    sky : `~astropy.table.Table` or `~astropy.table.Row`
        Output of `make_sky` (or rows of it).
    jd : float or array-like
        Epoch [JD]; a scalar or one value per source.

    Returns
    -------
    ra, dec : `numpy.ndarray`
        ICRS positions [deg].

    Examples
    --------
    >>> from astropy.table import Table
    >>> t = Table({"kind": ["star"], "ra": [10.0], "dec": [0.0], "pmra": [3600.0], "pmdec": [0.0],
    ...            "t0": [0.0], "ra_rate": [0.0], "dec_rate": [0.0]})
    >>> ra, dec = positions_at(t, J2016_JD + 365.25)
    >>> print(f"{(ra[0] - 10.0) * 3600:.3f}")
    3.600
    """
    ra, dec = _values(sky, "ra", u.deg), _values(sky, "dec", u.deg)
    t = _broadcast_jd(jd, len(ra))
    years = (t - J2016_JD) / _DAYS_PER_YEAR
    pmra, pmdec = _values(sky, "pmra", u.mas / u.yr), _values(sky, "pmdec", u.mas / u.yr)
    ast = _kinds(sky) == "asteroid"
    minutes = np.where(ast, (t - _values(sky, "t0", u.day)) * _MIN_PER_DAY, 0.0)
    years = np.where(ast, 0.0, years)
    rate_ra, rate_dec = _values(sky, "ra_rate", u.arcsec / u.min), _values(sky, "dec_rate", u.arcsec / u.min)
    dx = pmra * years / _MAS_PER_DEG + np.where(ast, rate_ra * minutes, 0.0) / _ARCSEC_PER_DEG
    dy = pmdec * years / _MAS_PER_DEG + np.where(ast, rate_dec * minutes, 0.0) / _ARCSEC_PER_DEG
    return _move(ra, dec, dx, dy)


def asteroid_track(sky, jd_start, exptime_s):
    """Start and end positions of moving sources during an exposure.

    Only the linear motion ``ra_rate``, ``dec_rate`` from ``t0`` is applied (sources without a rate
    come back at their catalogue position; use `positions_at` for proper motions).

    Parameters
    ----------
    sky : `~astropy.table.Table` or `~astropy.table.Row` or mapping
        Anything with ``ra``, ``dec`` [deg], ``ra_rate``, ``dec_rate`` [arcsec/min] and ``t0`` [JD]
        columns (scalars or arrays).
    jd_start : float or array-like
        Shutter opening [JD].
    exptime_s : float or array-like
        Exposure time [s].

    Returns
    -------
    ra0, dec0, ra1, dec1 : `numpy.ndarray`
        Positions at the start and the end of the exposure [deg].

    Examples
    --------
    >>> track = asteroid_track({"ra": 10.0, "dec": 0.0, "ra_rate": 60.0, "dec_rate": 0.0, "t0": 0.0},
    ...                        0.0, 30.0)
    >>> print(f"{(track[2][0] - track[0][0]) * 3600:.1f}")
    30.0
    """
    ra, dec = _values(sky, "ra", u.deg), _values(sky, "dec", u.deg)
    rate_ra, rate_dec = _values(sky, "ra_rate", u.arcsec / u.min), _values(sky, "dec_rate", u.arcsec / u.min)
    t0 = _values(sky, "t0", u.day)
    start = _broadcast_jd(jd_start, len(ra))
    end = start + np.asarray(exptime_s, dtype=float) / 86400.0
    ends = []
    for t in (start, end):
        minutes = (t - t0) * _MIN_PER_DAY
        ends.extend(_move(ra, dec, rate_ra * minutes / _ARCSEC_PER_DEG, rate_dec * minutes / _ARCSEC_PER_DEG))
    return tuple(ends)


def _splitmix64(x):
    """SplitMix64 finaliser on a uint64 array: a vectorised counter-based hash."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_uniform(seeds, k):
    """Uniform (0, 1) numbers of shape (len(seeds), k), a pure function of each seed."""
    keys = seeds.astype(np.uint64)[:, None] * np.uint64(4096) + np.arange(k, dtype=np.uint64)[None, :]
    h = _splitmix64(_splitmix64(keys))
    return ((h >> np.uint64(11)).astype(float) + 0.5) * 2.0**-53


def _drw_offset(seeds, tau, sigma, dt):
    """Damped-random-walk magnitude offsets at time offsets ``dt`` [day] (random Fourier modes)."""
    u_ = _hash_uniform(seeds, 2 * _DRW_MODES)
    omega = np.tan(np.pi * (u_[:, :_DRW_MODES] - 0.5)) / tau[:, None]
    phase = 2.0 * np.pi * u_[:, _DRW_MODES:]
    modes = np.cos(omega * dt[:, None] + phase)
    return sigma * np.sqrt(2.0 / _DRW_MODES) * modes.sum(axis=1)


def _periodic_offset(vtype, amplitude, phase):
    """Magnitude offsets of sine and sawtooth variables at phase in [0, 1)."""
    rising = phase < _SAWTOOTH_RISE
    shape = np.where(rising, phase / _SAWTOOTH_RISE, 1.0 - (phase - _SAWTOOTH_RISE) / (1.0 - _SAWTOOTH_RISE))
    saw = amplitude * (0.5 - shape)
    sine = 0.5 * amplitude * np.sin(2.0 * np.pi * phase)
    return np.where(vtype == "sawtooth", saw, sine)


def _variable_offset(sky, sel, band, t):
    vtype = np.atleast_1d(np.asarray(sky["var_type"]).astype(str))[sel]
    period = _values(sky, "period", u.day)[sel]
    amplitude = _values(sky, "amplitude", u.mag)[sel] * _VAR_BAND_AMPLITUDE[band]
    dt = t[sel] - _values(sky, "t0", u.day)[sel]
    out = _periodic_offset(vtype, amplitude, np.mod(dt / np.maximum(period, 1e-6), 1.0))
    drw = vtype == "drw"
    if np.any(drw):
        seeds = np.atleast_1d(np.asarray(sky["var_seed"]))[sel][drw]
        out[drw] = _drw_offset(seeds, period[drw], amplitude[drw], dt[drw])
    return out


def _transient_mag(peak, t_peak, rise, decline, t):
    """Transient magnitudes: quadratic flux rise from t_peak - rise, exponential decline; NaN if absent."""
    before = t < t_peak
    x = np.clip((t - (t_peak - rise)) / np.maximum(rise, 1e-6), 1e-30, None)
    m = np.where(before, peak - 5.0 * np.log10(x), peak + 2.5 / np.log(10.0) * (t - t_peak) / decline)
    m[(t <= t_peak - rise) | (m > _FADE_LIMIT)] = np.nan
    return m


def mags_at(sky, filtercode, jd):
    """True magnitudes of the sources in one ZTF filter at an epoch.

    The sky table's g, r, i are PS1-like AB magnitudes; the ZTF passband sees ``m_PS1 - k * colour``
    (`COLOUR_TERMS`; the colour from the table's static g, r, i).

    Parameters
    ----------
    sky : `~astropy.table.Table` or `~astropy.table.Row`
        Output of `make_sky` (or rows of it).
    filtercode : str
        'zg', 'zr' or 'zi' (anything `ztfsds.camera.get_filter` accepts); uses the g, r or i column.
    jd : float or array-like
        Epoch [JD]; a scalar or one value per source.

    Returns
    -------
    `numpy.ndarray`
        Magnitudes [mag, ZTF system]; NaN for a transient before its explosion or fainter than 30.

    Raises
    ------
    ztfsds.errors.ConfigError
        For an unknown filter or a ``jd`` of the wrong shape.
    """
    code = get_filter(filtercode).code
    band = code[1:]
    k, blue, red = COLOUR_TERMS[code]
    mag = _values(sky, band, u.mag) - k * (_values(sky, blue, u.mag) - _values(sky, red, u.mag))
    t = _broadcast_jd(jd, len(mag))
    kinds = _kinds(sky)
    var = kinds == "variable"
    if np.any(var):
        mag[var] += _variable_offset(sky, var, band, t)
    trans = (kinds == "supernova") | (kinds == "nuclear")
    if np.any(trans):
        decline = _values(sky, "decline", u.day)[trans] * _DECLINE_BAND[band]
        mag[trans] = _transient_mag(mag[trans], _values(sky, "t_peak", u.day)[trans],
                                    _values(sky, "rise", u.day)[trans], decline, t[trans])
    return mag


# --------------------------------------------------------------------------------------------------
# Calibrator catalogues
# --------------------------------------------------------------------------------------------------


def gaia_g_mag(g, r, i):
    """Gaia G magnitude of a star from its PS1-like g, r, i.

    ``G = r - 0.1288 + 0.2466 x - 0.0275 x^2 - 0.0495 x^3`` with ``x = g - i`` clipped to
    [-0.5, 3.5]: the shape of the Gaia DR2 G - r versus g - i relation for SDSS photometry
    (Evans et al. 2018, quoted from memory; G - r ~ 0 at solar colours and ~ -0.7 for mid-M
    dwarfs). Approximate, which is enough for a simulated catalogue.

    Parameters
    ----------
    g, r, i : float or array-like
        AB magnitudes.

    Returns
    -------
    float or `numpy.ndarray`
        G [mag].

    Examples
    --------
    >>> print(f"{gaia_g_mag(16.5, 16.0, 15.85):.2f}")
    16.01
    """
    x = np.clip(np.asarray(g, dtype=float) - np.asarray(i, dtype=float), -0.5, 3.5)
    return np.asarray(r, dtype=float) - 0.1288 + 0.2466 * x - 0.0275 * x**2 - 0.0495 * x**3


def _gaia_sigma_parallax(gmag):
    """Gaia DR3-like parallax uncertainty [mas] versus G (the DR3 performance-page fit)."""
    z = 10.0 ** (0.4 * (np.maximum(gmag, 13.0) - 15.0))
    return 1e-3 * np.sqrt(np.maximum(-1.631 + 680.766 * z + 32.732 * z**2, 1.0))


def _epoch_year(jd):
    return 2000.0 + (jd - 2451545.0) / _DAYS_PER_YEAR


def gaia_like(sky, *, seed, epoch_jd=J2016_JD, mag_limit=21.0):
    """A Gaia DR3-like astrometric catalogue of the stars of a simulated sky.

    Every star and variable star with true ``G < mag_limit`` (see `gaia_g_mag`) is listed: the
    catalogue is complete to its limit and holds no galaxies, transients or asteroids. The true
    positions at ``epoch_jd`` and proper motions are perturbed by Gaussian noise of the listed
    errors. Position errors are 1.5 x the DR3 parallax-error curve (0.016 mas at G <= 13,
    0.11 mas at G = 17, 0.62 mas at G = 19.5, 1.4 mas at G = 20.5, 2.2 mas at G = 21), with
    ``dec_error = 0.85 ra_error``; proper-motion errors are 1.1 x the parallax error per year.

    Parameters
    ----------
    sky : `~astropy.table.Table`
        Output of `make_sky`.
    seed : int
        Seed of the noise.
    epoch_jd : float, optional
        Epoch of the positions [JD]; the default is J2016.0 (Gaia DR3).
    mag_limit : float, optional
        Faint limit in G [mag].

    Returns
    -------
    `~astropy.table.Table`
        ``source_id`` (the truth ``source_id``), ``ra``, ``dec`` [deg], ``ra_error`` (on RA cos dec),
        ``dec_error`` [mas], ``pmra``, ``pmdec``, ``pmra_error``, ``pmdec_error`` [mas/yr],
        ``phot_g_mean_mag`` [mag], ``ref_epoch`` [Julian year].
    """
    rng = np.random.default_rng(seed)
    kinds = _kinds(sky)
    gmag = gaia_g_mag(_values(sky, "g"), _values(sky, "r"), _values(sky, "i"))
    sel = np.flatnonzero(((kinds == "star") | (kinds == "variable")) & (gmag < mag_limit))
    n = len(sel)
    ra, dec = positions_at(sky[sel], epoch_jd) if n else (np.zeros(0), np.zeros(0))
    gmag = gmag[sel]
    sigma = _gaia_sigma_parallax(gmag)
    ra_err, dec_err, pm_err = 1.5 * sigma, 1.275 * sigma, 1.1 * sigma
    ra, dec = _move(ra, dec, rng.normal(0.0, ra_err) / _MAS_PER_DEG, rng.normal(0.0, dec_err) / _MAS_PER_DEG)
    out = Table()
    out["source_id"] = np.asarray(sky["source_id"], dtype=np.int64)[sel]
    cols = (
        ("ra", ra, u.deg), ("dec", dec, u.deg), ("ra_error", ra_err, u.mas), ("dec_error", dec_err, u.mas),
        ("pmra", _values(sky, "pmra")[sel] + rng.normal(0.0, pm_err), u.mas / u.yr),
        ("pmdec", _values(sky, "pmdec")[sel] + rng.normal(0.0, pm_err), u.mas / u.yr),
        ("pmra_error", pm_err, u.mas / u.yr), ("pmdec_error", pm_err.copy(), u.mas / u.yr),
        ("phot_g_mean_mag", gmag + rng.normal(0.0, 3e-4 + 3e-3 * 10.0 ** (0.4 * (gmag - 20.0))), u.mag),
    )
    for name, data, unit in cols:
        out[name] = Column(np.asarray(data, dtype=float), unit=unit)
    out["ref_epoch"] = Column(np.full(n, _epoch_year(epoch_jd)), unit=u.yr)
    out.meta.update(catalog="gaia_like", seed=seed, epoch_jd=epoch_jd, mag_limit=mag_limit)
    return out


def _ps1_objid(ra, dec):
    """PS1-style object ids from position: zone (1/120 deg) * 1e13 + ra * 1e6 * 1e4 + zone residual."""
    zone = (dec + 90.0) / 0.008333
    zid = np.floor(zone)
    return (zid.astype(np.int64) * 10**13 + np.floor(ra * 1e6).astype(np.int64) * 10**4
            + np.floor((zone - zid) * 1e4).astype(np.int64))


def _ps1_mag_error(m, m_ref):
    """PS1-like magnitude errors: 0.005 mag floor and 0.1 mag at ``m_ref``."""
    return np.hypot(0.005, 0.1 * 10.0 ** (0.4 * (m - m_ref)))


def _sgscore(rng, is_star, r):
    """Star/galaxy score: near 1 for stars, near 0 for galaxies, confused at the faint end."""
    confusion = 0.5 / (1.0 + np.exp(-(r - 21.0) / 0.5))
    base = np.where(is_star, 1.0 - confusion, confusion)
    score = base + rng.normal(0.0, 0.02 + 0.2 * confusion)
    return np.clip(score, 0.0, 1.0)


def ps1_like(sky, *, seed, mag_limit=22.0, epoch_jd=J2012_JD):
    """A Pan-STARRS1-like photometric catalogue of the stars and galaxies of a simulated sky.

    Stars (variables at their mean magnitude) and galaxies (total magnitudes) with true
    ``r < mag_limit``; no transients or asteroids. Magnitude errors are
    ``hypot(0.005, 0.1 * 10**(0.4 (m - m_ref)))`` with ``m_ref`` = 22.0, 22.0, 21.8 in g, r, i,
    and the listed magnitudes carry that noise. Positions are at ``epoch_jd`` with noise
    ``hypot(15, 100 * 10**(0.4 (r - 22)))`` mas.

    Parameters
    ----------
    sky : `~astropy.table.Table`
        Output of `make_sky`.
    seed : int
        Seed of the noise.
    mag_limit : float, optional
        Faint limit in r [mag].
    epoch_jd : float, optional
        Epoch of the positions [JD]; default J2012.0 (roughly the PS1 mean epoch).

    Returns
    -------
    `~astropy.table.Table`
        ``objid`` (int64, PS1-style from the position), ``source_id`` (the truth id), ``ra``,
        ``dec`` [deg], ``gmag``, ``rmag``, ``imag``, ``e_gmag``, ``e_rmag``, ``e_imag`` [mag],
        ``sgscore`` (0-1, 1 = star).
    """
    rng = np.random.default_rng(seed)
    kinds = _kinds(sky)
    is_point = (kinds == "star") | (kinds == "variable")
    sel = np.flatnonzero((is_point | (kinds == "galaxy")) & (_values(sky, "r") < mag_limit))
    n = len(sel)
    ra, dec = positions_at(sky[sel], epoch_jd) if n else (np.zeros(0), np.zeros(0))
    r_true = _values(sky, "r")[sel]
    sig_pos = np.hypot(15.0, 100.0 * 10.0 ** (0.4 * (r_true - 22.0)))
    ra, dec = _move(ra, dec, rng.normal(0.0, sig_pos) / _MAS_PER_DEG, rng.normal(0.0, sig_pos) / _MAS_PER_DEG)
    out = Table()
    out["objid"] = _ps1_objid(ra, dec)
    out["source_id"] = np.asarray(sky["source_id"], dtype=np.int64)[sel]
    out["ra"] = Column(ra, unit=u.deg)
    out["dec"] = Column(dec, unit=u.deg)
    errors = {}
    for band, m_ref in (("g", 22.0), ("r", 22.0), ("i", 21.8)):
        true = _values(sky, band)[sel]
        errors[band] = _ps1_mag_error(true, m_ref)
        out[f"{band}mag"] = Column(true + rng.normal(0.0, errors[band]), unit=u.mag)
    for band in "gri":
        out[f"e_{band}mag"] = Column(errors[band], unit=u.mag)
    out["sgscore"] = _sgscore(rng, is_point[sel], r_true)
    out.meta.update(catalog="ps1_like", seed=seed, epoch_jd=epoch_jd, mag_limit=mag_limit)
    return out
