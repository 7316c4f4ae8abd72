"""Epoch propagation of catalog positions with proper motions.

A star at unit vector **u0** (its ``ra``, ``dec`` at ``ref_epoch``) with proper motion
**mu** = ``pmra`` **e_east** + ``pmdec`` **e_north** (``pmra`` includes cos Dec, as in Gaia) is at
direction ``(u0 + mu dt) / |u0 + mu dt|`` after ``dt`` years: uniform motion in a straight line, which
is exact for a star of zero radial velocity at any distance (the position angle and the size of the
proper motion change along the great circle as they should). It agrees with astropy's
`~astropy.coordinates.SkyCoord.apply_space_motion` (ERFA ``pmsafe``, zero radial velocity) to
better than 1 microarcsecond for 1"/yr over 10 years; linear motion in RA/Dec instead would be off
by ``(mu dt)**2 tan(Dec) / 2`` (0.5 mas x tan Dec for 10").

Parallax (the annual wobble is for the observatory's position, not the barycentre) and radial
velocity (perspective acceleration, < 0.1 mas over 10 yr for all but a handful of nearby stars) are
ignored, as Gaia-to-survey-epoch propagation usually does.

Errors grow as ``sqrt(ra_error**2 + (pmra_error dt)**2)`` (and the same in Dec); Gaia's correlations
between position and proper motion are not used (not in the catalogs). Sources without a proper
motion (NaN ``pmra``/``pmdec``, like Gaia's 2-parameter solutions) keep their reference position and
their errors grow with `MISSING_PM_ERROR`.

Examples
--------
>>> import numpy as np
>>> from ztfsds.catalogs.propagate import propagate_positions
>>> ra, dec = propagate_positions(np.array([10.0]), np.array([0.0]), np.array([1000.0]),
...                               np.array([0.0]), 10.0)
>>> print(f"{(ra[0] - 10.0) * 3600:.4f} {dec[0]:.1f}")
10.0000 0.0
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.table import Column, Table
from astropy.time import Time

from ..errors import ConfigError, InputError

__all__ = ["MISSING_PM_ERROR", "epoch_jyear", "propagate_positions", "propagate"]

#: Proper-motion uncertainty assumed for a source without a proper motion: the scatter of the proper
#: motions of faint field stars (Gaia DR3, G ~ 20) [mas/yr].
MISSING_PM_ERROR = 10.0

_MAS_PER_RAD = 180.0 / np.pi * 3.6e6
_JD_J2000 = 2451545.0
_DAYS_PER_JULIAN_YEAR = 365.25


def epoch_jyear(epoch) -> float:
    """An epoch as a Julian year.

    Parameters
    ----------
    epoch : `~astropy.time.Time` or float
        A scalar Time, or a Julian date (float > 1e6; Julian years like 2020.5 are refused, to keep
        a JD from being mistaken for a year or the reverse).

    Returns
    -------
    float
        Julian year (TT-like scale; the scale difference, < 1 minute, is irrelevant here).

    Examples
    --------
    >>> epoch_jyear(2457389.0)
    2016.0
    """
    if isinstance(epoch, Time):
        if not epoch.isscalar:
            raise ConfigError(f"epoch must be a scalar Time, got shape {epoch.shape}")
        return float(epoch.jyear)
    try:
        jd = float(epoch)
    except (TypeError, ValueError):
        raise ConfigError(f"epoch must be an astropy Time or a Julian date, got {epoch!r}") from None
    if not np.isfinite(jd) or jd < 1e6:
        raise ConfigError(f"epoch {epoch!r} is not a Julian date (for a Julian year pass Time('J2020.5'))")
    return 2000.0 + (jd - _JD_J2000) / _DAYS_PER_JULIAN_YEAR


def propagate_positions(ra, dec, pmra, pmdec, dt):
    """Move positions by their proper motions (straight-line motion, see the module docstring).

    Parameters
    ----------
    ra, dec : array-like
        Positions at the reference epoch [deg].
    pmra, pmdec : array-like
        Proper motions, ``pmra`` including cos Dec [mas/yr]; NaN counts as 0.
    dt : float or array-like
        Target epoch minus reference epoch [Julian years].

    Returns
    -------
    ra, dec : `numpy.ndarray`
        Positions at the target epoch [deg], ``ra`` in [0, 360).
    """
    a = np.radians(np.asarray(ra, dtype=float))
    d = np.radians(np.asarray(dec, dtype=float))
    pa = np.nan_to_num(np.asarray(pmra, dtype=float)) / _MAS_PER_RAD * np.asarray(dt, dtype=float)
    pd = np.nan_to_num(np.asarray(pmdec, dtype=float)) / _MAS_PER_RAD * np.asarray(dt, dtype=float)
    ca, sa, cd, sd = np.cos(a), np.sin(a), np.cos(d), np.sin(d)
    # u0 + pa * e_east + pd * e_north
    x = cd * ca - pa * sa - pd * sd * ca
    y = cd * sa + pa * ca - pd * sd * sa
    z = sd + pd * cd
    ra_out = np.degrees(np.arctan2(y, x)) % 360.0
    dec_out = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra_out, dec_out


def propagate(table: Table, epoch) -> Table:
    """A Gaia-like catalog at another epoch.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Rows in the ``'gaia'`` schema (`ztfsds.catalogs.schema`): ``ra``, ``dec``, ``ra_error``,
        ``dec_error``, ``pmra``, ``pmdec``, ``pmra_error``, ``pmdec_error``, ``ref_epoch``.
    epoch : `~astropy.time.Time` or float
        Target epoch (a Time or a Julian date).

    Returns
    -------
    `~astropy.table.Table`
        A copy with ``ra``, ``dec`` [deg] at ``epoch`` and ``ra_error``, ``dec_error`` [mas] grown
        (other columns as they were); ``ref_epoch``
        is kept (the epoch the catalog's positions were measured at) and ``meta['epoch']`` holds the
        target epoch [Julian year].
    """
    for name in ("ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "pmra_error", "pmdec_error", "ref_epoch"):
        if name not in table.colnames:
            raise InputError(None, f"cannot propagate: no column {name!r}")
    target = epoch_jyear(epoch)
    out = table.copy(copy_data=True)
    dt = target - _values(table, "ref_epoch", u.yr)
    pmra, pmdec = _values(table, "pmra", u.mas / u.yr), _values(table, "pmdec", u.mas / u.yr)
    ra, dec = propagate_positions(_values(table, "ra", u.deg), _values(table, "dec", u.deg), pmra, pmdec, dt)
    no_pm = ~(np.isfinite(pmra) & np.isfinite(pmdec))
    err = {}
    for axis in ("ra", "dec"):
        pm_err = _values(table, f"pm{axis}_error", u.mas / u.yr)
        pm_err = np.where(no_pm | ~np.isfinite(pm_err), MISSING_PM_ERROR, pm_err)
        err[axis] = np.hypot(_values(table, f"{axis}_error", u.mas), pm_err * dt)
    out["ra"] = Column(ra, unit=u.deg)
    out["dec"] = Column(dec, unit=u.deg)
    out["ra_error"] = Column(err["ra"], unit=u.mas)
    out["dec_error"] = Column(err["dec"], unit=u.mas)
    out.meta["epoch"] = target
    return out


def _values(table, name, unit) -> np.ndarray:
    col = table[name]
    if getattr(col, "unit", None) is not None and col.unit != unit:
        return np.asarray((np.asarray(col, dtype=float) * col.unit).to_value(unit))
    return np.asarray(col, dtype=float)
