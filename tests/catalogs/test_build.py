"""build_catalogs: from the simulator, re-builds, overlapping fields, providers."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ztfsds import camera
from ztfsds.catalogs import CatalogStore, LocalFileProvider, SimProvider, build_catalogs, field_region, query
from ztfsds.catalogs.build import resolve_providers
from ztfsds.errors import ConfigError, ProductNotFoundError
from ztfsds.products import ProductStore


def test_build_from_the_simulated_night(built_night):
    night, paths = built_night
    cat = CatalogStore(night.root)
    assert cat.kinds() == ["gaia", "ps1"] and paths
    for kind in ("gaia", "ps1"):
        m = cat.read_manifest(kind)
        export = Table.read(night.root / "sim" / "catalogs" / f"000655_c13_{kind}.fits")
        assert m.nrows == len(export)
        assert m.sources["sim:000655"]["rows"] == len(export) and m.sources["sim:000655"]["field"] == 655
        assert sorted(m.pixels) == cat.pixels_on_disk(kind)
        assert all(p.parents[2] == cat.directory(kind) for p in paths if kind in p.parts)
    m = cat.read_manifest("gaia")
    assert m.ref_epoch_range == [2016.0, 2016.0] and m.pm_max > 100.0  # the sim has high proper-motion stars


def test_rebuild_changes_nothing(sim_night, tmp_path):
    root = ProductStore(sim_night.root)  # a ProductStore works as the store argument too
    out = CatalogStore(tmp_path)
    sim = SimProvider(root.root)
    build_catalogs(out, [655], provider=sim, kinds=["gaia"])
    first = out.read_all("gaia")
    build_catalogs(out, [655], provider=sim, kinds=["gaia"], ccds=[13])
    again = out.read_all("gaia")
    assert len(first) == len(again)
    for name in first.colnames:
        np.testing.assert_array_equal(first[name], again[name])
    m = out.read_manifest("gaia")
    assert set(m.sources) == {"sim:000655", "sim:000655_c13"}
    build_catalogs(out, [655], provider=sim, kinds=["gaia"], replace=True, ccds=[13])
    m = out.read_manifest("gaia")
    assert set(m.sources) == {"sim:000655_c13"} and m.nrows == len(first)


def test_overlapping_fields_merge_without_duplicates(tmp_path):
    # a PS1-like table over CCD 13 of field 655 and CCD 16 of field 656, which overlap on the sky
    c1, r1 = field_region(655, 13)
    c2, r2 = field_region(656, 16)
    assert c1.separation(c2) < r1 + r2
    rng = np.random.default_rng(8)
    n = 20_000
    mid = SkyCoord((c1.ra + c2.ra) / 2, (c1.dec + c2.dec) / 2)
    ra = mid.ra.deg + rng.uniform(-2.5, 2.5, n) / np.cos(mid.dec.rad)
    dec = mid.dec.deg + rng.uniform(-2.5, 2.5, n)
    t = Table({"objid": np.arange(n) + 10**12, "ra": ra, "dec": dec, "gmag": rng.uniform(14, 22, n),
               "rmag": rng.uniform(14, 22, n), "imag": rng.uniform(14, 22, n), "e_gmag": np.full(n, 0.01),
               "e_rmag": np.full(n, 0.01), "e_imag": np.full(n, 0.01)})
    t.write(tmp_path / "ps1.fits")
    local = LocalFileProvider(tmp_path / "ps1.fits", kind="ps1")
    root = tmp_path / "root"
    build_catalogs(root, [655], provider=local, kinds=["ps1"], ccds=[13])
    n655 = CatalogStore(root).read_manifest("ps1").nrows
    build_catalogs(root, [656], provider=local, kinds=["ps1"], ccds=[16])
    everything = CatalogStore(root).read_all("ps1")
    pts = SkyCoord(t["ra"], t["dec"], unit="deg")
    in1, in2 = pts.separation(c1) <= r1, pts.separation(c2) <= r2
    assert n655 == in1.sum() and (in1 & in2).sum() > 1000
    assert len(everything) == (in1 | in2).sum() == len(np.unique(everything["objid"]))
    np.testing.assert_array_equal(everything["objid"], t["objid"][in1 | in2])
    # a cone over both returns each source once
    cone = query(root, "ps1", mid, 5 * u.deg)
    np.testing.assert_array_equal(cone["objid"], everything["objid"])


def test_bad_arguments(tmp_path, sim_night):
    with pytest.raises(ConfigError, match="99999"):
        build_catalogs(tmp_path, [99999])
    with pytest.raises(ConfigError, match="ccd 17"):
        build_catalogs(tmp_path, [655], ccds=[17])
    with pytest.raises(ConfigError, match="provider must be"):
        build_catalogs(tmp_path, [655], provider="2mass")
    with pytest.raises(ConfigError, match="kind must be one of"):
        build_catalogs(tmp_path, [655], kinds=["sdss"])
    with pytest.raises(ConfigError, match="serves"):
        build_catalogs(tmp_path, [655], provider=LocalFileProvider(tmp_path / "x.fits", kind="ps1"))
    with pytest.raises(ConfigError, match="no provider given"):
        build_catalogs(tmp_path, [655], provider={"gaia": SimProvider(tmp_path)})
    with pytest.raises(ConfigError, match="not a catalog provider"):
        build_catalogs(tmp_path, [655], provider=object())
    with pytest.raises(ProductNotFoundError, match="simulate"):
        build_catalogs(tmp_path, [655])  # nothing simulated here
    chosen = resolve_providers("online", ["ps1", "gaia"], tmp_path)
    assert chosen["gaia"].name == "gaia-archive" and chosen["ps1"].name == "vizier-ps1"
    assert camera.field_center(655)  # the field grid is intact
