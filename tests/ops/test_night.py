"""The night runner on a tiny simulated night (1 field, 1 CCD, quadrant 3 at 256 px, 2 exposures).

End to end with the embedded defaults (SQLite under the root), re-run idempotence (no stage run or
recorded twice), fault handling (a truncated raw file), the jobs table and the disk clean-up policy.
"""

import os
import shutil

import pytest

from ztfsds.archive import connect, job_status
from ztfsds.ops import cleanup, is_archived, quadrant_name, retry_failures, run_night
from ztfsds.products import ProductKey, ProductStore
from ztfsds.sim import simulate_night

SIZE = 256
QIDS = (3,)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops-sim")
    result = simulate_night(root, fields=[655], ccds=[13], nexp=2, filters=["zr"], size=SIZE, seed=5,
                            nbias=2, nflat=2)
    return root, result


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def night(simulated, tmp_path_factory):
    src, result = simulated
    root = _copy(src, tmp_path_factory.mktemp("ops-night") / "root")
    # a corrupt raw file: the second exposure truncated mid-HDU
    bad = ProductStore(root).path(ProductKey.parse(result.science[1].name))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    summary = run_night(root, executor="serial", qids=QIDS, report=False, match=False)
    return root, result, summary


def test_night_end_to_end(night):
    root, result, summary = night
    print("\n" + str(summary))
    assert summary.nights == ["20200924"] and summary.raw_files == 2
    good = quadrant_name(ProductKey.parse(result.science[0].name).quadrant(3))
    # the good quadrant went through calib, astrom, photom and the archive; no reference: no subtraction
    for stage in ("calib", "astrom", "photom", "archive"):
        assert summary.stages[stage]["ok"] == 1, stage
    assert summary.stages["subtract"]["skipped"] == 1
    store = ProductStore(root)
    key = ProductKey.parse(result.science[0].name).quadrant(3)
    for suffix in ("sciimg", "mskimg", "varimg", "sexcat", "psfcat", "sciimgpsf"):
        assert store.exists(key.with_suffix(suffix)), suffix
    with connect(store=store) as db:
        jobs = job_status(db, quadrant=good)
        assert sorted(jobs["stage"]) == ["alerts", "archive", "astrom", "calib", "photom", "subtract"]
        assert set(jobs["attempt"]) == {1}
        ok = jobs[jobs["status"] == "ok"]
        assert all(ok["elapsed_s"] > 0) and all(ok["peak_mem_mb"] > 50)
        assert all(ok["cpu_s"] > 0) and not any("cpu=" in m for m in ok["message"])
        assert db.query("SELECT COUNT(*) FROM quadimages")[0][0] == 1
        assert is_archived(db, store, key)


def test_corrupt_raw_file_recorded(night):
    root, result, summary = night
    bad = quadrant_name(ProductKey.parse(result.science[1].name))
    assert [f[:3] for f in summary.failures] == [(bad, "calib", "failed")]
    assert "truncat" in summary.failures[0][3].lower() or "fits" in summary.failures[0][3].lower()
    with connect(store=ProductStore(root)) as db:
        jobs = job_status(db, status="failed")
        assert list(jobs["quadrant"]) == [bad] and list(jobs["stage"]) == ["calib"]


def test_rerun_does_nothing_twice(night):
    root, result, _ = night
    store = ProductStore(root)
    with connect(store=store) as db:
        before = {t: db.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("jobs", "quadimages", "sources")}
    mtime = store.path(ProductKey.parse(result.science[0].name).quadrant(3, "psfcat")).stat().st_mtime
    again = run_night(root, executor="serial", qids=QIDS, report=False, match=False)
    print("\n" + str(again))
    # nothing run again: every stage up to date (no reference yet: the subtraction is checked again, cheaply),
    # the corrupt file not retried
    assert all(set(c) <= {"uptodate", "skipped"} for c in again.stages.values()) and not again.failures
    assert again.cpu_s < 0.5
    assert again.stages["photom"]["uptodate"] == 1 and again.stages["archive"]["uptodate"] == 1
    with connect(store=store) as db:
        after = {t: db.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("jobs", "quadimages", "sources")}
    assert after == before
    assert store.path(ProductKey.parse(result.science[0].name).quadrant(3, "psfcat")).stat().st_mtime == mtime


def test_retry_after_repair(night, simulated):
    """The operator replaces the corrupt file; `retry_failures` processes it (attempt 2), nothing else."""
    root, result, _ = night
    src, _ = simulated
    store = ProductStore(root)
    raw = ProductKey.parse(result.science[1].name)
    shutil.copy2(ProductStore(src).path(raw), store.path(raw))
    summary = retry_failures(root, "20200924", qids=QIDS)
    print("\n" + str(summary))
    assert summary.raw_files == 1 and not summary.failures
    with connect(store=store) as db:
        calib = job_status(db, quadrant=quadrant_name(raw), stage="calib")
        assert list(calib["status"]) == ["failed"]  # the file-level failure stays in the history
        q = job_status(db, quadrant=quadrant_name(raw.quadrant(3)))
        assert set(q["status"]) <= {"ok", "skipped"} and len(q) == 6
        assert db.query("SELECT COUNT(*) FROM quadimages")[0][0] == 2


def test_cleanup_never_deletes_unarchived(night, tmp_path):
    root, result, _ = night
    store = ProductStore(root)
    key = ProductKey.parse(result.science[0].name).quadrant(3)
    var = store.path(key.with_suffix("varimg"))
    assert var.exists()
    # touching the sciimg makes the quadrant 'not archived' (changed since its ingestion)
    os.utime(store.path(key), None)
    with connect(store=store) as db:
        assert not is_archived(db, store, key)
    res = cleanup(root, min_free_gb=1e9, keep_nights=0, free_gb=lambda: 0.0)
    assert var.exists() and key.filename in res.kept_unarchived
    # re-ingested: now the intermediates go, the archive's products stay
    run_night(root, executor="serial", qids=QIDS, report=False, match=False)
    res = cleanup(root, min_free_gb=1e9, keep_nights=0, free_gb=lambda: 0.0)
    assert not var.exists() and var in res.removed and res.freed_bytes >= SIZE * SIZE * 4
    for suffix in ("sciimg", "mskimg", "psfcat"):
        assert store.exists(key.with_suffix(suffix))
    assert store.path(ProductKey.parse(result.science[0].name)).exists()  # raw files are never deleted
