"""The same small night (with a reference: subtraction and alerts) on the serial executor and on a
dask.distributed LocalCluster of two worker processes gives identical products and database rows."""

import tarfile

import numpy as np
import pytest
from astropy.io import fits

from ztfsds.archive import connect
from ztfsds.ops import run_night
from ztfsds.products import ProductStore

from .conftest import QIDS, TONIGHT, small_config

# header cards that say when or where a file was written, not what it holds
_VOLATILE = {"CHECKSUM", "DATASUM", "DATE", "ORIGIN"}
_TABLE_SKIP = {"ingested_at", "host", "started", "finished", "elapsed_s", "cpu_s", "peak_mem_mb", "message",
               "created", "updated", "first_seen"}


def _products(root):
    base = root / "sci"
    return {p.relative_to(base).as_posix(): p for p in base.rglob("*.fits") if f"/{TONIGHT[4:]}/" in f"/{p.relative_to(base)}"}


def _compare_fits(a, b):
    with fits.open(a) as ha, fits.open(b) as hb:
        assert len(ha) == len(hb), a.name
        for x, y in zip(ha, hb):
            ka = {k: v for k, v in x.header.items() if k not in _VOLATILE}
            kb = {k: v for k, v in y.header.items() if k not in _VOLATILE}
            assert ka == kb, a.name
            if x.data is None:
                assert y.data is None
            elif isinstance(x, fits.BinTableHDU):
                assert x.data.tobytes() == y.data.tobytes(), a.name
            else:
                assert np.array_equal(x.data, y.data, equal_nan=True), a.name


def _rows(db, table):
    t = db.query_table(f"SELECT * FROM {table}")
    keep = [c for c in t.colnames if c not in _TABLE_SKIP]
    return sorted(tuple(str(v) for v in row) for row in t[keep]) if len(t) else []


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_products(copy_prepared):
    distributed = pytest.importorskip("distributed")
    serial, _ = copy_prepared("serial")
    dask, _ = copy_prepared("dask")
    config = small_config()
    a = run_night(serial, night=TONIGHT, executor="serial", qids=QIDS, config=config, match=False, report=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        b = run_night(dask, night=TONIGHT, executor="dask", scheduler=cluster, qids=QIDS, config=config,
                      match=False, report=False)
    print("\n" + str(a) + "\n" + str(b))
    assert a.stages["subtract"]["ok"] == b.stages["subtract"]["ok"] == 3
    assert {k: dict(v) for k, v in a.stages.items()} == {k: dict(v) for k, v in b.stages.items()}
    pa, pb = _products(serial), _products(dask)
    assert sorted(pa) == sorted(pb) and any(k.endswith("_candidates.fits") for k in pa)
    for name in pa:
        _compare_fits(pa[name], pb[name])
    with connect(store=ProductStore(serial)) as da, connect(store=ProductStore(dask)) as dd:
        for table in ("exposures", "quadimages", "candidates", "sources", "objects", "alert_packets"):
            ra, rb = _rows(da, table), _rows(dd, table)
            assert ra == rb, table
        assert _rows(da, "candidates")
    ta = sorted(ProductStore(serial).alerts_dir(TONIGHT).glob("*.tar*"))
    tb = sorted(ProductStore(dask).alerts_dir(TONIGHT).glob("*.tar*"))
    assert [p.name for p in ta] == [p.name for p in tb]
    for x, y in zip(ta, tb):
        with tarfile.open(x) as fx, tarfile.open(y) as fy:
            assert [(m.name, m.size) for m in fx.getmembers()] == [(m.name, m.size) for m in fy.getmembers()]
