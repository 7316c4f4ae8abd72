"""Queries: image search by footprint and filters, cone search vs brute force, histories, object ids."""

import threading

import numpy as np
import pytest

from archive.synth import JD0, SIZE, write_candidates, write_quadrant
from ztfsds.archive import (connect, cone_search, candidate_history, hpx_ranges, ingest_candidates,
                            ingest_quadrant, new_object_id, nondetections, object_for_position, record_object,
                            search_images, upsert_rows)
from ztfsds.archive.footprint import angular_distance, contains, hpx_of
from ztfsds.errors import ArchiveError
from ztfsds.products import ProductStore, objectid_from_number


@pytest.fixture
def store(tmp_path):
    return ProductStore(tmp_path / "root")


def _load_sources(db, ra, dec):
    n = len(ra)
    rows = zip(np.arange(n).tolist(), [1] * n, ra.tolist(), dec.tolist(), hpx_of(ra, dec).tolist())
    upsert_rows(db, "sources", ("sourceid", "pid", "ra", "dec", "hpx"), rows, update=False)


@pytest.mark.parametrize("centre", [(150.0, 2.0), (0.002, -30.0), (359.999, 10.0), (45.0, 89.99), (200.0, -89.995)])
def test_cone_search_equals_brute_force(db, centre):
    """Every source within the radius and no other, for radii 1" - 0.5 deg, at RA wrap and the poles."""
    rng = np.random.default_rng(1)
    ra0, dec0 = centre
    n = 20000
    # points within ~0.6 deg of the centre, denser near it
    r = 0.6 * rng.uniform(0, 1, n) ** 2
    theta = rng.uniform(0, 2 * np.pi, n)
    dec = np.clip(dec0 + r * np.sin(theta), -90, 90)
    ra = np.mod(ra0 + r * np.cos(theta) / max(np.cos(np.radians(dec0)), 1e-3), 360.0)
    _load_sources(db, ra, dec)
    for radius in (1.0, 5.0, 60.0, 600.0, 1800.0):
        got = cone_search(db, "sources", ra0, dec0, radius, columns=["sourceid"])
        truth = np.flatnonzero(angular_distance(ra0, dec0, ra, dec) <= radius)
        assert sorted(got["sourceid"].tolist()) == truth.tolist(), radius
        assert np.all(np.diff(got["dist"]) >= 0) and np.all(got["dist"] <= radius)
    assert len(hpx_ranges(ra0, dec0, 1800.0)[0]) <= 64


def test_cone_search_where_and_errors(db):
    ra = np.array([10.0, 10.0 + 1 / 3600, 10.0 + 3 / 3600])
    dec = np.zeros(3)
    _load_sources(db, ra, dec)
    got = cone_search(db, "sources", 10.0, 0.0, 5.0, columns=["sourceid"], where=("sourceid > ?", [0]))
    assert got["sourceid"].tolist() == [1, 2]
    assert np.allclose(got["dist"], [1.0, 3.0], atol=1e-6)
    assert cone_search(db, "sources", 10.0, 0.0, 5.0, limit=1)["sourceid"].tolist() == [0]
    with pytest.raises(ArchiveError, match="no positions"):
        cone_search(db, "exposures", 10.0, 0.0, 5.0)
    with pytest.raises(ArchiveError, match="invalid position"):
        cone_search(db, "sources", 10.0, 95.0, 5.0)
    with pytest.raises(ArchiveError, match="invalid cone radius"):
        cone_search(db, "sources", 10.0, 0.0, -1.0)


