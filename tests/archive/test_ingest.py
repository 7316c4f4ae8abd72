"""Ingestion: quadrant metadata, footprints, catalogs, references, candidates; idempotence; killed ingests."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from astropy.wcs import WCS

from archive.synth import JD0, SIZE, write_candidates, write_quadrant, write_reference
from ztfsds.archive import TABLES, ingest_candidates, ingest_quadrant, ingest_reference
from ztfsds.archive.footprint import angular_distance
from ztfsds.products import ProductStore, candid


@pytest.fixture
def store(tmp_path):
    return ProductStore(tmp_path / "root")


def _snapshot(db):
    """Every table's rows, sorted, without the ingestion timestamps."""
    out = {}
    for table, cols in TABLES.items():
        names = [c for c, _ in cols if c != "ingested_at"]
        out[table] = sorted(db.query(f"SELECT {', '.join(names)} FROM {table}"), key=repr)
    return out


def test_ingest_quadrant_rows_and_footprint(db, store):
    key = write_quadrant(store, 55.06, 33.35, JD0, nsrc=60, seeing=2.3, maglim=20.9, infobits=0)
    res = ingest_quadrant(db, store, key)
    assert res["sources"] == 60 and res["quadimages"] == 1
    q = db.query_table("SELECT * FROM quadimages")
    assert len(q) == 1
    row = q[0]
    assert row["pid"] == key.pid() and row["expid"] == key.expid and row["rcid"] == 50 and row["fid"] == 2
    assert row["seeing"] == 2.3 and row["maglim"] == 20.9 and row["magzp"] == 26.3 and row["programid"] == 1
    assert row["sciimg"] == store.relpath(key).as_posix()
    # centre and corners: the WCS's, to 1e-6 arcsec
    h = store.read_header(key)
    w = WCS(h)
    cra, cdec = w.all_pix2world([(SIZE - 1) / 2], [(SIZE - 1) / 2], 0)
    assert angular_distance(row["ra"], row["dec"], cra[0], cdec[0]) < 0.05
    ra1, dec1 = w.all_pix2world([-0.5], [-0.5], 0)
    assert angular_distance(row["ra1"], row["dec1"], ra1[0], dec1[0]) < 1e-6
    ra3, dec3 = w.all_pix2world([SIZE - 0.5], [SIZE - 0.5], 0)
    assert angular_distance(row["ra3"], row["dec3"], ra3[0], dec3[0]) < 1e-6
    # the exposure row
    e = db.query_table("SELECT * FROM exposures")
    assert e["expid"][0] == key.expid and e["jd"][0] == JD0 and e["field"][0] == 655 and e["night"][0] == key.night
    # sources: ids, positions and magnitudes as in the psfcat
    s = db.query_table("SELECT sourceid, pid, ra, dec, hpx, mag FROM sources ORDER BY sourceid")
    assert s["sourceid"][0] == key.pid() * 10**5 and s["sourceid"][-1] == key.pid() * 10**5 + 59
    from astropy.table import Table

    cat = Table.read(store.path(key.with_suffix("psfcat")), hdu="PSFCAT")
    assert np.array_equal(s["ra"], cat["ra"]) and np.array_equal(s["mag"], cat["mag"])
    assert db.query("SELECT COUNT(*) FROM quadimage_cover WHERE pid = ?", (key.pid(),))[0][0] >= 1


def test_minus_999_is_null(db, store):
    key = write_quadrant(store, 10.0, 0.0, JD0, seeing=-999.0, maglim=-999.0, psfcat=False)
    ingest_quadrant(db, store, key)
    q = db.query_table("SELECT seeing, maglim, nsources FROM quadimages")
    assert np.isnan(q["seeing"][0]) and np.isnan(q["maglim"][0]) and q["nsources"].mask[0]


