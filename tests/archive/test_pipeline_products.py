"""Slow: ingest the products of the real pipeline (simulated night -> calib -> astrom -> photom ->
reference -> subtraction) and check the archive against the product files."""

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from ztfsds.archive import (candidate_history, ingest_candidates, ingest_quadrant, ingest_reference, search_images,
                            search_references)
from ztfsds.archive.footprint import angular_distance
from ztfsds.products import ProductKey, ProductStore

pytestmark = pytest.mark.slow

SIZE = 512
NIGHT = "20200924"
QID = 3


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    from ztfsds.astrom import run_astrom
    from ztfsds.calib import build_library, run_calib
    from ztfsds.catalogs import build_catalogs
    from ztfsds.config import Config, RefimgParams
    from ztfsds.photom import run_photom
    from ztfsds.refimg import build_reference
    from ztfsds.sim import simulate_night
    from ztfsds.subtract import run_subtract

    config = Config(refimg=RefimgParams(min_epochs=8))
    root = tmp_path_factory.mktemp("pipeline")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=6,
                            history_nights=10, nbias=3, nflat=3)
    store = ProductStore(root)
    build_library(store, NIGHT)
    build_catalogs(store, [655], ccds=[13])
    keys = []
    for raw in result.science:
        run_calib(raw, store)
        key = ProductKey.parse(raw.name).quadrant(QID, "sciimg")
        run_astrom(key, store)
        run_photom(key, store)
        keys.append(key)
    build_reference(store, 655, 13, QID, "zr", config)
    subtracted = [k for k in keys if k.night == NIGHT and run_subtract(k, store, config).ok]
    return store, keys, subtracted


def test_pipeline_products_ingest(db, products):
    store, keys, subtracted = products
    assert subtracted
    for key in keys:
        ingest_quadrant(db, store, key)
    ingest_reference(db, store, keys[0])
    for key in subtracted:
        ingest_candidates(db, store, key)
    q = db.query_table("SELECT * FROM quadimages ORDER BY jd")
    assert len(q) == len(keys) and np.all(q["ccdid"] == 13) and np.all(q["qid"] == QID)
    h = store.read_header(keys[-1])
    assert q["magzp"][-1] == h["MAGZP"] and q["seeing"][-1] == h["SEEING"] and q["infobits"][-1] == h["INFOBITS"]
    ncat = sum(len(Table.read(store.path(k.with_suffix("psfcat")), hdu="PSFCAT")) for k in keys
               if store.exists(k.with_suffix("psfcat")))
    assert db.query("SELECT COUNT(*) FROM sources")[0][0] == ncat > 100
    # every epoch covers the quadrant centre; the reference too
    w = WCS(h)
    ra, dec = (float(v[0]) for v in w.all_pix2world([SIZE / 2], [SIZE / 2], 0))
    assert len(search_images(db, ra=ra, dec=dec)) == len(keys)
    assert len(search_references(db, ra=ra, dec=dec)) == 1
    # candidates: positions from the product's xpos/ypos through the science WCS
    ncand = sum(len(Table.read(store.path(k.with_suffix("candidates")), hdu="CANDIDATES")) for k in subtracted)
    assert db.query("SELECT COUNT(*) FROM candidates")[0][0] == ncand > 0
    assert db.query("SELECT COUNT(*) FROM quadimages WHERE diffmaglim IS NOT NULL")[0][0] == len(subtracted)
    for key in subtracted:
        cands = Table.read(store.path(key.with_suffix("candidates")), hdu="CANDIDATES")
        rows = db.query_table("SELECT tblid, ra, dec, magpsf FROM candidates WHERE pid = ? ORDER BY tblid",
                              (key.pid(),))
        assert len(rows) == len(cands)
        if len(cands):
            wk = WCS(store.read_header(key))
            r, d = wk.all_pix2world(np.asarray(cands["xpos"]), np.asarray(cands["ypos"]), 0)
            assert np.all(angular_distance(rows["ra"], rows["dec"], r, d) < 1e-3)
            np.testing.assert_array_equal(rows["magpsf"], np.asarray(cands["magpsf"]))
    # the second exposure's history at a candidate of it lists the first exposure's candidate there, if any
    last = subtracted[-1]
    c = db.query_table("SELECT ra, dec, jd FROM candidates WHERE pid = ?", (last.pid(),))
    if len(c):
        hist = candidate_history(db, c["ra"][0], c["dec"][0], c["jd"][0])
        assert np.all(hist["jd"] < c["jd"][0])
