"""Fault handling on a small night with a reference (subtraction and alerts run).

Tonight has three exposures: the worker calibrating the first is killed (``os._exit`` in a custom stage,
twice: with the others and alone), the second has no stars (flat data: no astrometric solution), and while the
third is archived another connection holds an exclusive lock on the SQLite database for a second. The
night completes; both failures are in the jobs table and the report; running the night again processes
the killed exposure and duplicates nothing (jobs, quadimages, candidates, alert packets, alert tars).
"""

import functools
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from ztfsds.archive import connect, job_status
from ztfsds.ops import STAGES, Stage, alerts_available, quadrant_name, run_night
from ztfsds.ops.report import summarize_night
from ztfsds.products import ProductKey, ProductStatus, ProductStore

from .conftest import QIDS, TONIGHT, small_config, tonight_raws


def run_killer(key, store, config, *, marker, victim, times=2):
    """Kills its worker process the first ``times`` times it sees the victim exposure (a marker file counts):
    once in the pool with the other files, once when the executor runs it again alone."""
    path = Path(marker)
    killed = len(path.read_text()) if path.exists() else 0
    if key.filefracday == victim and killed < times:
        path.write_text("x" * (killed + 1))
        os._exit(3)
    return ProductStatus("killer", key.filename, ok=True, message="alive")


def run_dblock(key, store, config, db=None, *, victim, hold):
    """Holds an exclusive lock on the SQLite database for ``hold`` seconds (from another connection)."""
    if key.filefracday != victim:
        return ProductStatus("dblock", key.filename, ok=True, message="not the victim")
    conn = sqlite3.connect(store.database_path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")

    def release():
        time.sleep(hold)
        conn.execute("COMMIT")
        conn.close()

    threading.Thread(target=release, daemon=True).start()
    return ProductStatus("dblock", key.filename, ok=True, message=f"database locked for {hold} s")


def _dblock_done(key, store, config, db=None):
    return True if db is not None and db.query("SELECT 1 FROM jobs WHERE quadrant = ? AND stage = 'dblock'",
                                               (quadrant_name(key),)) else None


def _counts(db):
    out = {t: db.query(f"SELECT COUNT(*) FROM {t}")[0][0]
           for t in ("quadimages", "candidates", "alert_packets", "objects", "sources")}
    out["jobs"] = db.query("SELECT COUNT(*) FROM jobs WHERE stage != 'killer'")[0][0]  # the test's own stage
    return out


def test_faults_complete_and_rerun_duplicates_nothing(copy_prepared, tmp_path):
    root, result = copy_prepared()
    store = ProductStore(root)
    raws = [ProductKey.parse(p.name) for p in tonight_raws(result)]
    killed, off, locked = raws
    # no stars: each amplifier flat at its median level plus read noise (no astrometric solution)
    rng = np.random.default_rng(1)
    with fits.open(store.path(off), mode="update") as hdul:
        for hdu in hdul:
            if hdu.data is not None and hdu.data.ndim == 2:
                level = float(np.median(hdu.data))
                hdu.data[...] = (level + rng.normal(0, 3, hdu.data.shape)).astype(hdu.data.dtype)
    marker = tmp_path / "killed"
    stages = (STAGES[:1] + (Stage("killer", functools.partial(run_killer, marker=str(marker),
                                                              victim=killed.filefracday)),) + STAGES[1:3]
              + (Stage("dblock", functools.partial(run_dblock, victim=locked.filefracday, hold=1.0), _dblock_done,
                       needs_db=True),) + STAGES[3:])
    with connect(store=store) as db:
        history = db.query("SELECT COUNT(*) FROM quadimages")[0][0]
        ncand0 = db.query("SELECT COUNT(*) FROM candidates")[0][0]
    config = small_config(retries=0)  # the killed file is recorded, not resubmitted: the re-run finishes it
    t0 = time.perf_counter()
    first = run_night(root, night=TONIGHT, executor="process", workers=2, stages=stages, qids=QIDS, config=config,
                      match=False)
    print("\n" + str(first), f"\n[{time.perf_counter() - t0:.1f} s]")
    assert marker.read_text() == "xx"
    failures = {(q, stage, status) for q, stage, status, _ in first.failures}
    assert failures == {(quadrant_name(killed), "worker", "error"),
                        (quadrant_name(off.quadrant(3)), "astrom", "failed")}
    good = quadrant_name(locked.quadrant(3))
    with connect(store=store) as db:
        jobs = job_status(db, quadrant=good)
        assert set(jobs["status"]) == {"ok"}, jobs
        writers = jobs[(jobs["stage"] == "archive") | (jobs["stage"] == "alerts")]
        assert sum(writers["elapsed_s"]) >= 0.5  # the first writer waited for the lock, then went through
        assert set(jobs["attempt"]) == {1}
        assert "cpu_s" in jobs.colnames and all(jobs["cpu_s"] >= 0)
        assert db.query("SELECT COUNT(*) FROM quadimages")[0][0] == history + 1
        ncand = db.query("SELECT COUNT(*) FROM candidates")[0][0]
        assert ncand > ncand0
        if alerts_available():
            assert db.query("SELECT COUNT(*) FROM alert_packets")[0][0] > 0
    report = summarize_night(store, TONIGHT)
    assert {("worker", "error"), ("astrom", "failed")} <= {(str(r["stage"]), str(r["status"]))
                                                           for r in report.failures}
    assert report.core_s_per_image > 0
    assert first.report is not None and first.report.exists()
    tars = sorted(store.alerts_dir(TONIGHT).glob("*.tar*"))
    tar_times = {p.name: p.stat().st_mtime for p in tars}

    # the re-run: the killed exposure is processed, nothing else is run or recorded again
    second = run_night(root, night=TONIGHT, executor="process", workers=2, stages=stages, qids=QIDS, config=config,
                       match=False)
    print("\n" + str(second))
    # the killed file: calibrated before it was killed (up to date), the rest of its stages run now
    assert second.stages["photom"]["ok"] == 1 and second.stages["photom"]["uptodate"] == 1
    assert [f[:3] for f in second.failures] == [(quadrant_name(off.quadrant(3)), "astrom", "failed")]
    with connect(store=store) as db:
        after = _counts(db)
        assert after["quadimages"] == history + 2
        jobs = job_status(db, quadrant=good)
        assert set(jobs[jobs["stage"] != "killer"]["attempt"]) == {1}  # the test's killer has no 'done' test
        again = job_status(db, quadrant=quadrant_name(killed.quadrant(3)))
        assert set(again["status"]) == {"ok"} and set(again[again["stage"] != "killer"]["attempt"]) == {1}
        candids = [r[0] for r in db.query("SELECT candid FROM candidates")]
        assert len(candids) == len(set(candids)) > ncand
        if alerts_available():
            packets = [r[0] for r in db.query("SELECT candid FROM alert_packets")]
            assert len(packets) == len(set(packets))
    for p in tars:
        assert p.stat().st_mtime == tar_times[p.name], p  # not rewritten
    # a third run does nothing at all
    third = run_night(root, night=TONIGHT, executor="serial", stages=stages, qids=QIDS, config=config, match=False,
                      report=False)
    assert third.cpu_s < 1.0
    with connect(store=store) as db:
        assert _counts(db) == after
