"""The canonical catalog schemas: checks, unit conversion, fills."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import MaskedColumn, Table

from ztfsds.catalogs.schema import KINDS, SCHEMAS, get_schema
from ztfsds.errors import ConfigError, InputError


def _gaia_rows(n=3):
    return Table({"source_id": np.arange(1, n + 1), "ra": np.linspace(10, 11, n) * u.deg,
                  "dec": np.full(n, 20.0) * u.deg, "ra_error": np.full(n, 0.1) * u.mas,
                  "dec_error": np.full(n, 0.1) * u.mas, "phot_g_mean_mag": np.full(n, 15.0) * u.mag})


def test_kinds_and_ids():
    assert KINDS == ("gaia", "ps1")
    assert SCHEMAS["gaia"].id_column == "source_id" and SCHEMAS["ps1"].id_column == "objid"
    with pytest.raises(ConfigError, match="kind must be one of"):
        get_schema("2mass")


def test_conform_fills_optional_columns_and_converts_units():
    t = _gaia_rows()
    t["ra_error"] = [1e-4, 2e-4, 3e-4] * u.arcsec  # 0.1, 0.2, 0.3 mas
    t["extra"] = 1
    out = SCHEMAS["gaia"].conform(t)
    assert out.colnames == SCHEMAS["gaia"].names
    np.testing.assert_allclose(out["ra_error"], [0.1, 0.2, 0.3])
    assert out["ra_error"].unit == u.mas
    assert np.all(np.isnan(out["pmra"])) and np.all(out["ref_epoch"] == 2016.0)
    assert out["source_id"].dtype == np.int64


def test_conform_masked_values_become_nan():
    t = _gaia_rows()
    t["pmra"] = MaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False], unit=u.mas / u.yr)
    out = SCHEMAS["gaia"].conform(t)
    assert np.isnan(out["pmra"][1]) and out["pmra"][2] == 3.0


def test_conform_errors_name_the_source():
    t = _gaia_rows()
    del t["phot_g_mean_mag"]
    with pytest.raises(InputError, match=r"mycat\.fits.*phot_g_mean_mag"):
        SCHEMAS["gaia"].conform(t, source="mycat.fits")
    t = _gaia_rows()
    t["ra_error"] = [1, 2, 3] * u.s
    with pytest.raises(InputError, match="does not convert"):
        SCHEMAS["gaia"].conform(t)
    t = _gaia_rows()
    t["dec"][1] = np.nan
    with pytest.raises(InputError, match="non-finite 'dec'"):
        SCHEMAS["gaia"].conform(t)


def test_conform_wraps_ra():
    t = _gaia_rows()
    t["ra"] = [-1.0, 360.0, 359.5] * u.deg
    np.testing.assert_allclose(SCHEMAS["gaia"].conform(t)["ra"], [359.0, 0.0, 359.5])


def test_empty_has_every_column():
    e = SCHEMAS["ps1"].empty()
    assert len(e) == 0 and e.colnames == SCHEMAS["ps1"].names and e["ra"].unit == u.deg