@pytest.fixture(scope="module")
def many_quadrants(tmp_path_factory):
    """100 small quadrant-images with 20 sources and 3 candidates each (written once)."""
    store = ProductStore(tmp_path_factory.mktemp("many"))
    keys = []
    rng = np.random.default_rng(5)
    for k in range(100):
        key = write_quadrant(store, 150.0 + 0.05 * (k % 10), 2.0 + 0.05 * (k // 10), JD0 + 0.01 * k, nsrc=20,
                             seed=k, ccdid=1 + k % 16, qid=1 + k % 4)
        write_candidates(store, key, rng.uniform(5, SIZE - 5, (3, 2)), seed=k)
        keys.append(key)
    return store, keys


def _ingest_twice(db, store, keys):
    for key in keys:
        ingest_quadrant(db, store, key)
        ingest_candidates(db, store, key)
    once = _snapshot(db)
    n = len(keys)
    assert len(once["quadimages"]) == n and len(once["sources"]) == 20 * n and len(once["candidates"]) == 3 * n
    assert len(once["exposures"]) == n
    for key in keys[::-1]:
        ingest_candidates(db, store, key)
        ingest_quadrant(db, store, key)
    assert _snapshot(db) == once


def test_quadrants_idempotent(db, many_quadrants):
    """25 quadrant-images (sources, candidates): ingesting twice = ingesting once."""
    store, keys = many_quadrants
    _ingest_twice(db, store, keys[:25])


@pytest.mark.slow
def test_hundred_quadrants_idempotent(db, many_quadrants):
    """The acceptance case: 100 quadrant-images, twice = once (about 10 s per engine)."""
    _ingest_twice(db, *many_quadrants)


def test_failed_ingest_rolls_back(db, store, monkeypatch):
    from ztfsds.archive import ingest as ingest_mod

    good = write_quadrant(store, 20.0, 10.0, JD0, nsrc=30, seed=1)
    ingest_quadrant(db, store, good)
    before = _snapshot(db)
    bad = write_quadrant(store, 20.5, 10.0, JD0 + 1, nsrc=30, seed=2)
    original = ingest_mod._insert_sources

    def half(db_, pid, psfcat):
        original(db_, pid, psfcat)
        raise RuntimeError("disk full half-way")

    monkeypatch.setattr(ingest_mod, "_insert_sources", half)
    with pytest.raises(RuntimeError, match="half-way"):
        ingest_quadrant(db, store, bad)
    assert _snapshot(db) == before
    # re-ingesting the good one over the same sources in a failed call keeps them intact too
    with pytest.raises(RuntimeError):
        ingest_quadrant(db, store, good)
    assert _snapshot(db) == before


def test_killed_ingest_leaves_db_consistent(db_target, store):
    """A process killed (os._exit) in the middle of an ingest's transaction leaves nothing half-written."""
    from ztfsds.archive import connect, migrate

    url, schema = db_target
    with connect(url, schema=schema) as db:
        migrate(db)
        first = write_quadrant(store, 30.0, -5.0, JD0, nsrc=25, seed=3)
        ingest_quadrant(db, store, first)
        second = write_quadrant(store, 30.5, -5.0, JD0 + 2, nsrc=25, seed=4)
        before = _snapshot(db)
    script = textwrap.dedent(f"""
        import os
        from ztfsds.archive import connect, ingest
        from ztfsds.products import ProductStore
        original = ingest._insert_sources
        def killed(db, pid, psfcat):
            original(db, pid, psfcat)
            os._exit(7)              # killed after the sources, before COMMIT
        ingest._insert_sources = killed
        db = connect({url!r}, schema={schema!r})
        ingest.ingest_quadrant(db, ProductStore({str(store.root)!r}), {second.filename!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    with connect(url, schema=schema) as db:
        assert _snapshot(db) == before
        if db.engine == "sqlite":
            assert db.query("PRAGMA integrity_check") == [("ok",)]
        ingest_quadrant(db, store, second)       # and the ingest goes through afterwards
        assert db.query("SELECT COUNT(*) FROM sources") == [(50,)]


def test_ingest_candidates(db, store):
    key = write_quadrant(store, 200.0, 40.0, JD0, nsrc=10)
    xy = [(10.0, 20.0), (100.5, 64.25), (3.0, 120.0)]
    write_candidates(store, key, xy, isdiffpos=["t", "f", "t"], diffmaglim=20.7)
    res = ingest_candidates(db, store, key)          # ingests the quadrant too (not yet in)
    assert res["candidates"] == 3 and res["quadimages"] == 1
    c = db.query_table("SELECT * FROM candidates ORDER BY tblid")
    pid = key.pid()
    assert c["candid"].tolist() == [candid(pid, 0, "t"), candid(pid, 1, "f"), candid(pid, 2, "t")]
    w = WCS(store.read_header(key))
    ra, dec = w.all_pix2world(np.array(xy)[:, 0], np.array(xy)[:, 1], 0)
    assert np.all(angular_distance(c["ra"], c["dec"], ra, dec) < 1e-6)
    assert np.all(c["diffmaglim"] == 20.7) and np.all(c["jd"] == JD0) and np.all(c["magzpsci"] == 26.3)
    assert c["isdiffpos"].tolist() == ["t", "f", "t"] and c["rfid"][0] == 655122250
    assert db.query("SELECT diffmaglim, ncands FROM quadimages WHERE pid = ?", (pid,)) == [(20.7, 3)]
    # an object id assigned later survives a re-ingest; a candidate that disappeared is removed
    db.execute("UPDATE candidates SET objectid = 'ZTF20aaaaaaa' WHERE tblid = 0")
    write_candidates(store, key, xy[:2], isdiffpos=["t", "f"], diffmaglim=20.7)
    ingest_candidates(db, store, key)
    c = db.query_table("SELECT candid, objectid FROM candidates ORDER BY candid")
    assert len(c) == 2 and "ZTF20aaaaaaa" in c["objectid"].tolist()


def test_ingest_reference(db, store):
    key = write_quadrant(store, 55.0, 33.0, JD0, psfcat=False)
    ref = write_reference(store, key, 55.0, 33.0, nframes=17)
    ingest_reference(db, store, ref)
    ingest_reference(db, store, key)      # by a quadrant's key: the same reference, idempotent
    r = db.query_table("SELECT * FROM refimages")
    assert len(r) == 1 and r["rfid"][0] == 655122250 and r["nframes"][0] == 17 and r["rcid"][0] == 50
    assert r["jdstart"][0] == JD0 - 100 and r["path"][0] == store.relpath(ref).as_posix()
    assert angular_distance(r["ra"][0], r["dec"][0], 55.0, 33.0) < 1.0


def test_missing_product_names_file(db, store):
    from ztfsds.errors import ProductNotFoundError

    key = write_quadrant(store, 1.0, 1.0, JD0, psfcat=False)
    with pytest.raises(ProductNotFoundError, match="candidates"):
        ingest_candidates(db, store, key)
    os.remove(store.path(key))
    with pytest.raises(ProductNotFoundError, match="sciimg"):
        ingest_quadrant(db, store, key)
