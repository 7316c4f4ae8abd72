"""`run_match` over a data root: matchfile, lightcurve catalog, monthly update, Dask."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from ztfsds.match import read_lightcurves, read_matchfile, run_match, run_match_all
from ztfsds.match.runner import lightcurve_catalog_path, matchfile_path, quadrant_filters
from ztfsds.products import ProductKey, ProductStore, filefracday, table_hdulist

from .conftest import CCDID, FIELD, FILTERCODE, QID


def populate(store, syn, epochs):
    """Write the synthetic epochs as sciimg headers + psfcat products, and the refpsfcat."""
    ref_key = ProductKey("ref", FILTERCODE, CCDID, QID, FIELD, None, None, "o", "refpsfcat", ".fits")
    if not store.exists(ref_key):
        store.write_fits(ref_key, table_hdulist(fits.Header({"MAGZP": 27.0}), syn.reference, "PSFCAT"))
        store.write_fits(ref_key.with_suffix("refimg"), fits.PrimaryHDU(header=fits.Header({"RFID": 600120250})))
    for cat, hdr in epochs:
        key = ProductKey.science(filefracday(Time(hdr["OBSJD"], format="jd", scale="utc")), FIELD, FILTERCODE,
                                 CCDID, QID, "sciimg")
        header = fits.Header({k: v for k, v in hdr.items()})
        store.write_fits(key, fits.PrimaryHDU(header=header))
        store.write_fits(key.with_suffix("psfcat"), table_hdulist(header, cat, "PSFCAT"))


def _content(mf):
    return {n: mf.table(n).as_array().tobytes() for n in ("exposures", "sources", "sourcedata", "transientdata")}


def test_run_match_and_monthly_update(small_survey, tmp_path):
    syn = small_survey
    store = ProductStore(tmp_path / "a")
    populate(store, syn, syn.epochs[:30])
    # an epoch whose photometric calibration failed is left out
    bad_cat, bad_hdr = syn.epochs[30]
    populate(store, syn, [(bad_cat, {**bad_hdr, "MAGZP": -999.0})])
    status = run_match(store, FIELD, CCDID, QID, FILTERCODE)
    assert status.ok, str(status)
    mf = read_matchfile(matchfile_path(store, FIELD, CCDID, QID, FILTERCODE))
    assert len(mf.exposures) == 30 and int(mf.attrs["referenceImageID"]) == 600120250
    catalog = lightcurve_catalog_path(store)
    assert (catalog / "properties").exists() and (catalog / "partition_info.csv").exists()
    first = read_lightcurves(catalog)
    assert len(first) == np.count_nonzero(mf.sources["nobs"] > 0)
    # nothing new: nothing rewritten
    again = run_match(store, FIELD, CCDID, QID, FILTERCODE)
    assert again.ok and again.message == "no new epochs"
    # the monthly update: 9 more epochs arrive
    populate(store, syn, syn.epochs[31:])
    assert run_match(store, FIELD, CCDID, QID, FILTERCODE).ok
    updated = read_matchfile(matchfile_path(store, FIELD, CCDID, QID, FILTERCODE))
    assert len(updated.exposures) == 39
    # a rebuild from scratch of the same products gives the same matchfile and lightcurves
    other = ProductStore(tmp_path / "b")
    populate(other, syn, syn.epochs[:30] + syn.epochs[31:])
    assert run_match(other, FIELD, CCDID, QID, FILTERCODE, rebuild=True).ok
    rebuilt = read_matchfile(matchfile_path(other, FIELD, CCDID, QID, FILTERCODE))
    assert _content(rebuilt) == _content(updated)
    lc_a = read_lightcurves(lightcurve_catalog_path(store))
    lc_b = read_lightcurves(lightcurve_catalog_path(other))
    assert list(lc_a["objectid"]) == list(lc_b["objectid"])
    assert all(np.array_equal(x, y) for x, y in zip(lc_a["mag"], lc_b["mag"]))
    assert lc_a["nepochs"].sum() > first["nepochs"].sum()
    assert not [p for p in store.match_dir.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_missing_reference(tmp_path):
    status = run_match(ProductStore(tmp_path), FIELD, CCDID, QID, FILTERCODE)
    assert not status.ok and "no reference catalog" in status.message


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_dask_gives_identical_output(small_survey, tmp_path):
    from distributed import Client, LocalCluster

    syn = small_survey
    serial = ProductStore(tmp_path / "serial")
    populate(serial, syn, syn.epochs[:12])
    parallel = ProductStore(tmp_path / "dask")
    populate(parallel, syn, syn.epochs[:12])
    assert quadrant_filters(serial) == [(FIELD, CCDID, QID, FILTERCODE)]
    assert run_match(serial, FIELD, CCDID, QID, FILTERCODE).ok
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert run_match(parallel, FIELD, CCDID, QID, FILTERCODE, scheduler=client).ok
        statuses = run_match_all(parallel, scheduler=client, rebuild=True)
    assert [s.ok for s in statuses] == [True]
    a = read_matchfile(matchfile_path(serial, FIELD, CCDID, QID, FILTERCODE))
    b = read_matchfile(matchfile_path(parallel, FIELD, CCDID, QID, FILTERCODE))
    assert _content(a) == _content(b)
    la, lb = read_lightcurves(lightcurve_catalog_path(serial)), read_lightcurves(lightcurve_catalog_path(parallel))
    assert list(la["objectid"]) == list(lb["objectid"])
    assert all(np.array_equal(x, y) for x, y in zip(la["hmjd"], lb["hmjd"]))
