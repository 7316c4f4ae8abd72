"""Queries of catalogs built from a simulated night, against brute-force selections on its exports."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import ICRS, SkyCoord
from astropy.table import Table
from astropy.time import Time
from astropy_healpix import HEALPix

from ztfsds import camera
from ztfsds.catalogs import CatalogStore, SimProvider, propagate, query, query_for_wcs
from ztfsds.catalogs.healpix import PARTITION_ORDER, healpix_index
from ztfsds.errors import ConfigError
from ztfsds.sim.optics import subarray_origin

SIZE = 256


def export(night, kind):
    """The simulator's export of field 655 CCD 13, with the catalog's ids."""
    t = Table.read(night.root / "sim" / "catalogs" / f"000655_c13_{kind}.fits")
    t["source_id"] = SimProvider.source_id(655, 13, t["source_id"])
    return t


def in_cone(t, center, radius):
    return SkyCoord(t["ra"], t["dec"]).separation(center) <= radius


def quadrant_wcs(qid):
    """The nominal WCS of the simulated (centred, SIZE x SIZE) sub-array of a quadrant of c13."""
    wcs = camera.nominal_wcs(655, 13, qid)
    x0, y0 = subarray_origin((SIZE, SIZE))
    wcs.wcs.crpix = [wcs.wcs.crpix[0] - x0, wcs.wcs.crpix[1] - y0]
    wcs.wcs.set()
    wcs.pixel_shape = (SIZE, SIZE)
    return wcs


def test_every_exported_star_in_the_cone_exactly_once(built_night):
    night, _ = built_night
    for kind, idcol in (("gaia", "source_id"), ("ps1", "objid")):
        full = export(night, kind)
        assert CatalogStore(night.root).read_manifest(kind).nrows == len(full)  # nothing clipped at this size
        for qid in camera.QIDS:
            w = quadrant_wcs(qid)
            center = w.pixel_to_world((SIZE - 1) / 2, (SIZE - 1) / 2)
            for radius in (0.05 * u.deg, 0.3 * u.deg):
                got = query(night.root, kind, center, radius)
                expect = full[in_cone(full, center, radius)]
                assert len(got) == len(expect) > 0
                assert len(np.unique(got[idcol])) == len(got)
                np.testing.assert_array_equal(np.sort(got[idcol]), np.sort(expect[idcol]))
        # a cone holding the whole export
        everything = query(night.root, kind, SkyCoord(full["ra"][0], full["dec"][0], unit="deg"), 3 * u.deg)
        assert len(everything) == len(full)


def test_positions_and_units_are_the_exports(built_night):
    night, _ = built_night
    full = export(night, "gaia")
    center = SkyCoord(full["ra"][10], full["dec"][10], unit="deg")
    got = query(night.root, "gaia", center, 0.1 * u.deg)
    ref = full[np.isin(full["source_id"], got["source_id"])]
    ref.sort("source_id")
    for name in ("ra", "dec", "pmra", "phot_g_mean_mag", "ra_error"):
        np.testing.assert_array_equal(got[name], ref[name])
        assert got[name].unit == ref[name].unit
    assert got.meta["catalog"] == "gaia" and got.meta["epoch"] is None


def test_epoch_propagation_and_magnitude_limit(built_night):
    night, _ = built_night
    full = export(night, "gaia")
    epoch = Time(float(night.schedule["jd"][0]), format="jd")
    moved = propagate(full, epoch)
    center = quadrant_wcs(1).pixel_to_world(SIZE / 2, SIZE / 2)
    radius = 0.25 * u.deg
    got = query(night.root, "gaia", center, radius, epoch=epoch, mag_limit=19.5)
    sel = in_cone(moved, center, radius) & (moved["phot_g_mean_mag"] <= 19.5)
    expect = moved[sel]
    expect.sort("source_id")
    np.testing.assert_array_equal(got["source_id"], expect["source_id"])
    np.testing.assert_array_equal(got["ra"], expect["ra"])
    assert np.all(got["ra_error"] > full["ra_error"][np.isin(full["source_id"], got["source_id"])].min())
    assert got.meta["epoch"] == pytest.approx(epoch.jyear)
    # against the simulator's own propagation of its truth (flat-sky, good to < 0.1 mas here)
    from ztfsds.sim.sky import positions_at
    truth = Table({"kind": np.full(len(full), "star"), "ra": full["ra"], "dec": full["dec"], "pmra": full["pmra"],
                   "pmdec": full["pmdec"], "t0": np.zeros(len(full)), "ra_rate": np.zeros(len(full)),
                   "dec_rate": np.zeros(len(full))})
    ra, dec = positions_at(truth, epoch.jd)
    sep = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(moved["ra"], moved["dec"])).to_value(u.mas)
    assert sep.max() < 0.1


def test_fast_movers_are_found_across_the_cone_edge(tmp_path):
    # a 1000 mas/yr star 5" outside a cone at J2016 is inside it 10 yr later, and the reverse
    cat = CatalogStore(tmp_path)
    center = SkyCoord(200 * u.deg, 30 * u.deg)
    r = 60.0 / 3600.0
    stars = Table({"source_id": [1, 2], "ra": [200 - (r + 5 / 3600) / np.cos(np.radians(30)), 200.0] * u.deg,
                   "dec": [30.0, 30.0 + r - 5 / 3600] * u.deg, "ra_error": [0.1, 0.1] * u.mas,
                   "dec_error": [0.1, 0.1] * u.mas, "pmra": [1000.0, 0.0] * u.mas / u.yr,
                   "pmdec": [0.0, 1000.0] * u.mas / u.yr, "pmra_error": [0.1, 0.1] * u.mas / u.yr,
                   "pmdec_error": [0.1, 0.1] * u.mas / u.yr, "phot_g_mean_mag": [12.0, 12.0] * u.mag})
    cat.write("gaia", stars)
    assert list(query(cat, "gaia", center, r * u.deg)["source_id"]) == [2]
    assert list(query(cat, "gaia", center, r * u.deg, epoch=Time("J2026.0"))["source_id"]) == [1]


def test_cone_straddling_partition_edges_returns_the_union(built_night):
    night, _ = built_night
    cat = CatalogStore(night.root)
    full = export(night, "gaia")
    hp = HEALPix(nside=2**PARTITION_ORDER, order="nested", frame=ICRS())
    # the partition corner nearest the middle of the export
    mid = SkyCoord(np.median(full["ra"]), np.median(full["dec"]), unit="deg")
    corners = hp.boundaries_skycoord(np.asarray(cat.pixels_on_disk("gaia")), step=1).flatten()
    corner = corners[np.argmin(corners.separation(mid))]
    assert corner.separation(mid) < 0.4 * u.deg
    radius = 0.08 * u.deg
    got = query(cat, "gaia", corner, radius)
    expect = full[in_cone(full, corner, radius)]
    parts = set(healpix_index(expect["ra"], expect["dec"], PARTITION_ORDER))
    assert len(parts) >= 3  # the cone really spans partitions
    np.testing.assert_array_equal(np.sort(got["source_id"]), np.sort(expect["source_id"]))


def test_query_for_wcs_matches_pixel_brute_force(built_night):
    night, _ = built_night
    full = export(night, "gaia")
    epoch = float(night.schedule["jd"][0])
    moved = propagate(full, epoch)
    for qid in camera.QIDS:
        wcs = quadrant_wcs(qid)
        got = query_for_wcs(night.root, "gaia", wcs, (SIZE, SIZE), margin=60 * u.arcsec, epoch=epoch)
        x, y = wcs.world_to_pixel_values(moved["ra"], moved["dec"])
        m = 60.0 / 1.012
        inside = (x >= -0.5 - m) & (x <= SIZE - 0.5 + m) & (y >= -0.5 - m) & (y <= SIZE - 0.5 + m)
        assert len(got) == inside.sum() > 100
        np.testing.assert_array_equal(got["source_id"], np.sort(moved["source_id"][inside]))
        # margins in pixels, and the WCS's own shape
        px = query_for_wcs(night.root, "gaia", wcs, margin=m * u.pix, epoch=epoch)
        np.testing.assert_array_equal(px["source_id"], got["source_id"])


def test_polygon_query(built_night):
    night, _ = built_night
    full = export(night, "ps1")
    wcs = quadrant_wcs(2)
    corners = wcs.pixel_to_world(np.array([-0.5, SIZE - 0.5, SIZE - 0.5, -0.5]),
                                 np.array([-0.5, -0.5, SIZE - 0.5, SIZE - 0.5]))
    got = query(night.root, "ps1", polygon=corners[::-1], columns=["objid", "rmag"])
    assert got.colnames == ["objid", "rmag"]
    x, y = wcs.world_to_pixel_values(full["ra"], full["dec"])
    inside = (x >= -0.5) & (x <= SIZE - 0.5) & (y >= -0.5) & (y <= SIZE - 0.5)
    # TAN maps great circles to straight lines: the polygon is the pixel square
    np.testing.assert_array_equal(got["objid"], np.sort(full["objid"][inside]))


def test_ps1_positions_ignore_the_epoch_and_bad_arguments(built_night):
    night, _ = built_night
    center = quadrant_wcs(3).pixel_to_world(10, 10)
    a = query(night.root, "ps1", center, 0.1 * u.deg)
    b = query(night.root, "ps1", center, 0.1 * u.deg, epoch=Time("J2030.0"))
    np.testing.assert_array_equal(a["ra"], b["ra"])
    with pytest.raises(ConfigError, match="exactly one region"):
        query(night.root, "ps1")
    with pytest.raises(ConfigError, match="exactly one region"):
        query(night.root, "ps1", center, 1 * u.deg, polygon=SkyCoord([1, 2, 3] * u.deg, [0, 1, 0] * u.deg))
    with pytest.raises(ConfigError, match="radius must be a scalar angle"):
        query(night.root, "ps1", center, 1.0)
    with pytest.raises(ConfigError, match="no column"):
        query(night.root, "ps1", center, 1 * u.deg, columns=["pmra"])
    with pytest.raises(ConfigError, match="Julian date"):
        query(night.root, "gaia", center, 1 * u.deg, epoch=2020.5)
    empty = query(night.root, "gaia", SkyCoord(0 * u.deg, -80 * u.deg), 1 * u.deg)
    assert len(empty) == 0 and "phot_g_mean_mag" in empty.colnames and empty["ra"].unit == u.deg


@pytest.mark.parametrize("ra0,dec0", [(0.0, 0.0), (359.95, -30.0), (123.0, 89.7), (10.0, -89.9)])
def test_cones_across_ra_zero_and_the_poles(tmp_path, ra0, dec0):
    rng = np.random.default_rng(11)
    n = 5000
    dra = rng.uniform(-1.0, 1.0, n) / max(np.cos(np.radians(dec0)), 0.02)
    dec = np.clip(dec0 + rng.uniform(-1.0, 1.0, n), -89.999, 89.999)
    stars = Table({"objid": np.arange(n), "ra": (ra0 + dra) % 360.0, "dec": dec, "gmag": np.full(n, 18.0),
                   "rmag": np.full(n, 18.0), "imag": np.full(n, 18.0), "e_gmag": np.full(n, 0.01),
                   "e_rmag": np.full(n, 0.01), "e_imag": np.full(n, 0.01)})
    CatalogStore(tmp_path).write("ps1", stars)
    center = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    got = query(tmp_path, "ps1", center, 0.5 * u.deg)
    expect = stars["objid"][SkyCoord(stars["ra"], stars["dec"], unit="deg").separation(center) <= 0.5 * u.deg]
    assert len(expect) > 100
    np.testing.assert_array_equal(got["objid"], np.sort(expect))