def test_contains_matches_wcs():
    """Point-in-footprint agrees with the WCS pixel test, including a rotated footprint near a pole."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from archive.synth import sci_header
    from ztfsds.archive.footprint import footprint_corners

    rng = np.random.default_rng(2)
    for ra0, dec0, rot in ((120.0, 20.0, 0.0), (0.01, -10.0, 30.0), (80.0, 89.97, 15.0)):
        h = sci_header(ra0, dec0, JD0, rotation=rot)
        corners = footprint_corners(fits.Header(h))
        x = rng.uniform(-40, SIZE + 40, 4000) - 0.5
        y = rng.uniform(-40, SIZE + 40, 4000) - 0.5
        ra, dec = WCS(h).all_pix2world(x, y, 0)
        inside = (x > -0.5) & (x < SIZE - 0.5) & (y > -0.5) & (y < SIZE - 0.5)
        got = contains(corners, ra, dec)
        # TAN edges are great circles: exact up to round-off at the edge itself
        assert np.array_equal(got, inside), (ra0, dec0, int(np.sum(got != inside)))


def test_search_images(db, store):
    keys = []
    for k, (ra, dec) in enumerate([(100.0, 10.0), (100.02, 10.0), (101.0, 10.0)]):
        for night in range(3):
            jd = JD0 + night + 0.01 * k
            keys.append(write_quadrant(store, ra, dec, jd, psfcat=False, seeing=2.0 + night,
                                       maglim=20.0 + 0.5 * night, infobits=4 if night == 2 else 0,
                                       filtercode="zg" if night == 1 else "zr", ccdid=k + 1))
    for key in keys:
        ingest_quadrant(db, store, key)
    # (100.01, 10): inside the first two footprints (128" wide each, 72" apart), not the third
    got = search_images(db, ra=100.01, dec=10.0)
    assert len(got) == 6 and set(got["ccdid"].tolist()) == {1, 2}
    assert np.all(np.diff(got["jd"]) > 0)
    assert len(search_images(db, ra=100.01, dec=10.0, fid=1)) == 2
    assert len(search_images(db, ra=100.01, dec=10.0, jd_min=JD0 + 0.5, jd_max=JD0 + 1.5)) == 2
    assert len(search_images(db, ra=100.01, dec=10.0, max_seeing=3.5)) == 4
    assert len(search_images(db, ra=100.01, dec=10.0, min_maglim=20.4)) == 4
    assert len(search_images(db, ra=100.01, dec=10.0, infobits_mask=4)) == 4
    # just outside the first footprint's west edge (RA increases east): 2" beyond it
    edge = 100.0 + (SIZE / 2 + 2) / 3600 / np.cos(np.radians(10.0))
    assert set(search_images(db, ra=edge, dec=10.0)["ccdid"].tolist()) == {2}
    assert len(search_images(db, ra=100.5, dec=10.0)) == 0
    assert len(search_images(db, field=655, ccdid=3)) == 3
    assert len(search_images(db)) == 9


def test_candidate_history_and_nondetections(db, store):
    """An object at a fixed position detected on nights 0, 2 and 4, with images on every night 0-5."""
    ra0, dec0 = 150.0, 30.0
    pids = {}
    for night in range(6):
        key = write_quadrant(store, ra0, dec0, JD0 + night, psfcat=False)
        ingest_quadrant(db, store, key)
        pids[night] = key.pid()
        xy = [(SIZE / 2 - 0.5 + 0.3, SIZE / 2 - 0.5)] if night in (0, 2, 4) else []
        xy.append((10.0, 10.0))      # an unrelated candidate ~76" away on every image
        write_candidates(store, key, xy, diffmaglim=20.0 + 0.1 * night)
        ingest_candidates(db, store, key)
    from astropy.wcs import WCS

    w = WCS(store.read_header(key))
    ra, dec = (float(v[0]) for v in w.all_pix2world([SIZE / 2 - 0.5 + 0.3], [SIZE / 2 - 0.5], 0))
    hist = candidate_history(db, ra, dec, JD0 + 4.5)
    assert hist["pid"].tolist() == [pids[0], pids[2], pids[4]] and np.all(hist["dist"] < 0.01)
    assert candidate_history(db, ra, dec, JD0 + 4.5, days=3.0)["pid"].tolist() == [pids[2], pids[4]]
    assert len(candidate_history(db, ra, dec, JD0)) == 0          # strictly earlier only
    nd = nondetections(db, ra, dec, JD0 + 5.5)
    assert nd["pid"].tolist() == [pids[1], pids[3], pids[5]]
    assert np.allclose(nd["diffmaglim"], [20.1, 20.3, 20.5]) and np.all(nd["magzpsci"] == 26.3)
    assert nondetections(db, ra, dec, JD0 + 5.5, exclude_pids=[pids[3]])["pid"].tolist() == [pids[1], pids[5]]
    assert nondetections(db, ra, dec, JD0 + 5.5, days=2.0)["pid"].tolist() == [pids[5]]


def test_object_ids(db):
    assert [new_object_id(db, 2020) for _ in range(3)] == ["ZTF20aaaaaaa", "ZTF20aaaaaab", "ZTF20aaaaaac"]
    assert new_object_id(db, 2021) == "ZTF21aaaaaaa"
    assert object_for_position(db, 10.0, 20.0, 1.5) is None
    record_object(db, "ZTF20aaaaaab", 10.0, 20.0, JD0)
    record_object(db, "ZTF20aaaaaab", 10.0, 20.0, JD0 - 3)
    assert object_for_position(db, 10.0 + 1.0 / 3600, 20.0, 1.5) == "ZTF20aaaaaab"
    assert object_for_position(db, 10.0 + 2.0 / 3600, 20.0, 1.5) is None
    assert db.query("SELECT ndet, jdfirst, jdlast FROM objects") == [(2, JD0 - 3, JD0)]


def test_object_ids_unique_under_concurrency(db_target):
    """Three connections drawing ids at once never get the same one."""
    from ztfsds.archive import migrate

    url, schema = db_target
    with connect(url, schema=schema) as db:
        migrate(db)
    got, errors = [], []

    def draw():
        try:
            with connect(url, schema=schema) as db:
                got.extend(new_object_id(db, 2019) for _ in range(30))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=draw) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert sorted(got) == [objectid_from_number(2019, n) for n in range(90)]


def test_batch_history_equals_single_calls(db, store):
    """candidate_histories / nondetections_many give the single-position answers, row for row."""
    from ztfsds.archive import candidate_histories, nondetections_many

    rng = np.random.default_rng(3)
    xy = rng.uniform(10, SIZE - 10, (8, 2))
    for night in range(5):
        key = write_quadrant(store, 80.0, -20.0, JD0 + night, psfcat=False)
        ingest_quadrant(db, store, key)
        write_candidates(store, key, xy[rng.uniform(size=8) < 0.5] + rng.normal(0, 0.1, 2), diffmaglim=20.0 + night / 10)
        ingest_candidates(db, store, key)
    from astropy.wcs import WCS

    ra, dec = WCS(store.read_header(key)).all_pix2world(xy[:, 0], xy[:, 1], 0)
    jd = np.full(len(ra), JD0 + 4.5)
    hist = candidate_histories(db, ra, dec, jd, columns=["candid", "pid", "jd"])
    lim = nondetections_many(db, ra, dec, jd)
    total_images = 0
    for k in range(len(ra)):
        single = candidate_history(db, ra[k], dec[k], jd[k], columns=["candid", "pid", "jd"])
        assert hist[hist["index"] == k]["candid"].tolist() == single["candid"].tolist()
        nd = nondetections(db, ra[k], dec[k], jd[k])
        assert lim[lim["index"] == k]["pid"].tolist() == nd["pid"].tolist()
        # every one of the 5 images is either a detection or a limit
        assert len(single) + len(nd) == 5
        total_images += len(single) + len(nd)
    assert total_images == 40 and len(hist) > 5 and len(lim) > 5


def test_cone_query_uses_the_index_on_sqlite(tmp_path, monkeypatch):
    """Every range of a multi-range cone is an index search (an OR of ranges made SQLite scan the table)."""
    from ztfsds.archive import migrate

    db = connect(f"sqlite:///{tmp_path / 'plan.sqlite'}")
    migrate(db)
    _load_sources(db, np.array([10.0]), np.array([0.0]))
    seen = []
    original = db.query

    def spy(sql, params=()):
        seen.append((sql, params))
        return original(sql, params)

    monkeypatch.setattr(db, "query", spy)
    for radius in (5.0, 60.0, 1800.0):
        # a centre whose cone straddles pixels that are not contiguous in the nested order
        ra0 = next(r for r in np.arange(10.0, 11.0, 0.0007) if len(hpx_ranges(r, 0.3, radius)[0]) >= 2)
        cone_search(db, "sources", ra0, 0.3, radius, columns=["sourceid"])
        sql, params = seen[-1]
        plan = " | ".join(r[-1] for r in original("EXPLAIN QUERY PLAN " + sql, params))
        assert "SCAN" not in plan and "USING INDEX sources_hpx" in plan, plan
