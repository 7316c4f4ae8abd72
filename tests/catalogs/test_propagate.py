"""Epoch propagation against astropy's rigorous space motion (ERFA pmsafe)."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from ztfsds.catalogs import MISSING_PM_ERROR, propagate
from ztfsds.catalogs.propagate import epoch_jyear, propagate_positions
from ztfsds.errors import ConfigError


def _astropy_moved(ra, dec, pmra, pmdec, dt):
    # a finite distance (the rigorous model needs one) and zero radial velocity: the apparent motion
    # of such a star does not depend on its distance
    t0 = Time(2016.0, format="jyear", scale="tcb")
    c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, distance=10 * u.pc, pm_ra_cosdec=pmra * u.mas / u.yr,
                 pm_dec=pmdec * u.mas / u.yr, radial_velocity=0 * u.km / u.s, obstime=t0)
    return c.apply_space_motion(new_obstime=t0 + dt * u.yr)


@pytest.mark.parametrize("dt", [10.0, -10.0, 4.7])
def test_agrees_with_apply_space_motion_to_below_1_mas(dt):
    rng = np.random.default_rng(5)
    n = 5000
    ra = rng.uniform(0, 360, n)
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, n - 4))), [89.99, -89.99, 85.0, 0.0]])
    # 1"/yr stars in every direction, and some much faster ones
    angle = rng.uniform(0, 2 * np.pi, n)
    speed = np.where(rng.random(n) < 0.9, 1000.0, rng.uniform(0, 10_000.0, n))
    pmra, pmdec = speed * np.sin(angle), speed * np.cos(angle)
    ra1, dec1 = propagate_positions(ra, dec, pmra, pmdec, dt)
    ref = _astropy_moved(ra, dec, pmra, pmdec, dt)
    sep = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ref.ra, ref.dec)).to_value(u.mas)
    assert sep.max() < 1.0, sep.max()
    # and the motion is really there (10" for 1"/yr over 10 yr)
    moved = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra1 * u.deg, dec1 * u.deg)).to_value(u.arcsec)
    np.testing.assert_allclose(moved[speed == 1000.0], abs(dt), rtol=1e-6)


def _gaia_table():
    return Table({"source_id": [1, 2, 3], "ra": [10.0, 20.0, 30.0] * u.deg, "dec": [0.0, 45.0, -30.0] * u.deg,
                  "ra_error": [0.1, 0.2, 0.3] * u.mas, "dec_error": [0.1, 0.2, 0.3] * u.mas,
                  "pmra": [100.0, np.nan, -50.0] * u.mas / u.yr, "pmdec": [0.0, np.nan, 20.0] * u.mas / u.yr,
                  "pmra_error": [0.05, np.nan, 0.5] * u.mas / u.yr, "pmdec_error": [0.05, np.nan, 0.5] * u.mas / u.yr,
                  "phot_g_mean_mag": [15.0, 16.0, 17.0] * u.mag, "ref_epoch": [2016.0, 2016.0, 2015.5] * u.yr})


def test_propagate_table_errors_and_missing_proper_motions():
    t = _gaia_table()
    out = propagate(t, Time("J2026.0"))
    assert out.meta["epoch"] == pytest.approx(2026.0)
    np.testing.assert_allclose(out["ra_error"], [np.hypot(0.1, 0.5), np.hypot(0.2, 10 * MISSING_PM_ERROR),
                                                 np.hypot(0.3, 0.5 * 10.5)])
    # no proper motion: the position stays
    assert out["ra"][1] == pytest.approx(20.0, abs=1e-12) and out["dec"][1] == pytest.approx(45.0, abs=1e-12)
    # each row from its own ref_epoch
    ra, dec = propagate_positions(30.0, -30.0, -50.0, 20.0, 10.5)
    assert out["ra"][2] == pytest.approx(ra, abs=1e-12) and out["dec"][2] == pytest.approx(dec, abs=1e-12)
    # the input is untouched, units kept
    assert t["ra"][0] == 10.0 and out["ra"].unit == u.deg and out["ra_error"].unit == u.mas


def test_epoch_forms():
    assert epoch_jyear(2457389.0) == pytest.approx(2016.0)
    assert epoch_jyear(Time(2457389.0, format="jd")) == pytest.approx(2016.0)
    for bad in (2020.5, "soon", Time([2457389.0, 2457390.0], format="jd"), float("nan")):
        with pytest.raises(ConfigError):
            epoch_jyear(bad)
