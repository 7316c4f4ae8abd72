"""Providers: the simulator's exports, local files, and the online services when offline."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from ztfsds import camera
from ztfsds.catalogs import (
    GaiaArchiveProvider,
    LocalFileProvider,
    Provider,
    SimProvider,
    VizierPS1Provider,
    build_catalogs,
    ccd_cell,
    field_region,
)
from ztfsds.catalogs.schema import SCHEMAS
from ztfsds.errors import CatalogUnavailableError, ConfigError, InputError, ProductNotFoundError


def test_every_provider_follows_the_protocol(tmp_path):
    for p in (SimProvider(tmp_path), LocalFileProvider(tmp_path / "x.fits", kind="gaia"), GaiaArchiveProvider(),
              VizierPS1Provider()):
        assert isinstance(p, Provider)


def test_sim_provider_ids_and_schema(sim_night):
    sim = SimProvider(sim_night.root)
    for kind in ("gaia", "ps1"):
        raw = Table.read(sim_night.root / "sim" / "catalogs" / f"000655_c13_{kind}.fits")
        t = sim.fetch(kind, 655, 13)
        assert t.colnames == SCHEMAS[kind].names and len(t) == len(raw)
        np.testing.assert_array_equal(SimProvider.truth_id(t["source_id"]), raw["source_id"])
        assert np.all(t["source_id"] // SimProvider.ID_BASE == 65513)
        np.testing.assert_array_equal(sim.fetch(kind, 655)["source_id"], t["source_id"])  # every CCD = c13
    with pytest.raises(ProductNotFoundError, match=r"000655_c14_gaia\.fits.*simulate"):
        sim.fetch("gaia", 655, 14)
    with pytest.raises(ProductNotFoundError, match=r"000656_c\?\?_ps1\.fits"):
        sim.fetch("ps1", 656)


def test_ccd_cells_tile_the_field():
    center, radius = field_region(655)
    rng = np.random.default_rng(4)
    n = 20000
    r = radius.to_value(u.deg) * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    ra, dec = camera.tangent_deproject(r * np.sin(phi), r * np.cos(phi), center.ra.deg, center.dec.deg)
    owners = np.array([ccd_cell(655, c, ra, dec) for c in camera.CCDIDS])
    assert np.all(owners.sum(axis=0) == 1)  # each position in exactly one cell
    # and a position on a CCD belongs to that CCD
    loc = camera.locate(ra, dec, fields=[655])
    np.testing.assert_array_equal(np.argmax(owners[:, loc["index"]], axis=0) + 1, loc["ccdid"])


def test_sim_clip_drops_neighbours_sky(tmp_path):
    # an export whose circle reaches into CCD 14's cell: the part there is cut
    c14, _ = field_region(655, 14)
    c13, _ = field_region(655, 13)
    ra = np.array([c13.ra.deg, c14.ra.deg])
    dec = np.array([c13.dec.deg, c14.dec.deg])
    t = Table({"source_id": [1, 2], "ra": ra * u.deg, "dec": dec * u.deg, "ra_error": [0.1, 0.1] * u.mas,
               "dec_error": [0.1, 0.1] * u.mas, "phot_g_mean_mag": [15.0, 15.0] * u.mag})
    (tmp_path / "sim" / "catalogs").mkdir(parents=True)
    t.write(tmp_path / "sim" / "catalogs" / "000655_c13_gaia.fits")
    assert list(SimProvider.truth_id(SimProvider(tmp_path).fetch("gaia", 655)["source_id"])) == [1]
    assert len(SimProvider(tmp_path, clip=False).fetch("gaia", 655)) == 2


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits"])
def test_local_file_provider_maps_columns_and_units(tmp_path, fmt):
    center, _ = field_region(655, 13)
    rng = np.random.default_rng(1)
    n = 500
    t = Table({"ID": np.arange(n), "RA_ICRS": center.ra.deg + rng.uniform(-3, 3, n),
               "DE_ICRS": center.dec.deg + rng.uniform(-3, 3, n), "e_RA": np.full(n, 0.2),
               "e_DE": np.full(n, 0.2), "Gmag": rng.uniform(12, 20, n)})
    if fmt != "csv":
        t["e_RA"].unit = u.arcsec  # converted to mas
    path = tmp_path / f"mycat.{fmt}"
    t.write(path)
    cmap = {"source_id": "ID", "ra": "RA_ICRS", "dec": "DE_ICRS", "ra_error": "e_RA", "dec_error": "e_DE",
            "phot_g_mean_mag": "Gmag"}
    p = LocalFileProvider(path, cmap, kind="gaia", ref_epoch=2015.5)
    got = p.fetch("gaia", 655, 13)
    _, radius = field_region(655, 13, margin=p.margin)
    from astropy.coordinates import SkyCoord
    inside = SkyCoord(t["RA_ICRS"], t["DE_ICRS"], unit="deg").separation(center) <= radius
    assert 0 < len(got) == inside.sum() < n
    assert got["ra_error"][0] == pytest.approx(200.0 if fmt != "csv" else 0.2)
    assert np.all(got["ref_epoch"] == 2015.5) and np.all(np.isnan(got["pmra"]))
    with pytest.raises(ConfigError, match="serves"):
        p.fetch("ps1", 655)


def test_local_file_provider_errors(tmp_path):
    with pytest.raises(ProductNotFoundError, match="nowhere.fits"):
        LocalFileProvider(tmp_path / "nowhere.fits", kind="ps1").read()
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = garbage" * 200)
    with pytest.raises(InputError, match="bad.fits"):
        LocalFileProvider(bad, kind="ps1").read()
    t = Table({"objid": [1], "ra": [1.0], "dec": [2.0]})
    t.write(tmp_path / "short.ecsv")
    with pytest.raises(InputError, match=r"short\.ecsv.*gmag"):
        LocalFileProvider(tmp_path / "short.ecsv", kind="ps1").read()
    with pytest.raises(InputError, match="lacks"):
        LocalFileProvider(tmp_path / "short.ecsv", {"gmag": "G"}, kind="ps1").read()
    (tmp_path / "cat.dat").write_text("1 2 3")
    with pytest.raises(InputError, match="format"):
        LocalFileProvider(tmp_path / "cat.dat", kind="ps1").read()


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "cat.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(InputError, match="pyarrow"):
            LocalFileProvider(path, kind="ps1").read()
    else:
        pytest.skip("pyarrow is installed")


def _refuse(*args, **kwargs):
    import requests

    raise requests.exceptions.ConnectionError("Failed to establish a new connection: [Errno 101]")


def test_gaia_archive_offline_is_a_clear_error(tmp_path, monkeypatch):
    from astroquery.utils.tap.core import TapPlus

    monkeypatch.setattr(TapPlus, "launch_job_async", _refuse)
    with pytest.raises(CatalogUnavailableError) as info:
        build_catalogs(tmp_path, [655], provider="online", kinds=["gaia"], ccds=[13])
    msg = str(info.value)
    assert "Gaia archive" in msg and "gea.esac.esa.int" in msg and "unreachable" in msg
    assert "provider='sim'" in msg and "LocalFileProvider" in msg
    assert isinstance(info.value, ConnectionError)
    assert not (tmp_path / "catalogs" / "gaia" / "manifest.json").exists()


def test_vizier_offline_is_a_clear_error(tmp_path, monkeypatch):
    from astroquery.vizier.core import VizierClass

    monkeypatch.setattr(VizierClass, "query_region", _refuse)
    msg = r"VizieR II/349/ps1: unreachable.*field 655.*Errno 101.*provider='sim'"
    with pytest.raises(CatalogUnavailableError, match=msg):
        VizierPS1Provider().fetch("ps1", 655, 13)


def test_vizier_result_is_conformed(monkeypatch):
    from astroquery.utils import TableList
    from astroquery.vizier.core import VizierClass

    t = Table({"objID": [123], "RAJ2000": [58.5] * u.deg, "DEJ2000": [36.1] * u.deg, "gmag": [18.0] * u.mag,
               "e_gmag": [0.01] * u.mag, "rmag": [17.5] * u.mag, "e_rmag": [0.01] * u.mag,
               "imag": [17.2] * u.mag, "e_imag": [0.02] * u.mag})
    seen = {}

    def fake(self, coords, radius=None, catalog=None, **kwargs):
        seen.update(radius=radius, catalog=catalog, filters=self.column_filters)
        return TableList([("II/349/ps1", t)])

    monkeypatch.setattr(VizierClass, "query_region", fake)
    got = VizierPS1Provider(mag_limit=21.0).fetch("ps1", 655, 13)
    assert got.colnames == SCHEMAS["ps1"].names and got["objid"][0] == 123 and np.isnan(got["sgscore"][0])
    assert seen["catalog"] == "II/349/ps1" and seen["filters"] == {"rmag": "<21.0"}
    assert seen["radius"] > 1.2 * u.deg
